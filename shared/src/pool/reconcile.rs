//! Reconciliation: what the providers list against what the market's pool holds.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::domain::{
    Capabilities, Hold, HoldReason, Market, NumberState, PoolNumber, Provider, UnixTime,
    VirtualNumber,
};

/// A number a provider lists as rented to us, with what it can carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedNumber {
    pub number: VirtualNumber,
    pub capabilities: Capabilities,
    /// The country the provider files the number under, if it says; else the numbering plan's.
    pub country: Option<Market>,
    /// `false` when the provider says it holds the number (suspended, being ported…): a
    /// signal of number health, which quarantines it.
    pub in_service: bool,
}

impl ListedNumber {
    /// The market the number serves: the provider's word first, then the numbering plan.
    pub fn market(&self) -> Option<Market> {
        self.country
            .clone()
            .or_else(|| self.number.country().cloned())
    }

    fn serves(&self, market: &Market) -> bool {
        self.market().as_ref() == Some(market)
    }
}

/// Everything one provider listed this run, in every market.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub numbers: Vec<ListedNumber>,
    /// Entries that could not be read (not E.164, no capabilities…). When there are any, the
    /// listing is incomplete: a number's absence proves nothing, and none of the provider's
    /// numbers is retired on its word.
    pub unreadable: usize,
    /// `None` where the listing's absence proves a number gone. A listing paged by position may
    /// skip a number while others are bought or released, so its absences prove nothing: then
    /// `Some`, the numbers a look-up of each alone found gone, the only ones it retires.
    pub proven_gone: Option<BTreeSet<VirtualNumber>>,
}

impl Listing {
    pub fn is_complete(&self) -> bool {
        self.unreadable == 0
    }

    /// Whether the listing proves that `number`, which it lacks, is gone.
    fn proves_gone(&self, number: &VirtualNumber) -> bool {
        self.is_complete()
            && self
                .proven_gone
                .as_ref()
                .is_none_or(|gone| gone.contains(number))
    }
}

/// Entries as a provider's reader made them out: `None`, an entry it could not read, is
/// counted in [`Listing::unreadable`], never guessed.
impl Extend<Option<ListedNumber>> for Listing {
    fn extend<I: IntoIterator<Item = Option<ListedNumber>>>(&mut self, entries: I) {
        for entry in entries {
            match entry {
                Some(number) => self.numbers.push(number),
                None => self.unreadable += 1,
            }
        }
    }
}

/// Everything one market's reconciliation looks at.
pub struct Reconcile<'a> {
    pub market: &'a Market,
    /// The market's pool as stored.
    pub stored: &'a [PoolNumber],
    /// What each provider listed, in every market: only the numbers serving `market` count.
    /// A provider missing here failed or was not asked: nothing changes for its numbers (but
    /// for draining those operators marked).
    pub listings: &'a BTreeMap<Provider, Listing>,
    /// Numbers operators want drained.
    pub marked: &'a HashSet<VirtualNumber>,
    /// When the run happens: a number retired now is held `provider_gone` since then.
    pub now: UnixTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChangeKind {
    /// New to the pool, `active` (or `draining` when operators marked it).
    Added,
    /// Was retired and is listed again.
    Restored,
    /// Gets no new contacts from now on: it lost a capability, or operators marked it.
    Drained,
    /// Its provider no longer lists it.
    Retired,
    /// Same state; its capabilities grew or another provider now rents it to us.
    Updated,
    /// Number health took it out of service: its live pairs are moved.
    Quarantined,
    /// Out of quarantine, serving no new pair until its cooling-off ends.
    CoolingOff,
    /// Its cooling-off ended: it serves new pairs again.
    Reactivated,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Restored => "restored",
            ChangeKind::Drained => "drained",
            ChangeKind::Retired => "retired",
            ChangeKind::Updated => "updated",
            ChangeKind::Quarantined => "quarantined",
            ChangeKind::CoolingOff => "cooling_off",
            ChangeKind::Reactivated => "reactivated",
        }
    }
}

/// One write that brings a pool number in step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolChange {
    pub kind: ChangeKind,
    /// The stored number this change replaces (`None` for an addition): the write's condition.
    pub before: Option<PoolNumber>,
    pub after: PoolNumber,
}

