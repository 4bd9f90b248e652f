//! Summaries of samples: percentiles by nearest rank.

use serde::Serialize;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

/// The median of `samples` (for an even count, the upper middle one), NaN for none: rounds'
/// figures are few and odd in number.
pub fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The `q`-quantile (0..=1) of sorted samples, by nearest rank.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "the rank is a whole number in 0..=len for q in 0..=1, and is clamped besides"
)]
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn summarize(samples: &[f64]) -> Summary {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return Summary::default();
    }
    Summary {
        n: sorted.len(),
        min: sorted[0],
        p50: quantile(&sorted, 0.50),
        p95: quantile(&sorted, 0.95),
        p99: quantile(&sorted, 0.99),
        max: sorted[sorted.len() - 1],
        mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
    }
}

/// The standard error of a median of `n` samples is about this many times σ/√n (√(π/2), for
/// samples scattered roughly normally).
const MEDIAN_SE: f64 = 1.253_314;

/// The relative scatter of rounds' figures: their sample standard deviation over their mean.
/// NaN for fewer than two.
pub fn relative_sd(rounds: &[f64]) -> f64 {
    if rounds.len() < 2 {
        return f64::NAN;
    }
    let n = rounds.len() as f64;
    let mean = rounds.iter().sum::<f64>() / n;
    let var = rounds.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    var.sqrt() / mean
}

/// How finely comparing the medians of two series of rounds resolves a difference on this
/// machine, judged from the rounds' own scatter (no model of the machine: just how much each
/// series' rounds differ among themselves, where nothing but the noise changed).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Resolution {
    /// Two standard errors of the relative difference between the two medians: a difference
    /// smaller than this can be chance alone.
    pub noise: f64,
    /// Rounds per series that would bring `noise` down to the tolerance asked about, with the
    /// same scatter.
    pub rounds_needed: usize,
}

/// [`Resolution`] of medians of the rounds `a` against those of `b`, for a target with relative
/// `tolerance` (0.03 for "within 3 %"); `None` with fewer than two rounds in either.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a positive count of rounds, rounded up and clamped to a sane range"
)]
pub fn resolution(a: &[f64], b: &[f64], tolerance: f64) -> Option<Resolution> {
    let (ra, rb) = (relative_sd(a), relative_sd(b));
    if !(ra.is_finite() && rb.is_finite()) || tolerance <= 0.0 {
        return None;
    }
    let noise = 2.0 * MEDIAN_SE * (ra * ra / a.len() as f64 + rb * rb / b.len() as f64).sqrt();
    // 2·SE·√((ra² + rb²)/n) ≤ tolerance, solved for n.
    let needed = (2.0 * MEDIAN_SE / tolerance).powi(2) * (ra * ra + rb * rb);
    Some(Resolution {
        noise,
        rounds_needed: needed.ceil().clamp(2.0, 1e6) as usize,
    })
}

/// For a target's row: "; " and what [`resolution`] says of a `measured` difference of the
/// medians of `a` and `b` against `tolerance`, or nothing when the rounds cannot say.
pub fn noise_note(a: &[f64], b: &[f64], measured: f64, tolerance: f64) -> String {
    resolution(a, b, tolerance).map_or(String::new(), |r| {
        format!("; {}", r.describe(measured, tolerance))
    })
}

impl Resolution {
    /// For a report: what this machine's noise means for a difference of `measured` (relative)
    /// against a target's `tolerance`.
    pub fn describe(&self, measured: f64, tolerance: f64) -> String {
        let verdict = if measured.abs() <= self.noise {
            "the difference is within that"
        } else {
            "the difference is beyond that"
        };
        let resolve = if self.noise > tolerance {
            format!(
                "; resolving {:.0} % would take about {} rounds of each",
                100.0 * tolerance,
                self.rounds_needed
            )
        } else {
            String::new()
        };
        format!(
            "rounds' own scatter: two such medians differ by up to ±{:.1} % by chance \
             (2 standard errors), {verdict}{resolve}",
            100.0 * self.noise
        )
    }
}

#[cfg(test)]
#[allow(
    clippy::float_cmp,
    reason = "the values compared are whole counts (or exact binary fractions) carried in f64, so equality is exact"
)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_rounds() {
        assert_eq!(median(vec![22.3, 19.6, 24.1]), 22.3);
        assert_eq!(median(vec![3.0, 1.0, 4.0, 2.0]), 3.0);
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = summarize(&samples);
        assert_eq!(
            (s.p50, s.p95, s.p99, s.min, s.max),
            (50.0, 95.0, 99.0, 1.0, 100.0)
        );
        assert_eq!(summarize(&[7.0]).p99, 7.0);
        assert_eq!(summarize(&[]).n, 0);
    }

    #[test]
    fn rounds_that_agree_resolve_finely_and_scattered_ones_do_not() {
        let steady = [100.0, 100.0, 100.0];
        let r = resolution(&steady, &steady, 0.03).expect("three rounds each");
        assert_eq!(r.noise, 0.0);
        assert_eq!(r.rounds_needed, 2);
        // Rounds scattered by 10 % (sd/mean): 2 · 1.2533 · √(0.01/7 + 0.01/7) ≈ 13.4 %, and
        // 3 % would need (2 · 1.2533 / 0.03)² · 0.02 ≈ 140 rounds.
        let scattered = [90.0, 110.0, 90.0, 110.0, 90.0, 110.0, 100.0];
        let sd = relative_sd(&scattered);
        assert!((sd - 0.1).abs() < 1e-12, "{sd}");
        let r = resolution(&scattered, &scattered, 0.03).expect("seven rounds each");
        assert!((r.noise - 2.0 * MEDIAN_SE * sd * (2.0_f64 / 7.0).sqrt()).abs() < 1e-12);
        assert!((r.noise - 0.134).abs() < 1e-3, "{}", r.noise);
        assert_eq!(r.rounds_needed, 140);
        let said = r.describe(0.05, 0.03);
        assert!(said.contains("±13.4 %"), "{said}");
        assert!(said.contains("within that"), "{said}");
        assert!(said.contains("about 140 rounds"), "{said}");
        assert!(r.describe(0.5, 0.03).contains("beyond that"));
        // One round says nothing about scatter.
        assert!(resolution(&[1.0], &steady, 0.03).is_none());
        assert!(relative_sd(&[]).is_nan());
    }
}
