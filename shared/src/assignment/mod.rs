//! Applying order changes: plan with the pure policy, commit atomically, retry lost races.

pub mod policy;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use rand::Rng;

use crate::domain::{
    validate_participants, Capabilities, Contact, ContactPins, ContactPolicy, Direction, Handover,
    Market, OrderId, Participant, Pin, PinKey, PinRoute, PoolNumber, Role, RouteKey, RoutePair,
    Session, SessionError, SessionState, UnixTime, UserId, VirtualNumber,
};
use crate::store::{
    AssignmentStore, CommitError, LiveContact, PairWrite, SessionCommit, StoreError,
};
pub use policy::{plan_contacts, PlanRequest, PoolExhausted};

/// What an order event asks of its session.
#[derive(Debug, Clone)]
pub enum OrderChange {
    /// The order's full current participant list (a snapshot, so that the newest event wins whole).
    /// Participants absent from it lose their routes of this order at once.
    Participants(Vec<Participant>),
    /// The order is over: routes keep working for the grace period, then end, on the order's
    /// own terms where a sessions API end gives some (an event's are the default).
    End(EndTerms),
}

/// How one order's end differs from the configured one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndTerms {
    /// How long its routes keep working instead of the grace period (already held within
    /// `AssignSettings::max_grace`).
    pub grace: Option<Duration>,
    /// The directions that stop connecting at the end while the others live out the grace
    /// ([`Session::closed_after_end`]).
    pub closed: Vec<Direction>,
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

