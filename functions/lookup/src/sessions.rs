//! The sessions API, for platforms without an order-event stream: a backend creates or changes
//! an order's masking session, ends it and reads it with synchronous calls, on the same
//! assignment code (versions, transaction, policy) as order events, so that the two interleave
//! safely. API Gateway authorizes every call with IAM (SigV4): only the platform's backend
//! roles reach these routes; the function trusts what passes.
//!
//! - `PUT /v1/sessions/{order_id}`: the order's full participant list and its version, the
//!   same contract as an order event; answers every participant's contacts.
//! - `POST /v1/sessions/{order_id}/end`: the order is over; its routes live out the grace (or
//!   `grace_seconds`, at most `VNMASK_MAX_GRACE_SECONDS`), but for the directions listed in
//!   `closed_after_end`, which stop connecting at once.
//! - `GET /v1/sessions/{order_id}`: the session as stored, never a real number.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use vnmask::assignment::{AssignError, Assigner, EndTerms, OrderChange, OrderUpdate, Outcome};
use vnmask::domain::{
    self, Capability, Direction, OrderId, Session, SessionState, UnixTime, UserId,
};
use vnmask::events::{EventError, OrderEvent};
use vnmask::notification::NumbersAssigned;
use vnmask::store::SessionDirectory;
use vnmask::telemetry::MetricSet;

use crate::problem::{self, ProblemKind};
use crate::{Lookup, FUNCTION};

pub const SESSION_ROUTE: &str = "/v1/sessions/{order_id}";
pub const END_ROUTE: &str = "/v1/sessions/{order_id}/end";
pub const LIST_ROUTE: &str = "/v1/sessions";

/// At most this many sessions are listed for one person (support tools page no further).
const MAX_LISTED: usize = 50;

/// Sessions of a listing read at once.
const READS_AT_ONCE: usize = 8;

/// What the sessions API answers with: the assignment service.
pub struct Sessions {
    assigner: Arc<Assigner>,
    /// Where a person's live sessions are found (`GET /v1/sessions?user_id=`).
    directory: Arc<dyn SessionDirectory>,
}

impl Sessions {
    pub fn new(assigner: Arc<Assigner>, directory: Arc<dyn SessionDirectory>) -> Self {
        Sessions {
            assigner,
            directory,
        }
    }

    fn max_grace(&self) -> std::time::Duration {
        self.assigner.settings().max_grace
    }

    /// Applies a participant list (or an end) as an event of this version would be: the same
    /// request again answers the same; an older version than the stored one is 409.
    async fn apply(&self, update: OrderUpdate, now: UnixTime) -> Response {
        let order = update.order_id.clone();
        let outcome = self.assigner.apply(&update, now).await;
        let (response, result) = match outcome {
            Ok(Outcome::Applied { session, .. }) => (contacts(&session), "applied"),
            Ok(Outcome::Stale { stored_version }) => {
                match self.same_as_stored(&update, stored_version).await {
                    Ok(Some(session)) => (contacts(&session), "repeat"),
                    Ok(None) if stored_version == update.version => (
                        problem::with_detail(
                            ProblemKind::StaleVersion,
                            format!(
                                "the stored session at version {stored_version} is not what this request asks ({}): a change needs a newer version",
                                match update.change {
                                    OrderChange::Participants(_) => "other participants or recording",
                                    OrderChange::End(_) => "other directions closed",
                                }
                            ),
                        ),
                        "stale",
                    ),
                    Ok(None) => (
                        problem::with_detail(
                            ProblemKind::StaleVersion,
                            format!(
                                "the stored session is at version {stored_version}: a change, an end too, needs a newer version (the same request again answers the same)"
                            ),
                        ),
                        "stale",
                    ),
                    Err(kind) => (kind.into_response(), "unavailable"),
                }
            }
            Err(AssignError::PoolExhausted(_)) => {
                (ProblemKind::PoolExhausted.into_response(), "pool_exhausted")
            }
            Err(AssignError::Invalid(e)) => (
                problem::with_detail(ProblemKind::InvalidSession, e.to_string()),
                "invalid",
            ),
            Err(AssignError::UnknownMarket(_)) => (
                problem::with_detail(
                    ProblemKind::InvalidSession,
                    "field `market` is not a market this deployment serves".into(),
                ),
                "invalid",
            ),
            Err(e) if e.is_transient() => {
                tracing::warn!(order_id = %order, error = %e, "session not applied");
                (
                    ProblemKind::TemporarilyUnavailable.into_response(),
                    "unavailable",
                )
            }
            Err(e) => {
                tracing::error!(order_id = %order, error = %e, "session not applied");
                (ProblemKind::Internal.into_response(), "error")
            }
        };
        tracing::info!(order_id = %order, version = update.version, result, "session request");
        MetricSet::new(FUNCTION)
            .dimension("Result", result)
            .count("SessionRequests", 1)
            .emit();
        response
    }

