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
}
