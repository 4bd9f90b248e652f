//! Which trace stands for the generator: the bound (`workload::ideal_saving`) of each of a
//! few seeds, and the seed whose bound is their median, the trace bench's default
//! (`--trace-seed` picks another).

use super::workload::{self, TraceParams};

/// Seeds whose bounds the report shows beside the replayed trace's.
pub const OTHER_SEEDS: std::ops::RangeInclusive<u64> = 1..=12;

/// Per seed: (seed, share saved at 0 s, at 1 s).
pub type Bounds = Vec<(u64, f64, f64)>;

/// [`super::TraceRun::ideal_by_seed`]: the bound for each of [`OTHER_SEEDS`] (generated, not
/// replayed).
pub fn ideal_by_seed(params: &TraceParams) -> Bounds {
    OTHER_SEEDS
        .filter_map(|seed| {
            let trace = workload::generate(&TraceParams { seed, ..*params }).ok()?;
            Some((
                seed,
                workload::ideal_saving(&trace, 0.0),
                workload::ideal_saving(&trace, 1.0),
            ))
        })
        .collect()
}

/// The seed of `by_seed` ([`ideal_by_seed`]) whose bound at 0 s is the median (the lower of
/// the two middle ones of an even count, as the report states the median; ties by seed).
pub fn median_seed(by_seed: &[(u64, f64, f64)]) -> Option<u64> {
    let mut sorted = by_seed.to_vec();
    sorted.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    sorted.get(sorted.len().checked_sub(1)? / 2).map(|s| s.0)
}

#[cfg(test)]
mod tests {
    use super::{
        super::{TraceOptions, plan},
        *,
    };

    #[test]
    fn the_default_seed_is_the_one_whose_trace_allows_the_median_saving() {
        let by_seed = [
            (1, 0.70, 0.6),
            (2, 0.95, 0.9),
            (3, 0.93, 0.9),
            (4, 0.87, 0.8),
        ];
        // Sorted by the bound at 0 s: 1, 4, 3, 2; the lower middle one of four is 4.
        assert_eq!(median_seed(&by_seed), Some(4));
        assert_eq!(median_seed(&by_seed[..3]), Some(3));
        assert_eq!(
            median_seed(&[(7, 0.5, 0.5), (5, 0.5, 0.5)]),
            Some(5),
            "ties by seed"
        );
        assert_eq!(median_seed(&[]), None);
        let opts = |seed| TraceOptions {
            secs: 240.0,
            hosts: 40,
            seed,
            hours: 2.0,
            max_rps: 20.0,
            policies: String::new(),
        };
        let chosen = plan(&opts(None)).unwrap().params.seed;
        let bounds = ideal_by_seed(&plan(&opts(Some(1))).unwrap().params);
        assert_eq!(Some(chosen), median_seed(&bounds));
        assert_eq!(
            plan(&opts(Some(11))).unwrap().params.seed,
            11,
            "a given seed is kept"
        );
    }
}
