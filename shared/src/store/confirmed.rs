//! Routes confirmed by their session, for a region that reads a replica of the table
//! (docs/multi-region.md). A global table replicates item by item, so a replica may hold a
//! route item of one write of its order and the session item of another; each route item alone
//! was right when its home region wrote it, but the pair it names may since have ended there.
//! Read through [`SessionConfirmed`], a route connects only while the session, as replicated,
//! lists that very route: one more read per call, only for routes of markets homed elsewhere.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;

use super::{
    AnswerStats, AssignmentStore, CallLedger, ConnectedCall, PinAttempts, PinGuard, RouteReader,
    Sighting, StoreError,
};
use crate::domain::{
    AnswerTally, CallId, Capabilities, Market, PinKey, RealNumber, Route, RoutePair, Session,
    UnixTime, VirtualNumber,
};

/// A store whose routes and PIN routes are each confirmed by their order's session: a route
/// the session does not list reads as absent, and one it lists ends when the session's route
/// does (the earlier of the two ends), closed if either says so, carrying only the channels
/// both allow and recorded only if both say so. Routes of the markets homed here (written by
/// this region's own transactions) may pass unconfirmed. Everything else passes through.
pub struct SessionConfirmed<S> {
    inner: Arc<S>,
    /// Markets whose routes need no confirmation: this region writes them itself.
    homed: HashSet<Market>,
}

impl<S> SessionConfirmed<S> {
    /// Every route confirmed.
    pub fn new(inner: Arc<S>) -> Self {
        SessionConfirmed {
            inner,
            homed: HashSet::new(),
        }
    }

    /// Routes confirmed unless their market is homed here.
    pub fn except_homed(inner: Arc<S>, homed: HashSet<Market>) -> Self {
        SessionConfirmed { inner, homed }
    }
}

impl<S: AssignmentStore> SessionConfirmed<S> {
    async fn session_of(&self, route: &Route) -> Result<Option<Session>, StoreError> {
        self.inner.session(&route.order_id).await
    }
}

/// `route` as `session` has it, if the session lists it: same caller, number, callee and
/// roles, with the session's end when earlier and closed if either is.
fn confirmed(session: &Session, route: Route) -> Option<Route> {
    let pairs: Vec<RoutePair> = session
        .route_pairs(session.routes_until)
        .into_iter()
        .chain(session.handover_pairs())
        .collect();
    let listed = pairs
        .iter()
        .flat_map(RoutePair::routes)
        .find(|r| same_way(r, &route))?;
    Some(agreed(route, listed))
}

/// The route a PIN on `key` stands for, as `session` has it: only a live contact's PIN (a
/// handover carries none), with the same PIN for the same way.
fn confirmed_pin(session: &Session, key: &PinKey, route: Route) -> Option<Route> {
    let pairs = session.route_pairs(session.routes_until);
    let listed = pairs
        .iter()
        .flat_map(RoutePair::pins)
        .find(|p| p.pin == key.pin && p.route.number == key.number && same_way(&p.route, &route))?;
    Some(agreed(route, &listed.route))
}

fn same_way(a: &Route, b: &Route) -> bool {
    a.caller == b.caller
        && a.number == b.number
        && a.callee == b.callee
        && a.order_id == b.order_id
        && a.caller_role == b.caller_role
        && a.callee_role == b.callee_role
}

/// What the route item and its session agree on: the earlier end, closed if either is, the
/// channels both carry, recorded only if both say so.
fn agreed(route: Route, listed: &Route) -> Route {
    Route {
        expires_at: route.expires_at.min(listed.expires_at),
        closed: route.closed || listed.closed,
        capabilities: Capabilities {
            voice: route.capabilities.voice && listed.capabilities.voice,
            sms: route.capabilities.sms && listed.capabilities.sms,
        },
        record: route.record && listed.record,
        ..route
    }
}

