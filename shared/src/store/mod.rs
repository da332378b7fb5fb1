//! Persistence behind one trait, so handlers run the same on DynamoDB and in memory.

pub mod dynamodb;
pub mod memory;

use async_trait::async_trait;

use crate::domain::{
    Market, OrderId, RealNumber, Route, RouteKey, Session, UnixTime, VirtualNumber, VnNumber,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store throttled the request")]
    Throttled,
    #[error("store did not answer in time")]
    Timeout,
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored item is unreadable: {0}")]
    Corrupt(String),
    #[error("store rejected the request: {0}")]
    Rejected(String),
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
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
    /// The stored session is at this version or newer.
    #[error("the stored session is as new as this change or newer")]
    StaleVersion,
    /// These routes are held by live contacts of other orders (a lost race).
    #[error("{} route(s) are held by other live orders", .0.len())]
    RoutesTaken(Vec<RouteKey>),
    /// A concurrent transaction touched the same items; retry.
    #[error("transaction conflict")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A number a person can dial in a live session, found by the person-route query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveContact {
    pub number: VnNumber,
    pub order_id: OrderId,
    pub expires_at: UnixTime,
}

/// One atomic change to an order: the new session and its routes, all or nothing.
#[derive(Debug, Clone)]
pub struct SessionCommit {
    /// Written if no session exists or the stored one has an older version.
    pub session: Session,
    /// When the session item itself may be deleted (it must outlive redeliveries of old events).
    pub session_expires_at: UnixTime,
    /// Written if the route is free: absent, expired at `now`, or already this order's.
    pub put_routes: Vec<Route>,
    /// Deleted if still this order's.
    pub delete_routes: Vec<RouteKey>,
    pub now: UnixTime,
}

#[async_trait]
pub trait Store: Send + Sync {
    /// The order's session, strongly consistent.
    async fn session(&self, order: &OrderId) -> Result<Option<Session>, StoreError>;

    /// The numbers `person` can dial in live routes at `now`, of any order, strongly consistent.
    async fn live_contacts(
        &self,
        person: &RealNumber,
        now: UnixTime,
    ) -> Result<Vec<LiveContact>, StoreError>;

    /// Every number of the market's pool, whatever its state.
    async fn pool(&self, market: &Market) -> Result<Vec<VirtualNumber>, StoreError>;

    /// Adds or replaces a pool number.
    async fn put_number(&self, number: &VirtualNumber) -> Result<(), StoreError>;

    /// Writes the session and its routes atomically.
    async fn commit(&self, commit: &SessionCommit) -> Result<(), CommitError>;

    /// The route for a call from `caller` to `dialled`, if one is live at `now`. One read.
    async fn route(
        &self,
        caller: &RealNumber,
        dialled: &VnNumber,
        now: UnixTime,
    ) -> Result<Option<Route>, StoreError>;
}