/// What moving an order's pairs off numbers leaving service did.
#[derive(Debug)]
pub enum Moved {
    /// `pairs` contacts were moved (`session.revision` raised, `version` kept); `attempts` as
    /// in [`Outcome::Applied`].
    Moved {
        session: Session,
        pairs: usize,
        attempts: u32,
    },
    /// The session is not live, or none of its contacts is on a number leaving service.
    Nothing,
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
    /// The longest grace a sessions API call may ask for one order (`EndTerms::grace`).
    pub max_grace: Duration,
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
    /// How long a contact moved off a number leaving service still connects on the old number,
    /// so that a call from a screen still showing it goes through (never past its session).
    pub handover: Duration,
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
            max_grace: Duration::from_secs(24 * 3600),
            session_ttl: Duration::from_secs(24 * 3600),
            retention: Duration::from_secs(14 * 24 * 3600),
            max_attempts: 8,
            pin_markets: HashSet::new(),
            pool_cache: Duration::from_secs(60),
            handover: Duration::from_secs(10 * 60),
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
        if self.settings.needs_for(&update.market).is_none() {
            return Err(AssignError::UnknownMarket(update.market.clone()));
        }
        Ok(match self.run(Change::Update(update), now).await? {
            Ran::Committed {
                session, attempts, ..
            } => Outcome::Applied { session, attempts },
            Ran::Unchanged(stored_version) => Outcome::Stale { stored_version },
        })
    }

    /// Moves every contact of `order` whose number left service (quarantined, cooling off or
    /// retired) to a healthy number, both directions together, as planning the order again
    /// would: the session keeps its version and participants, its revision is raised, the old
    /// pairs stay routed for the handover, and its other contacts stay as they are.
    pub async fn move_off(&self, order: &OrderId, now: UnixTime) -> Result<Moved, AssignError> {
        Ok(match self.run(Change::Move(order), now).await? {
            Ran::Committed {
                session,
                attempts,
                moved,
            } => Moved::Moved {
                session,
                pairs: moved,
                attempts,
            },
            Ran::Unchanged(_) => Moved::Nothing,
        })
    }

    /// Plans and commits `change`, planning again from fresh reads whatever a commit lost.
    async fn run(&self, change: Change<'_>, now: UnixTime) -> Result<Ran, AssignError> {
        // What a commit was refused: routes held by another live order or, for an end, no
        // longer this order's live route (never deleted; on an end their pairs are dropped
        // whole), and PINs another pair holds (new ones are drawn).
        let mut refused = Refused::default();
        let mut refreshed_pool = false;
        let order = change.order_id();
        for attempt in 1..=self.settings.max_attempts {
            let planned = match change {
                Change::Update(update) => match &update.change {
                    OrderChange::Participants(people) => {
                        self.plan_participants(update, people, now, refreshed_pool, &refused)
                            .await?
                    }
                    OrderChange::End(terms) => self.plan_end(update, now, terms, &refused).await?,
                },
                Change::Move(order) => self.plan_move(order, now, &refused).await?,
            };
            let (mut commit, tally) = match planned {
                Planned::Commit(c, tally) => (c, tally),
                Planned::Unchanged(v) => return Ok(Ran::Unchanged(v)),
                Planned::Exhausted(e) if !refreshed_pool => {
                    // A refresh may have added numbers since the pool was cached.
                    tracing::info!(market = %e.market, "pool exhausted with cached pool, reading it again");
                    refreshed_pool = true;
                    continue;
                }
                Planned::Exhausted(e) => return Err(e.into()),
            };
            // Nothing of a change is ever written in parts: one that cannot fit one transaction
            // is refused whole, and says why.
            // People's entries only index sessions for the sessions API's list: they never
            // make a change too large, and are left out of one that would not fit with them.
            if commit.items() > MAX_COMMIT_ITEMS && commit.entries() > 0 {
                tracing::info!(order_id = %order, items = commit.items(), "people's entries left out of a change at the transaction's limit");
                commit.people_entries = false;
            }
            let items = commit.items();
            if items > MAX_COMMIT_ITEMS {
                return Err(AssignError::Invalid(SessionError::TooLarge(items)));
            }
            match self.store.commit(&commit).await {
                Ok(()) => {
                    if let Some(peak) = tally.live_peak {
                        self.note_live_peak(&commit.session.market, peak, now).await;
                    }
                    return Ok(Ran::Committed {
                        session: commit.session,
                        attempts: attempt,
                        moved: tally.moved,
                    });
                }
                Err(CommitError::SessionChanged) => {
                    // Another write of this order won; the next read decides whether we are stale.
                    tracing::debug!(order_id = %order, attempt, "session changed underneath, re-reading");
                }
                Err(CommitError::RoutesTaken(keys)) => {
                    tracing::debug!(order_id = %order, attempt, taken = keys.len(), "routes refused, re-planning");
                    // Routes of this order that lapsed and now serve other orders are left alone;
                    // an active order re-plans their pairs from fresh reads, an end drops them.
                    refused.routes.extend(keys);
                }
                Err(CommitError::PinsTaken(keys)) => {
                    tracing::debug!(order_id = %order, attempt, taken = keys.len(), "PINs taken, drawing others");
                    refused.pins.extend(keys);
                }
                Err(CommitError::Conflict) => {
                    tracing::debug!(order_id = %order, attempt, "transaction conflict, retrying");
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
        now: UnixTime,
        fresh_pool: bool,
        refused: &Refused,
    ) -> Result<Planned, AssignError> {
        let needs = self
            .settings
            .needs_for(&update.market)
            .ok_or_else(|| AssignError::UnknownMarket(update.market.clone()))?;
        // One parallel set of reads: the session, the live contacts of each phone of each
        // participant (an alternate dials numbers too), and the pool unless cached.
        let store = &self.store;
        let (previous, busy, pool) = tokio::try_join!(
            store.session(&update.order_id),
            self.busy(people, now),
            self.pool(&update.market, fresh_pool),
        )?;
        if let Some(prev) = &previous {
            if prev.version >= update.version {
                return Ok(Planned::Unchanged(prev.version));
            }
        }
        let plan = Replan {
            order_id: &update.order_id,
            market: &update.market,
            people,
            previous: previous.as_ref(),
            busy: &busy,
            pool: &pool,
            needs,
            now,
            routes_until: now + secs(self.settings.session_ttl),
            keep_pairs: None,
        };
        let Some(Replanned {
            contacts,
            handovers,
        }) = self.replan(&plan, refused)?
        else {
            return Ok(Planned::Exhausted(self.exhausted(&plan)));
        };
        let session = Session {
            order_id: update.order_id.clone(),
            market: update.market.clone(),
            version: update.version,
            revision: next_revision(previous.as_ref()),
            state: SessionState::Active,
            participants: people.to_vec(),
            contacts,
            handovers,
            updated_at: now,
            routes_until: plan.routes_until,
            record: update.record,
            closed_after_end: Vec::new(),
        };
        let tally = Tally {
            live_peak: live_peak(&session, &busy, &pool, needs),
            moved: 0,
        };
        let commit = self.claim(session, previous.as_ref(), refused, now);
        Ok(Planned::Commit(Box::new(commit), tally))
    }

    /// Plans `order`'s move off numbers leaving service: the same participants, pairs and
    /// routes' end, only the contacts on such numbers planned again.
    async fn plan_move(
        &self,
        order: &OrderId,
        now: UnixTime,
        refused: &Refused,
    ) -> Result<Planned, AssignError> {
        let Some(previous) = self.store.session(order).await? else {
            return Ok(Planned::Unchanged(0));
        };
        let Some(needs) = self.settings.needs_for(&previous.market) else {
            return Err(AssignError::UnknownMarket(previous.market.clone()));
        };
        // Read afresh: which numbers leave service is what a move is about (a few dozen items).
        let pool = self.pool(&previous.market, true).await?;
        let leaving: HashSet<&VirtualNumber> = pool
            .iter()
            .filter(|v| !v.state.keeps_contacts())
            .map(|v| &v.number)
            .collect();
        if !previous.is_live(now)
            || !previous
                .contacts
                .iter()
                .any(|c| leaving.contains(&c.number))
        {
            return Ok(Planned::Unchanged(previous.version));
        }
        let busy = self.busy(&previous.participants, now).await?;
        let pairs: Vec<(UserId, UserId)> = previous
            .contacts
            .iter()
            .map(|c| (c.a.clone(), c.b.clone()))
            .collect();
        let plan = Replan {
            order_id: order,
            market: &previous.market,
            people: &previous.participants,
            previous: Some(&previous),
            busy: &busy,
            pool: &pool,
            needs,
            now,
            routes_until: previous.routes_until,
            keep_pairs: Some(&pairs),
        };
        let Some(Replanned {
            contacts,
            handovers,
        }) = self.replan(&plan, refused)?
        else {
            return Ok(Planned::Exhausted(self.exhausted(&plan)));
        };
        let moved = previous
            .contacts
            .iter()
            .filter(|c| {
                !contacts
                    .iter()
                    .any(|n| n.joins(&c.a, &c.b) && n.number == c.number)
            })
            .count();
        let session = Session {
            revision: next_revision(Some(&previous)),
            contacts,
            handovers,
            updated_at: now,
            ..previous.clone()
        };
        let commit = self.claim(session, Some(&previous), refused, now);
        let tally = Tally {
            live_peak: None,
            moved,
        };
        Ok(Planned::Commit(Box::new(commit), tally))
    }

    /// The live contacts of each phone of each participant, other orders' and this one's.
    async fn busy(
        &self,
        people: &[Participant],
        now: UnixTime,
    ) -> Result<Vec<Vec<LiveContact>>, StoreError> {
        let store = &self.store;
        try_join_all(people.iter().map(|p| async move {
            let each = try_join_all(p.phones().map(|phone| store.live_contacts(phone, now)));
            Ok::<_, StoreError>(each.await?.concat())
        }))
        .await
    }

    /// The contacts and handovers of a plan, or `None` when the pool cannot serve a pair.
    fn replan(
        &self,
        plan: &Replan<'_>,
        refused: &Refused,
    ) -> Result<Option<Replanned>, AssignError> {
        let busy = plan.busy_numbers();
        let mut contacts = match plan_contacts(&plan.request(&busy, &self.settings.contact_policy))
        {
            Ok(c) => c,
            Err(_) => return Ok(None),
        };
        if let Some(pairs) = plan.keep_pairs {
            // A move changes numbers only: an ended order's dropped pairs stay dropped.
            contacts.retain(|c| pairs.iter().any(|(a, b)| c.joins(a, b)));
        }
        let pins_on = self.settings.pin_markets.contains(plan.market);
        issue_pins(
            &mut contacts,
            plan.people,
            plan.previous,
            pins_on,
            &refused.pins,
        );
        let handovers = plan.handovers(&contacts, self.settings.handover);
        Ok(Some(Replanned {
            contacts,
            handovers,
        }))
    }

    fn exhausted(&self, plan: &Replan<'_>) -> PoolExhausted {
        let busy = plan.busy_numbers();
        match plan_contacts(&plan.request(&busy, &self.settings.contact_policy)) {
            Err(e) => e,
            Ok(_) => PoolExhausted {
                market: plan.market.clone(),
                eligible: 0,
                live_contacts: 0,
            },
        }
    }

    /// The commit of a planned session over `previous`: every pair claimed whole in one
    /// transaction (if either direction is taken, nothing is written and the pair is planned
    /// again on a number both can take), every handover renewed over its own routes, and the
    /// previous session's routes and PINs that are neither deleted.
    fn claim(
        &self,
        session: Session,
        previous: Option<&Session>,
        refused: &Refused,
        now: UnixTime,
    ) -> SessionCommit {
        let pairs = session.route_pairs(session.routes_until);
        let handovers = session.handover_pairs();
        let kept: HashSet<RouteKey> = pairs
            .iter()
            .chain(&handovers)
            .flat_map(RoutePair::keys)
            .collect();
        let kept_pins: HashSet<PinKey> = pairs.iter().flat_map(pin_keys).collect();
        let former_users = former_users(previous, &session);
        // A person's entry says their role in the order and until when it is live: a commit
        // that changes neither (a move) leaves the entries as they are.
        let people_entries = previous.is_none_or(|p| {
            p.routes_until != session.routes_until
                || !p
                    .participants
                    .iter()
                    .map(|x| (&x.user_id, &x.role))
                    .eq(session.participants.iter().map(|x| (&x.user_id, &x.role)))
        });
        let (delete_routes, delete_pins) = previous
            .map(|prev| {
                let old: Vec<RoutePair> = prev
                    .route_pairs(0)
                    .into_iter()
                    .chain(prev.handover_pairs())
                    .collect();
                (
                    old.iter()
                        .flat_map(RoutePair::keys)
                        .filter(|k| !kept.contains(k) && !refused.routes.contains(k))
                        .collect::<HashSet<_>>()
                        .into_iter()
                        .collect(),
                    old.iter()
                        .flat_map(pin_keys)
                        .filter(|k| !kept_pins.contains(k) && !refused.pins.contains(k))
                        .collect(),
                )
            })
            .unwrap_or_default();
        SessionCommit {
            session_expires_at: session.routes_until + secs(self.settings.retention),
            expected_revision: previous.map(|p| p.revision),
            session,
            pairs,
            pair_write: PairWrite::Claim,
            handovers,
            delete_routes,
            delete_pins,
            former_users,
            people_entries,
            now,
        }
    }

    /// Ends the order. Only routes still live and this order's are extended, for the grace
    /// period and a pair at a time: an end never revives what time has ended, and a pair
    /// either direction of which was refused ends at once, both ways. Handovers keep their own
    /// end, within the grace. A direction the terms close is renewed with its pair, flagged
    /// closed, never ended apart from it. An end after an end keeps the first end's grace and
    /// may only close more directions (closing fails safe): the live pairs take them at their
    /// own end.
    async fn plan_end(
        &self,
        update: &OrderUpdate,
        now: UnixTime,
        terms: &EndTerms,
        refused: &Refused,
    ) -> Result<Planned, AssignError> {
        let grace = terms.grace.unwrap_or(self.settings.grace);
        let previous = self.store.session(&update.order_id).await?;
        let expected_revision = previous.as_ref().map(|p| p.revision);
        let revision = next_revision(previous.as_ref());
        if let Some(prev) = &previous {
            if prev.version >= update.version {
                return Ok(Planned::Unchanged(prev.version));
            }
            check_directions(prev, &terms.closed)?;
        }
        let planned = match previous {
            Some(prev) if prev.state == SessionState::Ended || !prev.is_live(now) => {
                let closed = closing_more(&prev.closed_after_end, &terms.closed);
                let renew = prev.state == SessionState::Ended
                    && prev.is_live(now)
                    && closed != prev.closed_after_end;
                let ended = Session {
                    version: update.version,
                    revision,
                    updated_at: now,
                    state: SessionState::Ended,
                    closed_after_end: closed,
                    ..prev
                };
                if renew {
                    let until = ended.routes_until;
                    renew_ended(ended, until, now, refused)
                } else {
                    // Lapsed, or nothing more to close: nothing of it comes back.
                    EndPlan::session_only(ended)
                }
            }
            Some(prev) => {
                let ending = Session {
                    version: update.version,
                    revision,
                    updated_at: now,
                    state: SessionState::Ended,
                    closed_after_end: terms.closed.clone(),
                    ..prev
                };
                renew_ended(ending, now + secs(grace), now, refused)
            }
            // The end arrived before the assignment: a tombstone makes the late assignment stale.
            None => EndPlan::session_only(Session {
                order_id: update.order_id.clone(),
                market: update.market.clone(),
                version: update.version,
                revision,
                state: SessionState::Ended,
                participants: Vec::new(),
                contacts: Vec::new(),
                handovers: Vec::new(),
                updated_at: now,
                routes_until: now,
                record: false,
                // What the end said, so that its repeat is seen as the same end.
                closed_after_end: terms.closed.clone(),
            }),
        };
        let EndPlan {
            session,
            pairs,
            handovers,
            delete_routes,
            delete_pins,
        } = planned;
        let commit = SessionCommit {
            session_expires_at: session.routes_until.max(now) + secs(self.settings.retention),
            expected_revision,
            // An end keeps the participants: nobody leaves.
            former_users: Vec::new(),
            people_entries: true,
            session,
            pairs,
            pair_write: PairWrite::Renew,
            handovers,
            delete_routes,
            delete_pins,
            now,
        };
        Ok(Planned::Commit(Box::new(commit), Tally::default()))
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

/// What an end writes: the ended session, the pairs and handovers it renews, and the route
/// and PIN items of pairs it drops.
struct EndPlan {
    session: Session,
    pairs: Vec<RoutePair>,
    handovers: Vec<RoutePair>,
    delete_routes: Vec<RouteKey>,
    delete_pins: Vec<PinKey>,
}

impl EndPlan {
    fn session_only(session: Session) -> Self {
        EndPlan {
            session,
            pairs: Vec::new(),
            handovers: Vec::new(),
            delete_routes: Vec::new(),
            delete_pins: Vec::new(),
        }
    }
}

/// `ended`'s live pairs and handovers renewed to `routes_until` (handovers to their own end
/// within it), as the ended session routes them (closed directions flagged); a pair either
/// direction of which a commit refused is dropped whole, its other items deleted.
fn renew_ended(
    ended: Session,
    routes_until: UnixTime,
    now: UnixTime,
    refused: &Refused,
) -> EndPlan {
    let (kept, dropped): (Vec<(Contact, RoutePair)>, Vec<_>) = ended
        .contacts
        .iter()
        .filter_map(|c| Some((c.clone(), ended.route_pair(c, routes_until)?)))
        .partition(|(_, pair)| !refused.touches(pair));
    let (kept_handovers, dropped_handovers): (Vec<(Handover, RoutePair)>, Vec<_>) = ended
        .handovers
        .iter()
        .filter(|h| h.until > now)
        .filter_map(|h| {
            let until = h.until.min(routes_until);
            Some((
                Handover { until, ..h.clone() },
                ended.route_pair(&h.contact, until)?,
            ))
        })
        .partition(|(_, pair)| !refused.touches(pair));
    let delete_routes = dropped
        .iter()
        .map(|(_, pair)| pair)
        .chain(dropped_handovers.iter().map(|(_, pair)| pair))
        .flat_map(RoutePair::keys)
        .filter(|k| !refused.routes.contains(k))
        .collect();
    let delete_pins = dropped
        .iter()
        .flat_map(|(_, pair)| pin_keys(pair))
        .filter(|k| !refused.pins.contains(k))
        .collect();
    let (contacts, pairs) = kept.into_iter().unzip();
    let (handovers, handover_pairs) = kept_handovers.into_iter().unzip();
    EndPlan {
        session: Session {
            routes_until,
            contacts,
            handovers,
            ..ended
        },
        pairs,
        handovers: handover_pairs,
        delete_routes,
        delete_pins,
    }
}

/// The directions closed after an end asking `asked` over an end that closed `closed`: both,
/// once each, in a stable order.
fn closing_more(closed: &[Direction], asked: &[Direction]) -> Vec<Direction> {
    let mut all: Vec<Direction> = closed.iter().chain(asked).cloned().collect();
    all.sort();
    all.dedup();
    all
}

/// Refuses closing a direction between roles the order does not have (a typo would close
/// nothing, silently). A tombstone has no participants to check against.
fn check_directions(session: &Session, closed: &[Direction]) -> Result<(), SessionError> {
    if session.participants.is_empty() {
        return Ok(());
    }
    let has = |role: &Role| session.participants.iter().any(|p| &p.role == role);
    for (index, d) in closed.iter().enumerate() {
        for (side, role) in [("from", &d.from), ("to", &d.to)] {
            if !has(role) {
                return Err(SessionError::NoSuchRole { index, side });
            }
        }
    }
    Ok(())
}

/// What `run` plans and commits.
#[derive(Clone, Copy)]
enum Change<'a> {
    Update(&'a OrderUpdate),
    Move(&'a OrderId),
}

impl Change<'_> {
    fn order_id(&self) -> &OrderId {
        match self {
            Change::Update(u) => &u.order_id,
            Change::Move(order) => order,
        }
    }
}

enum Ran {
    Committed {
        session: Session,
        attempts: u32,
        /// Contacts a move took off their number.
        moved: usize,
    },
    /// Nothing to write: the stored session (at this version) is as new or newer, or has
    /// nothing to move.
    Unchanged(u64),
}

enum Planned {
    Commit(Box<SessionCommit>, Tally),
    Unchanged(u64),
    Exhausted(PoolExhausted),
}

/// What a planned commit changes besides the session.
#[derive(Default)]
struct Tally {
    /// For new participants: the most live contacts one of them will hold.
    live_peak: Option<u32>,
    /// Contacts a move takes off their number.
    moved: usize,
}

/// A plan's contacts and handovers.
struct Replanned {
    contacts: Vec<Contact>,
    handovers: Vec<Handover>,
}

/// Everything planning an order's contacts again reads: an update's or a move's.
struct Replan<'a> {
    order_id: &'a OrderId,
    market: &'a Market,
    people: &'a [Participant],
    previous: Option<&'a Session>,
    /// Each participant's live contacts (same index), of any order.
    busy: &'a [Vec<LiveContact>],
    pool: &'a [PoolNumber],
    needs: Capabilities,
    now: UnixTime,
    routes_until: UnixTime,
    /// A move keeps the session's pairs: only these.
    keep_pairs: Option<&'a [(UserId, UserId)]>,
}

impl Replan<'_> {
    /// For each participant, the numbers the policy may not give them: those they dial in other
    /// live orders, and those this order's handovers still route them on.
    fn busy_numbers(&self) -> Vec<HashSet<VirtualNumber>> {
        self.busy
            .iter()
            .zip(self.people)
            .map(|(live, p)| {
                let handovers = self
                    .carried_handovers()
                    .filter(|h| h.contact.involves(&p.user_id))
                    .map(|h| h.contact.number.clone());
                live.iter()
                    .filter(|c| &c.order_id != self.order_id)
                    .map(|c| c.number.clone())
                    .chain(handovers)
                    .collect()
            })
            .collect()
    }

    fn request<'r>(
        &'r self,
        busy: &'r [HashSet<VirtualNumber>],
        contact_policy: &'r ContactPolicy,
    ) -> PlanRequest<'r> {
        PlanRequest {
            order_id: self.order_id,
            market: self.market,
            participants: self.people,
            previous: self.previous,
            busy,
            pool: self.pool,
            contact_policy,
            needs: self.needs,
        }
    }

    /// The previous session's handovers still running, if it is live.
    fn carried_handovers(&self) -> impl Iterator<Item = &Handover> {
        self.previous
            .filter(|p| p.is_live(self.now))
            .into_iter()
            .flat_map(|p| p.handovers.iter())
            .filter(|h| h.until > self.now)
    }

    /// Whether `user` has the same phones, main and alternate, before and after.
    fn same_phones(&self, user: &UserId) -> bool {
        let now = self.people.iter().find(|p| &p.user_id == user);
        let then = self.previous.and_then(|s| s.participant(user));
        match (now, then) {
            (Some(now), Some(then)) => {
                now.phone == then.phone && now.alternate_phones == then.alternate_phones
            }
            _ => false,
        }
    }

    /// The handovers of the planned `contacts`: each running one whose people still have a
    /// contact, with the same phones; and each previous contact of a live session that leaves
    /// a number leaving service for another number, for `handover` from now. None outlives the
    /// session's routes.
    fn handovers(&self, contacts: &[Contact], handover: Duration) -> Vec<Handover> {
        let still = |c: &Contact| {
            contacts
                .iter()
                .any(|n| n.joins(&c.a, &c.b) && n.number != c.number)
                && self.same_phones(&c.a)
                && self.same_phones(&c.b)
        };
        let leaving: HashSet<&VirtualNumber> = self
            .pool
            .iter()
            .filter(|v| !v.state.keeps_contacts())
            .map(|v| &v.number)
            .collect();
        let until = (self.now + secs(handover)).min(self.routes_until);
        let carried = self
            .carried_handovers()
            .filter(|h| still(&h.contact))
            .map(|h| Handover {
                until: h.until.min(self.routes_until),
                ..h.clone()
            });
        let moved = self
            .previous
            .filter(|p| p.is_live(self.now))
            .into_iter()
            .flat_map(|p| p.contacts.iter())
            .filter(|c| leaving.contains(&c.number) && still(c))
            .map(|c| Handover {
                contact: Contact {
                    pins: None,
                    ..c.clone()
                },
                until,
            });
        carried
            .chain(moved)
            .filter(|h| h.until > self.now)
            .collect()
    }
}