/// The changes that bring the market's pool in step with the providers' listings,
/// at most one per number. Rules:
/// - listed, not stored → `active` (`draining` if marked);
/// - listed, stored `active`, lost a capability or marked → `draining`;
/// - listed, stored `draining` → stays `draining` (only operators reactivate a number);
/// - listed, stored `quarantined` or `cooling_off` → stays so, hold and all (number health
///   decides when it serves again);
/// - listed, stored `retired` → restored as if new;
/// - stored, not retired, listed by nobody, its provider's listing complete and, for a listing
///   whose absences prove nothing, found gone by a look-up → `retired`;
/// - its provider failed, was not asked, listed incompletely or did not prove it gone →
///   unchanged, except that an `active` number operators marked is drained.
pub fn reconcile(r: &Reconcile<'_>) -> Vec<PoolChange> {
    let stored: HashMap<&VirtualNumber, &PoolNumber> =
        r.stored.iter().map(|v| (&v.number, v)).collect();

    // Every listed number once. When several providers list it, the stored provider wins (a
    // number being ported keeps its provider until the old one stops listing it), else the
    // first by name, so that the outcome never depends on listing order.
    let mut listed: BTreeMap<&VirtualNumber, (&Provider, Capabilities)> = BTreeMap::new();
    for (provider, listing) in r.listings {
        for n in listing.numbers.iter().filter(|n| n.serves(r.market)) {
            let stored_here = stored
                .get(&n.number)
                .is_some_and(|s| &s.provider == provider);
            match listed.entry(&n.number) {
                Entry::Vacant(e) => {
                    e.insert((provider, n.capabilities));
                }
                Entry::Occupied(mut e) if stored_here => {
                    e.insert((provider, n.capabilities));
                }
                Entry::Occupied(_) => {}
            }
        }
    }

    let mut changes = Vec::new();
    for (&number, &(provider, capabilities)) in &listed {
        let before = stored.get(number).copied();
        let state = listed_state(before, capabilities, r.marked.contains(number));
        let after = PoolNumber {
            number: number.clone(),
            provider: provider.clone(),
            market: r.market.clone(),
            capabilities,
            state,
            hold: before
                .filter(|b| b.state == state)
                .and_then(|b| b.hold.clone()),
        };
        let kind = match before {
            None => ChangeKind::Added,
            Some(b) if *b == after => continue,
            Some(b) if b.state == NumberState::Retired => ChangeKind::Restored,
            Some(b) if b.state != after.state => ChangeKind::Drained,
            Some(_) => ChangeKind::Updated,
        };
        changes.push(PoolChange {
            kind,
            before: before.cloned(),
            after,
        });
    }

    for s in r.stored {
        if s.state == NumberState::Retired || listed.contains_key(&s.number) {
            continue;
        }
        let gone = r
            .listings
            .get(&s.provider)
            .is_some_and(|l| l.proves_gone(&s.number));
        let (kind, state, hold) = if gone {
            let gone = Hold {
                reason: HoldReason::ProviderGone,
                since: r.now,
                until: None,
                note: None,
            };
            (ChangeKind::Retired, NumberState::Retired, Some(gone))
        } else if s.state == NumberState::Active && r.marked.contains(&s.number) {
            (ChangeKind::Drained, NumberState::Draining, None)
        } else {
            continue;
        };
        changes.push(PoolChange {
            kind,
            before: Some(s.clone()),
            after: PoolNumber {
                state,
                hold,
                ..s.clone()
            },
        });
    }
    changes
}

