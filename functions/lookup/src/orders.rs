//! The Orders service, asked for an order when its assignment event has not arrived yet.
//!
//! `GET {ORDERS_API_URL}/orders/{order_id}` answers the order's participants in the event
//! contract's shape (docs/events.md), with the order's market, `state` and `version`:
//!
//! ```json
//! {"order_id": "ord-1001", "market": "IN", "state": "active", "version": 3,
//!  "participants": [{"role": "customer", "user_id": "u-c", "phone": "+919812345678"},
//!                   {"role": "driver",   "user_id": "u-d", "phone": "+919898765432"}]}
//! ```
//!
//! 404 means the order is unknown. The order id is sent as one percent-encoded path segment
//! ([`push_segment`]); [`OrderId`] never is `.` or `..`, the two segments no encoding can keep
//! from naming the collection or its parent.
//!
//! Anything else that is not a readable order of the asked id (another status, a timeout, a body
//! that does not parse) is an error: the caller answers 503.

use std::time::Duration;

use serde::Deserialize;
use vnmask::domain::{validate_participants, Market, OrderId, Participant};
use vnmask::events::MAX_VERSION;

use crate::config::OrdersConfig;

/// Bodies larger than this are not an order.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The only `state` in which an order's parties need to reach each other.
pub const ACTIVE: &str = "active";

/// Why the Orders service gave no usable answer. Never carries a value from its response.
#[derive(Debug, thiserror::Error)]
pub enum OrdersError {
    #[error("the Orders service did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the Orders service could not be reached")]
    Unreachable,
    #[error("the Orders service answered HTTP {0}")]
    Status(u16),
    #[error("the Orders service's answer is not an order: {0}")]
    Garbage(String),
}

impl OrdersError {
    /// A short label for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            OrdersError::Timeout(_) => "timeout",
            OrdersError::Unreachable => "unreachable",
            OrdersError::Status(_) => "status",
            OrdersError::Garbage(_) => "garbage",
        }
    }
}

/// An order as the Orders service knows it now.
#[derive(Debug, Clone, Deserialize)]
pub struct OrderSnapshot {
    pub order_id: OrderId,
    pub market: Market,
    /// `active`, or anything else (`completed`, `cancelled`, `pending`, …): not active.
    pub state: String,
    /// The order's version, on the same scale as its events' `version`.
    pub version: u64,
    /// The order's full current participant list; may be empty unless the order is active.
    #[serde(default)]
    pub participants: Vec<Participant>,
}

impl OrderSnapshot {
    pub fn is_active(&self) -> bool {
        self.state == ACTIVE
    }

    /// Parses and checks a response body for order `asked`.
    pub fn parse(body: &[u8], asked: &OrderId) -> Result<Self, OrdersError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(OrdersError::Garbage("body too large".into()));
        }
        let mut de = serde_json::Deserializer::from_slice(body);
        // Only the path of the field at fault is kept: serde's messages can quote the value.
        let order: OrderSnapshot = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            OrdersError::Garbage(if path == "." {
                "not a JSON object of the order's shape".into()
            } else {
                format!("field `{path}` is missing or invalid")
            })
        })?;
        de.end()
            .map_err(|_| OrdersError::Garbage("trailing characters".into()))?;
        if &order.order_id != asked {
            return Err(OrdersError::Garbage("a different order".into()));
        }
        if order.version > MAX_VERSION {
            return Err(OrdersError::Garbage("version above 2^53-1".into()));
        }
        if order.is_active() {
            validate_participants(&order.participants)
                .map_err(|e| OrdersError::Garbage(e.to_string()))?;
        }
        Ok(order)
    }
}

