//! One clock for every phase of a wake: `CLOCK_MONOTONIC`, the clock `bpf_ktime_get_ns()` reads, so
//! that "packet held" (stamped in the kernel) and later phases (stamped here) compare directly.

/// Nanoseconds on `CLOCK_MONOTONIC`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    // CLOCK_MONOTONIC never reads negative.
    ts.tv_sec.cast_unsigned() * 1_000_000_000 + ts.tv_nsec.cast_unsigned()
}

/// How far ahead [`later`] saturates: far beyond any configured duration (at most 30 days, see
/// `config::MAX_DURATION`), yet addable to any instant of a clock that counts from boot.
const FAR_AHEAD: std::time::Duration = std::time::Duration::from_hours(100 * 365 * 24);

/// `at + d` without the panic of `Instant + Duration` on overflow: a longer `d` than
/// [`FAR_AHEAD`] counts as that. Every deadline derived from configuration goes through here (or
/// [`deadline_in`]), so that no configured value can crash a task by its size.
pub fn later(at: std::time::Instant, d: std::time::Duration) -> std::time::Instant {
    at.checked_add(d.min(FAR_AHEAD))
        .or_else(|| at.checked_add(FAR_AHEAD))
        .unwrap_or(at)
}

/// The tokio instant `d` from now, saturating like [`later`].
pub fn deadline_in(d: std::time::Duration) -> tokio::time::Instant {
    tokio::time::Instant::from_std(later(tokio::time::Instant::now().into_std(), d))
}

/// `d` in nanoseconds, saturating at `u64::MAX` (584 years: nothing configured or measured comes
/// near, but a configured duration is not trusted to).
pub fn saturating_ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Milliseconds between two monotonic stamps (0 if they are out of order).
pub fn ms_between(from_ns: u64, to_ns: u64) -> f64 {
    to_ns.saturating_sub(from_ns) as f64 / 1e6
}

/// How far the datapath's activity stamps (`bpf_ktime_get_coarse_ns`) may trail
/// `CLOCK_MONOTONIC`: one tick at the slowest tick rate (100 Hz), twice over (20 ms).
pub const COARSE_CLOCK_LAG_NS: u64 = 20_000_000;

#[cfg(test)]
#[allow(
    clippy::float_cmp,
    reason = "the values compared are whole counts (or exact binary fractions) carried in f64, so equality is exact"
)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_saturate_instead_of_panicking() {
        let now = std::time::Instant::now();
        let d = std::time::Duration::from_secs(5);
        assert_eq!(later(now, d), now + d);
        assert_eq!(later(now, std::time::Duration::MAX), now + FAR_AHEAD);
        assert!(deadline_in(std::time::Duration::MAX) > tokio::time::Instant::now());
    }

    #[test]
    fn monotonic_moves_forward() {
        let a = monotonic_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = monotonic_ns();
        assert!(b > a);
        assert!(ms_between(a, b) >= 2.0);
        assert_eq!(ms_between(b, a), 0.0);
    }
}