/// The state of a listed number: never `retired`, never `active` again once draining, and
/// quarantined or cooling off as number health left it.
fn listed_state(before: Option<&PoolNumber>, can: Capabilities, marked: bool) -> NumberState {
    if let Some(held) =
        before.filter(|b| matches!(b.state, NumberState::Quarantined | NumberState::CoolingOff))
    {
        return held.state;
    }
    let drained = match before {
        Some(b) if b.state == NumberState::Draining => true,
        Some(b) if b.state == NumberState::Active => !can.contains(b.capabilities),
        // New, or retired and back: judged afresh.
        _ => false,
    };
    if marked || drained {
        NumberState::Draining
    } else {
        NumberState::Active
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NUMBERS: usize = 10;

    fn vn(i: usize) -> VirtualNumber {
        VirtualNumber::parse(&format!("+91114000{:04}", 1000 + i)).unwrap()
    }

    fn provider(i: usize) -> Provider {
        ["exotel", "static", "twilio"][i].parse().unwrap()
    }

    fn market() -> Market {
        "IN".parse().unwrap()
    }

    fn caps(bits: u8) -> Capabilities {
        Capabilities {
            voice: bits & 1 != 0,
            sms: bits & 2 != 0,
        }
    }

    fn number(i: usize, p: usize, bits: u8, state: NumberState) -> PoolNumber {
        PoolNumber {
            number: vn(i),
            provider: provider(p),
            market: market(),
            capabilities: caps(bits),
            state,
            hold: None,
        }
    }

    fn listed(numbers: &[(usize, u8)], complete: bool) -> Listing {
        Listing {
            numbers: numbers
                .iter()
                .map(|&(i, bits)| ListedNumber {
                    number: vn(i),
                    capabilities: caps(bits),
                    country: None,
                    in_service: true,
                })
                .collect(),
            unreadable: usize::from(!complete),
            proven_gone: None,
        }
    }

    fn run(
        stored: &[PoolNumber],
        listings: &BTreeMap<Provider, Listing>,
        marked: &HashSet<VirtualNumber>,
    ) -> Vec<PoolChange> {
        reconcile(&Reconcile {
            market: &market(),
            stored,
            listings,
            marked,
            now: 0,
        })
    }

    fn apply(stored: &[PoolNumber], changes: &[PoolChange]) -> Vec<PoolNumber> {
        let mut pool: BTreeMap<VirtualNumber, PoolNumber> = stored
            .iter()
            .map(|v| (v.number.clone(), v.clone()))
            .collect();
        for c in changes {
            pool.insert(c.after.number.clone(), c.after.clone());
        }
        pool.into_values().collect()
    }

    const BOTH: u8 = 3;
    const VOICE: u8 = 1;

    #[test]
    fn listed_number_missing_from_the_pool_is_added_active() {
        let inv = BTreeMap::from([(provider(2), listed(&[(0, BOTH)], true))]);
        let changes = run(&[], &inv, &HashSet::new());
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].kind, ChangeKind::Added);
        assert_eq!(changes[0].before, None);
        assert_eq!(changes[0].after, number(0, 2, BOTH, NumberState::Active));
    }

    #[test]
    fn number_its_provider_no_longer_lists_is_retired() {
        let stored = [
            number(0, 2, BOTH, NumberState::Active),
            number(1, 2, BOTH, NumberState::Draining),
        ];
        let inv = BTreeMap::from([(provider(2), listed(&[], true))]);
        let changes = run(&stored, &inv, &HashSet::new());
        assert_eq!(changes.len(), 2);
        for c in &changes {
            assert_eq!(c.kind, ChangeKind::Retired);
            assert_eq!(c.after.state, NumberState::Retired);
        }
    }

    #[test]
    fn number_that_lost_a_capability_is_drained_with_what_it_still_can() {
        let stored = [number(0, 2, BOTH, NumberState::Active)];
        let inv = BTreeMap::from([(provider(2), listed(&[(0, VOICE)], true))]);
        let changes = run(&stored, &inv, &HashSet::new());
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].kind, ChangeKind::Drained);
        assert_eq!(changes[0].after, number(0, 2, VOICE, NumberState::Draining));
    }

    #[test]
    fn marked_number_is_drained_even_when_its_provider_failed() {
        let stored = [number(0, 2, BOTH, NumberState::Active)];
        // Provider 2 failed: it has no listing.
        let inv = BTreeMap::new();
        let changes = run(&stored, &inv, &HashSet::from([vn(0)]));
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].kind, ChangeKind::Drained);
    }

    #[test]
    fn failed_provider_changes_nothing_for_its_numbers() {
        let stored = [
            number(0, 2, BOTH, NumberState::Active),
            number(1, 0, BOTH, NumberState::Active),
        ];
        // Provider 2 failed: it has no listing.
        let inv = BTreeMap::from([(provider(0), listed(&[], true))]);
        let changes = run(&stored, &inv, &HashSet::new());
        assert_eq!(changes.len(), 1, "only the healthy provider's number");
        assert_eq!(changes[0].after.number, vn(1));
        assert_eq!(changes[0].kind, ChangeKind::Retired);
    }

    #[test]
    fn incomplete_listing_adds_but_retires_nothing() {
        let stored = [number(0, 2, BOTH, NumberState::Active)];
        let inv = BTreeMap::from([(provider(2), listed(&[(1, BOTH)], false))]);
        let changes = run(&stored, &inv, &HashSet::new());
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].kind, ChangeKind::Added);
        assert_eq!(changes[0].after.number, vn(1));
    }

    #[test]
    fn a_listing_whose_absences_prove_nothing_retires_only_the_numbers_proven_gone() {
        let stored = [
            number(0, 2, BOTH, NumberState::Active),
            number(1, 2, BOTH, NumberState::Active),
        ];
        let mut listing = listed(&[], true);
        listing.proven_gone = Some(BTreeSet::from([vn(1)]));
        let inv = BTreeMap::from([(provider(2), listing)]);
        let marked = HashSet::from([vn(0)]);

        let changes = run(&stored, &inv, &HashSet::new());
        let drained = run(&stored, &inv, &marked);

        let kinds: Vec<_> = changes.iter().map(|c| (c.kind, &c.after.number)).collect();
        assert_eq!(kinds, [(ChangeKind::Retired, &vn(1))]);
        let kinds: Vec<_> = drained.iter().map(|c| (c.kind, &c.after.number)).collect();
        assert_eq!(
            kinds,
            [(ChangeKind::Drained, &vn(0)), (ChangeKind::Retired, &vn(1))],
            "an operator's mark still drains it"
        );
    }

    #[test]
    fn numbers_listed_for_another_market_are_left_to_it() {
        let stored = [number(0, 2, BOTH, NumberState::Active)];
        let mut listing = listed(&[(0, BOTH), (1, BOTH)], true);
        listing.numbers[0].country = Some("US".parse().unwrap());
        let us_number = ListedNumber {
            number: VirtualNumber::parse("+14155551000").unwrap(),
            capabilities: caps(BOTH),
            country: None,
            in_service: true,
        };
        listing.numbers.push(us_number);
        let inv = BTreeMap::from([(provider(2), listing)]);
        let changes = run(&stored, &inv, &HashSet::new());
        let kinds: Vec<_> = changes.iter().map(|c| (c.kind, &c.after.number)).collect();
        assert_eq!(
            kinds,
            [(ChangeKind::Added, &vn(1)), (ChangeKind::Retired, &vn(0))],
            "filed under US, +91 number 0 is not listed here"
        );
    }

    #[test]
    fn draining_number_is_not_reactivated_by_its_listing() {
        let stored = [number(0, 2, BOTH, NumberState::Draining)];
        let inv = BTreeMap::from([(provider(2), listed(&[(0, BOTH)], true))]);
        assert!(run(&stored, &inv, &HashSet::new()).is_empty());
    }

    #[test]
    fn retired_number_listed_again_is_restored() {
        let stored = [number(0, 2, BOTH, NumberState::Retired)];
        let inv = BTreeMap::from([(provider(2), listed(&[(0, BOTH)], true))]);
        let changes = run(&stored, &inv, &HashSet::new());
        assert_eq!(changes[0].kind, ChangeKind::Restored);
        assert_eq!(changes[0].after.state, NumberState::Active);
    }

    #[test]
    fn ported_number_keeps_its_provider_while_both_list_it() {
        let stored = [number(0, 2, BOTH, NumberState::Active)];
        let inv = BTreeMap::from([
            (provider(0), listed(&[(0, BOTH)], true)),
            (provider(2), listed(&[(0, BOTH)], true)),
        ]);
        assert!(run(&stored, &inv, &HashSet::new()).is_empty());
        let inv = BTreeMap::from([
            (provider(0), listed(&[(0, BOTH)], true)),
            (provider(2), listed(&[], true)),
        ]);
        let changes = run(&stored, &inv, &HashSet::new());
        assert_eq!(changes[0].kind, ChangeKind::Updated);
        assert_eq!(changes[0].after.provider, provider(0));
    }

    fn state() -> impl Strategy<Value = NumberState> {
        prop_oneof![
            Just(NumberState::Active),
            Just(NumberState::Draining),
            Just(NumberState::Retired)
        ]
    }

    fn stored_pool() -> impl Strategy<Value = Vec<PoolNumber>> {
        proptest::collection::btree_map(0..NUMBERS, (0..3usize, 0..4u8, state()), 0..NUMBERS)
            .prop_map(|m| {
                m.into_iter()
                    .map(|(i, (p, bits, s))| number(i, p, bits, s))
                    .collect()
            })
    }

    /// A provider's listing, or none (the provider failed or was not asked).
    fn listing() -> impl Strategy<Value = Option<Listing>> {
        prop_oneof![
            2 => Just(None),
            1 => (
                proptest::collection::btree_map(0..NUMBERS, 0..4u8, 0..NUMBERS),
                any::<bool>()
            )
                .prop_map(|(m, complete)| {
                    let numbers: Vec<(usize, u8)> = m.into_iter().collect();
                    Some(listed(&numbers, complete))
                }),
        ]
    }

    fn listings() -> impl Strategy<Value = BTreeMap<Provider, Listing>> {
        proptest::collection::vec(listing(), 3).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .filter_map(|(p, inv)| inv.map(|inv| (provider(p), inv)))
                .collect()
        })
    }

    fn marked() -> impl Strategy<Value = HashSet<VirtualNumber>> {
        proptest::collection::hash_set((0..NUMBERS).prop_map(vn), 0..4)
    }

    fn listing_caps(inv: &BTreeMap<Provider, Listing>, n: &VirtualNumber) -> Vec<Capabilities> {
        inv.values()
            .flat_map(|l| &l.numbers)
            .filter(|o| &o.number == n)
            .map(|o| o.capabilities)
            .collect()
    }

    proptest! {
        #[test]
        fn a_failed_provider_changes_nothing_for_its_numbers(
            stored in stored_pool(), inv in listings(), marked in marked()
        ) {
            let changes = run(&stored, &inv, &marked);
            for s in &stored {
                let trusted = inv.get(&s.provider).is_some_and(Listing::is_complete);
                if trusted || !listing_caps(&inv, &s.number).is_empty() {
                    continue;
                }
                let change = changes.iter().find(|c| c.after.number == s.number);
                if marked.contains(&s.number) && s.state == NumberState::Active {
                    prop_assert_eq!(change.map(|c| c.after.state), Some(NumberState::Draining));
                } else {
                    prop_assert!(change.is_none(), "{:?} changed: {:?}", s, change);
                }
            }
        }

        #[test]
        fn every_listed_number_ends_up_serving_with_its_listed_capabilities(
            stored in stored_pool(), inv in listings(), marked in marked()
        ) {
            let after = apply(&stored, &run(&stored, &inv, &marked));
            for n in (0..NUMBERS).map(vn) {
                let caps = listing_caps(&inv, &n);
                if caps.is_empty() {
                    continue;
                }
                let v = after.iter().find(|v| v.number == n).expect("listed number is pooled");
                prop_assert_ne!(v.state, NumberState::Retired);
                prop_assert!(caps.contains(&v.capabilities));
            }
        }

        #[test]
        fn numbers_no_complete_listing_names_are_retired(
            stored in stored_pool(), inv in listings(), marked in marked()
        ) {
            let after = apply(&stored, &run(&stored, &inv, &marked));
            for s in &stored {
                let complete = inv.get(&s.provider).is_some_and(Listing::is_complete);
                if complete && listing_caps(&inv, &s.number).is_empty() {
                    let v = after.iter().find(|v| v.number == s.number).unwrap();
                    prop_assert_eq!(v.state, NumberState::Retired);
                }
            }
        }

        #[test]
        fn marked_numbers_are_never_active_and_draining_ones_never_come_back(
            stored in stored_pool(), inv in listings(), marked in marked()
        ) {
            let after = apply(&stored, &run(&stored, &inv, &marked));
            for v in &after {
                if marked.contains(&v.number) {
                    prop_assert_ne!(v.state, NumberState::Active);
                }
                let was = stored.iter().find(|s| s.number == v.number);
                if was.is_some_and(|s| s.state == NumberState::Draining) {
                    prop_assert_ne!(v.state, NumberState::Active);
                }
            }
        }

        #[test]
        fn reconciling_twice_changes_nothing_the_second_time(
            stored in stored_pool(), inv in listings(), marked in marked()
        ) {
            let after = apply(&stored, &run(&stored, &inv, &marked));
            prop_assert_eq!(run(&after, &inv, &marked), vec![]);
        }

        #[test]
        fn each_change_names_the_stored_number_it_replaces(
            stored in stored_pool(), inv in listings(), marked in marked()
        ) {
            let changes = run(&stored, &inv, &marked);
            let mut seen = HashSet::new();
            for c in &changes {
                prop_assert!(seen.insert(c.after.number.clone()), "one change per number");
                let was = stored.iter().find(|s| s.number == c.after.number);
                prop_assert_eq!(c.before.as_ref(), was);
                prop_assert_ne!(Some(&c.after), was);
                prop_assert_eq!(&c.after.market, &market());
            }
        }
    }
}
