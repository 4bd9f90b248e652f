//! What a failed configuration looks like: every [`Problem`] with its line and column, gathered
//! into one [`ConfigError`] by `mod.rs`, and the [`LoadError`] of `Config::load`. The sections
//! report problems through `field.rs`; nothing here knows the schema.

use std::fmt;

/// One problem in a configuration file, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line, or 0 when the problem has no single place.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    pub message: String,
}

/// Every problem found in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file the problems are in, for messages ("<inline>" for text without a file).
    pub origin: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        writeln!(
            f,
            "{} has {count} problem{}:",
            self.origin,
            if count == 1 { "" } else { "s" }
        )?;
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if p.line == 0 {
                write!(f, "  {}: {}", self.origin, p.message)?;
            } else {
                write!(
                    f,
                    "  {}:{}:{}: {}",
                    self.origin, p.line, p.column, p.message
                )?;
            }
        }
        Ok(())
    }
}

/// Errors loading a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

/// A value that did not parse, named by its key ("`idle_timeout` \"soon\" is not a duration …").
/// The value types' own errors leave the key out so that one type serves many keys.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key} {source}")]
pub struct FieldError<E: std::error::Error + 'static> {
    pub key: &'static str,
    pub source: E,
}

/// 1-based line and column (in characters) of a byte offset. An offset inside a character
/// counts as that character: offsets computed inside a value that YAML folded or unescaped (an
/// interpolation in a multi-line scalar) need not fall on a character boundary of the file.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_characters_from_one() {
        let text = "a = 1\nb = \"é\" x\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        // "é" is two bytes but one column.
        assert_eq!(line_column(text, text.find('x').unwrap()), (2, 9));
        assert_eq!(line_column(text, 10_000), (3, 1), "clamped to the end");
        // Inside "é" (found by fuzzing: an offset computed in a folded YAML scalar) counts as "é".
        assert_eq!(line_column(text, 11), (2, 6));
    }

    #[test]
    fn display_counts_problems_and_places_unplaced_ones_on_the_file() {
        let err = ConfigError {
            origin: "f.toml".into(),
            problems: vec![
                Problem {
                    line: 0,
                    column: 0,
                    message: "whole".into(),
                },
                Problem {
                    line: 3,
                    column: 7,
                    message: "here".into(),
                },
            ],
        };
        assert_eq!(
            err.to_string(),
            "f.toml has 2 problems:\n  f.toml: whole\n  f.toml:3:7: here"
        );
    }
}
