//! Persistence behind role traits, one per kind of user (the webhook reads routes, assignment
//! reads and commits sessions, pool refresh manages the pool and buys within caps, audits walk),
//! so that handlers run the same on DynamoDB and in memory and each depends on what it uses.

mod confirmed;
pub mod dynamodb;
pub mod memory;

pub use confirmed::SessionConfirmed;

use async_trait::async_trait;

use crate::domain::invariant::{
    Audit, Breach, PinAt, RouteAt, StoredPin, StoredRoute, StoredSession,
};
use crate::domain::{
    AnswerTally, CallId, ConnectedCall, Market, OrderId, PinKey, PinRoute, PoolNumber, RealNumber,
    Route, RouteKey, RoutePair, Session, UnixTime, UserId, VirtualNumber,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store throttled the request")]
    Throttled,
    #[error("store did not answer in time")]
    Timeout,
    #[error("store unavailable: {0}")]
    Unavailable(Outage),
    #[error("stored item is unreadable: `{attribute}` is missing or malformed")]
    Corrupt { attribute: &'static str },
    #[error("store rejected the request: {0}")]
    Rejected(StoreRejection),
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
}

/// Why the store could not serve a request that may succeed later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Outage {
    #[error("no usable response")]
    NoResponse,
    #[error("service error")]
    ServiceError,
    #[error("unrecognised service error")]
    Unrecognised,
    /// A lock of the in-memory store was poisoned by a panic.
    #[error("store lock poisoned")]
    Poisoned,
    /// An item read a moment ago is gone (deleted concurrently).
    #[error("an item read a moment ago is gone")]
    Vanished,
}

/// Why the store refused a request: retrying it as it is will not help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreRejection {
    /// The service's error code, e.g. `ValidationException`.
    #[error("{0}")]
    Service(String),
    #[error("the request could not be built")]
    Unbuildable,
    /// A transaction was cancelled for reasons other than its conditions: their codes.
    #[error("transaction cancelled: {0:?}")]
    Cancelled(Vec<String>),
}

impl StoreError {
    /// Worth retrying later (SQS redelivery, a new call attempt).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Throttled | StoreError::Timeout | StoreError::Unavailable(_)
        )
    }
}

/// Why a session commit did not happen. Nothing of it was written.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The stored session is not the revision the commit was planned from (another write won):
    /// read it again and plan again.
    #[error("the stored session changed since it was read")]
    SessionChanged,
    /// These routes are held by live contacts of other orders (a lost race).
    #[error("{} route(s) are held by other live orders", .0.len())]
    RoutesTaken(Vec<RouteKey>),
    /// These PINs are held on their numbers by other live pairs (or, for an end, no longer
    /// this pair's): new ones are drawn.
    #[error("{} PIN(s) are held by other live pairs", .0.len())]
    PinsTaken(Vec<PinKey>),
    /// A concurrent transaction touched the same items; retry.
    #[error("transaction conflict")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A number a person can dial in a live session, found by the person-route query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveContact {
    pub number: VirtualNumber,
    pub order_id: OrderId,
    pub expires_at: UnixTime,
}

/// A pool number as stored, with the version its next conditional write must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolEntry {
    pub number: PoolNumber,
    /// Grows by one with every write of the number (0 for an item written before versions).
    pub version: u64,
}

/// Why a conditional pool write did not happen. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum PoolWriteError {
    /// Someone wrote the number since it was read (or added it first): read it again and decide again.
    #[error("pool number {0} changed since it was read")]
    NumberChanged(VirtualNumber),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A live route seen by [`PoolStore::sample_routes`]: which market's number it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampledRoute {
    pub market: Market,
    pub number: VirtualNumber,
}

/// How a commit writes its route pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairWrite {
    /// Create, keep or revive: each route is written if it is free (absent, or lapsed at
    /// `now`) or already this order's. An active order's change.
    Claim,
    /// Extend only: each route is written if it is still this order's and live at `now`, so
    /// that the write can never revive a route time has ended. An order's end.
    Renew,
}

