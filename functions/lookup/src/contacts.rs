//! Which numbers a participant dials for the other parties of an order: the session when the
//! assignment event has been applied (one read), otherwise the Orders service and the same
//! [`Assigner`] the assign function runs.

use std::sync::Arc;

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use vnmask::assignment::{AssignError, Assigner, OrderChange, OrderUpdate, Outcome};
use vnmask::domain::{
    Capability, OrderId, Role, Session, SessionState, UnixTime, UserId, VirtualNumber,
};
use vnmask::store::{Outage, StoreError};

use crate::orders::{OrdersApi, OrdersError};

/// The answer: the numbers `user` dials, one per other party they may contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContactList {
    pub order_id: OrderId,
    /// The version of the order the session reflects.
    pub version: u64,
    pub contacts: Vec<ContactView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContactView {
    /// The other party's role and user id (never their phone number).
    pub role: Role,
    pub user_id: UserId,
    /// What to dial (or text) to reach them.
    pub virtual_number: VirtualNumber,
    pub capabilities: Vec<Capability>,
    /// Where the market recovers callers by PIN: the asker's own PIN for this contact, to enter
    /// after dialling `virtual_number` from a phone the platform does not know. Never another's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    /// `None` while the order is active; the end of the grace period once it ended (RFC 3339).
    #[serde(serialize_with = "rfc3339")]
    pub valid_until: Option<UnixTime>,
}

fn rfc3339<S: serde::Serializer>(t: &Option<UnixTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        None => s.serialize_none(),
        Some(t) => {
            let text = OffsetDateTime::from_unix_timestamp(*t)
                .ok()
                .and_then(|d| d.format(&Rfc3339).ok())
                .ok_or_else(|| serde::ser::Error::custom("timestamp out of range"))?;
            s.serialize_str(&text)
        }
    }
}

/// How the answer was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// The session was there: one read.
    Session,
    /// No session: fetched from the Orders service and assigned here.
    Fallback,
    /// No session, and the assignment event won the race to write it: read from its session.
    FallbackStale,
}

/// Why there is no list. Every kind of "not found" answers the same, so that nobody learns
/// whether an order they are not part of exists; the kinds exist for logs and metrics. The
/// other errors are outages that happen whether or not the order exists, or that only its
/// participants can meet.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("not found: {}", .0.as_str())]
    NotFound(NotFound),
    #[error(transparent)]
    Orders(#[from] OrdersError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Assign(#[from] AssignError),
}