#[async_trait]
impl<S: RouteReader + AssignmentStore> RouteReader for SessionConfirmed<S> {
    async fn route(
        &self,
        caller: &RealNumber,
        dialled: &VirtualNumber,
    ) -> Result<Option<Route>, StoreError> {
        let Some(route) = self.inner.route(caller, dialled).await? else {
            return Ok(None);
        };
        if self.homed.contains(&route.market) {
            return Ok(Some(route));
        }
        let session = self.session_of(&route).await?;
        Ok(session.and_then(|s| confirmed(&s, route)))
    }

    async fn pin_route(&self, key: &PinKey) -> Result<Option<Route>, StoreError> {
        let Some(route) = self.inner.pin_route(key).await? else {
            return Ok(None);
        };
        if self.homed.contains(&route.market) {
            return Ok(Some(route));
        }
        let session = self.session_of(&route).await?;
        Ok(session.and_then(|s| confirmed_pin(&s, key, route)))
    }
}

#[async_trait]
impl<S: CallLedger> CallLedger for SessionConfirmed<S> {
    async fn sight(
        &self,
        endpoint: &str,
        call_id: &CallId,
        now: UnixTime,
        keep_until: UnixTime,
    ) -> Result<Sighting, StoreError> {
        self.inner.sight(endpoint, call_id, now, keep_until).await
    }

    async fn remember_connected(
        &self,
        endpoint: &str,
        call: &ConnectedCall,
    ) -> Result<(), StoreError> {
        self.inner.remember_connected(endpoint, call).await
    }

    async fn connected(
        &self,
        endpoint: &str,
        call_id: &CallId,
        now: UnixTime,
    ) -> Result<Option<ConnectedCall>, StoreError> {
        self.inner.connected(endpoint, call_id, now).await
    }
}

#[async_trait]
impl<S: AnswerStats> AnswerStats for SessionConfirmed<S> {
    async fn count_answer(
        &self,
        number: &VirtualNumber,
        call_id: &CallId,
        answered: bool,
        now: UnixTime,
        keep_until: UnixTime,
    ) -> Result<(), StoreError> {
        self.inner
            .count_answer(number, call_id, answered, now, keep_until)
            .await
    }

    async fn answer_tally(
        &self,
        number: &VirtualNumber,
        now: UnixTime,
        days: u32,
    ) -> Result<AnswerTally, StoreError> {
        self.inner.answer_tally(number, now, days).await
    }
}

#[async_trait]
impl<S: PinGuard> PinGuard for SessionConfirmed<S> {
    async fn count_pin_attempt(
        &self,
        endpoint: &str,
        call_id: &CallId,
        caller: &RealNumber,
        number: &VirtualNumber,
        now: UnixTime,
    ) -> Result<PinAttempts, StoreError> {
        self.inner
            .count_pin_attempt(endpoint, call_id, caller, number, now)
            .await
    }