/// One atomic change to an order: the new session and its routes, all or nothing.
#[derive(Debug, Clone)]
pub struct SessionCommit {
    /// Written only over the stored session's revision `expected_revision`.
    pub session: Session,
    /// The revision of the session the commit was planned from; `None`: none was stored. A
    /// commit over any other state is refused whole ([`CommitError::SessionChanged`]).
    pub expected_revision: Option<u64>,
    /// When the session item itself may be deleted (it must outlive redeliveries of old events).
    pub session_expires_at: UnixTime,
    /// Both directions of each contact the session holds, written under `pair_write`'s condition.
    pub pairs: Vec<RoutePair>,
    pub pair_write: PairWrite,
    /// Both directions of each handover (contacts moved off a number leaving service, kept on
    /// it a short while), each written only over its own live routes ([`PairWrite::Renew`]):
    /// a handover is never revived or claimed anew.
    pub handovers: Vec<RoutePair>,
    /// Deleted if still this order's.
    pub delete_routes: Vec<RouteKey>,
    /// Deleted if still this order's and standing for the same participant.
    pub delete_pins: Vec<PinKey>,
    /// People of the stored session who are not in this one: their entries of the order go.
    /// (Every participant of `session` gets an entry, live until its `routes_until`.)
    pub former_users: Vec<UserId>,
    /// Whether people's entries are written with this commit: left out only when they would
    /// take it past a transaction's 100 items (the entries only index sessions for the
    /// sessions API's list, which reads each session again).
    pub people_entries: bool,
    pub now: UnixTime,
}

impl SessionCommit {
    /// Every route of a pair written, pair by pair, in order (handovers apart).
    pub fn put_routes(&self) -> impl Iterator<Item = &Route> {
        self.pairs.iter().flat_map(|p| p.routes().iter())
    }

    /// Every route of a handover written, pair by pair.
    pub fn handover_routes(&self) -> impl Iterator<Item = &Route> {
        self.handovers.iter().flat_map(|p| p.routes().iter())
    }

    /// Every PIN written with its pair, under the pair's condition (and standing for the same
    /// participant, when already there).
    pub fn put_pins(&self) -> impl Iterator<Item = &PinRoute> {
        self.pairs.iter().flat_map(|p| p.pins().iter())
    }

    /// The items the commit writes or deletes, the session included.
    pub fn items(&self) -> usize {
        1 + self.put_routes().count()
            + self.handover_routes().count()
            + self.put_pins().count()
            + self.delete_routes.len()
            + self.delete_pins.len()
            + self.entries()
    }

    /// The people's entries this commit writes or deletes.
    pub fn entries(&self) -> usize {
        if self.people_entries {
            self.session.participants.len() + self.former_users.len()
        } else {
            0
        }
    }
}

/// Where a walk over the store's routes and sessions goes on from: opaque.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkCursor {
    pub(crate) pk: String,
    pub(crate) sk: String,
}

/// One page of a walk over every route and session item.
#[derive(Debug, Default)]
pub struct AuditPage {
    pub routes: Vec<StoredRoute>,
    pub sessions: Vec<StoredSession>,
    pub pins: Vec<StoredPin>,
    /// Items read, of any kind.
    pub scanned: u64,
    /// Read capacity units the page consumed (0 where the store does not count them).
    pub read_units: f64,
    /// Where the next page starts; `None` after the last one.
    pub next: Option<WalkCursor>,
}

/// What the webhook reads: one route.
#[async_trait]
pub trait RouteReader: Send + Sync {
    /// The stored route for a call from `caller` to `dialled`, live or not (routing decides
    /// liveness): one strongly consistent read.
    async fn route(
        &self,
        caller: &RealNumber,
        dialled: &VirtualNumber,
    ) -> Result<Option<Route>, StoreError>;

    /// The route a PIN entered on a virtual number stands for, live or not: one strongly
    /// consistent read by the PIN's key.
    async fn pin_route(&self, key: &PinKey) -> Result<Option<Route>, StoreError>;
}

/// The provider call ids the webhook has answered, so that a replayed request is told apart
/// from a provider's retry. Ids are remembered per endpoint until `keep_until`.
#[async_trait]
pub trait CallLedger: Send + Sync {
    /// Records that `endpoint` saw `call_id` at `now`, unless it already had: one conditional
    /// write, which also returns the first sighting of a repeat.
    async fn sight(
        &self,
        endpoint: &str,
        call_id: &CallId,
        now: UnixTime,
        keep_until: UnixTime,
    ) -> Result<Sighting, StoreError>;

    /// Notes on `endpoint`'s entry for the call what it connected, after the answer, so that the
    /// provider's report of the call's end is read by call id alone. Kept as long as the entry.
    async fn remember_connected(
        &self,
        endpoint: &str,
        call: &ConnectedCall,
    ) -> Result<(), StoreError>;

