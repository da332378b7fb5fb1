//! The lookup function: apps ask which virtual number to dial for each other party of an order.
//!
//! `GET /v1/orders/{order_id}/contacts` behind an API Gateway HTTP API with a JWT authorizer. The
//! caller is the authorizer's user claim ([`identity`]); the answer comes from the order's
//! session in one read, or, when the assignment event is late, from the Orders service and the
//! same assignment code the assign function runs ([`contacts`]). Errors are RFC 9457 problems
//! ([`problem`]). docs/openapi.yaml describes the endpoint; README.md explains it to app developers.
//!
//! The same function serves the sessions API ([`sessions`]): backends without an order-event
//! stream create, end and read sessions under `/v1/sessions`, behind IAM authorization.

pub mod config;
pub mod contacts;
pub mod identity;
pub mod orders;
pub mod problem;
pub mod sessions;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::request::Parts;
use http::{header, HeaderValue};
use vnmask::assignment::Assigner;
use vnmask::domain::{self, OrderId, UnixTime, UserId};
use vnmask::store::SessionDirectory;
use vnmask::telemetry::{MetricSet, Unit};

use crate::config::{IdentityConfig, LookupConfig};
use crate::contacts::{ContactDirectory, LookupError, Path as AnswerPath};
use crate::identity::IdentityError;
use crate::orders::OrdersApi;
use crate::problem::ProblemKind;

pub use config::running_outside_aws;

/// The `Function` dimension of this function's metrics.
pub const FUNCTION: &str = "lookup";

/// The one route, in axum's syntax.
pub const CONTACTS_ROUTE: &str = "/v1/orders/{order_id}/contacts";

/// Everything a request needs, built once per cold start.
pub struct Lookup {
    directory: ContactDirectory,
    sessions: sessions::Sessions,
    identity: IdentityConfig,
    cache_control: HeaderValue,
}

impl Lookup {
    pub fn new(
        assigner: Arc<Assigner>,
        directory: Arc<dyn SessionDirectory>,
        orders: Option<OrdersApi>,
        config: &LookupConfig,
    ) -> Self {
        let cache_control =
            HeaderValue::from_str(&format!("private, max-age={}", config.max_age.as_secs()))
                .unwrap_or_else(|_| HeaderValue::from_static("no-store"));
        Lookup {
            sessions: sessions::Sessions::new(assigner.clone(), directory),
            directory: ContactDirectory::new(assigner, orders),
            identity: config.identity.clone(),
            cache_control,
        }
    }

    /// Answers one lookup; returns the response and what to record about it.
    async fn answer(
        &self,
        caller: Result<UserId, IdentityError>,
        order: Result<Path<String>, PathRejection>,
        now: UnixTime,
    ) -> (Response, Record) {
        let caller = match caller {
            Ok(user) => user,
            Err(e) => {
                return (
                    ProblemKind::Unauthenticated.into_response(),
                    Record::early("unauthenticated", e.as_str()),
                )
            }
        };
        let Some(order) = order.ok().and_then(|Path(raw)| raw.parse::<OrderId>().ok()) else {
            return (
                ProblemKind::InvalidOrderId.into_response(),
                Record::early("invalid_order_id", "malformed"),
            );
        };
        let (result, path) = self.directory.contacts(&caller, &order, now).await;
        let (response, outcome, reason) = match result {
            Ok(list) => {
                let mut response = Json(list).into_response();
                let headers = response.headers_mut();
                headers.insert(header::CACHE_CONTROL, self.cache_control.clone());
                headers.insert(header::VARY, HeaderValue::from_static("authorization"));
                let reason = match path {
                    AnswerPath::Session => "session",
                    AnswerPath::Fallback => "assigned",
                    AnswerPath::FallbackStale => "event_won",
                };
                (response, "ok", reason)
            }
            Err(e) => {
                let (kind, outcome, reason) = match &e {
                    // Whatever hides the order (no session, not a participant, unknown to the
                    // Orders service, no Orders service), one answer: the same 404, byte for byte.
                    LookupError::NotFound(why) => {
                        (ProblemKind::OrderNotFound, "not_found", why.as_str())
                    }
                    LookupError::Orders(o) => (
                        ProblemKind::OrdersUnavailable,
                        "orders_unavailable",
                        o.as_str(),
                    ),
                    other if other.is_transient() => (
                        ProblemKind::TemporarilyUnavailable,
                        "unavailable",
                        "transient",
                    ),
                    _ => (ProblemKind::Internal, "error", "permanent"),
                };
                if !matches!(e, LookupError::NotFound(_)) {
                    tracing::warn!(order_id = %order, error = %e, "lookup failed");
                }
                (kind.into_response(), outcome, reason)
            }
        };
        let record = Record {
            outcome,
            reason,
            fallback: path != AnswerPath::Session,
            order_id: Some(order),
        };
        (response, record)
    }
}

/// What is logged and measured about one request (never a phone number, never the user id).
#[derive(Debug, Clone)]
struct Record {
    outcome: &'static str,
    reason: &'static str,
    /// No session was found, so the Orders service was (or would have been) asked.
    fallback: bool,
    order_id: Option<OrderId>,
}

impl Record {
    /// A request turned away before the order was looked at.
    fn early(outcome: &'static str, reason: &'static str) -> Self {
        Record {
            outcome,
            reason,
            fallback: false,
            order_id: None,
        }
    }

    fn emit(&self, started: Instant) {
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(
            order_id = self.order_id.as_ref().map_or("", OrderId::as_str),
            outcome = self.outcome,
            reason = self.reason,
            fallback = self.fallback,
            latency_ms = ms,
            "lookup"
        );
        MetricSet::new(FUNCTION)
            .dimension("Outcome", self.outcome)
            .count("Lookups", 1)
            .count("Fallbacks", u64::from(self.fallback))
            .value("Latency", ms, Unit::Milliseconds)
            .emit();
    }
}

/// The caller's identity, or why there is none (the handler answers 401 for it).
struct Caller(Result<UserId, IdentityError>);

impl FromRequestParts<Arc<Lookup>> for Caller {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        lookup: &Arc<Lookup>,
    ) -> Result<Self, Self::Rejection> {
        Ok(Caller(identity::caller(parts, &lookup.identity)))
    }
}

async fn get_contacts(
    State(lookup): State<Arc<Lookup>>,
    Caller(caller): Caller,
    order: Result<Path<String>, PathRejection>,
) -> Response {
    let started = Instant::now();
    let (response, record) = lookup.answer(caller, order, domain::now()).await;
    record.emit(started);
    response
}

/// The function's HTTP API, for `lambda_http::run` and for tests.
pub fn router(lookup: Arc<Lookup>) -> Router {
    Router::new()
        .route(CONTACTS_ROUTE, get(get_contacts))
        .route(
            sessions::SESSION_ROUTE,
            get(sessions::get_session).put(sessions::put_session),
        )
        .route(sessions::END_ROUTE, post(sessions::end_session))
        .route(sessions::LIST_ROUTE, get(sessions::list_sessions))
        .fallback(|| async { ProblemKind::NoSuchEndpoint })
        .method_not_allowed_fallback(|| async { ProblemKind::MethodNotAllowed })
        .with_state(lookup)
}
