//! What carriers and providers let one number carry: concurrent calls (Exotel sells channels per
//! number; carriers cap simultaneous calls) and calls per hour (more gets a number flagged as
//! spam). A market's pool must be large enough for its people, the person bound (nobody dials
//! one number in two live orders), and for its calls, the capacity bound; whichever is larger.
//!
//! The policy spreads pairs evenly over the eligible numbers (rendezvous hashing, no shared
//! counter), so every number carries about the market's calls over the pool size: the capacity
//! bound is the pool size at which that share fits the cap at the busiest hour.

use std::collections::HashMap;

use crate::domain::Market;

/// What one number of a market may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallCapacity {
    /// Calls in progress at once.
    pub concurrent: u32,
    /// Calls started in one hour.
    pub per_hour: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapacityError {
    #[error("call capacity entry {0} must look like `IN:4/120` (market:concurrent calls/calls per hour, both at least 1)")]
    Malformed(usize),
    #[error("call capacity names market {0} twice")]
    Twice(Market),
}

/// Parses per-market capacities, e.g. `IN:4/120,US:20/600`; empty means none (no capacity
/// bound anywhere). An error names the entry by its place, never by its text.
pub fn parse_capacities(text: &str) -> Result<HashMap<Market, CallCapacity>, CapacityError> {
    let mut out = HashMap::new();
    let entries = text.split(',').map(str::trim).filter(|e| !e.is_empty());
    for (place, entry) in entries.enumerate() {
        let bad = || CapacityError::Malformed(place + 1);
        let (market, limits) = entry.split_once(':').ok_or_else(bad)?;
        let (concurrent, per_hour) = limits.split_once('/').ok_or_else(bad)?;
        let market: Market = market.trim().parse().map_err(|_| bad())?;
        let number = |s: &str| {
            s.trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(bad)
        };
        let capacity = CallCapacity {
            concurrent: number(concurrent)?,
            per_hour: number(per_hour)?,
        };
        if out.insert(market.clone(), capacity).is_some() {
            return Err(CapacityError::Twice(market));
        }
    }
    Ok(out)
}

/// A market's calls, as pool refresh estimates them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallLoad {
    /// Calls a day on the market's numbers.
    pub calls_per_day: f64,
    /// The share of a day's calls its busiest hour carries (a flat day: 1/24).
    pub peak_hour_share: f64,
    /// The mean length of a call, in seconds.
    pub mean_call_seconds: f64,
}

impl CallLoad {
    /// Calls started in the busiest hour, over the whole market.
    pub fn peak_hour_calls(&self) -> f64 {
        self.calls_per_day.max(0.0) * self.peak_hour_share.clamp(0.0, 1.0)
    }

    /// Calls in progress at once in the busiest hour, over the whole market (Little's law).
    pub fn peak_concurrent_calls(&self) -> f64 {
        self.peak_hour_calls() * self.mean_call_seconds.max(0.0) / 3600.0
    }
}

/// The most concurrent calls a number may carry on average and still stay within `cap` at a
/// busy moment: calls in progress on one number are Poisson around their mean m, so m plus
/// three standard deviations (3√m) must fit.
pub fn safe_mean_concurrent(cap: u32) -> f64 {
    let root = (-3.0 + (9.0 + 4.0 * f64::from(cap)).sqrt()) / 2.0;
    root * root
}

/// The fewest numbers that keep every number of an evenly spread pool within `cap` at `load`'s
/// busiest hour: calls per hour at most `per_hour`, and concurrent calls within `concurrent`
/// with the margin of [`safe_mean_concurrent`]. 0 without calls.
pub fn capacity_bound(load: &CallLoad, cap: CallCapacity) -> u32 {
    let hourly = load.peak_hour_calls() / f64::from(cap.per_hour);
    let concurrent = load.peak_concurrent_calls() / safe_mean_concurrent(cap.concurrent);
    let bound = hourly.max(concurrent).ceil();
    if bound.is_finite() && bound > 0.0 {
        bound.min(f64::from(u32::MAX)) as u32
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacities_parse_per_market_and_refuse_what_is_not_one() {
        let caps = parse_capacities("IN:4/120, US:20/600").unwrap();
        assert_eq!(
            caps[&"IN".parse::<Market>().unwrap()],
            CallCapacity {
                concurrent: 4,
                per_hour: 120
            }
        );
        assert_eq!(caps.len(), 2);
        assert!(parse_capacities("").unwrap().is_empty());
        for bad in [
            "IN",
            "IN:4",
            "IN:0/10",
            "IN:4/-1",
            "india:4/10",
            "IN:4/x",
            "+919810000001:1/1",
        ] {
            let e = parse_capacities(bad).unwrap_err();
            assert!(matches!(e, CapacityError::Malformed(_)), "{bad}");
            assert!(!e.to_string().contains("9810000001"), "{e}");
        }
        assert_eq!(
            parse_capacities("IN:1/1,IN:2/2").unwrap_err(),
            CapacityError::Twice("IN".parse().unwrap())
        );
    }

    #[test]
    fn the_safe_mean_leaves_three_standard_deviations_below_the_cap() {
        for cap in [1u32, 2, 4, 10, 30, 100] {
            let m = safe_mean_concurrent(cap);
            assert!((m + 3.0 * m.sqrt() - f64::from(cap)).abs() < 1e-9, "{cap}");
        }
        // 4 on average, 3 × 2 above it: 10.
        assert!((safe_mean_concurrent(10) - 4.0).abs() < 1e-9);
    }

    #[test]
    fn the_bound_is_what_the_busier_limit_needs() {
        // 3.3 M calls a day, a tenth in the busiest hour, 60 s each: 330 000 calls in that
        // hour, 5 500 at once.
        let load = CallLoad {
            calls_per_day: 3_300_000.0,
            peak_hour_share: 0.1,
            mean_call_seconds: 60.0,
        };
        assert!((load.peak_concurrent_calls() - 5_500.0).abs() < 1e-6);
        // 600 an hour each needs 550 numbers; 10 at once (3.7 on average) needs more.
        let by_concurrency = capacity_bound(
            &load,
            CallCapacity {
                concurrent: 10,
                per_hour: 600,
            },
        );
        assert_eq!(
            by_concurrency,
            (5_500.0 / safe_mean_concurrent(10)).ceil() as u32
        );
        assert!(by_concurrency > 550);
        // With ample channels the hourly limit binds.
        let by_rate = capacity_bound(
            &load,
            CallCapacity {
                concurrent: 1_000,
                per_hour: 600,
            },
        );
        assert_eq!(by_rate, 550);
        let quiet = CallLoad {
            calls_per_day: 0.0,
            ..load
        };
        assert_eq!(
            capacity_bound(
                &quiet,
                CallCapacity {
                    concurrent: 1,
                    per_hour: 1
                }
            ),
            0
        );
    }
}
