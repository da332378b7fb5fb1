//! Applying order changes: plan with the pure policy, commit atomically, retry lost races.

pub mod policy;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use rand::Rng;

use crate::domain::{
    validate_participants, Capabilities, Contact, ContactPins, ContactPolicy, Market, OrderId,
    Participant, Pin, PinKey, PinRoute, PoolNumber, RouteKey, RoutePair, Session, SessionError,
    SessionState, UnixTime, UserId, VirtualNumber,
};
use crate::store::{AssignmentStore, CommitError, PairWrite, SessionCommit, StoreError};
pub use policy::{plan_contacts, PlanRequest, PoolExhausted};

/// What an order event asks of its session.
#[derive(Debug, Clone)]
pub enum OrderChange {
    /// The order's full current participant list (a snapshot, so that the newest event wins whole).
    /// Participants absent from it lose their routes of this order at once.
    Participants(Vec<Participant>),
    /// The order is over: routes keep working for the grace period, then end.
    End,
}

/// One versioned change to one order.
#[derive(Debug, Clone)]
pub struct OrderUpdate {
    pub order_id: OrderId,
    pub market: Market,
    pub version: u64,
    pub change: OrderChange,
    /// Whether the order's connected calls are recorded from this change on (its event's
    /// `record`). Read with a participants change; an end keeps what the session had.
    pub record: bool,
}

