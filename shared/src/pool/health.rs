//! How healthy a market's pool is: how many numbers serve, how many more contacts its busiest
//! person can get, and how evenly routes spread over the numbers.

use std::collections::HashMap;

use crate::domain::{Capabilities, Market, NumberState, PoolNumber, VirtualNumber};

/// One market's pool at a glance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolHealth {
    pub active: usize,
    pub draining: usize,
    pub quarantined: usize,
    pub cooling_off: usize,
    pub retired: usize,
    /// Active numbers with the capabilities new contacts need.
    pub eligible: usize,
    /// The most live contacts one person of the market held lately (the policy's bound: a person
    /// can dial each number in at most one live contact).
    pub peak_live_contacts: u32,
    /// The fewest numbers the market's calls need within what a number may carry
    /// ([`super::capacity_bound`]); 0 where no capacity is configured or no calls are known.
    pub capacity_bound: u32,
    /// `eligible − max(peak_live_contacts, capacity_bound)`: how many numbers are left before
    /// either bound binds (the busiest person has no number left, or numbers carry more calls
    /// than they may). Negative when the pool is already short.
    pub headroom: i64,
}

/// The health of `market`'s pool, given the recorded peak of live contacts per person and the
/// numbers its calls need.
pub fn health(
    market: &Market,
    pool: &[PoolNumber],
    needs: Capabilities,
    peak_live_contacts: u32,
    capacity_bound: u32,
) -> PoolHealth {
    let in_market = || pool.iter().filter(|v| &v.market == market);
    let count = |state| in_market().filter(|v| v.state == state).count();
    let eligible = in_market()
        .filter(|v| v.eligible_for(market, needs))
        .count();
    PoolHealth {
        active: count(NumberState::Active),
        draining: count(NumberState::Draining),
        quarantined: count(NumberState::Quarantined),
        cooling_off: count(NumberState::CoolingOff),
        retired: count(NumberState::Retired),
        eligible,
        peak_live_contacts,
        capacity_bound,
        headroom: eligible as i64 - i64::from(peak_live_contacts.max(capacity_bound)),
    }
}

/// The number that carries the most routes of a sample, and its share of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteShare {
    pub number: VirtualNumber,
    /// Routes of the sample on `number`.
    pub routes: usize,
    /// Routes in the sample.
    pub sampled: usize,
}

impl RouteShare {
    /// `routes / sampled`, in 0..=1.
    pub fn share(&self) -> f64 {
        self.routes as f64 / self.sampled as f64
    }
}

/// The busiest number of a sample of live routes (one entry per route), or `None` for an empty
/// sample. Ties go to the smallest number, so the answer does not depend on sample order.
pub fn busiest_share<'a>(
    routes: impl IntoIterator<Item = &'a VirtualNumber>,
) -> Option<RouteShare> {
    let mut counts: HashMap<&VirtualNumber, usize> = HashMap::new();
    let mut sampled = 0;
    for number in routes {
        *counts.entry(number).or_default() += 1;
        sampled += 1;
    }
    counts
        .into_iter()
        .max_by(|(a, x), (b, y)| x.cmp(y).then_with(|| b.cmp(a)))
        .map(|(number, routes)| RouteShare {
            number: number.clone(),
            routes,
            sampled,
        })
}