    /// What `endpoint` connected as `call_id`, while its entry lives (`now` before its end).
    async fn connected(
        &self,
        endpoint: &str,
        call_id: &CallId,
        now: UnixTime,
    ) -> Result<Option<ConnectedCall>, StoreError>;
}

/// Per virtual number, how many connected calls were answered, by UTC day: counters spread over
/// [`ANSWER_SHARDS`] items a day so that a busy number is no hot key, read back in one request.
#[async_trait]
pub trait AnswerStats: Send + Sync {
    /// Counts one connected call's end on `number`'s tally for the day of `now` (its shard
    /// chosen by `call_id`), kept until `keep_until`.
    async fn count_answer(
        &self,
        number: &VirtualNumber,
        call_id: &CallId,
        answered: bool,
        now: UnixTime,
        keep_until: UnixTime,
    ) -> Result<(), StoreError>;

    /// `number`'s tally over the `days` UTC days up to and including the day of `now`.
    async fn answer_tally(
        &self,
        number: &VirtualNumber,
        now: UnixTime,
        days: u32,
    ) -> Result<AnswerTally, StoreError>;
}

/// Items a number's daily answer tally is spread over.
pub const ANSWER_SHARDS: u32 = 8;

/// At most this many days of a tally are read at once (one request).
pub const MAX_TALLY_DAYS: u32 = 12;

/// The shard of `call_id`'s count: stable across runs, spread over [`ANSWER_SHARDS`].
pub fn answer_shard(call_id: &CallId) -> u32 {
    fnv1a(call_id.as_str()) % ANSWER_SHARDS
}

/// Whether a call id is new to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sighting {
    First,
    /// Seen before, first at `first_seen`.
    Repeat {
        first_seen: UnixTime,
    },
}

/// How many times a PIN was tried: what bounds guessing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PinAttempts {
    /// Of this call, this one included.
    pub this_call: u32,
    /// By this caller on this number in this UTC hour, this one included.
    pub caller_this_hour: u32,
    /// Wrong PINs entered on this number in this UTC hour, by anyone, before this one.
    pub number_failures_this_hour: u32,
}

/// Counters of PIN attempts, kept a day at most. Never the digits.
#[async_trait]
pub trait PinGuard: Send + Sync {
    /// Counts one attempt of call `call_id` (at `endpoint`) by `caller` on `number`, and reads
    /// the number's failures this hour: one parallel set of writes and a read.
    async fn count_pin_attempt(
        &self,
        endpoint: &str,
        call_id: &CallId,
        caller: &RealNumber,
        number: &VirtualNumber,
        now: UnixTime,
    ) -> Result<PinAttempts, StoreError>;

    /// Counts a wrong PIN entered on `number`.
    async fn count_pin_failure(
        &self,
        number: &VirtualNumber,
        now: UnixTime,
    ) -> Result<(), StoreError>;
}

/// What the webhook uses: routes and PINs to read, the ledger of call ids, numbers' answer
/// tallies and the PIN attempt counters.
pub trait CallRouting: RouteReader + CallLedger + AnswerStats + PinGuard {}

impl<T: RouteReader + CallLedger + AnswerStats + PinGuard + ?Sized> CallRouting for T {}

/// What assignment reads and commits: the assign function, and lookup's fallback.
#[async_trait]
pub trait AssignmentStore: Send + Sync {
    /// The order's session, strongly consistent.
    async fn session(&self, order: &OrderId) -> Result<Option<Session>, StoreError>;

    /// The numbers `person` can dial in live routes at `now`, of any order, strongly consistent.
    async fn live_contacts(
        &self,
        person: &RealNumber,
        now: UnixTime,
    ) -> Result<Vec<LiveContact>, StoreError>;

    /// Every number of the market's pool, whatever its state.
    async fn pool(&self, market: &Market) -> Result<Vec<PoolNumber>, StoreError>;

    /// Writes the session and its routes atomically.
    async fn commit(&self, commit: &SessionCommit) -> Result<(), CommitError>;

    /// Raises the most live contacts one person held in `market` on `day` (`yyyy-mm-dd`) to
    /// `peak`, unless as many or more are recorded. One conditional write; never in a transaction.
    async fn raise_live_peak(
        &self,
        market: &Market,
        day: &str,
        peak: u32,
        expires_at: UnixTime,
    ) -> Result<PeakWrite, StoreError>;
}