#[derive(Debug)]
pub enum Outcome {
    /// The change was written; `attempts` counts commits tried (1 when no race was lost).
    Applied { session: Session, attempts: u32 },
    /// The stored session is as new or newer: nothing changed.
    Stale { stored_version: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum AssignError {
    #[error("invalid order: {0}")]
    Invalid(#[from] SessionError),
    #[error("market {0} is not served")]
    UnknownMarket(Market),
    #[error(transparent)]
    PoolExhausted(#[from] PoolExhausted),
    #[error("gave up after {attempts} attempts lost to concurrent orders")]
    Contention { attempts: u32 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AssignError {
    /// Transient errors may succeed on redelivery; the others never will.
    pub fn is_transient(&self) -> bool {
        match self {
            AssignError::Invalid(_) | AssignError::UnknownMarket(_) => false,
            AssignError::PoolExhausted(_) | AssignError::Contention { .. } => true,
            AssignError::Store(e) => e.is_transient(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AssignSettings {
    pub contact_policy: ContactPolicy,
    /// Markets served, each with the channels every pair in it needs of its number: only numbers
    /// carrying at least those get new contacts there. An update for another market is refused.
    pub markets: HashMap<Market, Capabilities>,
    /// How long the parties of an ended order can still reach each other.
    pub grace: Duration,
    /// How long an active order's routes live without any newer event (a lost completion must not
    /// hold numbers for ever).
    pub session_ttl: Duration,
    /// How long a session item outlives its routes, so that late redeliveries are still seen as stale.
    pub retention: Duration,
    /// Commit attempts before giving up on a contended order.
    pub max_attempts: u32,
    /// Markets whose contacts get PINs, so that a participant calling from a phone the platform
    /// does not know can stand in for themselves (issue 19). None by default.
    pub pin_markets: HashSet<Market>,
    /// How long a market's pool list is reused before it is read again.
    pub pool_cache: Duration,
}

impl AssignSettings {
    /// Defaults for `markets`, each needing voice and SMS.
    pub fn for_markets(markets: impl IntoIterator<Item = Market>) -> Self {
        AssignSettings {
            contact_policy: ContactPolicy::default(),
            markets: markets
                .into_iter()
                .map(|m| (m, Capabilities::VOICE_AND_SMS))
                .collect(),
            grace: Duration::from_secs(30 * 60),
            session_ttl: Duration::from_secs(24 * 3600),
            retention: Duration::from_secs(14 * 24 * 3600),
            max_attempts: 8,
            pin_markets: HashSet::new(),
            pool_cache: Duration::from_secs(60),
        }
    }

    /// These settings with `market` served and needing `needs` of its numbers.
    pub fn with_needs(mut self, market: Market, needs: Capabilities) -> Self {
        self.markets.insert(market, needs);
        self
    }

    /// The channels every pair in `market` needs, or `None` if the market is not served.
    pub fn needs_for(&self, market: &Market) -> Option<Capabilities> {
        self.markets.get(market).copied()
    }
}

type CachedPool = (Instant, Arc<Vec<PoolNumber>>);

/// The most items one DynamoDB transaction may hold.
const MAX_COMMIT_ITEMS: usize = 100;

/// What commits of one update were refused, for the next plan.
#[derive(Default)]
struct Refused {
    routes: HashSet<RouteKey>,
    pins: HashSet<PinKey>,
}

impl Refused {
    /// Whether any route or PIN of `pair` was refused.
    fn touches(&self, pair: &RoutePair) -> bool {
        pair.keys().iter().any(|k| self.routes.contains(k))
            || pair.pins().iter().any(|p| self.pins.contains(&p.key()))
    }
}

fn pin_keys(pair: &RoutePair) -> Vec<PinKey> {
    pair.pins().iter().map(PinRoute::key).collect()
}

/// Gives every contact its PINs where the market has them (and none where it does not): a
/// contact the previous session had, same people on the same number, keeps each side's PIN
/// while that side's main phone is the same (a PIN stands for a phone: it is only ever
/// rewritten for the same one), so that what a participant was told stays true; a new contact,
/// a changed phone or a PIN refused as taken gets a new one, drawn apart from every other PIN of
/// this session on that number.
fn issue_pins(
    contacts: &mut [Contact],
    people: &[Participant],
    previous: Option<&Session>,
    pins_on: bool,
    refused: &HashSet<PinKey>,
) {
    if !pins_on {
        for c in contacts.iter_mut() {
            c.pins = None;
        }
        return;
    }
    // The previous session's PINs of each contact, as it is oriented now, each side's only if
    // that side still has the same main phone.
    let same_phone = |user: &UserId| {
        let now = people.iter().find(|p| &p.user_id == user).map(|p| &p.phone);
        let then = previous.and_then(|s| s.participant(user)).map(|p| &p.phone);
        now.is_some() && now == then
    };
    let kept: Vec<[Option<Pin>; 2]> = contacts
        .iter()
        .map(|c| {
            let before = previous.and_then(|s| {
                s.contacts
                    .iter()
                    .find(|p| p.number == c.number && p.joins(&c.a, &c.b))
            });
            let Some(pins) = before.and_then(|b| b.pins.clone().map(|p| (b, p))) else {
                return [None, None];
            };
            let (before, pins) = pins;
            let (a, b) = if before.a == c.a {
                (pins.a, pins.b)
            } else {
                (pins.b, pins.a)
            };
            [same_phone(&c.a).then_some(a), same_phone(&c.b).then_some(b)]
        })
        .collect();
    // Kept PINs first, so that a new one never takes a kept one's place.
    let mut drawn: HashSet<PinKey> = HashSet::new();
    let mut keep = |number: &VirtualNumber, pin: Pin| {
        let key = PinKey {
            number: number.clone(),
            pin,
        };
        (!refused.contains(&key) && drawn.insert(key.clone())).then_some(key.pin)
    };
    let kept: Vec<[Option<Pin>; 2]> = contacts
        .iter()
        .zip(kept)
        .map(|(c, [a, b])| {
            [
                a.and_then(|a| keep(&c.number, a)),
                b.and_then(|b| keep(&c.number, b)),
            ]
        })
        .collect();
    let mut rng = rand::thread_rng();
    for (c, [a, b]) in contacts.iter_mut().zip(kept) {
        let mut fresh = || loop {
            if let Some(pin) = keep(&c.number, Pin::random(&mut rng)) {
                break pin;
            }
        };
        let a = a.unwrap_or_else(&mut fresh);
        let b = b.unwrap_or_else(&mut fresh);
        c.pins = Some(ContactPins { a, b });
    }
}

/// How long a day's recorded live-contacts peak is kept (pool-refresh reads today and yesterday).
const LIVE_PEAK_RETENTION: i64 = 8 * 24 * 3600;

/// Applies order updates to sessions. One per process: it caches pool lists between calls.
pub struct Assigner {
    store: Arc<dyn AssignmentStore>,
    settings: AssignSettings,
    /// Held across a pool read, so a cold start's burst of orders reads each pool once.
    pools: tokio::sync::Mutex<HashMap<Market, CachedPool>>,
    /// Per market, the day and the highest live-contact count this process has recorded.
    live_peaks: std::sync::Mutex<HashMap<Market, (String, u32)>>,
}

impl Assigner {
    pub fn new(store: Arc<dyn AssignmentStore>, settings: AssignSettings) -> Self {
        Assigner {
            store,
            settings,
            pools: tokio::sync::Mutex::new(HashMap::new()),
            live_peaks: std::sync::Mutex::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> &AssignSettings {
        &self.settings
    }

    pub fn store(&self) -> &Arc<dyn AssignmentStore> {
        &self.store
    }

    /// Applies `update` at time `now`: idempotent, and a no-op unless newer than the stored session.
    pub async fn apply(&self, update: &OrderUpdate, now: UnixTime) -> Result<Outcome, AssignError> {
        if let OrderChange::Participants(people) = &update.change {
            validate_participants(people)?;
        }
        let Some(needs) = self.settings.needs_for(&update.market) else {
            return Err(AssignError::UnknownMarket(update.market.clone()));
        };
        // What a commit was refused: routes held by another live order or, for an end, no
        // longer this order's live route (never deleted; on an end their pairs are dropped
        // whole), and PINs another pair holds (new ones are drawn).
        let mut refused = Refused::default();
        let mut refreshed_pool = false;
        for attempt in 1..=self.settings.max_attempts {
            let mut live_peak = None;
            let commit = match &update.change {
                OrderChange::Participants(people) => {
                    match self
                        .plan_participants(update, people, needs, now, refreshed_pool, &refused)
                        .await?
                    {
                        Planned::Commit(c, peak) => {
                            live_peak = peak;
                            c
                        }
                        Planned::Stale(v) => return Ok(Outcome::Stale { stored_version: v }),
                        Planned::Exhausted(e) if !refreshed_pool => {
                            // A refresh may have added numbers since the pool was cached.
                            tracing::info!(market = %e.market, "pool exhausted with cached pool, reading it again");
                            refreshed_pool = true;
                            continue;
                        }
                        Planned::Exhausted(e) => return Err(e.into()),
                    }
                }
                OrderChange::End => match self.plan_end(update, now, &refused).await? {
                    Planned::Commit(c, _) => c,
                    Planned::Stale(v) => return Ok(Outcome::Stale { stored_version: v }),
                    Planned::Exhausted(e) => return Err(e.into()),
                },
            };
            // Nothing of a change is ever written in parts: one that cannot fit one transaction
            // is refused whole, and says why.
            let items = commit.items();
            if items > MAX_COMMIT_ITEMS {
                return Err(AssignError::Invalid(SessionError::TooLarge(items)));
            }
            match self.store.commit(&commit).await {
                Ok(()) => {
                    if let Some(peak) = live_peak {
                        self.note_live_peak(&update.market, peak, now).await;
                    }
                    return Ok(Outcome::Applied {
                        session: commit.session,
                        attempts: attempt,
                    });
                }
                Err(CommitError::StaleVersion) => {
                    // Another event of this order won; the next read decides whether we are stale.
                    tracing::debug!(order_id = %update.order_id, attempt, "session changed underneath, re-reading");
                }
                Err(CommitError::RoutesTaken(keys)) => {
                    tracing::debug!(order_id = %update.order_id, attempt, taken = keys.len(), "routes refused, re-planning");
                    // Routes of this order that lapsed and now serve other orders are left alone;
                    // an active order re-plans their pairs from fresh reads, an end drops them.
                    refused.routes.extend(keys);
                }
                Err(CommitError::PinsTaken(keys)) => {
                    tracing::debug!(order_id = %update.order_id, attempt, taken = keys.len(), "PINs taken, drawing others");
                    refused.pins.extend(keys);
                }
                Err(CommitError::Conflict) => {
                    tracing::debug!(order_id = %update.order_id, attempt, "transaction conflict, retrying");
                }
                Err(CommitError::Store(e)) => return Err(e.into()),
            }
            if attempt < self.settings.max_attempts {
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
        Err(AssignError::Contention {
            attempts: self.settings.max_attempts,
        })
    }

    async fn plan_participants(
        &self,
        update: &OrderUpdate,
        people: &[Participant],
        needs: Capabilities,
        now: UnixTime,
        fresh_pool: bool,
        refused: &Refused,
    ) -> Result<Planned, AssignError> {
        // One parallel set of reads: the session, the live contacts of each phone of each
        // participant (an alternate dials numbers too), and the pool unless cached.
        let store = &self.store;
        let (previous, busy, pool) = tokio::try_join!(
            store.session(&update.order_id),
            try_join_all(people.iter().map(|p| async move {
                let each = try_join_all(p.phones().map(|phone| store.live_contacts(phone, now)));
                Ok::<_, StoreError>(each.await?.concat())
            })),
            self.pool(&update.market, fresh_pool),
        )?;
        if let Some(prev) = &previous {
            if prev.version >= update.version {
                return Ok(Planned::Stale(prev.version));
            }
        }
        let busy: Vec<HashSet<_>> = busy
            .into_iter()
            .map(|live| {
                live.into_iter()
                    .filter(|c| c.order_id != update.order_id)
                    .map(|c| c.number)
                    .collect()
            })
            .collect();
        let mut contacts = match plan_contacts(&PlanRequest {
            order_id: &update.order_id,
            market: &update.market,
            participants: people,
            previous: previous.as_ref(),
            busy: &busy,
            pool: &pool,
            contact_policy: &self.settings.contact_policy,
            needs,
        }) {
            Ok(c) => c,
            Err(e) => return Ok(Planned::Exhausted(e)),
        };
        let pins_on = self.settings.pin_markets.contains(&update.market);
        issue_pins(
            &mut contacts,
            people,
            previous.as_ref(),
            pins_on,
            &refused.pins,
        );
        let routes_until = now + secs(self.settings.session_ttl);
        let session = Session {
            order_id: update.order_id.clone(),
            market: update.market.clone(),
            version: update.version,
            state: SessionState::Active,
            participants: people.to_vec(),
            contacts,
            updated_at: now,
            routes_until,
            record: update.record,
        };
        // What each participant holds once this commits on the numbers this market's pairs can
        // take: their other orders' contacts and this order's. The most of it is the policy's
        // bound on the market's eligible numbers, recorded for pool-refresh's headroom.
        let eligible: HashSet<&VirtualNumber> = pool
            .iter()
            .filter(|v| v.eligible_for(&update.market, needs))
            .map(|v| &v.number)
            .collect();
        let live_peak = busy
            .iter()
            .zip(people)
            .map(|(other, p)| {
                let other = other.iter().filter(|n| eligible.contains(n)).count();
                let here = session
                    .contacts
                    .iter()
                    .filter(|c| c.involves(&p.user_id) && eligible.contains(&c.number))
                    .count();
                u32::try_from(other + here).unwrap_or(u32::MAX)
            })
            .max();
        // Every pair is claimed whole in one transaction: if either direction is taken, nothing
        // is written and the pair is re-planned on a number both can take.
        let pairs = session.route_pairs(routes_until);
        let kept: HashSet<RouteKey> = pairs.iter().flat_map(RoutePair::keys).collect();
        let kept_pins: HashSet<PinKey> = pairs.iter().flat_map(pin_keys).collect();
        let (delete_routes, delete_pins) = previous
            .map(|prev| {
                let old = prev.route_pairs(0);
                (
                    old.iter()
                        .flat_map(RoutePair::keys)
                        .filter(|k| !kept.contains(k) && !refused.routes.contains(k))
                        .collect(),
                    old.iter()
                        .flat_map(pin_keys)
                        .filter(|k| !kept_pins.contains(k) && !refused.pins.contains(k))
                        .collect(),
                )
            })
            .unwrap_or_default();
        let commit = SessionCommit {
            session,
            session_expires_at: routes_until + secs(self.settings.retention),
            pairs,
            pair_write: PairWrite::Claim,
            delete_routes,
            delete_pins,
            now,
        };
        Ok(Planned::Commit(commit, live_peak))
    }

    /// Ends the order. Only routes still live and this order's are extended, for the grace
    /// period and a pair at a time: an end never revives what time has ended, and a pair
    /// either direction of which was refused ends at once, both ways.
    async fn plan_end(
        &self,
        update: &OrderUpdate,
        now: UnixTime,
        refused: &Refused,
    ) -> Result<Planned, AssignError> {
        let previous = self.store.session(&update.order_id).await?;
        let (session, pairs, delete_routes, delete_pins) = match previous {
            Some(prev) if prev.version >= update.version => {
                return Ok(Planned::Stale(prev.version))
            }
            // Already ended (say, cancelled after completed) or lapsed for want of any newer
            // event: it stays as it is, ended, and nothing of it comes back.
            Some(prev) if prev.state == SessionState::Ended || !prev.is_live(now) => (
                Session {
                    version: update.version,
                    updated_at: now,
                    state: SessionState::Ended,
                    ..prev
                },
                Vec::new(),
                Vec::new(),
                Vec::new(),
            ),
            Some(prev) => {
                let routes_until = now + secs(self.settings.grace);
                let (kept, dropped): (Vec<(Contact, RoutePair)>, Vec<_>) = prev
                    .contacts
                    .iter()
                    .filter_map(|c| Some((c.clone(), prev.route_pair(c, routes_until)?)))
                    .partition(|(_, pair)| !refused.touches(pair));
                let delete_routes = dropped
                    .iter()
                    .flat_map(|(_, pair)| pair.keys())
                    .filter(|k| !refused.routes.contains(k))
                    .collect();
                let delete_pins = dropped
                    .iter()
                    .flat_map(|(_, pair)| pin_keys(pair))
                    .filter(|k| !refused.pins.contains(k))
                    .collect();
                let (contacts, pairs) = kept.into_iter().unzip();
                let session = Session {
                    version: update.version,
                    updated_at: now,
                    state: SessionState::Ended,
                    routes_until,
                    contacts,
                    ..prev
                };
                (session, pairs, delete_routes, delete_pins)
            }
            // The end arrived before the assignment: a tombstone makes the late assignment stale.
            None => (
                Session {
                    order_id: update.order_id.clone(),
                    market: update.market.clone(),
                    version: update.version,
                    state: SessionState::Ended,
                    participants: Vec::new(),
                    contacts: Vec::new(),
                    updated_at: now,
                    routes_until: now,
                    record: false,
                },
                Vec::new(),
                Vec::new(),
                Vec::new(),
            ),
        };
        let commit = SessionCommit {
            session_expires_at: session.routes_until.max(now) + secs(self.settings.retention),
            session,
            pairs,
            pair_write: PairWrite::Renew,
            delete_routes,
            delete_pins,
            now,
        };
        Ok(Planned::Commit(commit, None))
    }

    /// Records the market's live-contacts peak of the day when this process sees a new high:
    /// a few conditional writes per process and day, after the commit, never in its transaction.
    /// Best effort: a failure only leaves pool-refresh an older figure.
    async fn note_live_peak(&self, market: &Market, peak: u32, now: UnixTime) {
        let day = crate::pool::day_key(now);
        let higher = match self.live_peaks.lock() {
            Ok(mut peaks) => match peaks.get(market) {
                Some((d, p)) if *d == day && *p >= peak => false,
                _ => {
                    peaks.insert(market.clone(), (day.clone(), peak));
                    true
                }
            },
            Err(_) => false,
        };
        if !higher {
            return;
        }
        let expires_at = now + LIVE_PEAK_RETENTION;
        if let Err(e) = self
            .store
            .raise_live_peak(market, &day, peak, expires_at)
            .await
        {
            tracing::warn!(market = %market, error = %e, "could not record the live-contacts peak");
            // Forgotten, so that the next assignment tries again.
            if let Ok(mut peaks) = self.live_peaks.lock() {
                peaks.remove(market);
            }
        }
    }

    async fn pool(&self, market: &Market, fresh: bool) -> Result<Arc<Vec<PoolNumber>>, StoreError> {
        let mut pools = self.pools.lock().await;
        if let Some((at, pool)) = pools.get(market) {
            if !fresh && at.elapsed() < self.settings.pool_cache {
                return Ok(pool.clone());
            }
        }
        let pool = Arc::new(self.store.pool(market).await?);
        pools.insert(market.clone(), (Instant::now(), pool.clone()));
        Ok(pool)
    }
}

enum Planned {
    /// The commit, and for new participants the most live contacts one of them will hold.
    Commit(SessionCommit, Option<u32>),
    Stale(u64),
    Exhausted(PoolExhausted),
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4)
}

/// Full-jitter exponential backoff: 0..(10 ms × 2^attempt), capped at 640 ms.
fn backoff(attempt: u32) -> Duration {
    let cap = 10u64 << attempt.min(6);
    Duration::from_millis(rand::thread_rng().gen_range(0..=cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(a: &str, b: &str, number: &str, pins: Option<(&str, &str)>) -> Contact {
        Contact {
            a: a.parse().unwrap(),
            b: b.parse().unwrap(),
            number: VirtualNumber::parse(number).unwrap(),
            capabilities: Capabilities::VOICE_AND_SMS,
            pins: pins.map(|(a, b)| ContactPins {
                a: Pin::parse(a).unwrap(),
                b: Pin::parse(b).unwrap(),
            }),
        }
    }

    fn person(user: &str, phone: &str) -> Participant {
        Participant {
            role: "customer".parse().unwrap(),
            user_id: user.parse().unwrap(),
            phone: crate::domain::RealNumber::parse(phone).unwrap(),
            alternate_phones: Vec::new(),
        }
    }

    /// Everyone the tests name, each with their phone.
    fn people() -> Vec<Participant> {
        ["c", "d", "e", "x", "y"]
            .iter()
            .enumerate()
            .map(|(i, u)| person(u, &format!("+91981000000{i}")))
            .collect()
    }

    fn previous(contacts: Vec<Contact>) -> Session {
        Session {
            order_id: "o1".parse().unwrap(),
            market: "IN".parse().unwrap(),
            version: 1,
            state: SessionState::Active,
            participants: people(),
            contacts,
            updated_at: 0,
            routes_until: 10,
            record: false,
        }
    }

    const V: &str = "+911140001000";

    #[test]
    fn pins_are_kept_for_the_same_people_on_the_same_number_and_drawn_anew_otherwise() {
        let before = previous(vec![contact("c", "d", V, Some(("111111", "222222")))]);
        // The same pair, named the other way round: each keeps their own PIN.
        let mut now = vec![contact("d", "c", V, None)];
        issue_pins(&mut now, &people(), Some(&before), true, &HashSet::new());
        let pins = now[0].pins.clone().unwrap();
        assert_eq!((pins.a.expose(), pins.b.expose()), ("222222", "111111"));

        // A refused PIN is drawn again; the other is kept.
        let refused = HashSet::from([PinKey {
            number: VirtualNumber::parse(V).unwrap(),
            pin: Pin::parse("111111").unwrap(),
        }]);
        let mut now = vec![contact("c", "d", V, None)];
        issue_pins(&mut now, &people(), Some(&before), true, &refused);
        let pins = now[0].pins.clone().unwrap();
        assert_ne!(pins.a.expose(), "111111");
        assert_eq!(pins.b.expose(), "222222");

        // Another person, or another number: new PINs, all distinct on a number.
        let mut now = vec![
            contact("c", "e", V, None),
            contact("x", "y", V, None),
            contact("c", "d", "+911140001001", None),
        ];
        issue_pins(&mut now, &people(), Some(&before), true, &HashSet::new());
        let on_v: HashSet<&Pin> = now[..2]
            .iter()
            .flat_map(|c| {
                let p = c.pins.as_ref().unwrap();
                [&p.a, &p.b]
            })
            .collect();
        assert_eq!(on_v.len(), 4);
        assert_ne!(now[2].pins, before.contacts[0].pins);

        // D now calls from another main phone: D's PIN stood for the old one and is drawn anew
        // (a PIN item is only ever rewritten for the phone it stands for); C's is kept.
        let mut moved = people();
        moved[1].phone = crate::domain::RealNumber::parse("+919810000099").unwrap();
        let mut now = vec![contact("c", "d", V, None)];
        issue_pins(&mut now, &moved, Some(&before), true, &HashSet::new());
        let pins = now[0].pins.clone().unwrap();
        assert_eq!(pins.a.expose(), "111111");
        assert_ne!(pins.b.expose(), "222222");

        // A market without PINs: none, even where there were.
        let mut now = vec![contact("c", "d", V, Some(("111111", "222222")))];
        issue_pins(&mut now, &people(), Some(&before), false, &HashSet::new());
        assert_eq!(now[0].pins, None);
    }
}