    /// The stored session if `update` is what it already holds (a repeated request): same
    /// version, and for a participant list the same participants and recording choice.
    async fn same_as_stored(
        &self,
        update: &OrderUpdate,
        stored_version: u64,
    ) -> Result<Option<Session>, ProblemKind> {
        if stored_version != update.version {
            return Ok(None);
        }
        let stored = self
            .assigner
            .store()
            .session(&update.order_id)
            .await
            .map_err(|_| ProblemKind::TemporarilyUnavailable)?;
        Ok(stored.filter(|s| match &update.change {
            OrderChange::Participants(people) => {
                s.state == SessionState::Active
                    && &s.participants == people
                    && s.record == update.record
            }
            // An end is the stored end while it closes nothing the stored one did not.
            OrderChange::End(terms) => {
                s.state == SessionState::Ended
                    && terms.closed.iter().all(|d| s.closed_after_end.contains(d))
            }
        }))
    }
}

/// Every participant's contacts: the number to show for each other party, its channels and,
/// in a market with PINs, that participant's own PIN.
fn contacts(session: &Session) -> Response {
    Json(NumbersAssigned::new(API_EVENT_ID, session)).into_response()
}

/// The `event_id` the sessions API's changes carry.
pub const API_EVENT_ID: &str = "vnmask-api";