impl LookupError {
    /// Whether asking again soon may succeed (503 with `Retry-After`), or not (500).
    pub fn is_transient(&self) -> bool {
        match self {
            LookupError::NotFound(_) => false,
            LookupError::Orders(_) => true,
            LookupError::Store(e) => e.is_transient(),
            LookupError::Assign(e) => e.is_transient(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotFound {
    /// The session exists; the caller is not among its participants.
    NotParticipant,
    /// No session, and the Orders service does not know the order.
    UnknownOrder,
    /// No session, and the Orders service says the order is not active.
    NotActive,
    /// The order is in a market this deployment does not serve.
    UnservedMarket,
    /// No session, and no Orders service to ask: the order is as unknown as any other.
    NoOrdersService,
    /// No session, and the Orders service's answer is one only an existing order gets (a 403,
    /// or a 200 that is unusable and does not list the caller): a 503 would reveal the order.
    OrderWithheld,
}

impl NotFound {
    pub fn as_str(self) -> &'static str {
        match self {
            NotFound::NotParticipant => "not_participant",
            NotFound::UnknownOrder => "unknown_order",
            NotFound::NotActive => "not_active",
            NotFound::UnservedMarket => "unserved_market",
            NotFound::NoOrdersService => "no_orders_service",
            NotFound::OrderWithheld => "order_withheld",
        }
    }
}

pub struct ContactDirectory {
    assigner: Arc<Assigner>,
    orders: Option<OrdersApi>,
}

impl ContactDirectory {
    pub fn new(assigner: Arc<Assigner>, orders: Option<OrdersApi>) -> Self {
        ContactDirectory { assigner, orders }
    }

    /// The numbers `user` dials for the other parties of `order` at `now`, and how they were found
    /// (also when they were not: a failed fallback is still a fallback).
    pub async fn contacts(
        &self,
        user: &UserId,
        order: &OrderId,
        now: UnixTime,
    ) -> (Result<ContactList, LookupError>, Path) {
        match self.assigner.store().session(order).await {
            Ok(Some(session)) if session.participant(user).is_some() => {
                (self.answer(&session, user, now), Path::Session)
            }
            // Not in the session, or no session: ask the Orders service either way. A caller
            // added by an event still on its way is found; and a stranger's lookup takes the
            // same path whether the order exists or not, so not even an Orders outage (503 for
            // both) tells them apart.
            Ok(_) => match self.fallback(user, order, now).await {
                Ok((list, path)) => (Ok(list), path),
                Err(e) => (Err(e), Path::Fallback),
            },
            Err(e) => (Err(e.into()), Path::Session),
        }
    }

    async fn fallback(
        &self,
        user: &UserId,
        order: &OrderId,
        now: UnixTime,
    ) -> Result<(ContactList, Path), LookupError> {
        let orders = self
            .orders
            .as_ref()
            .ok_or(LookupError::NotFound(NotFound::NoOrdersService))?;
        let snapshot = match orders.order(order, user).await {
            Ok(Some(snapshot)) => snapshot,
            Ok(None) => return Err(LookupError::NotFound(NotFound::UnknownOrder)),
            Err(e) if e.reveals_the_order() => {
                // Still the Orders service misbehaving: the operator hears of it, the caller does not.
                tracing::warn!(order_id = %order, error = %e, "Orders service answer withheld as not found");
                return Err(LookupError::NotFound(NotFound::OrderWithheld));
            }
            Err(e) => return Err(e.into()),
        };
        if !snapshot.participants.iter().any(|p| &p.user_id == user) {
            return Err(LookupError::NotFound(NotFound::NotParticipant));
        }
        if !snapshot.is_active() {
            return Err(LookupError::NotFound(NotFound::NotActive));
        }
        let update = OrderUpdate {
            order_id: snapshot.order_id,
            market: snapshot.market,
            version: snapshot.version,
            record: snapshot.record,
            change: OrderChange::Participants(snapshot.participants),
        };
        match self.assigner.apply(&update, now).await {
            Ok(Outcome::Applied { session, .. }) => {
                Ok((self.answer(&session, user, now)?, Path::Fallback))
            }
            Ok(Outcome::Stale { .. }) => {
                // An order event got there first (or the order moved on): its session is the answer.
                let session = self
                    .assigner
                    .store()
                    .session(order)
                    .await?
                    .ok_or(StoreError::Unavailable(Outage::Vanished))?;
                Ok((self.answer(&session, user, now)?, Path::FallbackStale))
            }
            Err(AssignError::UnknownMarket(market)) => {
                tracing::warn!(order_id = %order, %market, "order is in a market this deployment does not serve");
                Err(LookupError::NotFound(NotFound::UnservedMarket))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn answer(
        &self,
        session: &Session,
        user: &UserId,
        now: UnixTime,
    ) -> Result<ContactList, LookupError> {
        contact_list(session, user, now).ok_or(LookupError::NotFound(NotFound::NotParticipant))
    }
}

/// What `user` sees of `session` at `now`, or `None` if they are not a participant.
///
/// Contacts carry `valid_until: None` while the order is active; after it ends, the end of the
/// grace period; after that (or once an active session's routes lapsed for want of any newer
/// event) the list is empty: the numbers no longer connect. A direction the end closed
/// ([`Session::closed_after_end`]) is left out from the end on.
pub fn contact_list(session: &Session, user: &UserId, now: UnixTime) -> Option<ContactList> {
    let me = session.participant(user)?;
    let valid_until = match session.state {
        SessionState::Active => None,
        SessionState::Ended => Some(session.routes_until),
    };
    let contacts = if session.is_live(now) {
        session
            .contacts
            .iter()
            .filter_map(|c| {
                let other = session.participant(c.other(user)?)?;
                // A direction closed at the order's end no longer connects: not shown.
                if !session.admits(&me.role, &other.role) {
                    return None;
                }
                Some(ContactView {
                    role: other.role.clone(),
                    user_id: other.user_id.clone(),
                    virtual_number: c.number.clone(),
                    capabilities: c.capabilities.iter().collect(),
                    pin: c.pin_of(user).map(|p| p.expose().to_owned()),
                    valid_until,
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    Some(ContactList {
        order_id: session.order_id.clone(),
        version: session.version,
        contacts,
    })
}

#[cfg(test)]
mod tests {
    use vnmask::domain::{Capabilities, Contact};
    use vnmask_tests::participant as person;

    use super::*;

    fn contact(a: &str, b: &str, vn: &str) -> Contact {
        Contact {
            a: a.parse().unwrap(),
            b: b.parse().unwrap(),
            number: VirtualNumber::parse(vn).unwrap(),
            capabilities: Capabilities::VOICE_AND_SMS,
            pins: None,
        }
    }

    /// A shared ride: two customers (who may not reach each other) and a driver.
    fn shared_ride(state: SessionState, routes_until: UnixTime) -> Session {
        Session {
            order_id: "ord-1".parse().unwrap(),
            market: "IN".parse().unwrap(),
            version: 4,
            revision: 1,
            handovers: Vec::new(),
            state,
            participants: vec![
                person("customer", "c1", "+919810000001"),
                person("driver", "d1", "+919710000001"),
                person("customer", "c2", "+919810000002"),
            ],
            contacts: vec![
                contact("c1", "d1", "+911140001000"),
                contact("d1", "c2", "+911140001001"),
            ],
            updated_at: 1_000,
            routes_until,
            record: false,
            closed_after_end: Vec::new(),
        }
    }

    const DAY: UnixTime = 86_400;

    #[test]
    fn a_pin_is_shown_only_to_the_participant_it_was_given_to() {
        let mut s = shared_ride(SessionState::Active, 1_000 + DAY);
        s.contacts[0].pins = Some(vnmask::domain::ContactPins {
            a: vnmask::domain::Pin::parse("111111").unwrap(),
            b: vnmask::domain::Pin::parse("222222").unwrap(),
        });
        let uid = |u: &str| u.parse::<UserId>().unwrap();
        let pins = |user: &str| -> Vec<Option<String>> {
            contact_list(&s, &uid(user), 2_000)
                .unwrap()
                .contacts
                .into_iter()
                .map(|c| c.pin)
                .collect()
        };
        assert_eq!(pins("c1"), [Some("111111".to_owned())]);
        // The driver's own PIN with c1; none with c2, whose contact has no PINs.
        assert_eq!(pins("d1"), [Some("222222".to_owned()), None]);
        assert_eq!(pins("c2"), [None]);
        let shown = serde_json::to_string(&contact_list(&s, &uid("c2"), 2_000).unwrap()).unwrap();
        assert!(!shown.contains("111111") && !shown.contains("222222") && !shown.contains("pin"));
    }

    #[test]
    fn each_participant_sees_only_their_own_contacts() {
        let s = shared_ride(SessionState::Active, 1_000 + DAY);
        let uid = |u: &str| u.parse::<UserId>().unwrap();
        let driver = contact_list(&s, &uid("d1"), 2_000).unwrap();
        let seen: Vec<_> = driver
            .contacts
            .iter()
            .map(|c| {
                (
                    c.user_id.as_str(),
                    c.virtual_number.as_str(),
                    c.role.as_str(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("c1", "+911140001000", "customer"),
                ("c2", "+911140001001", "customer")
            ]
        );
        let c2 = contact_list(&s, &uid("c2"), 2_000).unwrap();
        assert_eq!(c2.contacts.len(), 1);
        assert_eq!(c2.contacts[0].user_id.as_str(), "d1");
        assert_eq!(c2.contacts[0].virtual_number.as_str(), "+911140001001");
        assert_eq!(c2.contacts[0].valid_until, None);
        assert!(contact_list(&s, &uid("stranger"), 2_000).is_none());
    }

    #[test]
    fn after_an_end_a_closed_direction_is_not_shown_and_the_open_one_is() {
        let mut s = shared_ride(SessionState::Ended, 1_000 + DAY);
        s.closed_after_end = vec![vnmask::domain::Direction {
            from: "driver".parse().unwrap(),
            to: "customer".parse().unwrap(),
        }];
        let uid = |u: &str| u.parse::<UserId>().unwrap();
        assert!(contact_list(&s, &uid("d1"), 2_000)
            .unwrap()
            .contacts
            .is_empty());
        let c1 = contact_list(&s, &uid("c1"), 2_000).unwrap();
        assert_eq!(c1.contacts.len(), 1);
        assert_eq!(c1.contacts[0].valid_until, Some(1_000 + DAY));
        // While the order is active nothing is closed, whatever the list says.
        s.state = SessionState::Active;
        assert_eq!(
            contact_list(&s, &uid("d1"), 2_000).unwrap().contacts.len(),
            2
        );
    }

    #[test]
    fn a_voice_only_contact_shows_only_voice() {
        let mut s = shared_ride(SessionState::Active, 1_000 + DAY);
        s.contacts[0].capabilities = Capabilities {
            voice: true,
            sms: false,
        };
        let d1 = "d1".parse().unwrap();
        let json = serde_json::to_value(contact_list(&s, &d1, 2_000).unwrap()).unwrap();
        assert_eq!(json["contacts"][0]["user_id"], "c1");
        assert_eq!(
            json["contacts"][0]["capabilities"],
            serde_json::json!(["voice"])
        );
        assert_eq!(
            json["contacts"][1]["capabilities"],
            serde_json::json!(["voice", "sms"])
        );
    }

    #[test]
    fn ended_order_shows_grace_end_then_nothing() {
        let s = shared_ride(SessionState::Ended, 3_000);
        let d1 = "d1".parse().unwrap();
        let during = contact_list(&s, &d1, 2_999).unwrap();
        assert_eq!(during.contacts.len(), 2);
        assert!(during.contacts.iter().all(|c| c.valid_until == Some(3_000)));
        let json = serde_json::to_value(&during).unwrap();
        assert_eq!(json["contacts"][0]["valid_until"], "1970-01-01T00:50:00Z");
        assert!(contact_list(&s, &d1, 3_000).unwrap().contacts.is_empty());
    }

    #[test]
    fn active_session_without_news_for_a_ttl_shows_nothing() {
        let s = shared_ride(SessionState::Active, 1_500);
        let d1 = "d1".parse().unwrap();
        assert_eq!(contact_list(&s, &d1, 1_499).unwrap().contacts.len(), 2);
        assert!(contact_list(&s, &d1, 1_500).unwrap().contacts.is_empty());
    }
}
