//! An in-memory store with the same conditions as DynamoDB, for fast tests and simulations.
//! It passes the same contract tests as the DynamoDB store.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::domain::{
    Market, OrderId, RealNumber, Route, RouteKey, Session, UnixTime, VirtualNumber, VnNumber,
};
use crate::store::{CommitError, LiveContact, SessionCommit, Store, StoreError};

#[derive(Default)]
struct Tables {
    sessions: HashMap<OrderId, Session>,
    routes: HashMap<RealNumber, BTreeMap<VnNumber, Route>>,
    pool: BTreeMap<Market, BTreeMap<VnNumber, VirtualNumber>>,
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
            .map_err(|_| StoreError::Unavailable("memory store poisoned".into()))
    }
}

#[async_trait]
impl Store for MemoryStore {
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

    async fn pool(&self, market: &Market) -> Result<Vec<VirtualNumber>, StoreError> {
        Ok(self
            .lock()?
            .pool
            .get(market)
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn put_number(&self, number: &VirtualNumber) -> Result<(), StoreError> {
        self.lock()?
            .pool
            .entry(number.market.clone())
            .or_default()
            .insert(number.number.clone(), number.clone());
        Ok(())
    }

    async fn commit(&self, commit: &SessionCommit) -> Result<(), CommitError> {
        let mut tables = self.lock()?;
        let order = &commit.session.order_id;
        if tables
            .sessions
            .get(order)
            .is_some_and(|s| s.version >= commit.session.version)
        {
            return Err(CommitError::StaleVersion);
        }
        let held = |key: &RouteKey| {
            tables
                .routes
                .get(&key.caller)
                .and_then(|r| r.get(&key.number))
        };
        let mut taken: Vec<RouteKey> = commit
            .put_routes
            .iter()
            .map(Route::key)
            .filter(|k| held(k).is_some_and(|r| r.expires_at >= commit.now && &r.order_id != order))
            .collect();
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
        for key in &commit.delete_routes {
            if let Some(routes) = tables.routes.get_mut(&key.caller) {
                routes.remove(&key.number);
            }
        }
        for route in &commit.put_routes {
            tables
                .routes
                .entry(route.caller.clone())
                .or_default()
                .insert(route.number.clone(), route.clone());
        }
        tables
            .sessions
            .insert(order.clone(), commit.session.clone());
        Ok(())
    }

    async fn route(
        &self,
        caller: &RealNumber,
        dialled: &VnNumber,
        now: UnixTime,
    ) -> Result<Option<Route>, StoreError> {
        let tables = self.lock()?;
        Ok(tables
            .routes
            .get(caller)
            .and_then(|r| r.get(dialled))
            .filter(|r| r.is_live(now))
            .cloned())
    }
}