/// Appends `segment` to `url` as one path segment: RFC 3986's unreserved characters and `:`
/// as they are, every other byte percent-encoded (so `/`, `%`, `?`, `#` and spaces cannot
/// change which resource is asked for). The caller keeps `.` and `..` out: they stay dot
/// segments whatever their encoding.
pub fn push_segment(url: &mut String, segment: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in segment.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':') {
            url.push(char::from(b));
        } else {
            url.push('%');
            url.push(char::from(HEX[usize::from(b >> 4)]));
            url.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

/// The Orders service's HTTP API.
#[derive(Debug, Clone)]
pub struct OrdersApi {
    client: reqwest::Client,
    /// The base URL without a trailing slash (`Url` adds one to a bare host).
    base: String,
    config: OrdersConfig,
}

impl OrdersApi {
    pub fn new(config: OrdersConfig) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            // An answer is one JSON document; following redirects could send the credential elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let base = config.base_url.as_str().trim_end_matches('/').to_owned();
        Ok(OrdersApi {
            client,
            base,
            config,
        })
    }

    /// The URL of order `id`: `{base}/orders/{id}`, the id one encoded path segment.
    pub fn order_url(&self, id: &OrderId) -> String {
        let mut url = String::with_capacity(self.base.len() + "/orders/".len() + id.as_str().len());
        url.push_str(&self.base);
        url.push_str("/orders/");
        push_segment(&mut url, id.as_str());
        url
    }

    /// The order, or `None` when the Orders service does not know it.
    pub async fn order(&self, id: &OrderId) -> Result<Option<OrderSnapshot>, OrdersError> {
        let mut request = self
            .client
            .get(self.order_url(id))
            .header(http::header::ACCEPT, "application/json");
        if let Some((name, value)) = &self.config.auth {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(|e| self.failure(&e))?;
        match response.status() {
            reqwest::StatusCode::OK => {}
            reqwest::StatusCode::NOT_FOUND => return Ok(None),
            other => return Err(OrdersError::Status(other.as_u16())),
        }
        let body = response.bytes().await.map_err(|e| self.failure(&e))?;
        OrderSnapshot::parse(&body, id).map(Some)
    }

    fn failure(&self, e: &reqwest::Error) -> OrdersError {
        if e.is_timeout() {
            OrdersError::Timeout(self.config.timeout)
        } else {
            OrdersError::Unreachable
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> OrderId {
        s.parse().unwrap()
    }

    const ACTIVE_ORDER: &str = r#"{"order_id": "ord-1001", "market": "IN", "state": "active", "version": 3,
        "participants": [{"role": "customer", "user_id": "u-c", "phone": "+919812345678"},
                         {"role": "driver",   "user_id": "u-d", "phone": "+919898765432"}],
        "eta_minutes": 4}"#;

    #[test]
    fn active_order_parses_with_typed_participants() {
        let order = OrderSnapshot::parse(ACTIVE_ORDER.as_bytes(), &id("ord-1001")).unwrap();
        assert!(order.is_active());
        assert_eq!(order.version, 3);
        assert_eq!(order.market.as_str(), "IN");
        assert_eq!(order.participants[1].user_id.as_str(), "u-d");
    }

    #[test]
    fn answer_about_another_order_is_garbage() {
        let err = OrderSnapshot::parse(ACTIVE_ORDER.as_bytes(), &id("ord-2")).unwrap_err();
        assert!(matches!(err, OrdersError::Garbage(_)));
    }

    #[test]
    fn bad_phone_is_named_by_path_without_its_digits() {
        let body = ACTIVE_ORDER.replace("+919898765432", "+91 98987 65432");
        let err = OrderSnapshot::parse(body.as_bytes(), &id("ord-1001")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("participants[1].phone"), "{text}");
        assert!(!text.contains("98987"), "{text}");
    }

    #[test]
    fn numeric_phone_is_not_echoed() {
        let body = ACTIVE_ORDER.replace("\"+919898765432\"", "919898765432");
        let err = OrderSnapshot::parse(body.as_bytes(), &id("ord-1001")).unwrap_err();
        assert!(!err.to_string().contains("98987"), "{err}");
    }

    #[test]
    fn garbage_shapes_are_refused() {
        for body in [
            "",
            "<html>502 Bad Gateway</html>",
            "[]",
            r#"{"order_id": "ord-1001"}"#,
            r#"{"order_id": "ord-1001", "market": "IN", "state": "active", "version": -1}"#,
            r#"{"order_id": "ord-1001", "market": "IN", "state": "active", "version": 3, "participants": []}"#,
            r#"{"order_id": "ord-1001", "market": "IN", "state": "active", "version": 9007199254740992, "participants": []}"#,
        ] {
            assert!(
                matches!(
                    OrderSnapshot::parse(body.as_bytes(), &id("ord-1001")),
                    Err(OrdersError::Garbage(_))
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn ended_order_needs_no_participants() {
        let body =
            r#"{"order_id": "ord-1001", "market": "IN", "state": "completed", "version": 5}"#;
        let order = OrderSnapshot::parse(body.as_bytes(), &id("ord-1001")).unwrap();
        assert!(!order.is_active());
    }

    fn encoded(segment: &str) -> String {
        let mut url = String::from("https://orders.example/orders/");
        push_segment(&mut url, segment);
        url
    }

    #[test]
    fn segment_keeps_the_order_id_alphabet_and_encodes_everything_else() {
        assert_eq!(
            encoded("AZaz09-._~:"),
            "https://orders.example/orders/AZaz09-._~:"
        );
        for (raw, segment) in [
            ("a/b", "a%2Fb"),
            ("a%2Fb", "a%252Fb"),
            ("a b", "a%20b"),
            ("a?b#c", "a%3Fb%23c"),
            ("../admin", "..%2Fadmin"),
            ("a\\b", "a%5Cb"),
            ("\u{e9}", "%C3%A9"),
            ("+91 98", "%2B91%2098"),
        ] {
            let url = encoded(raw);
            assert_eq!(
                url,
                format!("https://orders.example/orders/{segment}"),
                "{raw:?}"
            );
            // What an HTTP client makes of it: still exactly one segment under /orders/.
            let parsed = reqwest::Url::parse(&url).unwrap();
            let segments: Vec<_> = parsed.path_segments().unwrap().collect();
            assert_eq!(segments, ["orders", segment], "{raw:?}");
        }
    }
}
