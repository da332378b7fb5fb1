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
//! 404 (or 410) means the order is unknown. The order id is sent as one percent-encoded path
//! segment ([`push_segment`]); [`OrderId`] never is `.` or `..`, the two segments no encoding
//! can keep from naming the collection or its parent.
//!
//! Anything else that is not a readable order of the asked id (another status, a timeout, a body
//! that does not parse) is an error. Most answer 503, but not those that only an existing order
//! can cause ([`OrdersError::reveals_the_order`]): those answer like an unknown order, so that
//! nobody learns from a 503 that an order they are not part of exists.

use std::time::Duration;

use serde::Deserialize;
use vnmask::domain::{validate_participants, Market, OrderId, Participant, UserId};
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
    /// A 200 (the order exists) whose body is not a usable order of the asked id.
    #[error("the Orders service's answer is not an order: {reason}")]
    Garbage {
        reason: String,
        /// Whether the body, read leniently, still lists the asking user as a participant of
        /// the asked order: only then may they learn that it exists.
        lists_asker: bool,
    },
}

impl OrdersError {
    /// A short label for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            OrdersError::Timeout(_) => "timeout",
            OrdersError::Unreachable => "unreachable",
            OrdersError::Status(403) => "forbidden",
            OrdersError::Status(_) => "status",
            OrdersError::Garbage { .. } => "garbage",
        }
    }

    /// Whether answering this failure differently from an unknown order would tell the asker
    /// that the order exists: a 200 whose body does not list them, or a 403 (which services
    /// commonly give for an order that exists but is not theirs to show). Timeouts, 5xx, 401
    /// and the like happen whether or not the order exists, and stay outages.
    pub fn reveals_the_order(&self) -> bool {
        match self {
            OrdersError::Garbage { lists_asker, .. } => !lists_asker,
            OrdersError::Status(status) => *status == 403,
            OrdersError::Timeout(_) | OrdersError::Unreachable => false,
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
    /// Whether the order's calls are recorded, as its events' `record` says (the same version
    /// must ask the same whichever of the event and this answer is applied first).
    #[serde(default)]
    pub record: bool,
}

impl OrderSnapshot {
    pub fn is_active(&self) -> bool {
        self.state == ACTIVE
    }

    /// Parses and checks a response body for order `asked`, asked by `asker`.
    pub fn parse(body: &[u8], asked: &OrderId, asker: &UserId) -> Result<Self, OrdersError> {
        Self::parse_strictly(body, asked).map_err(|reason| OrdersError::Garbage {
            reason,
            lists_asker: lists(body, asked, asker),
        })
    }

    fn parse_strictly(body: &[u8], asked: &OrderId) -> Result<Self, String> {
        if body.len() > MAX_BODY_BYTES {
            return Err("body too large".into());
        }
        let mut de = serde_json::Deserializer::from_slice(body);
        // Only the path of the field at fault is kept: serde's messages can quote the value.
        let order: OrderSnapshot = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                "not a JSON object of the order's shape".to_owned()
            } else {
                format!("field `{path}` is missing or invalid")
            }
        })?;
        de.end().map_err(|_| "trailing characters".to_owned())?;
        if &order.order_id != asked {
            return Err("a different order".into());
        }
        if order.version > MAX_VERSION {
            return Err("version above 2^53-1".into());
        }
        if order.is_active() {
            validate_participants(&order.participants).map_err(|e| e.to_string())?;
        }
        Ok(order)
    }
}

