//! An in-memory store with the same conditions as DynamoDB, for fast tests and simulations.
//! It passes the same contract tests as the DynamoDB store.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::domain::invariant::{
    PersonKey, PinAt, RouteAt, StoredPair, StoredPin, StoredRoute, StoredSession,
};
use crate::domain::{
    AnswerTally, CallId, ConnectedCall, Market, OrderId, PinKey, PinRoute, PoolNumber, RealNumber,
    Route, RouteKey, Session, UnixTime, UserId, VirtualNumber,
};
use crate::store::{
    AnswerStats, AssignmentStore, AuditPage, AuditStore, CallLedger, CommitError, LeaseTake,
    LiveContact, OrdersOn, Outage, PairIndex, PairWrite, PeakWrite, PinAttempts, PinGuard,
    PoolEntry, PoolStore, PoolWriteError, PurchaseCount, PurchaseLedger, RouteReader, SampledRoute,
    SessionCommit, SessionDirectory, Sighting, StoreError, WalkCursor, MAX_TALLY_DAYS,
};

#[derive(Default)]
struct Tables {
    sessions: HashMap<OrderId, Session>,
    /// Each person's entries: order → until when it connects.
    users: HashMap<UserId, BTreeMap<OrderId, UnixTime>>,
    routes: HashMap<RealNumber, BTreeMap<VirtualNumber, Route>>,
    /// PIN → the route it stands for.
    pins: HashMap<PinKey, Route>,
    pool: BTreeMap<Market, BTreeMap<VirtualNumber, PoolEntry>>,
    live_peaks: HashMap<(Market, String), u32>,
    purchases: HashMap<String, u32>,
    /// name → (holder, until)
    leases: HashMap<String, (String, UnixTime)>,
    /// (endpoint, call id) → (first seen, kept until)
    calls: HashMap<(String, CallId), (UnixTime, UnixTime)>,
    connected: HashMap<(String, CallId), ConnectedCall>,
    /// Answer tallies by (number, UTC day index).
    answers: HashMap<(VirtualNumber, i64), AnswerTally>,
    /// PIN attempts by (endpoint, call id); by (caller, number, hour); failures by (number, hour).
    pin_calls: HashMap<(String, CallId), u32>,
    pin_callers: HashMap<(RealNumber, VirtualNumber, i64), u32>,
    pin_failures: HashMap<(VirtualNumber, i64), u32>,
}

#[derive(Default)]
pub struct MemoryStore {
    tables: Mutex<Tables>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Tables>, StoreError> {
        self.tables
            .lock()
            .map_err(|_| StoreError::Unavailable(Outage::Poisoned))
    }
}

#[async_trait]
impl RouteReader for MemoryStore {
    async fn route(
        &self,
        caller: &RealNumber,
        dialled: &VirtualNumber,
    ) -> Result<Option<Route>, StoreError> {
        let tables = self.lock()?;
        Ok(tables
            .routes
            .get(caller)
            .and_then(|r| r.get(dialled))
            .cloned())
    }

    async fn pin_route(&self, key: &PinKey) -> Result<Option<Route>, StoreError> {
        Ok(self.lock()?.pins.get(key).cloned())
    }
}

#[async_trait]
impl CallLedger for MemoryStore {
    async fn sight(
        &self,
        endpoint: &str,
        call_id: &CallId,
        now: UnixTime,
        keep_until: UnixTime,
    ) -> Result<Sighting, StoreError> {
        let mut tables = self.lock()?;
        let key = (endpoint.to_owned(), call_id.clone());
        match tables.calls.get(&key) {
            // DynamoDB's TTL deletes late; a lapsed entry is as good as gone.
            Some(&(first_seen, until)) if until > now => Ok(Sighting::Repeat { first_seen }),
            _ => {
                tables.calls.insert(key.clone(), (now, keep_until));
                tables.connected.remove(&key);
                Ok(Sighting::First)
            }
        }
    }

    async fn remember_connected(
        &self,
        endpoint: &str,
        call: &ConnectedCall,
    ) -> Result<(), StoreError> {
        let mut tables = self.lock()?;
        let key = (endpoint.to_owned(), call.call_id.clone());
        // As on DynamoDB: only a call the ledger has seen.
        if tables.calls.contains_key(&key) {
            tables.connected.insert(key, call.clone());
        }
        Ok(())
    }