/// How many numbers to buy now: enough to bring `headroom` back up to `min_headroom`, within
/// what this run (`run_left`) and this month (`month_left`) still allow.
pub fn purchases_wanted(headroom: i64, min_headroom: u32, run_left: u32, month_left: u32) -> u32 {
    let short = i64::from(min_headroom).saturating_sub(headroom).max(0);
    u32::try_from(short)
        .unwrap_or(u32::MAX)
        .min(run_left)
        .min(month_left)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Provider;
    use proptest::prelude::*;

    fn vn(i: usize) -> VirtualNumber {
        VirtualNumber::parse(&format!("+91114000{:04}", 1000 + i)).unwrap()
    }

    fn number(i: usize, market: &str, caps: Capabilities, state: NumberState) -> PoolNumber {
        PoolNumber {
            number: vn(i),
            provider: "twilio".parse::<Provider>().unwrap(),
            market: market.parse().unwrap(),
            capabilities: caps,
            state,
            hold: None,
        }
    }

    #[test]
    fn headroom_counts_only_active_numbers_with_the_needed_capabilities() {
        let voice_only = Capabilities {
            voice: true,
            sms: false,
        };
        let both = Capabilities::VOICE_AND_SMS;
        let pool = [
            number(0, "IN", both, NumberState::Active),
            number(1, "IN", both, NumberState::Active),
            number(2, "IN", voice_only, NumberState::Active),
            number(3, "IN", both, NumberState::Draining),
            number(4, "IN", both, NumberState::Retired),
            number(5, "US", both, NumberState::Active),
        ];
        let h = health(&"IN".parse().unwrap(), &pool, both, 3, 0);
        assert_eq!(
            h,
            PoolHealth {
                active: 3,
                draining: 1,
                quarantined: 0,
                cooling_off: 0,
                retired: 1,
                eligible: 2,
                peak_live_contacts: 3,
                capacity_bound: 0,
                headroom: -1,
            }
        );
    }

    #[test]
    fn headroom_runs_out_at_whichever_bound_binds_first() {
        let both = Capabilities::VOICE_AND_SMS;
        let pool: Vec<PoolNumber> = (0..10)
            .map(|i| number(i, "IN", both, NumberState::Active))
            .collect();
        let market = "IN".parse().unwrap();
        // People need 3 numbers, calls 8: 2 left.
        assert_eq!(health(&market, &pool, both, 3, 8).headroom, 2);
        // Calls need none known: the person bound alone.
        assert_eq!(health(&market, &pool, both, 3, 0).headroom, 7);
        // Calls need more than the pool: short by 4.
        assert_eq!(health(&market, &pool, both, 3, 14).headroom, -4);
    }

    #[test]
    fn a_voice_only_market_counts_voice_only_numbers_and_a_voice_and_sms_one_does_not() {
        let voice_only = Capabilities {
            voice: true,
            sms: false,
        };
        let both = Capabilities::VOICE_AND_SMS;
        let pool = [
            number(0, "IN", voice_only, NumberState::Active),
            number(1, "IN", voice_only, NumberState::Active),
            number(2, "IN", both, NumberState::Active),
            number(3, "IN", voice_only, NumberState::Draining),
        ];
        let market = "IN".parse().unwrap();
        let voice = health(&market, &pool, voice_only, 1, 0);
        assert_eq!((voice.eligible, voice.headroom), (3, 2));
        let texts_too = health(&market, &pool, both, 1, 0);
        assert_eq!((texts_too.eligible, texts_too.headroom), (1, 0));
    }

    #[test]
    fn busiest_share_names_the_number_with_most_routes() {
        let sample = [vn(1), vn(2), vn(2), vn(3)];
        let busiest = busiest_share(&sample).unwrap();
        assert_eq!(busiest.number, vn(2));
        assert_eq!((busiest.routes, busiest.sampled), (2, 4));
        assert_eq!(busiest.share(), 0.5);
        assert_eq!(busiest_share(&[]), None);
    }

    #[test]
    fn purchases_fill_the_shortfall_within_both_caps() {
        assert_eq!(purchases_wanted(2, 5, 10, 10), 3);
        assert_eq!(purchases_wanted(-4, 5, 10, 10), 9);
        assert_eq!(purchases_wanted(-4, 5, 2, 10), 2);
        assert_eq!(purchases_wanted(-4, 5, 10, 1), 1);
        assert_eq!(purchases_wanted(5, 5, 10, 10), 0);
        assert_eq!(purchases_wanted(9, 5, 10, 10), 0);
    }

    proptest! {
        #[test]
        fn purchases_never_exceed_a_cap_nor_overshoot_the_minimum(
            headroom in -1000i64..1000, min in 0u32..100, run in 0u32..20, month in 0u32..50
        ) {
            let n = purchases_wanted(headroom, min, run, month);
            prop_assert!(n <= run && n <= month);
            prop_assert!(headroom + i64::from(n) <= i64::from(min).max(headroom));
            if n < run && n < month {
                prop_assert!(headroom + i64::from(n) >= i64::from(min));
            }
        }

        #[test]
        fn busiest_share_is_a_fraction_and_ignores_order(
            mut picks in proptest::collection::vec(0usize..8, 1..60)
        ) {
            let sample: Vec<VirtualNumber> = picks.iter().map(|&i| vn(i)).collect();
            let a = busiest_share(&sample).unwrap();
            picks.reverse();
            let reversed: Vec<VirtualNumber> = picks.iter().map(|&i| vn(i)).collect();
            prop_assert_eq!(busiest_share(&reversed), Some(a.clone()));
            prop_assert!(a.share() > 0.0 && a.share() <= 1.0);
            prop_assert!(sample.iter().all(|n| sample.iter().filter(|m| *m == n).count() <= a.routes));
        }
    }
}