/// A person's live sessions (the sessions API's support view): the orders they take part in
/// whose routes still connect at `now`, from their entries (one query, never a scan).
#[async_trait]
pub trait SessionDirectory: Send + Sync {
    async fn sessions_of(&self, user: &UserId, now: UnixTime) -> Result<Vec<OrderId>, StoreError>;
}

/// What pool refresh manages: the pool's numbers, and what it reads to judge their load.
#[async_trait]
pub trait PoolStore: Send + Sync {
    /// Every number of the market's pool with its version, strongly consistent: the read
    /// before [`PoolStore::put_number_if`].
    async fn pool_entries(&self, market: &Market) -> Result<Vec<PoolEntry>, StoreError>;

    /// Adds or replaces a pool number, unconditionally (seeding, operators). Bumps its version,
    /// so that a conditional write based on an earlier read fails instead of undoing this one.
    async fn put_number(&self, number: &PoolNumber) -> Result<(), StoreError>;

    /// Writes `number` if it is still at version `expected` (`None`: if it is not stored at
    /// all) and returns its new version.
    async fn put_number_if(
        &self,
        number: &PoolNumber,
        expected: Option<u64>,
    ) -> Result<u64, PoolWriteError>;

    /// The most live contacts one person held in `market` on `day`, if any were recorded.
    async fn live_peak(&self, market: &Market, day: &str) -> Result<Option<u32>, StoreError>;

    /// Live routes found among at most `budget` items read from a random part of the table:
    /// a bounded sample for load statistics, for scheduled jobs only, never a request path.
    async fn sample_routes(
        &self,
        now: UnixTime,
        budget: usize,
    ) -> Result<Vec<SampledRoute>, StoreError>;
}

/// Orders found holding live contacts on one number, from an eventually consistent index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrdersOn {
    /// Distinct orders, at most the limit asked for.
    pub orders: Vec<OrderId>,
    /// Whether the index holds more than were returned.
    pub more: bool,
}

/// Which orders hold live contacts on a number: what pool refresh moves off numbers leaving
/// service. Each contact's pair is indexed by its number (handovers are not), spread over
/// [`INDEX_SHARDS`] so that a busy number is no hot key.
#[async_trait]
pub trait PairIndex: Send + Sync {
    /// At most `limit` orders with a contact on `number` live at `now`. The index trails the
    /// table by a moment: an order just moved may still be named (planning again finds nothing
    /// to move), and one just assigned may not yet be (the next run finds it).
    async fn orders_on(
        &self,
        number: &VirtualNumber,
        now: UnixTime,
        limit: usize,
    ) -> Result<OrdersOn, StoreError>;
}

/// Shards of the by-number index per number.
pub const INDEX_SHARDS: u32 = 8;

/// The index shard of `order`'s contacts: stable, spread over [`INDEX_SHARDS`].
pub fn index_shard(order: &OrderId) -> u32 {
    fnv1a(order.as_str()) % INDEX_SHARDS
}

fn fnv1a(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Buying within caps: the month's purchase count and the lease that lets one run buy.
#[async_trait]
pub trait PurchaseLedger: Send + Sync {
    /// Counts one more number bought in `month` (`yyyy-mm`) unless `cap` are counted already.
    /// Counting before buying keeps overlapping runs within the cap.
    async fn count_purchase(
        &self,
        month: &str,
        cap: u32,
        expires_at: UnixTime,
    ) -> Result<PurchaseCount, StoreError>;

    /// Takes back a counted purchase that did not happen.
    async fn uncount_purchase(&self, month: &str) -> Result<(), StoreError>;

    /// Takes the lease `name` for `holder` until `until`, if nobody holds it at `now`.
    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: UnixTime,
        until: UnixTime,
    ) -> Result<LeaseTake, StoreError>;

    /// Gives the lease back, if `holder` still holds it.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;
}

/// Walks for audits of the pair invariant: operators' tools and tests, never a request path.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// One page of at most `limit` items read from a walk over the whole store (a `Scan`):
    /// the routes and sessions among them that are live at `live_at`.
    async fn audit_page(
        &self,
        from: Option<WalkCursor>,
        limit: u32,
        live_at: UnixTime,
    ) -> Result<AuditPage, StoreError>;

    /// The routes at `routes` and the sessions of `orders` (those that exist), read again,
    /// strongly consistent: what decides whether an audit's suspect is a real breach.
    async fn audit_items(
        &self,
        routes: &[RouteAt],
        orders: &[OrderId],
    ) -> Result<(Vec<StoredRoute>, Vec<StoredSession>), StoreError>;

    /// The PIN items at `pins` (those that exist), read again, strongly consistent.
    async fn audit_pins(&self, pins: &[PinAt]) -> Result<Vec<StoredPin>, StoreError>;
}

