//! Number health: which numbers leave service and which come back, from what the providers
//! say, how often the numbers' calls are answered, operators and time. Pure.
//!
//! active → quarantined (no new pairs; live pairs are moved) → cooling off (no new pairs for a
//! while, so that someone who saved the number is not put through to a stranger at once) →
//! active; a number its provider no longer lists is retired from any state.

use std::collections::{HashMap, HashSet};

use crate::domain::{
    AnswerTally, Hold, HoldNote, HoldReason, NumberState, PoolNumber, UnixTime, VirtualNumber,
};

use super::{ChangeKind, PoolChange};

/// What makes a number unhealthy and how long it stays out: configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthRules {
    /// Connected calls whose end was reported, over the window, that a number needs before its
    /// answer rate counts (and the market as a whole, before any number is compared with it):
    /// so that one bad evening of a few calls quarantines nothing.
    pub min_calls: u64,
    /// A number is unhealthy when its answer rate is below this fraction of the market's.
    pub answer_ratio: f64,
    /// UTC days of answer tallies read (today included).
    pub answer_days: u32,
    /// How long a number quarantined for its answer rate stays out before it cools off (its
    /// tallies age out meanwhile; if it is still bad, the signal finds it again).
    pub quarantine_for: i64,
    /// How long a number cools off before it serves new pairs again.
    pub cooling_off: i64,
    /// At most this share of a market's numbers (all but retired ones) is quarantined by the
    /// automatic signals at once; beyond it, candidates are only reported, so that a bad signal
    /// (a provider's garbled listing, a carrier outage) cannot empty a pool.
    pub max_quarantined_share: f64,
}

impl Default for HealthRules {
    fn default() -> Self {
        HealthRules {
            min_calls: 50,
            answer_ratio: 0.5,
            answer_days: 3,
            quarantine_for: 3 * 24 * 3600,
            cooling_off: 7 * 24 * 3600,
            max_quarantined_share: 0.25,
        }
    }
}

/// Everything one market's judgement looks at.
pub struct Checkup<'a> {
    /// The market's pool as it now stands (after reconciliation).
    pub numbers: &'a [PoolNumber],
    /// Numbers their provider lists but says it holds (suspended, being ported…).
    pub out_of_service: &'a HashSet<VirtualNumber>,
    /// Answer tallies over the window, of the numbers that have any.
    pub tallies: &'a HashMap<VirtualNumber, AnswerTally>,
    pub now: UnixTime,
    pub rules: &'a HealthRules,
}

/// What a judgement decided.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    /// At most one per number, each to be written over the number as read.
    pub changes: Vec<PoolChange>,
    /// Numbers that look unhealthy but were left in service because the share cap is reached.
    pub held_back: usize,
    /// Answered ÷ attempted over the market's tallies, when it has enough calls to judge by.
    pub market_answer_rate: Option<f64>,
}