/// Whether `body`, read as loosely as possible, is about order `asked` and lists `asker` among
/// its participants: `{"order_id": asked, "participants": [.., {"user_id": asker}, ..]}`.
fn lists(body: &[u8], asked: &OrderId, asker: &UserId) -> bool {
    #[derive(Deserialize)]
    struct Roster {
        order_id: Option<String>,
        #[serde(default)]
        participants: Vec<serde_json::Value>,
    }
    if body.len() > MAX_BODY_BYTES {
        return false;
    }
    let Ok(roster) = serde_json::from_slice::<Roster>(body) else {
        return false;
    };
    roster.order_id.as_deref() == Some(asked.as_str())
        && roster
            .participants
            .iter()
            .any(|p| p.get("user_id").and_then(serde_json::Value::as_str) == Some(asker.as_str()))
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

    /// Order `id` as `asker` asked for it, or `None` when the Orders service does not know it.
    pub async fn order(
        &self,
        id: &OrderId,
        asker: &UserId,
    ) -> Result<Option<OrderSnapshot>, OrdersError> {
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
            reqwest::StatusCode::NOT_FOUND | reqwest::StatusCode::GONE => return Ok(None),
            other => return Err(OrdersError::Status(other.as_u16())),
        }
        let body = response.bytes().await.map_err(|e| self.failure(&e))?;
        OrderSnapshot::parse(&body, id, asker).map(Some)
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

    /// Parses `body` as the driver of [`ACTIVE_ORDER`] asking for `order`.
    fn parse(body: &str, order: &str) -> Result<OrderSnapshot, OrdersError> {
        OrderSnapshot::parse(body.as_bytes(), &id(order), &"u-d".parse().unwrap())
    }

    const ACTIVE_ORDER: &str = r#"{"order_id": "ord-1001", "market": "IN", "state": "active", "version": 3,
        "participants": [{"role": "customer", "user_id": "u-c", "phone": "+919812345678"},
                         {"role": "driver",   "user_id": "u-d", "phone": "+919898765432"}],
        "eta_minutes": 4}"#;

    #[test]
    fn active_order_parses_with_typed_participants() {
        let order = parse(ACTIVE_ORDER, "ord-1001").unwrap();
        assert!(order.is_active());
        assert_eq!(order.version, 3);
        assert_eq!(order.market.as_str(), "IN");
        assert_eq!(order.participants[1].user_id.as_str(), "u-d");
    }

    #[test]
    fn an_order_records_only_when_it_says_so() {
        assert!(!parse(ACTIVE_ORDER, "ord-1001").unwrap().record);
        let recorded = ACTIVE_ORDER.replace("\"version\": 3,", "\"version\": 3, \"record\": true,");
        assert!(parse(&recorded, "ord-1001").unwrap().record);
        let garbage =
            ACTIVE_ORDER.replace("\"version\": 3,", "\"version\": 3, \"record\": \"yes\",");
        assert!(parse(&garbage, "ord-1001").is_err());
    }

    #[test]
    fn answer_about_another_order_is_garbage() {
        let err = parse(ACTIVE_ORDER, "ord-2").unwrap_err();
        // The body names the driver, but of another order: nothing says ord-2 is theirs.
        assert!(matches!(
            err,
            OrdersError::Garbage {
                lists_asker: false,
                ..
            }
        ));
        assert!(err.reveals_the_order());
    }

    #[test]
    fn bad_phone_is_named_by_path_without_its_digits() {
        let body = ACTIVE_ORDER.replace("+919898765432", "+91 98987 65432");
        let err = parse(&body, "ord-1001").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("participants[1].phone"), "{text}");
        assert!(!text.contains("98987"), "{text}");
    }

    #[test]
    fn numeric_phone_is_not_echoed() {
        let body = ACTIVE_ORDER.replace("\"+919898765432\"", "919898765432");
        let err = parse(&body, "ord-1001").unwrap_err();
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
                matches!(parse(body, "ord-1001"), Err(OrdersError::Garbage { .. })),
                "{body}"
            );
        }
    }

    #[test]
    fn ended_order_needs_no_participants() {
        let body =
            r#"{"order_id": "ord-1001", "market": "IN", "state": "completed", "version": 5}"#;
        let order = parse(body, "ord-1001").unwrap();
        assert!(!order.is_active());
    }

    #[test]
    fn unusable_answer_says_whether_it_lists_the_asker() {
        // Still lists the driver: they may learn that their order's data is broken.
        let bad_phone = ACTIVE_ORDER.replace("+919812345678", "98123");
        let listed = parse(&bad_phone, "ord-1001").unwrap_err();
        assert!(matches!(
            listed,
            OrdersError::Garbage {
                lists_asker: true,
                ..
            }
        ));
        assert!(!listed.reveals_the_order());
        // Lists someone else, or cannot be read at all: the asker learns nothing.
        let stranger = OrderSnapshot::parse(
            bad_phone.as_bytes(),
            &id("ord-1001"),
            &"u-x".parse().unwrap(),
        )
        .unwrap_err();
        assert!(stranger.reveals_the_order());
        for body in [
            "<html>oops</html>",
            r#"{"order_id": "ord-1001", "participants": "u-d"}"#,
        ] {
            assert!(
                parse(body, "ord-1001").unwrap_err().reveals_the_order(),
                "{body}"
            );
        }
    }

    #[test]
    fn only_failures_an_unknown_order_cannot_cause_reveal_it() {
        assert!(OrdersError::Status(403).reveals_the_order());
        for outage in [
            OrdersError::Status(500),
            OrdersError::Status(502),
            OrdersError::Status(401),
            OrdersError::Status(429),
            OrdersError::Timeout(Duration::from_secs(1)),
            OrdersError::Unreachable,
        ] {
            assert!(!outage.reveals_the_order(), "{outage}");
        }
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