    async fn connected(
        &self,
        endpoint: &str,
        call_id: &CallId,
        now: UnixTime,
    ) -> Result<Option<ConnectedCall>, StoreError> {
        let tables = self.lock()?;
        let key = (endpoint.to_owned(), call_id.clone());
        Ok(match tables.calls.get(&key) {
            Some(&(_, until)) if until > now => tables.connected.get(&key).cloned(),
            _ => None,
        })
    }
}

#[async_trait]
impl PinGuard for MemoryStore {
    async fn count_pin_attempt(
        &self,
        endpoint: &str,
        call_id: &CallId,
        caller: &RealNumber,
        number: &VirtualNumber,
        now: UnixTime,
    ) -> Result<PinAttempts, StoreError> {
        let mut tables = self.lock()?;
        let hour = now.div_euclid(HOUR);
        let this_call = tables
            .pin_calls
            .entry((endpoint.to_owned(), call_id.clone()))
            .or_default();
        *this_call += 1;
        let this_call = *this_call;
        let caller_this_hour = tables
            .pin_callers
            .entry((caller.clone(), number.clone(), hour))
            .or_default();
        *caller_this_hour += 1;
        let caller_this_hour = *caller_this_hour;
        Ok(PinAttempts {
            this_call,
            caller_this_hour,
            number_failures_this_hour: tables
                .pin_failures
                .get(&(number.clone(), hour))
                .copied()
                .unwrap_or(0),
        })
    }

    async fn count_pin_failure(
        &self,
        number: &VirtualNumber,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        *self
            .lock()?
            .pin_failures
            .entry((number.clone(), now.div_euclid(HOUR)))
            .or_default() += 1;
        Ok(())
    }
}

const HOUR: UnixTime = 3_600;

#[async_trait]
impl AnswerStats for MemoryStore {
    async fn count_answer(
        &self,
        number: &VirtualNumber,
        _call_id: &CallId,
        answered: bool,
        now: UnixTime,
        _keep_until: UnixTime,
    ) -> Result<(), StoreError> {
        let mut tables = self.lock()?;
        let tally = tables
            .answers
            .entry((number.clone(), now.div_euclid(DAY)))
            .or_default();
        tally.attempted += 1;
        tally.answered += u64::from(answered);
        Ok(())
    }

    async fn answer_tally(
        &self,
        number: &VirtualNumber,
        now: UnixTime,
        days: u32,
    ) -> Result<AnswerTally, StoreError> {
        let tables = self.lock()?;
        let today = now.div_euclid(DAY);
        let days = i64::from(days.clamp(1, MAX_TALLY_DAYS));
        Ok((today - days + 1..=today)
            .filter_map(|day| tables.answers.get(&(number.clone(), day)))
            .fold(AnswerTally::default(), |sum, t| AnswerTally {
                attempted: sum.attempted + t.attempted,
                answered: sum.answered + t.answered,
            }))
    }
}

/// Seconds in a UTC day: the answer tally's bucket.
const DAY: UnixTime = 86_400;

#[async_trait]
impl AssignmentStore for MemoryStore {
    async fn session(&self, order: &OrderId) -> Result<Option<Session>, StoreError> {
        Ok(self.lock()?.sessions.get(order).cloned())
    }

    async fn live_contacts(
        &self,
        person: &RealNumber,
        now: UnixTime,
    ) -> Result<Vec<LiveContact>, StoreError> {
        let tables = self.lock()?;
        Ok(tables
            .routes
            .get(person)
            .into_iter()
            .flat_map(|routes| routes.values())
            .filter(|r| r.is_live(now))
            .map(|r| LiveContact {
                number: r.number.clone(),
                order_id: r.order_id.clone(),
                expires_at: r.expires_at,
            })
            .collect())
    }

    async fn pool(&self, market: &Market) -> Result<Vec<PoolNumber>, StoreError> {
        Ok(self
            .lock()?
            .pool
            .get(market)
            .map(|p| p.values().map(|e| e.number.clone()).collect())
            .unwrap_or_default())
    }

