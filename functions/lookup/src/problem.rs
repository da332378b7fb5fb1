//! Errors as `application/problem+json` (RFC 9457), each kind with a stable `type` URI that apps
//! may switch on. Details never echo request input.

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use serde::Serialize;

pub const CONTENT_TYPE: &str = "application/problem+json";

/// Seconds an app should wait before asking again after a 503.
pub const RETRY_AFTER_SECONDS: u64 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// 401: no verified identity on the request.
    Unauthenticated,
    /// 400: the order id in the path is not an order id.
    InvalidOrderId,
    /// 404: the caller may not see this order: it is unknown, they are not one of its
    /// participants, or there is no Orders service to ask about it. One response (status,
    /// headers, body) for all, so that it tells no one whether an order exists.
    OrderNotFound,
    /// 503: no session yet, and the Orders service failed in a way an unknown order would too
    /// (down, slow, 5xx).
    OrdersUnavailable,
    /// 503: the store or the assignment could not complete right now.
    TemporarilyUnavailable,
    /// 500: something that retrying will not fix.
    Internal,
    /// 404: no such endpoint.
    NoSuchEndpoint,
    /// 405: the endpoint exists, the method does not.
    MethodNotAllowed,
    /// 409 (sessions API): the stored session is newer than the request, or at its version
    /// with other participants.
    StaleVersion,
    /// 503 (sessions API): no number can serve a pair now; retry after the delay (pool refresh
    /// may add numbers).
    PoolExhausted,
    /// 422 (sessions API): the request is JSON but not a valid session (the detail names the
    /// field at fault, never its value).
    InvalidSession,
    /// 400 (sessions API): the body is not a JSON object.
    MalformedBody,
    /// 404 (sessions API): no session for this order.
    SessionNotFound,
}

impl ProblemKind {
    pub const ALL: [ProblemKind; 13] = [
        ProblemKind::Unauthenticated,
        ProblemKind::InvalidOrderId,
        ProblemKind::OrderNotFound,
        ProblemKind::OrdersUnavailable,
        ProblemKind::TemporarilyUnavailable,
        ProblemKind::Internal,
        ProblemKind::NoSuchEndpoint,
        ProblemKind::MethodNotAllowed,
        ProblemKind::StaleVersion,
        ProblemKind::PoolExhausted,
        ProblemKind::InvalidSession,
        ProblemKind::MalformedBody,
        ProblemKind::SessionNotFound,
    ];

