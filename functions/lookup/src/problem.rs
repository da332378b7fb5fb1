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
}

impl ProblemKind {
    pub const ALL: [ProblemKind; 8] = [
        ProblemKind::Unauthenticated,
        ProblemKind::InvalidOrderId,
        ProblemKind::OrderNotFound,
        ProblemKind::OrdersUnavailable,
        ProblemKind::TemporarilyUnavailable,
        ProblemKind::Internal,
        ProblemKind::NoSuchEndpoint,
        ProblemKind::MethodNotAllowed,
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
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ProblemKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ProblemKind::InvalidOrderId => StatusCode::BAD_REQUEST,
            ProblemKind::OrderNotFound | ProblemKind::NoSuchEndpoint => StatusCode::NOT_FOUND,
            ProblemKind::OrdersUnavailable | ProblemKind::TemporarilyUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
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
            ProblemKind::MethodNotAllowed => "This endpoint answers GET only.",
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
    pub detail: &'static str,
}

impl From<ProblemKind> for Problem {
    fn from(kind: ProblemKind) -> Self {
        Problem {
            type_uri: kind.type_uri(),
            title: kind.title(),
            status: kind.status().as_u16(),
            detail: kind.detail(),
        }
    }
}

impl IntoResponse for ProblemKind {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&Problem::from(self)).unwrap_or_default();
        let mut response = (self.status(), body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        // An error must not stick: the next try may succeed.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            ProblemKind::Unauthenticated => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ProblemKind::OrdersUnavailable | ProblemKind::TemporarilyUnavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            }
            ProblemKind::MethodNotAllowed => {
                headers.insert(header::ALLOW, HeaderValue::from_static("GET"));
            }
            _ => {}
        }
        response
    }
}