/// Judges the market's numbers:
/// - an active number its provider holds, or a cooling-off one it holds again → quarantined
///   (`provider_suspended`);
/// - an active number with at least `min_calls` whose answer rate is below `answer_ratio` × the
///   market's (itself over at least `min_calls`) → quarantined (`low_answer_rate`);
///   both within the share cap (numbers quarantined or cooling off after an automatic signal
///   count against it; at least one), provider-held ones first, then the worst rates;
/// - quarantined `provider_suspended` and in service again, or `low_answer_rate` for
///   `quarantine_for` → cooling off for `cooling_off`;
/// - cooling off and past its end → active. An operator's quarantine ends only by `release`.
pub fn judge(c: &Checkup<'_>) -> Verdict {
    let rules = c.rules;
    let mut changes = Vec::new();
    let cooling = |n: &PoolNumber, reason| PoolNumber {
        state: NumberState::CoolingOff,
        hold: Some(Hold {
            reason,
            since: c.now,
            until: Some(c.now + rules.cooling_off),
            note: n.hold.as_ref().and_then(|h| h.note.clone()),
        }),
        ..n.clone()
    };
    for n in c.numbers {
        let after = match (n.state, &n.hold) {
            (NumberState::Quarantined, Some(h))
                if h.reason == HoldReason::ProviderSuspended
                    && !c.out_of_service.contains(&n.number) =>
            {
                Some((ChangeKind::CoolingOff, cooling(n, h.reason)))
            }
            (NumberState::Quarantined, Some(h))
                if h.reason == HoldReason::LowAnswerRate
                    && h.since + rules.quarantine_for <= c.now =>
            {
                Some((ChangeKind::CoolingOff, cooling(n, h.reason)))
            }
            // A number its provider holds again goes back to quarantine below instead: both
            // changes in one run would race, and reactivation could win.
            (NumberState::CoolingOff, hold)
                if !c.out_of_service.contains(&n.number)
                    && hold
                        .as_ref()
                        .and_then(|h| h.until)
                        .is_none_or(|u| u <= c.now) =>
            {
                let active = PoolNumber {
                    state: NumberState::Active,
                    hold: None,
                    ..n.clone()
                };
                Some((ChangeKind::Reactivated, active))
            }
            _ => None,
        };
        if let Some((kind, after)) = after {
            changes.push(PoolChange {
                kind,
                before: Some(n.clone()),
                after,
            });
        }
    }

    let market = c
        .numbers
        .iter()
        .filter_map(|n| c.tallies.get(&n.number))
        .fold(AnswerTally::default(), |sum, t| AnswerTally {
            attempted: sum.attempted + t.attempted,
            answered: sum.answered + t.answered,
        });
    let market_answer_rate = (market.attempted >= rules.min_calls.max(1)).then(|| rate(&market));

    // Candidates: provider-held first, then the worst answer rates. Only active numbers (and
    // cooling-off ones their provider holds again) are taken out: a draining number is leaving
    // already, and its way back is an operator's.
    let mut candidates: Vec<(&PoolNumber, HoldReason, f64)> = Vec::new();
    for n in c.numbers {
        let held_again = n.state == NumberState::CoolingOff;
        if (n.state == NumberState::Active || held_again) && c.out_of_service.contains(&n.number) {
            candidates.push((n, HoldReason::ProviderSuspended, -1.0));
            continue;
        }
        let (Some(market_rate), Some(tally)) = (market_answer_rate, c.tallies.get(&n.number))
        else {
            continue;
        };
        let own = rate(tally);
        if n.state == NumberState::Active
            && tally.attempted >= rules.min_calls.max(1)
            && own < market_rate * rules.answer_ratio
        {
            candidates.push((n, HoldReason::LowAnswerRate, own));
        }
    }
    candidates.sort_by(|a, b| {
        a.2.total_cmp(&b.2)
            .then_with(|| a.0.number.cmp(&b.0.number))
    });
    let in_pool = c
        .numbers
        .iter()
        .filter(|n| n.state != NumberState::Retired)
        .count();
    // Out of service by an automatic signal: quarantined, or cooling off after one (a cooling
    // number is out too, so the cap is not freed while it cools).
    let automatic = c
        .numbers
        .iter()
        .filter(|n| {
            matches!(n.state, NumberState::Quarantined | NumberState::CoolingOff)
                && n.hold.as_ref().is_some_and(|h| {
                    matches!(
                        h.reason,
                        HoldReason::ProviderSuspended | HoldReason::LowAnswerRate
                    )
                })
        })
        .count();
    // At least one, so that a small market can still take out a number its provider holds.
    let cap = ((rules.max_quarantined_share * in_pool as f64).floor() as usize).max(1);
    // A cooling-off number held again is out of service already: it takes no room.
    let room = cap.saturating_sub(automatic);
    let (again, fresh): (Vec<_>, Vec<_>) = candidates
        .into_iter()
        .partition(|(n, _, _)| n.state == NumberState::CoolingOff);
    let held_back = fresh.len().saturating_sub(room);
    for (n, reason, _) in again.into_iter().chain(fresh.into_iter().take(room)) {
        changes.push(PoolChange {
            kind: ChangeKind::Quarantined,
            before: Some(n.clone()),
            after: quarantined(n, reason, None, c.now),
        });
    }
    Verdict {
        changes,
        held_back,
        market_answer_rate,
    }
}

/// A tally's answer rate; a number without calls is not judged unhealthy.
fn rate(t: &AnswerTally) -> f64 {
    t.rate().unwrap_or(1.0)
}

/// `n` quarantined at `now` for `reason`.
pub fn quarantined(
    n: &PoolNumber,
    reason: HoldReason,
    note: Option<HoldNote>,
    now: UnixTime,
) -> PoolNumber {
    PoolNumber {
        state: NumberState::Quarantined,
        hold: Some(Hold {
            reason,
            since: now,
            until: None,
            note,
        }),
        ..n.clone()
    }
}