/// The people of `previous` who are not in `session`: their entries of the order go.
fn former_users(previous: Option<&Session>, session: &Session) -> Vec<UserId> {
    previous
        .map(|p| {
            p.participants
                .iter()
                .filter(|old| session.participant(&old.user_id).is_none())
                .map(|old| old.user_id.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// The revision a write over `previous` gives the session.
fn next_revision(previous: Option<&Session>) -> u64 {
    previous.map_or(1, |p| p.revision + 1)
}

/// What each participant holds once `session` commits, on the numbers its market's pairs can
/// take: their other orders' contacts and this order's. The most of it is the policy's bound on
/// the market's eligible numbers, recorded for pool-refresh's headroom.
fn live_peak(
    session: &Session,
    busy: &[Vec<LiveContact>],
    pool: &[PoolNumber],
    needs: Capabilities,
) -> Option<u32> {
    let eligible: HashSet<&VirtualNumber> = pool
        .iter()
        .filter(|v| v.eligible_for(&session.market, needs))
        .map(|v| &v.number)
        .collect();
    busy.iter()
        .zip(&session.participants)
        .map(|(live, p)| {
            let other: HashSet<&VirtualNumber> = live
                .iter()
                .filter(|c| c.order_id != session.order_id && eligible.contains(&c.number))
                .map(|c| &c.number)
                .collect();
            let here = session
                .contacts
                .iter()
                .filter(|c| c.involves(&p.user_id) && eligible.contains(&c.number))
                .count();
            u32::try_from(other.len() + here).unwrap_or(u32::MAX)
        })
        .max()
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
            revision: 1,
            handovers: Vec::new(),
            state: SessionState::Active,
            participants: people(),
            contacts,
            updated_at: 0,
            routes_until: 10,
            record: false,
            closed_after_end: Vec::new(),
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

    /// A store in memory that notes how many people's entries each commit writes.
    struct EntriesNoted {
        inner: crate::store::memory::MemoryStore,
        written: std::sync::Mutex<Vec<usize>>,
    }

    #[async_trait::async_trait]
    impl AssignmentStore for EntriesNoted {
        async fn session(&self, order: &OrderId) -> Result<Option<Session>, StoreError> {
            self.inner.session(order).await
        }
        async fn live_contacts(
            &self,
            person: &crate::domain::RealNumber,
            now: UnixTime,
        ) -> Result<Vec<LiveContact>, StoreError> {
            self.inner.live_contacts(person, now).await
        }
        async fn pool(&self, market: &Market) -> Result<Vec<PoolNumber>, StoreError> {
            self.inner.pool(market).await
        }
        async fn commit(&self, commit: &SessionCommit) -> Result<(), CommitError> {
            self.written.lock().unwrap().push(commit.entries());
            self.inner.commit(commit).await
        }
        async fn raise_live_peak(
            &self,
            market: &Market,
            day: &str,
            peak: u32,
            expires_at: UnixTime,
        ) -> Result<crate::store::PeakWrite, StoreError> {
            self.inner
                .raise_live_peak(market, day, peak, expires_at)
                .await
        }
    }

    /// A move keeps the order's people and how long it lives: their entries stay as written,
    /// a write per participant saved; the next event writes them again.
    #[tokio::test]
    async fn a_move_leaves_peoples_entries_as_they_are() {
        use crate::domain::NumberState;
        use crate::store::PoolStore;
        let store = Arc::new(EntriesNoted {
            inner: crate::store::memory::MemoryStore::new(),
            written: Default::default(),
        });
        let number = |n: &str, state| PoolNumber {
            number: VirtualNumber::parse(n).unwrap(),
            provider: "twilio".parse().unwrap(),
            market: "IN".parse().unwrap(),
            capabilities: Capabilities::VOICE_AND_SMS,
            state,
            hold: None,
        };
        let (first, second) = ("+911140000010", "+911140000011");
        store
            .inner
            .put_number(&number(first, NumberState::Active))
            .await
            .unwrap();
        let assigner = Assigner::new(
            store.clone(),
            AssignSettings::for_markets(["IN".parse().unwrap()]),
        );
        let update = |version| OrderUpdate {
            order_id: "o1".parse().unwrap(),
            market: "IN".parse().unwrap(),
            version,
            record: false,
            change: OrderChange::Participants(vec![
                person("c", "+919810000001"),
                Participant {
                    role: "driver".parse().unwrap(),
                    ..person("d", "+919710000001")
                },
            ]),
        };
        assigner.apply(&update(1), 100).await.unwrap();
        store
            .inner
            .put_number(&number(first, NumberState::Quarantined))
            .await
            .unwrap();
        store
            .inner
            .put_number(&number(second, NumberState::Active))
            .await
            .unwrap();

        let moved = assigner
            .move_off(&"o1".parse().unwrap(), 110)
            .await
            .unwrap();
        assigner.apply(&update(2), 120).await.unwrap();

        let Moved::Moved { session, .. } = moved else {
            panic!("not moved: {moved:?}");
        };
        assert_eq!(session.contacts[0].number.as_str(), second);
        assert_eq!(*store.written.lock().unwrap(), [2, 0, 2]);
    }
}
