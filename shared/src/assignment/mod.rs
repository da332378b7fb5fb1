//! Applying order changes: plan with the pure policy, commit atomically, retry lost races.

pub mod policy;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use rand::Rng;

use crate::domain::{
    validate_participants, Capabilities, Contact, ContactPolicy, Market, OrderId, Participant,
    PoolNumber, RouteKey, RoutePair, Session, SessionError, SessionState, UnixTime, VirtualNumber,
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
        // Route keys a commit was refused: held by another live order or, for an end, no longer
        // this order's live route. Never deleted; on an end, their pairs are dropped whole.
        let mut refused: HashSet<RouteKey> = HashSet::new();
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
                    refused.extend(keys);
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
        refused: &HashSet<RouteKey>,
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
        let contacts = match plan_contacts(&PlanRequest {
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
        let delete_routes = previous
            .map(|prev| {
                prev.route_pairs(0)
                    .iter()
                    .flat_map(RoutePair::keys)
                    .filter(|k| !kept.contains(k) && !refused.contains(k))
                    .collect()
            })
            .unwrap_or_default();
        let commit = SessionCommit {
            session,
            session_expires_at: routes_until + secs(self.settings.retention),
            pairs,
            pair_write: PairWrite::Claim,
            delete_routes,
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
        refused: &HashSet<RouteKey>,
    ) -> Result<Planned, AssignError> {
        let previous = self.store.session(&update.order_id).await?;
        let (session, pairs, delete_routes) = match previous {
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
            ),
            Some(prev) => {
                let routes_until = now + secs(self.settings.grace);
                let (kept, dropped): (Vec<(Contact, RoutePair)>, Vec<_>) = prev
                    .contacts
                    .iter()
                    .filter_map(|c| Some((c.clone(), prev.route_pair(c, routes_until)?)))
                    .partition(|(_, pair)| !pair.keys().iter().any(|k| refused.contains(k)));
                let delete_routes = dropped
                    .iter()
                    .flat_map(|(_, pair)| pair.keys())
                    .filter(|k| !refused.contains(k))
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
                (session, pairs, delete_routes)
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
            ),
        };
        let commit = SessionCommit {
            session_expires_at: session.routes_until.max(now) + secs(self.settings.retention),
            session,
            pairs,
            pair_write: PairWrite::Renew,
            delete_routes,
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