    async fn commit(&self, commit: &SessionCommit) -> Result<(), CommitError> {
        let mut tables = self.lock()?;
        let order = &commit.session.order_id;
        let stored = tables.sessions.get(order).map(|s| s.revision);
        if stored != commit.expected_revision {
            return Err(CommitError::SessionChanged);
        }
        let held = |key: &RouteKey| {
            tables
                .routes
                .get(&key.caller)
                .and_then(|r| r.get(&key.number))
        };
        let refused = |r: Option<&Route>| match commit.pair_write {
            PairWrite::Claim => r.is_some_and(|r| r.is_live(commit.now) && &r.order_id != order),
            PairWrite::Renew => !r.is_some_and(|r| r.is_live(commit.now) && &r.order_id == order),
        };
        let mut taken: Vec<RouteKey> = commit
            .put_routes()
            .map(Route::key)
            .filter(|k| refused(held(k)))
            .collect();
        // A handover is only ever written over its own live routes.
        taken.extend(
            commit.handover_routes().map(Route::key).filter(|k| {
                !held(k).is_some_and(|r| r.is_live(commit.now) && &r.order_id == order)
            }),
        );
        taken.extend(
            commit
                .delete_routes
                .iter()
                .filter(|k| held(k).is_some_and(|r| &r.order_id != order))
                .cloned(),
        );
        if !taken.is_empty() {
            return Err(CommitError::RoutesTaken(taken));
        }
        // A PIN is this pair's if it names this order and stands for the same participant.
        let ours = |held: &Route, pin: &PinRoute| {
            &held.order_id == order && held.caller == pin.route.caller
        };
        let mut pins_taken: Vec<PinKey> = commit
            .put_pins()
            .filter(|pin| {
                let held = tables.pins.get(&pin.key());
                match commit.pair_write {
                    PairWrite::Claim => {
                        held.is_some_and(|h| h.is_live(commit.now) && !ours(h, pin))
                    }
                    PairWrite::Renew => {
                        !held.is_some_and(|h| h.is_live(commit.now) && ours(h, pin))
                    }
                }
            })
            .map(PinRoute::key)
            .collect();
        pins_taken.extend(
            commit
                .delete_pins
                .iter()
                .filter(|k| tables.pins.get(k).is_some_and(|h| &h.order_id != order))
                .cloned(),
        );
        if !pins_taken.is_empty() {
            return Err(CommitError::PinsTaken(pins_taken));
        }
        for key in &commit.delete_pins {
            tables.pins.remove(key);
        }
        for pin in commit.put_pins() {
            tables.pins.insert(pin.key(), pin.route.clone());
        }
        for key in &commit.delete_routes {
            if let Some(routes) = tables.routes.get_mut(&key.caller) {
                routes.remove(&key.number);
            }
        }
        for route in commit.put_routes().chain(commit.handover_routes()) {
            tables
                .routes
                .entry(route.caller.clone())
                .or_default()
                .insert(route.number.clone(), route.clone());
        }
        let (people, former) = if commit.people_entries {
            (&commit.session.participants[..], &commit.former_users[..])
        } else {
            (&[][..], &[][..])
        };
        for user in former {
            if let Some(orders) = tables.users.get_mut(user) {
                orders.remove(order);
            }
        }
        for p in people {
            tables
                .users
                .entry(p.user_id.clone())
                .or_default()
                .insert(order.clone(), commit.session.routes_until);
        }
        tables
            .sessions
            .insert(order.clone(), commit.session.clone());
        Ok(())
    }

    async fn raise_live_peak(
        &self,
        market: &Market,
        day: &str,
        peak: u32,
        _expires_at: UnixTime,
    ) -> Result<PeakWrite, StoreError> {
        let mut tables = self.lock()?;
        let key = (market.clone(), day.to_owned());
        if tables.live_peaks.get(&key).is_some_and(|&p| p >= peak) {
            return Ok(PeakWrite::AlreadyHigher);
        }
        tables.live_peaks.insert(key, peak);
        Ok(PeakWrite::Raised)
    }
}