/// What pool refresh uses: the pool, the ledger it buys within, the numbers' answer tallies it
/// judges their health by, and the index of the pairs it moves off numbers leaving service.
pub trait PoolUpkeep: PoolStore + PurchaseLedger + AnswerStats + PairIndex {}

impl<T: PoolStore + PurchaseLedger + AnswerStats + PairIndex + ?Sized> PoolUpkeep for T {}

/// Every role at once, for tools that use them all (the operator's CLI, tests). Functions
/// depend on the roles they use.
pub trait Store:
    CallRouting + AssignmentStore + PoolUpkeep + AuditStore + SessionDirectory
{
}

impl<T: CallRouting + AssignmentStore + PoolUpkeep + AuditStore + SessionDirectory + ?Sized> Store
    for T
{
}

/// Whether [`AssignmentStore::raise_live_peak`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeakWrite {
    Raised,
    /// As many or more were recorded already.
    AlreadyHigher,
}

/// Whether [`PurchaseLedger::count_purchase`] counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurchaseCount {
    Counted,
    /// The month's cap is reached: buy nothing.
    AtCap,
}

/// Whether [`PurchaseLedger::take_lease`] took the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseTake {
    Taken,
    /// Someone else holds it and it has not lapsed.
    Held,
}

/// Walks the whole store and checks the pair invariant at `now`: every breach, each re-read
/// once before it is reported. For tests and small tables; `vnctl audit` paces its walk.
pub async fn audit(store: &dyn AuditStore, now: UnixTime) -> Result<Vec<Breach>, StoreError> {
    let mut walk = Audit::new(now);
    let mut from = None;
    loop {
        let page = store.audit_page(from, 1000, now).await?;
        page.routes.into_iter().for_each(|r| walk.add_route(r));
        page.sessions.into_iter().for_each(|s| walk.add_session(s));
        page.pins.into_iter().for_each(|p| walk.add_pin(p));
        match page.next {
            Some(next) => from = Some(next),
            None => break,
        }
    }
    confirm(store, &walk.breaches(), now).await
}

/// The suspects of a walk that a fresh, strongly consistent read of their items still shows.
pub async fn confirm(
    store: &dyn AuditStore,
    suspects: &[Breach],
    now: UnixTime,
) -> Result<Vec<Breach>, StoreError> {
    if suspects.is_empty() {
        return Ok(Vec::new());
    }
    let mut keys: Vec<RouteAt> = Vec::new();
    let mut orders: Vec<OrderId> = Vec::new();
    for b in suspects {
        keys.extend(b.routes().into_iter().cloned());
        orders.extend(b.orders().into_iter().cloned());
    }
    keys.sort();
    keys.dedup();
    orders.sort();
    orders.dedup();
    let (routes, sessions) = store.audit_items(&keys, &orders).await?;
    let mut fresh = Audit::new(now);
    // A route's way back and a session's pairs decide too: read them in the same pass.
    let mut more: Vec<RouteAt> = routes
        .iter()
        .map(|r| RouteAt {
            caller: r.callee.clone(),
            number: r.number.clone(),
        })
        .chain(sessions.iter().flat_map(|s| {
            s.pairs.iter().flat_map(|p| {
                [&p.a, &p.b].map(|who| RouteAt {
                    caller: who.clone(),
                    number: p.number.clone(),
                })
            })
        }))
        .filter(|k| !keys.contains(k))
        .collect();
    more.sort();
    more.dedup();
    let (back, _) = store.audit_items(&more, &[]).await?;
    routes
        .into_iter()
        .chain(back)
        .for_each(|r| fresh.add_route(r));
    sessions.into_iter().for_each(|s| fresh.add_session(s));
    let pins: Vec<PinAt> = suspects.iter().filter_map(Breach::pin).cloned().collect();
    if !pins.is_empty() {
        store
            .audit_pins(&pins)
            .await?
            .into_iter()
            .for_each(|p| fresh.add_pin(p));
    }
    Ok(Audit::confirmed(suspects, &fresh))
}