    pub fn type_uri(self) -> &'static str {
        match self {
            ProblemKind::Unauthenticated => "urn:vnmask:problem:unauthenticated",
            ProblemKind::InvalidOrderId => "urn:vnmask:problem:invalid-order-id",
            ProblemKind::OrderNotFound => "urn:vnmask:problem:order-not-found",
            ProblemKind::OrdersUnavailable => "urn:vnmask:problem:orders-unavailable",
            ProblemKind::TemporarilyUnavailable => "urn:vnmask:problem:temporarily-unavailable",
            ProblemKind::Internal => "urn:vnmask:problem:internal",
            ProblemKind::NoSuchEndpoint => "urn:vnmask:problem:no-such-endpoint",
            ProblemKind::MethodNotAllowed => "urn:vnmask:problem:method-not-allowed",
            ProblemKind::StaleVersion => "urn:vnmask:problem:stale-version",
            ProblemKind::PoolExhausted => "urn:vnmask:problem:pool-exhausted",
            ProblemKind::InvalidSession => "urn:vnmask:problem:invalid-session",
            ProblemKind::MalformedBody => "urn:vnmask:problem:malformed-body",
            ProblemKind::SessionNotFound => "urn:vnmask:problem:session-not-found",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ProblemKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ProblemKind::InvalidOrderId | ProblemKind::MalformedBody => StatusCode::BAD_REQUEST,
            ProblemKind::OrderNotFound
            | ProblemKind::NoSuchEndpoint
            | ProblemKind::SessionNotFound => StatusCode::NOT_FOUND,
            ProblemKind::OrdersUnavailable
            | ProblemKind::TemporarilyUnavailable
            | ProblemKind::PoolExhausted => StatusCode::SERVICE_UNAVAILABLE,
            ProblemKind::StaleVersion => StatusCode::CONFLICT,
            ProblemKind::InvalidSession => StatusCode::UNPROCESSABLE_ENTITY,
            ProblemKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ProblemKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            ProblemKind::Unauthenticated => "Sign-in required",
            ProblemKind::InvalidOrderId => "Invalid order id",
            ProblemKind::OrderNotFound => "Order not found",
            ProblemKind::OrdersUnavailable => "Order details are not available yet",
            ProblemKind::TemporarilyUnavailable => "Temporarily unavailable",
            ProblemKind::Internal => "Internal error",
            ProblemKind::NoSuchEndpoint => "No such endpoint",
            ProblemKind::MethodNotAllowed => "Method not allowed",
            ProblemKind::StaleVersion => "Stale version",
            ProblemKind::PoolExhausted => "No number available",
            ProblemKind::InvalidSession => "Invalid session",
            ProblemKind::MalformedBody => "Malformed body",
            ProblemKind::SessionNotFound => "Session not found",
        }
    }

    fn detail(self) -> &'static str {
        match self {
            ProblemKind::Unauthenticated => "The request carries no verified user identity.",
            ProblemKind::InvalidOrderId => {
                "An order id is 1-128 characters of A-Z, a-z, 0-9, '.', '_', ':', '-', and not '.' or '..'."
            }
            ProblemKind::OrderNotFound => {
                "There is no order with this id that you take part in."
            }
            ProblemKind::OrdersUnavailable => {
                "The order's numbers are not assigned yet and the order service cannot be asked right now; retry after the indicated delay."
            }
            ProblemKind::TemporarilyUnavailable => "Retry after the indicated delay.",
            ProblemKind::Internal => "The request could not be answered.",
            ProblemKind::NoSuchEndpoint => "See the API description for the endpoints.",
            ProblemKind::MethodNotAllowed => {
                "This endpoint does not answer this method; the Allow header lists those it does."
            }
            ProblemKind::StaleVersion => {
                "The stored session has a newer version, or this version with other participants."
            }
            ProblemKind::PoolExhausted => {
                "No number of the market can serve a pair of this order now; retry after the indicated delay."
            }
            ProblemKind::InvalidSession => "The request is not a valid session.",
            ProblemKind::MalformedBody => "The body must be a JSON object.",
            ProblemKind::SessionNotFound => "There is no session for this order.",
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: &'static str,
    pub title: &'static str,
    pub status: u16,
    pub detail: std::borrow::Cow<'static, str>,
}

impl From<ProblemKind> for Problem {
    fn from(kind: ProblemKind) -> Self {
        Problem {
            type_uri: kind.type_uri(),
            title: kind.title(),
            status: kind.status().as_u16(),
            detail: kind.detail().into(),
        }
    }
}

/// `kind`'s response with `detail` in place of its own: a sentence naming a field, never a
/// value from the request.
pub fn with_detail(kind: ProblemKind, detail: String) -> Response {
    respond(
        kind,
        Problem {
            detail: detail.into(),
            ..Problem::from(kind)
        },
    )
}

impl IntoResponse for ProblemKind {
    fn into_response(self) -> Response {
        respond(self, Problem::from(self))
    }
}

fn respond(kind: ProblemKind, problem: Problem) -> Response {
    {
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (kind.status(), body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        // An error must not stick: the next try may succeed.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match kind {
            ProblemKind::Unauthenticated => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ProblemKind::OrdersUnavailable
            | ProblemKind::TemporarilyUnavailable
            | ProblemKind::PoolExhausted => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            }
            _ => {}
        }
        response
    }
}
