//! The one way a section turns a spanned raw value into a typed one: the value type parses
//! itself ([`FromRaw`], which every `FromStr` type gets for free), and a problem is reported at
//! the value's span with its key in front. Sections (`network.rs`, `host.rs`, …) call these
//! helpers instead of matching on each field; the value types live in `values.rs` and
//! `probe.rs`.

use std::{ops::Range, str::FromStr, time::Duration};

use toml::Spanned;

use super::error::FieldError;

/// Where problems go: a byte span of the file (or none) and a message. `mod.rs` turns spans into
/// lines and columns and gathers everything so that the operator sees every problem at once.
pub(super) type Report<'a> = dyn FnMut(Option<Range<usize>>, String) + 'a;

/// A value that reads itself from what the TOML file holds: a string for most values (through
/// `FromStr`), an integer for counts and ports.
pub(super) trait FromRaw<R>: Sized {
    type Err: std::error::Error + 'static;
    fn from_raw(raw: &R) -> Result<Self, Self::Err>;
}

impl<T> FromRaw<String> for T
where
    T: FromStr,
    T::Err: std::error::Error + 'static,
{
    type Err = T::Err;

    fn from_raw(raw: &String) -> Result<Self, Self::Err> {
        raw.parse()
    }
}

#[allow(
    clippy::unnecessary_wraps,
    reason = "a `Report` takes an optional span; this puts a value's span in that shape"
)]
pub(super) fn span<T>(value: &Spanned<T>) -> Option<Range<usize>> {
    Some(value.span())
}

/// Parses a value; a problem is reported at its span with the message `message` makes of the
/// error (for the few messages that do not start with the key).
pub(super) fn parse_with<R, T: FromRaw<R>>(
    value: &Spanned<R>,
    report: &mut Report<'_>,
    message: impl FnOnce(T::Err) -> String,
) -> Option<T> {
    T::from_raw(value.get_ref())
        .map_err(|err| report(span(value), message(err)))
        .ok()
}

/// Parses a required value; a problem reads "`key` `error`" at the value's span.
pub(super) fn field<R, T: FromRaw<R>>(
    value: &Spanned<R>,
    key: &'static str,
    report: &mut Report<'_>,
) -> Option<T> {
    parse_with(value, report, |source| {
        FieldError { key, source }.to_string()
    })
}

/// Parses a value that may be absent, which means `default`.
pub(super) fn field_or<R, T: FromRaw<R>>(
    value: Option<&Spanned<R>>,
    key: &'static str,
    default: T,
    report: &mut Report<'_>,
) -> Option<T> {
    match value {
        Some(value) => field(value, key, report),
        None => Some(default),
    }
}

/// Parses a value that may be absent, which means `None` (`Some(None)`; the outer `None` is a
/// reported problem).
#[allow(
    clippy::option_option,
    reason = "the two `None`s differ, as said above: absent is fine, a bad value is a reported problem"
)]
pub(super) fn optional<R, T: FromRaw<R>>(
    value: Option<&Spanned<R>>,
    key: &'static str,
    report: &mut Report<'_>,
) -> Option<Option<T>> {
    match value {
        Some(value) => field(value, key, report).map(Some),
        None => Some(None),
    }
}

/// Checks a parsed duration (`parsed`, from `value` when written, else a default) against its
/// key's maximum; a longer one is reported at the value's span. Every duration is already below
/// `values::MAX_DURATION`; this is for keys whose meaning bounds them tighter.
pub(super) fn at_most<R>(
    parsed: Option<Duration>,
    value: Option<&Spanned<R>>,
    key: &'static str,
    max: Duration,
    report: &mut Report<'_>,
) -> Option<Duration> {
    let parsed = parsed?;
    if parsed > max {
        report(
            value.and_then(span),
            format!(
                "{key} {} is longer than its maximum {}",
                humantime::format_duration(parsed),
                humantime::format_duration(max)
            ),
        );
        return None;
    }
    Some(parsed)
}

/// Parses every item of a list, reporting each bad one at its own span (items carry no key: their
/// errors name the item); `None` if any was bad.
pub(super) fn items<R, T: FromRaw<R>>(
    list: &[Spanned<R>],
    report: &mut Report<'_>,
) -> Option<Vec<T>> {
    let mut ok = true;
    let mut out = Vec::with_capacity(list.len());
    for item in list {
        match parse_with(item, report, |err: T::Err| err.to_string()) {
            Some(value) => out.push(value),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Even(u32);

    #[derive(Debug, thiserror::Error)]
    #[error("{0} is odd")]
    struct Odd(u32);

    impl FromRaw<u32> for Even {
        type Err = Odd;
        fn from_raw(raw: &u32) -> Result<Self, Odd> {
            if raw.is_multiple_of(2) {
                Ok(Even(*raw))
            } else {
                Err(Odd(*raw))
            }
        }
    }

    fn spanned<T>(start: usize, value: T) -> Spanned<T> {
        Spanned::new(start..start + 1, value)
    }

    #[test]
    fn helpers_report_at_the_span_with_the_key_in_front() {
        let mut seen = Vec::new();
        let mut report = |span: Option<Range<usize>>, message: String| seen.push((span, message));
        assert_eq!(field(&spanned(4, 2), "n", &mut report), Some(Even(2)));
        assert_eq!(field::<_, Even>(&spanned(5, 3), "n", &mut report), None);
        assert_eq!(field_or(None, "n", Even(0), &mut report), Some(Even(0)));
        assert_eq!(optional::<u32, Even>(None, "n", &mut report), Some(None));
        assert_eq!(
            optional(Some(&spanned(6, 8)), "n", &mut report),
            Some(Some(Even(8)))
        );
        assert_eq!(
            items::<_, Even>(&[spanned(7, 1), spanned(8, 4), spanned(9, 5)], &mut report),
            None
        );
        assert_eq!(items(&[spanned(7, 2)], &mut report), Some(vec![Even(2)]));
        assert_eq!(
            seen,
            vec![
                (Some(5..6), "n 3 is odd".to_string()),
                (Some(7..8), "1 is odd".to_string()),
                (Some(9..10), "5 is odd".to_string()),
            ]
        );
    }

    #[test]
    fn strings_parse_through_from_str() {
        let mut report = |_: Option<Range<usize>>, _: String| panic!("nothing to report");
        let port: Option<u16> = field(&spanned(0, "80".to_string()), "port", &mut report);
        assert_eq!(port, Some(80));
    }
}