/// Why an operator's change of a number's health cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HoldError {
    #[error("{0} is retired: its provider no longer lists it")]
    Retired(VirtualNumber),
    #[error("{0} is not quarantined or cooling off")]
    NotHeld(VirtualNumber),
    #[error("{0} is cooling off already: release it --at-once to serve now")]
    AlreadyCooling(VirtualNumber),
    #[error("{0} is already quarantined")]
    AlreadyQuarantined(VirtualNumber),
}

/// An operator's quarantine of `n`, with their note.
pub fn quarantine_by_operator(
    n: &PoolNumber,
    note: Option<HoldNote>,
    now: UnixTime,
) -> Result<PoolNumber, HoldError> {
    match n.state {
        NumberState::Retired => Err(HoldError::Retired(n.number.clone())),
        NumberState::Quarantined => Err(HoldError::AlreadyQuarantined(n.number.clone())),
        _ => Ok(quarantined(n, HoldReason::Operator, note, now)),
    }
}

/// An operator's release of a quarantined (or cooling-off) number: it cools off for
/// `cooling_off` from now, or with `at_once` serves new pairs again right away (for a number
/// quarantined by mistake, whose pairs are best not moved back and forth).
pub fn release(
    n: &PoolNumber,
    cooling_off: i64,
    at_once: bool,
    now: UnixTime,
) -> Result<PoolNumber, HoldError> {
    match n.state {
        NumberState::Quarantined | NumberState::CoolingOff if at_once => Ok(PoolNumber {
            state: NumberState::Active,
            hold: None,
            ..n.clone()
        }),
        NumberState::Quarantined => {
            let reason = n.hold.as_ref().map_or(HoldReason::Operator, |h| h.reason);
            Ok(PoolNumber {
                state: NumberState::CoolingOff,
                hold: Some(Hold {
                    reason,
                    since: now,
                    until: Some(now + cooling_off),
                    note: n.hold.as_ref().and_then(|h| h.note.clone()),
                }),
                ..n.clone()
            })
        }
        NumberState::CoolingOff => Err(HoldError::AlreadyCooling(n.number.clone())),
        NumberState::Retired => Err(HoldError::Retired(n.number.clone())),
        _ => Err(HoldError::NotHeld(n.number.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Capabilities;

    const NOW: UnixTime = 1_800_000_000;

    fn vn(i: usize) -> VirtualNumber {
        VirtualNumber::parse(&format!("+1415867{:04}", 1000 + i)).unwrap()
    }

    fn number(i: usize, state: NumberState, hold: Option<Hold>) -> PoolNumber {
        PoolNumber {
            number: vn(i),
            provider: "twilio".parse().unwrap(),
            market: "US".parse().unwrap(),
            capabilities: Capabilities::VOICE_AND_SMS,
            state,
            hold,
        }
    }

    fn active(count: usize) -> Vec<PoolNumber> {
        (0..count)
            .map(|i| number(i, NumberState::Active, None))
            .collect()
    }

    fn tally(attempted: u64, answered: u64) -> AnswerTally {
        AnswerTally {
            attempted,
            answered,
        }
    }

    fn verdict(
        numbers: &[PoolNumber],
        held: &[usize],
        tallies: &[(usize, AnswerTally)],
        now: UnixTime,
    ) -> Verdict {
        let out_of_service = held.iter().map(|&i| vn(i)).collect();
        let tallies = tallies.iter().map(|(i, t)| (vn(*i), *t)).collect();
        judge(&Checkup {
            numbers,
            out_of_service: &out_of_service,
            tallies: &tallies,
            now,
            rules: &HealthRules::default(),
        })
    }

    fn quarantined_numbers(v: &Verdict) -> Vec<(VirtualNumber, HoldReason)> {
        v.changes
            .iter()
            .filter(|c| c.kind == ChangeKind::Quarantined)
            .map(|c| {
                (
                    c.after.number.clone(),
                    c.after.hold.as_ref().unwrap().reason,
                )
            })
            .collect()
    }

    #[test]
    fn a_number_answered_far_less_than_the_market_is_quarantined_once_it_has_enough_calls() {
        let pool = active(8);
        let mut tallies: Vec<(usize, AnswerTally)> = (1..8).map(|i| (i, tally(100, 80))).collect();
        // Number 0: 60 calls, 10 answered (17 % against the market's ~73 %).
        tallies.push((0, tally(60, 10)));
        let v = verdict(&pool, &[], &tallies, NOW);
        assert_eq!(
            quarantined_numbers(&v),
            [(vn(0), HoldReason::LowAnswerRate)]
        );
        assert!(v.market_answer_rate.unwrap() > 0.7);
        let after = &v.changes[0].after;
        assert_eq!(after.state, NumberState::Quarantined);
        assert_eq!(after.hold.as_ref().unwrap().since, NOW);

        // The same rate over too few calls is one bad evening: nothing.
        tallies.pop();
        tallies.push((0, tally(20, 2)));
        assert!(verdict(&pool, &[], &tallies, NOW).changes.is_empty());

        // A market without enough calls judges nobody.
        let few: Vec<_> = (0..8).map(|i| (i, tally(5, 0))).collect();
        let v = verdict(&pool, &[], &few, NOW);
        assert!(v.changes.is_empty() && v.market_answer_rate.is_none());
    }

    #[test]
    fn automatic_quarantines_stop_at_the_share_cap_provider_held_first_then_worst_rates() {
        let pool = active(8);
        // Everyone looks bad but number 7: the cap (25 % of 8) quarantines two.
        let mut tallies: Vec<(usize, AnswerTally)> =
            (0..7).map(|i| (i, tally(100, 5 + i as u64))).collect();
        tallies.push((7, tally(10_000, 9_000)));
        let v = verdict(&pool, &[5], &tallies, NOW);
        assert_eq!(
            quarantined_numbers(&v),
            [
                (vn(5), HoldReason::ProviderSuspended),
                (vn(0), HoldReason::LowAnswerRate)
            ]
        );
        assert_eq!(v.held_back, 5);

        // Already two out automatically: no room. An operator's quarantine does not count.
        let mut pool = active(8);
        pool[1] = quarantined(&pool[1], HoldReason::LowAnswerRate, None, NOW - 10);
        pool[2] = quarantined(&pool[2], HoldReason::ProviderSuspended, None, NOW - 10);
        pool[3] = quarantined(&pool[3], HoldReason::Operator, None, NOW - 10);
        let v = verdict(&pool, &[2, 5], &tallies, NOW);
        assert_eq!(quarantined_numbers(&v), []);
        assert!(v.held_back >= 1);
    }

    #[test]
    fn cooling_numbers_hold_the_cap_a_small_market_may_still_take_one_out_and_a_held_again_number_goes_back(
    ) {
        // Two numbers of eight cooling off after automatic quarantines: the cap (2) is full, so
        // the worst rate stays in service; a cooling number its provider holds again goes
        // back to quarantine all the same.
        let cooling = |i: usize| {
            release(
                &quarantined(
                    &number(i, NumberState::Active, None),
                    HoldReason::LowAnswerRate,
                    None,
                    NOW - 10,
                ),
                3600,
                false,
                NOW - 5,
            )
            .unwrap()
        };
        let mut pool = active(8);
        pool[1] = cooling(1);
        pool[2] = cooling(2);
        let mut tallies: Vec<(usize, AnswerTally)> = (3..8).map(|i| (i, tally(100, 90))).collect();
        tallies.push((0, tally(100, 5)));
        let v = verdict(&pool, &[2], &tallies, NOW);
        assert_eq!(
            quarantined_numbers(&v),
            [(vn(2), HoldReason::ProviderSuspended)]
        );
        assert_eq!(v.held_back, 1);

        // Three numbers: 25 % floors to none, but one may always go.
        let v = verdict(&active(3), &[1], &[], NOW);
        assert_eq!(
            quarantined_numbers(&v),
            [(vn(1), HoldReason::ProviderSuspended)]
        );
        // A draining number is leaving already: never quarantined automatically.
        let mut pool = active(8);
        pool[4].state = NumberState::Draining;
        assert!(verdict(&pool, &[4], &[], NOW).changes.is_empty());
    }

    #[test]
    fn a_number_held_again_as_its_cooling_ends_goes_back_to_quarantine_only() {
        // Reactivating and quarantining it in one run would race on one version: it takes
        // the one change, never a way back into service.
        let mut pool = active(8);
        pool[3] = release(
            &quarantined(&pool[3], HoldReason::LowAnswerRate, None, NOW - 7200),
            3600,
            false,
            NOW - 7200,
        )
        .unwrap();
        let v = verdict(&pool, &[3], &[], NOW);
        let kinds: Vec<_> = v.changes.iter().map(|c| (c.kind, c.after.state)).collect();
        assert_eq!(kinds, [(ChangeKind::Quarantined, NumberState::Quarantined)]);
        // Not held: its cooling ended, it serves again.
        let v = verdict(&pool, &[], &[], NOW);
        let kinds: Vec<_> = v.changes.iter().map(|c| (c.kind, c.after.state)).collect();
        assert_eq!(kinds, [(ChangeKind::Reactivated, NumberState::Active)]);
    }

    #[test]
    fn quarantine_cools_off_then_serves_again_and_an_operators_waits_for_release() {
        let rules = HealthRules::default();
        let mut pool = active(8);
        pool[0] = quarantined(&pool[0], HoldReason::ProviderSuspended, None, NOW - 60);
        pool[1] = quarantined(&pool[1], HoldReason::LowAnswerRate, None, NOW - 60);
        pool[2] = quarantined(&pool[2], HoldReason::Operator, None, NOW - 10 * 86_400);
        // Number 0 is still held by its provider; number 1 has not served its quarantine.
        assert!(verdict(&pool, &[0], &[], NOW).changes.is_empty());

        // Provider lets 0 go; 1's quarantine ran out: both cool off. 2 stays.
        let later = NOW - 60 + rules.quarantine_for;
        let v = verdict(&pool, &[], &[], later);
        let kinds: Vec<_> = v
            .changes
            .iter()
            .map(|c| (c.after.number.clone(), c.kind, c.after.state))
            .collect();
        assert_eq!(
            kinds,
            [
                (vn(0), ChangeKind::CoolingOff, NumberState::CoolingOff),
                (vn(1), ChangeKind::CoolingOff, NumberState::CoolingOff),
            ]
        );
        let hold = v.changes[0].after.hold.clone().unwrap();
        assert_eq!(hold.until, Some(later + rules.cooling_off));

        // Cooling off until its end, then active with no hold.
        pool[0] = v.changes[0].after.clone();
        let until = hold.until.unwrap();
        assert!(verdict(&pool[..1], &[], &[], until - 1).changes.is_empty());
        let v = verdict(&pool[..1], &[], &[], until);
        assert_eq!(v.changes[0].kind, ChangeKind::Reactivated);
        assert_eq!(
            (v.changes[0].after.state, v.changes[0].after.hold.clone()),
            (NumberState::Active, None)
        );
    }

    #[test]
    fn operators_quarantine_and_release_with_or_without_cooling_off() {
        let n = number(0, NumberState::Active, None);
        let note: HoldNote = "carrier spam label, ticket 4411".parse().unwrap();
        let q = quarantine_by_operator(&n, Some(note.clone()), NOW).unwrap();
        assert_eq!(q.state, NumberState::Quarantined);
        assert_eq!(q.hold.as_ref().unwrap().reason, HoldReason::Operator);
        assert_eq!(
            quarantine_by_operator(&q, None, NOW),
            Err(HoldError::AlreadyQuarantined(vn(0)))
        );
        let cooling = release(&q, 3600, false, NOW + 5).unwrap();
        assert_eq!(cooling.state, NumberState::CoolingOff);
        let hold = cooling.hold.clone().unwrap();
        assert_eq!((hold.until, hold.note), (Some(NOW + 3605), Some(note)));
        let at_once = release(&q, 3600, true, NOW + 5).unwrap();
        assert_eq!((at_once.state, at_once.hold), (NumberState::Active, None));
        assert_eq!(
            release(&n, 3600, false, NOW),
            Err(HoldError::NotHeld(vn(0)))
        );
        let retired = number(1, NumberState::Retired, None);
        assert_eq!(
            quarantine_by_operator(&retired, None, NOW),
            Err(HoldError::Retired(vn(1)))
        );
    }

    #[test]
    fn notes_are_short_printable_and_never_a_phone_number() {
        assert!("spam reports from carrier".parse::<HoldNote>().is_ok());
        assert!("call +91 98123 45678 back".parse::<HoldNote>().is_err());
        assert!(
            "call ٩٨١٢٣٤٥٦٧٨".parse::<HoldNote>().is_err(),
            "Arabic-Indic digits"
        );
        assert!(
            "call ９８１２３４５６".parse::<HoldNote>().is_err(),
            "full-width digits"
        );
        assert!("".parse::<HoldNote>().is_err());
        assert!("a\nb".parse::<HoldNote>().is_err());
        assert!("x".repeat(121).parse::<HoldNote>().is_err());
    }
}
