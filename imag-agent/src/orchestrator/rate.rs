//! Who may wake how often, as pure decisions on a clock that is an input: a token bucket per
//! source address (`[limits] wakes_per_source`) and one for all sources (`wakes_per_second`).
//! A packet that would wake a cold host takes one token from both; a source short of either is
//! refused without a wake. `should_log` keeps refusals to one log line per source per interval
//! under a scan. The shell (`governor.rs`) asks these on every held packet for a cold host.

use std::{collections::HashMap, net::Ipv4Addr, time::Duration};

use crate::config::WakeRate;

/// At most one log line per refused source in this interval.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

fn log_interval_ns() -> u64 {
    crate::clock::saturating_ns(LOG_INTERVAL)
}

/// A token bucket: `count` tokens, refilled evenly over `per`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Bucket {
    tokens: f64,
    at_ns: u64,
}

impl Bucket {
    fn full(rate: WakeRate, now_ns: u64) -> Bucket {
        Bucket {
            tokens: f64::from(rate.count),
            at_ns: now_ns,
        }
    }

    fn refill(&mut self, rate: WakeRate, now_ns: u64) {
        let elapsed = now_ns.saturating_sub(self.at_ns) as f64;
        let per_ns = rate.per.as_nanos() as f64 / f64::from(rate.count);
        self.tokens = (self.tokens + elapsed / per_ns).min(f64::from(rate.count));
        self.at_ns = now_ns.max(self.at_ns);
    }

    fn is_full(&self, rate: WakeRate) -> bool {
        self.tokens >= f64::from(rate.count)
    }
}

/// Which bucket was empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    Source,
    Global,
}

/// The wake rate limits of one network.
#[derive(Debug, Default)]
pub struct RateLimits {
    per_source: Option<WakeRate>,
    global: Option<WakeRate>,
    sources: HashMap<Ipv4Addr, Bucket>,
    all: Option<Bucket>,
    logged: HashMap<Ipv4Addr, u64>,
}

impl RateLimits {
    pub fn new(per_source: Option<WakeRate>, per_second: Option<usize>) -> RateLimits {
        RateLimits {
            per_source,
            global: per_second.map(|n| WakeRate {
                count: u32::try_from(n).unwrap_or(u32::MAX),
                per: Duration::from_secs(1),
            }),
            ..RateLimits::default()
        }
    }

    pub fn enabled(&self) -> bool {
        self.per_source.is_some() || self.global.is_some()
    }

    /// Takes a wake token for `src` at `now_ns`, or says which bucket is empty (taking nothing).
    pub fn admit(&mut self, src: Ipv4Addr, now_ns: u64) -> Result<(), Refused> {
        if let Some(rate) = self.global {
            let all = self.all.get_or_insert_with(|| Bucket::full(rate, now_ns));
            all.refill(rate, now_ns);
            if all.tokens < 1.0 {
                return Err(Refused::Global);
            }
        }
        if let Some(rate) = self.per_source {
            let bucket = self
                .sources
                .entry(src)
                .or_insert_with(|| Bucket::full(rate, now_ns));
            bucket.refill(rate, now_ns);
            if bucket.tokens < 1.0 {
                return Err(Refused::Source);
            }
            bucket.tokens -= 1.0;
        }
        if let Some(all) = self.all.as_mut() {
            all.tokens -= 1.0;
        }
        Ok(())
    }

    /// Whether a refusal of `src` at `now_ns` should be logged (once per [`LOG_INTERVAL`]).
    pub fn should_log(&mut self, src: Ipv4Addr, now_ns: u64) -> bool {
        let interval = log_interval_ns();
        match self.logged.get(&src) {
            Some(&at) if now_ns.saturating_sub(at) < interval => false,
            _ => {
                self.logged.insert(src, now_ns);
                true
            }
        }
    }

    /// Forgets sources whose bucket has refilled and whose last log line is old, so that a scan
    /// from many addresses does not keep memory.
    pub fn prune(&mut self, now_ns: u64) {
        if let Some(rate) = self.per_source {
            self.sources.retain(|_, b| {
                b.refill(rate, now_ns);
                !b.is_full(rate)
            });
        }
        let interval = log_interval_ns();
        self.logged
            .retain(|_, at| now_ns.saturating_sub(*at) < interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    #[allow(
        clippy::unnecessary_wraps,
        reason = "passed where an Option is configured"
    )]
    fn per_min(count: u32) -> Option<WakeRate> {
        Some(WakeRate {
            count,
            per: Duration::from_mins(1),
        })
    }

    #[test]
    fn a_source_gets_its_burst_then_one_token_per_refill_period() {
        let mut r = RateLimits::new(per_min(5), None);
        let admitted = (0..50).filter(|_| r.admit(A, 100 * S).is_ok()).count();
        assert_eq!(admitted, 5, "a sweep of 50 starts the bucket's size");
        assert_eq!(r.admit(B, 100 * S), Ok(()), "other sources have their own");
        assert_eq!(r.admit(A, 111 * S), Err(Refused::Source), "11 s: not yet");
        assert_eq!(r.admit(A, 112 * S), Ok(()), "one token per 12 s");
        assert_eq!(r.admit(A, 112 * S), Err(Refused::Source));
    }

    #[test]
    fn the_global_bucket_bounds_all_sources_and_costs_nothing_when_refused() {
        let mut r = RateLimits::new(per_min(1), Some(2));
        assert_eq!(r.admit(A, S), Ok(()));
        assert_eq!(r.admit(A, S), Err(Refused::Source));
        assert_eq!(r.admit(B, S), Ok(()), "A's refusal took no global token");
        assert_eq!(r.admit(Ipv4Addr::new(10, 0, 0, 3), S), Err(Refused::Global));
        assert_eq!(r.admit(Ipv4Addr::new(10, 0, 0, 3), 2 * S), Ok(()));
    }

    #[test]
    fn refusals_are_logged_once_per_interval_and_full_buckets_forgotten() {
        let mut r = RateLimits::new(per_min(1), None);
        assert!(r.should_log(A, S));
        assert!(!r.should_log(A, 5 * S));
        assert!(r.should_log(B, 5 * S));
        assert!(r.should_log(A, 11 * S));
        let _ = r.admit(A, S);
        r.prune(30 * S);
        assert_eq!(r.sources.len(), 1, "A's bucket is still refilling");
        r.prune(100 * S);
        assert!(r.sources.is_empty() && r.logged.is_empty());
        assert!(!RateLimits::new(None, None).enabled());
    }
}