    async fn count_pin_failure(
        &self,
        number: &VirtualNumber,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        self.inner.count_pin_failure(number, now).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assignment::{AssignSettings, Assigner, OrderChange, OrderUpdate};
    use crate::domain::{Participant, Role};
    use crate::store::memory::MemoryStore;
    use crate::store::PoolStore;

    /// A memory store whose IN pool is one active voice+SMS number.
    async fn store_with_one_number() -> (Arc<MemoryStore>, VirtualNumber) {
        let store = Arc::new(MemoryStore::new());
        let vn = VirtualNumber::parse("+911140000010").unwrap();
        store
            .put_number(&crate::domain::PoolNumber {
                number: vn.clone(),
                provider: "twilio".parse().unwrap(),
                market: "IN".parse().unwrap(),
                capabilities: crate::domain::Capabilities::VOICE_AND_SMS,
                state: crate::domain::NumberState::Active,
                hold: None,
            })
            .await
            .unwrap();
        (store, vn)
    }

    fn person(role: &str, user: &str, phone: &str) -> Participant {
        Participant {
            role: role.parse::<Role>().unwrap(),
            user_id: user.parse().unwrap(),
            phone: RealNumber::parse(phone).unwrap(),
            alternate_phones: Vec::new(),
        }
    }

    fn assign(version: u64, people: &[Participant]) -> OrderUpdate {
        OrderUpdate {
            order_id: "ord-1".parse().unwrap(),
            market: "IN".parse().unwrap(),
            version,
            record: false,
            change: OrderChange::Participants(people.to_vec()),
        }
    }

    /// A route item left from an earlier write of its order (the replica has its session's
    /// newer write) reads as absent; one the session lists reads with the session's end.
    #[tokio::test]
    async fn a_route_its_session_no_longer_lists_reads_as_absent() {
        let (store, vn) = store_with_one_number().await;
        let assigner = Assigner::new(
            store.clone(),
            AssignSettings::for_markets(["IN".parse().unwrap()]),
        );
        let (c, d1, d2) = (
            person("customer", "c", "+919810000001"),
            person("driver", "d1", "+919710000001"),
            person("driver", "d2", "+919710000002"),
        );
        assigner
            .apply(&assign(1, &[c.clone(), d1.clone()]), 100)
            .await
            .unwrap();
        let stale = store.route(&c.phone, &vn).await.unwrap().unwrap();
        assigner
            .apply(&assign(2, &[c.clone(), d2.clone()]), 110)
            .await
            .unwrap();
        let session = store
            .session(&"ord-1".parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            confirmed(&session, stale),
            None,
            "the replaced driver is no longer listed"
        );
        let confirmed_store = SessionConfirmed::new(store.clone());
        let now = confirmed_store.route(&c.phone, &vn).await.unwrap().unwrap();
        assert_eq!(now.callee, d2.phone);
        assert_eq!(now.expires_at, session.routes_until);
        assert_eq!(confirmed_store.route(&d1.phone, &vn).await.unwrap(), None);
        // A route item of an order that records while its session no longer does: the
        // narrower choice wins.
        let wider = Route {
            record: true,
            ..now.clone()
        };
        let agreed_route = confirmed(&session, wider).unwrap();
        assert!(!agreed_route.record);
        // Routes of a market homed here pass as read; of others, confirmed.
        let homed = SessionConfirmed::except_homed(store.clone(), ["IN".parse().unwrap()].into());
        assert_eq!(
            homed.route(&c.phone, &vn).await.unwrap().unwrap(),
            stale_free(&now)
        );
    }

    fn stale_free(route: &Route) -> Route {
        route.clone()
    }

    /// A PIN confirms only as its own contact's PIN for that way: never a handover's (they
    /// carry none) and never another PIN's route.
    #[tokio::test]
    async fn a_pin_confirms_only_as_the_sessions_own_pin_for_that_way() {
        let (store, vn) = store_with_one_number().await;
        let mut settings = AssignSettings::for_markets(["IN".parse().unwrap()]);
        settings.pin_markets.insert("IN".parse().unwrap());
        let assigner = Assigner::new(store.clone(), settings);
        let (c, d) = (
            person("customer", "c", "+919810000001"),
            person("driver", "d", "+919710000001"),
        );
        assigner
            .apply(&assign(1, &[c.clone(), d.clone()]), 100)
            .await
            .unwrap();
        let session = store
            .session(&"ord-1".parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        let pins = session.contacts[0].pins.clone().unwrap();
        let key = |pin: &crate::domain::Pin| PinKey {
            number: vn.clone(),
            pin: pin.clone(),
        };
        let confirmed_store = SessionConfirmed::new(store.clone());
        let by_c = confirmed_store
            .pin_route(&key(&pins.a))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(by_c.callee, d.phone);
        let c_route = store.route(&c.phone, &vn).await.unwrap().unwrap();
        // The customer's way presented under the driver's PIN is no PIN of the session.
        assert_eq!(confirmed_pin(&session, &key(&pins.b), c_route), None);
    }
}