pub async fn put_session(
    State(lookup): State<Arc<Lookup>>,
    order: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Response {
    let Some(order) = order_id(order) else {
        return ProblemKind::InvalidOrderId.into_response();
    };
    let now = domain::now();
    match participants_update(&order, &body, now) {
        Ok(update) => lookup.sessions.apply(update, now).await,
        Err(refused) => refused.into_response(),
    }
}

pub async fn end_session(
    State(lookup): State<Arc<Lookup>>,
    order: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Response {
    let Some(order) = order_id(order) else {
        return ProblemKind::InvalidOrderId.into_response();
    };
    let now = domain::now();
    match end_update(&order, &body, lookup.sessions.max_grace(), now) {
        Ok(update) => lookup.sessions.apply(update, now).await,
        Err(refused) => refused.into_response(),
    }
}

pub async fn get_session(
    State(lookup): State<Arc<Lookup>>,
    order: Result<Path<String>, PathRejection>,
) -> Response {
    let Some(order) = order_id(order) else {
        return ProblemKind::InvalidOrderId.into_response();
    };
    match lookup.sessions.assigner.store().session(&order).await {
        Ok(Some(session)) if !session.participants.is_empty() => {
            Json(SessionView::of(&session)).into_response()
        }
        // A tombstone (an end before any assignment) is no session to show.
        Ok(_) => ProblemKind::SessionNotFound.into_response(),
        Err(e) => {
            tracing::warn!(order_id = %order, error = %e, "session not read");
            ProblemKind::TemporarilyUnavailable.into_response()
        }
    }
}

/// Why a request was refused before anything was looked up: its problem, and a detail naming
/// the field at fault (never a value).
struct Refused {
    kind: ProblemKind,
    detail: String,
}

impl Refused {
    fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Refused {
            kind,
            detail: detail.into(),
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        problem::with_detail(self.kind, self.detail)
    }
}

/// `GET /v1/sessions?user_id=…`: the person's live sessions, newest first, from their entries
/// (one query) and a read of each session; never a real number.
pub async fn list_sessions(
    State(lookup): State<Arc<Lookup>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let Some(user) = query
        .ok()
        .and_then(|Query(q)| q.user_id.parse::<UserId>().ok())
    else {
        return problem::with_detail(
            ProblemKind::InvalidSession,
            "query parameter `user_id` is required: 1-128 characters of A-Z, a-z, 0-9, '.', '_', ':', '-'".into(),
        );
    };
    let sessions = &lookup.sessions;
    let now = domain::now();
    let orders = match sessions.directory.sessions_of(&user, now).await {
        Ok(orders) => orders,
        Err(e) => {
            tracing::warn!(error = %e, "sessions of a person not read");
            return ProblemKind::TemporarilyUnavailable.into_response();
        }
    };
    // Read again, a few at once: an entry trails its session by nothing, but a lapsed one is
    // left out.
    let reads = orders.into_iter().take(MAX_LISTED).map(|order| async move {
        let session = sessions.assigner.store().session(&order).await;
        (order, session)
    });
    let read: Vec<_> = stream::iter(reads).buffered(READS_AT_ONCE).collect().await;
    let mut listed = Vec::new();
    for (order, session) in read {
        match session {
            Ok(Some(s)) if s.is_live(now) && s.participant(&user).is_some() => {
                listed.push(SessionView::of(&s))
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(order_id = %order, error = %e, "session not read");
                return ProblemKind::TemporarilyUnavailable.into_response();
            }
        }
    }
    listed.sort_by(|a, b| b.valid_until.cmp(&a.valid_until));
    Json(json!({ "sessions": listed })).into_response()
}

#[derive(serde::Deserialize)]
pub struct ListQuery {
    user_id: String,
}

fn order_id(order: Result<Path<String>, PathRejection>) -> Option<OrderId> {
    order.ok().and_then(|Path(raw)| raw.parse().ok())
}

/// A PUT's body as the order event it stands for, read by the same parser, so that the same
/// participant list is valid or invalid alike whichever way it comes.
fn participants_update(
    order: &OrderId,
    body: &[u8],
    now: UnixTime,
) -> Result<OrderUpdate, Refused> {
    let mut value = json_object(body)?;
    for field in ["event_id", "type", "order_id", "occurred_at"] {
        if value.contains_key(field) {
            return Err(Refused::new(
                ProblemKind::InvalidSession,
                format!("field `{field}` is not part of a session request"),
            ));
        }
    }
    value.insert("event_id".into(), json!(API_EVENT_ID));
    value.insert("type".into(), json!("DriverAssigned"));
    value.insert("order_id".into(), json!(order.as_str()));
    value.insert("occurred_at".into(), json!(rfc3339(now)));
    let event = OrderEvent::parse(&Value::Object(value).to_string()).map_err(invalid)?;
    event.update().ok_or_else(|| {
        Refused::new(
            ProblemKind::InvalidSession,
            "field `participants` is required",
        )
    })
}

/// An end's body: `{"version": n, "market": "IN", "grace_seconds": s?, "closed_after_end":
/// [{"from": role, "to": role}]?}`; the grace, when given, at most `max_grace`.
fn end_update(
    order: &OrderId,
    body: &[u8],
    max_grace: std::time::Duration,
    now: UnixTime,
) -> Result<OrderUpdate, Refused> {
    let mut value = json_object(body)?;
    if let Some(field) = value.keys().find(|k| {
        !matches!(
            k.as_str(),
            "version" | "market" | "grace_seconds" | "closed_after_end"
        )
    }) {
        // Named only when it reads as a field name: a key may be anything, a phone number too.
        let detail =
            if field.len() <= 32 && field.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                format!("field `{field}` is not part of an end")
            } else {
                "a field of the body is not part of an end".to_owned()
            };
        return Err(Refused::new(ProblemKind::InvalidSession, detail));
    }
    value.insert("event_id".into(), json!(API_EVENT_ID));
    let grace = match value.remove("grace_seconds") {
        None => None,
        Some(v) => match v.as_u64() {
            Some(secs) if secs <= max_grace.as_secs() => Some(std::time::Duration::from_secs(secs)),
            _ => {
                return Err(Refused::new(
                    ProblemKind::InvalidSession,
                    format!(
                        "field `grace_seconds` must be a whole number of seconds, at most {}",
                        max_grace.as_secs()
                    ),
                ))
            }
        },
    };
    let closed = match value.remove("closed_after_end") {
        None => Vec::new(),
        Some(v) => directions(v)?,
    };
    value.insert("type".into(), json!("OrderCompleted"));
    value.insert("order_id".into(), json!(order.as_str()));
    value.insert("occurred_at".into(), json!(rfc3339(now)));
    let event = OrderEvent::parse(&Value::Object(value).to_string()).map_err(invalid)?;
    let mut update = event
        .update()
        .ok_or_else(|| Refused::new(ProblemKind::Internal, "the end could not be read"))?;
    if grace.is_some() || !closed.is_empty() {
        update.change = OrderChange::End(EndTerms { grace, closed });
    }
    Ok(update)
}

/// At most this many closed directions in one end: every ordered pair of six participants.
const MAX_CLOSED: usize = 30;

/// An end's `closed_after_end`: directions between roles, each once, in a stable order (so
/// that a repeat in another order is the same end).
fn directions(value: Value) -> Result<Vec<Direction>, Refused> {
    let bad = || {
        Refused::new(
            ProblemKind::InvalidSession,
            format!("field `closed_after_end` must be a list of at most {MAX_CLOSED} {{\"from\": role, \"to\": role}} (roles: 1-32 of a-z, 0-9, '_')"),
        )
    };
    let mut closed: Vec<Direction> = serde_json::from_value(value).map_err(|_| bad())?;
    closed.sort();
    closed.dedup();
    if closed.len() > MAX_CLOSED {
        return Err(bad());
    }
    if closed.iter().any(|d| d.from == d.to) {
        return Err(Refused::new(
            ProblemKind::InvalidSession,
            "field `closed_after_end`: a direction joins two different roles",
        ));
    }
    Ok(closed)
}

fn json_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, Refused> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Refused::new(
            ProblemKind::MalformedBody,
            "the body must be a JSON object",
        )),
        // The position only: never the text.
        Err(e) => Err(Refused::new(
            ProblemKind::MalformedBody,
            format!(
                "the body is not JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        )),
    }
}

/// An invalid request's problem: its message names the field at fault, never a value.
fn invalid(e: EventError) -> Refused {
    let kind = match e {
        EventError::Malformed(_) | EventError::NotAnObject => ProblemKind::MalformedBody,
        _ => ProblemKind::InvalidSession,
    };
    Refused::new(kind, e.to_string())
}

fn rfc3339(now: UnixTime) -> String {
    OffsetDateTime::from_unix_timestamp(now)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// A session as the API shows it: who takes part (by user id and role), who reaches whom on
/// which number, its state and until when its routes connect. Never a real number.
#[derive(Debug, Serialize)]
pub struct SessionView {
    pub order_id: String,
    pub market: String,
    pub version: u64,
    pub revision: u64,
    pub state: &'static str,
    /// When the session's routes stop connecting (RFC 3339).
    pub valid_until: String,
    pub participants: Vec<ParticipantView>,
    pub contacts: Vec<ContactView>,
    /// The directions the end closed: they no longer connect while the others live out the
    /// grace.
    pub closed_after_end: Vec<Direction>,
}

#[derive(Debug, Serialize)]
pub struct ParticipantView {
    pub user_id: String,
    pub role: String,
}

#[derive(Debug, Serialize)]
pub struct ContactView {
    pub users: [String; 2],
    pub number: String,
    pub capabilities: Vec<Capability>,
}

impl SessionView {
    fn of(s: &Session) -> Self {
        SessionView {
            order_id: s.order_id.as_str().to_owned(),
            market: s.market.as_str().to_owned(),
            version: s.version,
            revision: s.revision,
            state: match s.state {
                SessionState::Active => "active",
                SessionState::Ended => "ended",
            },
            valid_until: rfc3339(s.routes_until),
            participants: s
                .participants
                .iter()
                .map(|p| ParticipantView {
                    user_id: p.user_id.as_str().to_owned(),
                    role: p.role.as_str().to_owned(),
                })
                .collect(),
            contacts: s
                .contacts
                .iter()
                .map(|c| ContactView {
                    users: [c.a.as_str().to_owned(), c.b.as_str().to_owned()],
                    number: c.number.as_str().to_owned(),
                    capabilities: c.capabilities.iter().collect(),
                })
                .collect(),
            closed_after_end: s.closed_after_end.clone(),
        }
    }
}