#[async_trait]
impl PoolStore for MemoryStore {
    async fn pool_entries(&self, market: &Market) -> Result<Vec<PoolEntry>, StoreError> {
        Ok(self
            .lock()?
            .pool
            .get(market)
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn put_number(&self, number: &PoolNumber) -> Result<(), StoreError> {
        let mut tables = self.lock()?;
        let pool = tables.pool.entry(number.market.clone()).or_default();
        let version = pool.get(&number.number).map_or(0, |e| e.version) + 1;
        pool.insert(
            number.number.clone(),
            PoolEntry {
                number: number.clone(),
                version,
            },
        );
        Ok(())
    }

    async fn put_number_if(
        &self,
        number: &PoolNumber,
        expected: Option<u64>,
    ) -> Result<u64, PoolWriteError> {
        let mut tables = self.lock()?;
        let pool = tables.pool.entry(number.market.clone()).or_default();
        let stored = pool.get(&number.number).map(|e| e.version);
        if stored != expected {
            return Err(PoolWriteError::NumberChanged(number.number.clone()));
        }
        let version = expected.map_or(1, |v| v + 1);
        pool.insert(
            number.number.clone(),
            PoolEntry {
                number: number.clone(),
                version,
            },
        );
        Ok(version)
    }

    async fn live_peak(&self, market: &Market, day: &str) -> Result<Option<u32>, StoreError> {
        Ok(self
            .lock()?
            .live_peaks
            .get(&(market.clone(), day.to_owned()))
            .copied())
    }

    async fn sample_routes(
        &self,
        now: UnixTime,
        budget: usize,
    ) -> Result<Vec<SampledRoute>, StoreError> {
        Ok(self
            .lock()?
            .routes
            .values()
            .flat_map(|routes| routes.values())
            .take(budget)
            .filter(|r| r.is_live(now))
            .map(|r| SampledRoute {
                market: r.market.clone(),
                number: r.number.clone(),
            })
            .collect())
    }
}

#[async_trait]
impl SessionDirectory for MemoryStore {
    async fn sessions_of(&self, user: &UserId, now: UnixTime) -> Result<Vec<OrderId>, StoreError> {
        Ok(self
            .lock()?
            .users
            .get(user)
            .map(|orders| {
                orders
                    .iter()
                    .filter(|(_, until)| **until > now)
                    .map(|(order, _)| order.clone())
                    .collect()
            })
            .unwrap_or_default())
    }
}

#[async_trait]
impl PairIndex for MemoryStore {
    async fn orders_on(
        &self,
        number: &VirtualNumber,
        now: UnixTime,
        limit: usize,
    ) -> Result<OrdersOn, StoreError> {
        let tables = self.lock()?;
        let mut orders: Vec<OrderId> = tables
            .sessions
            .values()
            .filter(|s| s.is_live(now) && s.contacts.iter().any(|c| &c.number == number))
            .map(|s| s.order_id.clone())
            .collect();
        orders.sort();
        let more = orders.len() > limit;
        orders.truncate(limit);
        Ok(OrdersOn { orders, more })
    }
}

#[async_trait]
impl PurchaseLedger for MemoryStore {
    async fn count_purchase(
        &self,
        month: &str,
        cap: u32,
        _expires_at: UnixTime,
    ) -> Result<PurchaseCount, StoreError> {
        let mut tables = self.lock()?;
        let count = tables.purchases.entry(month.to_owned()).or_default();
        if *count >= cap {
            return Ok(PurchaseCount::AtCap);
        }
        *count += 1;
        Ok(PurchaseCount::Counted)
    }

    async fn uncount_purchase(&self, month: &str) -> Result<(), StoreError> {
        if let Some(count) = self.lock()?.purchases.get_mut(month) {
            *count = count.saturating_sub(1);
        }
        Ok(())
    }

    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: UnixTime,
        until: UnixTime,
    ) -> Result<LeaseTake, StoreError> {
        let mut tables = self.lock()?;
        if tables
            .leases
            .get(name)
            .is_some_and(|(_, held_until)| *held_until >= now)
        {
            return Ok(LeaseTake::Held);
        }
        tables
            .leases
            .insert(name.to_owned(), (holder.to_owned(), until));
        Ok(LeaseTake::Taken)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let mut tables = self.lock()?;
        if tables.leases.get(name).is_some_and(|(h, _)| h == holder) {
            tables.leases.remove(name);
        }
        Ok(())
    }
}

#[async_trait]
impl AuditStore for MemoryStore {
    /// The whole store in one page: a memory store is small.
    async fn audit_page(
        &self,
        _from: Option<WalkCursor>,
        _limit: u32,
        live_at: UnixTime,
    ) -> Result<AuditPage, StoreError> {
        let tables = self.lock()?;
        let all_routes = tables.routes.values().flat_map(|routes| routes.values());
        let scanned = (all_routes.clone().count() + tables.sessions.len()) as u64;
        let routes: Vec<StoredRoute> = all_routes
            .filter(|r| r.is_live(live_at))
            .map(stored_route)
            .collect();
        let sessions: Vec<StoredSession> = tables
            .sessions
            .values()
            .filter(|s| s.is_live(live_at))
            .map(stored_session)
            .collect();
        let pins = tables
            .pins
            .iter()
            .filter(|(_, r)| r.is_live(live_at))
            .map(|(key, r)| stored_pin(key, r))
            .collect();
        Ok(AuditPage {
            scanned,
            routes,
            sessions,
            pins,
            read_units: 0.0,
            next: None,
        })
    }

