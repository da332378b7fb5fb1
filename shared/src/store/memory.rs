//! An in-memory store with the same conditions as DynamoDB, for fast tests and simulations.
//! It passes the same contract tests as the DynamoDB store.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::domain::{
    Market, OrderId, RealNumber, Route, RouteKey, Session, UnixTime, VirtualNumber, VnNumber,
};
use crate::store::{
    CommitError, LiveContact, PoolEntry, PoolWriteError, SampledRoute, SessionCommit, Store,
    StoreError,
};

#[derive(Default)]
struct Tables {
    sessions: HashMap<OrderId, Session>,
    routes: HashMap<RealNumber, BTreeMap<VnNumber, Route>>,
    pool: BTreeMap<Market, BTreeMap<VnNumber, PoolEntry>>,
    live_peaks: HashMap<(Market, String), u32>,
    purchases: HashMap<String, u32>,
    /// name → (holder, until)
    leases: HashMap<String, (String, UnixTime)>,
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
            .map(|p| p.values().map(|e| e.number.clone()).collect())
            .unwrap_or_default())
    }

    async fn put_number(&self, number: &VirtualNumber) -> Result<(), StoreError> {
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

    async fn pool_entries(&self, market: &Market) -> Result<Vec<PoolEntry>, StoreError> {
        Ok(self
            .lock()?
            .pool
            .get(market)
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn put_number_if(
        &self,
        number: &VirtualNumber,
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

    async fn raise_live_peak(
        &self,
        market: &Market,
        day: &str,
        peak: u32,
        _expires_at: UnixTime,
    ) -> Result<(), StoreError> {
        let mut tables = self.lock()?;
        let recorded = tables
            .live_peaks
            .entry((market.clone(), day.to_owned()))
            .or_default();
        *recorded = (*recorded).max(peak);
        Ok(())
    }

    async fn live_peak(&self, market: &Market, day: &str) -> Result<Option<u32>, StoreError> {
        Ok(self
            .lock()?
            .live_peaks
            .get(&(market.clone(), day.to_owned()))
            .copied())
    }

    async fn count_purchase(
        &self,
        month: &str,
        cap: u32,
        _expires_at: UnixTime,
    ) -> Result<bool, StoreError> {
        let mut tables = self.lock()?;
        let count = tables.purchases.entry(month.to_owned()).or_default();
        if *count >= cap {
            return Ok(false);
        }
        *count += 1;
        Ok(true)
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
    ) -> Result<bool, StoreError> {
        let mut tables = self.lock()?;
        if tables
            .leases
            .get(name)
            .is_some_and(|(_, held_until)| *held_until >= now)
        {
            return Ok(false);
        }
        tables
            .leases
            .insert(name.to_owned(), (holder.to_owned(), until));
        Ok(true)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let mut tables = self.lock()?;
        if tables.leases.get(name).is_some_and(|(h, _)| h == holder) {
            tables.leases.remove(name);
        }
        Ok(())
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