    async fn audit_pins(&self, pins: &[PinAt]) -> Result<Vec<StoredPin>, StoreError> {
        let tables = self.lock()?;
        Ok(tables
            .pins
            .iter()
            .map(|(key, r)| stored_pin(key, r))
            .filter(|p| pins.contains(&p.at))
            .collect())
    }

    async fn audit_items(
        &self,
        routes: &[RouteAt],
        orders: &[OrderId],
    ) -> Result<(Vec<StoredRoute>, Vec<StoredSession>), StoreError> {
        let tables = self.lock()?;
        let found = tables
            .routes
            .iter()
            .flat_map(|(caller, routes)| routes.iter().map(move |(n, r)| (caller, n, r)))
            .filter(|(caller, n, _)| {
                routes
                    .iter()
                    .any(|at| at.caller == person(caller) && &&at.number == n)
            })
            .map(|(_, _, r)| stored_route(r))
            .collect();
        let sessions = orders
            .iter()
            .filter_map(|o| tables.sessions.get(o))
            .map(stored_session)
            .collect();
        Ok((found, sessions))
    }
}

/// The memory store keys a PIN by its number and digits: never shown, like any [`PinAt`].
fn stored_pin(key: &PinKey, r: &Route) -> StoredPin {
    StoredPin {
        at: PinAt::new(format!("{}#{}", key.number, key.pin.expose())),
        number: r.number.clone(),
        order_id: r.order_id.clone(),
        principal: person(&r.caller),
        callee: person(&r.callee),
        expires_at: r.expires_at,
    }
}

/// The memory store knows people by their number: never shown, like any [`PersonKey`].
fn person(phone: &RealNumber) -> PersonKey {
    PersonKey::new(phone.expose())
}

fn stored_route(r: &Route) -> StoredRoute {
    StoredRoute {
        caller: person(&r.caller),
        number: r.number.clone(),
        order_id: r.order_id.clone(),
        callee: person(&r.callee),
        capabilities: r.capabilities,
        stands_for: r.stands_for.as_ref().map(person),
        caller_role: r.caller_role.clone(),
        callee_role: r.callee_role.clone(),
        closed: r.closed,
        expires_at: r.expires_at,
    }
}

fn stored_session(s: &Session) -> StoredSession {
    StoredSession {
        order_id: s.order_id.clone(),
        routes_until: s.routes_until,
        pairs: s
            .contacts
            .iter()
            .map(|c| (c, s.routes_until))
            .chain(
                s.handovers
                    .iter()
                    .map(|h| (&h.contact, h.until.min(s.routes_until))),
            )
            .filter_map(|(c, until)| {
                Some(StoredPair {
                    a: person(&s.participant(&c.a)?.phone),
                    b: person(&s.participant(&c.b)?.phone),
                    number: c.number.clone(),
                    until,
                })
            })
            .collect(),
        alternates: s
            .participants
            .iter()
            .flat_map(|p| {
                p.alternate_phones
                    .iter()
                    .map(|alt| (person(alt), person(&p.phone)))
            })
            .collect(),
        closed: s.closed_after_end.clone(),
    }
}
