//! What the lookup tests share: a router on a fresh DynamoDB Local table, API Gateway v2 events
//! built from the fixtures, and responses read back.

#![allow(dead_code)] // each test file uses its own part of this module

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use http::{HeaderMap, StatusCode};
use lookup::config::LookupConfig;
use lookup::orders::OrdersApi;
use lookup::{router, Lookup};
use serde_json::{json, Value};
use tower::ServiceExt;
use vnmask::assignment::{AssignSettings, Assigner, EndTerms, OrderChange, OrderUpdate, Outcome};
use vnmask::domain::Participant;
use vnmask::store::Store;
use vnmask_tests::{local_dynamo, market, pool, seed_pool, LocalDynamo};

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// The user the JWT fixture's `sub` names.
pub const FIXTURE_SUB: &str = "7c5a8d2e-3b1f-4e2a-9d6c-0f1e2d3c4b5a";

pub fn settings() -> AssignSettings {
    let mut s = AssignSettings::for_markets([market("IN")]);
    s.grace = Duration::from_secs(1800);
    s
}

/// A lookup router on its own table, and an assigner standing in for the assign function.
pub struct Fx {
    pub dynamo: LocalDynamo,
    pub store: Arc<dyn Store>,
    /// What the assign function runs: a separate instance, as in a separate Lambda.
    pub assign: Assigner,
    pub router: Router,
}

/// Environment for [`LookupConfig`]: the defaults, plus `extra`.
pub fn config(extra: &[(&str, &str)]) -> LookupConfig {
    let env: BTreeMap<String, String> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    LookupConfig::from_source(&env).expect("valid lookup config")
}

pub async fn fixture(pool_size: usize, config: LookupConfig) -> Fx {
    let dynamo = local_dynamo().await;
    let store: Arc<dyn Store> = dynamo.store.clone();
    seed_pool(store.as_ref(), &pool("IN", pool_size)).await;
    let orders = config
        .orders
        .clone()
        .map(|c| OrdersApi::new(c).expect("orders client"));
    let lookup = Lookup::new(
        Arc::new(Assigner::new(store.clone(), settings())),
        store.clone(),
        orders,
        &config,
    );
    dynamo.calls.reset();
    Fx {
        assign: Assigner::new(store.clone(), settings()),
        router: router(Arc::new(lookup)),
        store,
        dynamo,
    }
}

pub fn assignment(order: &str, version: u64, people: &[Participant]) -> OrderUpdate {
    OrderUpdate {
        order_id: order.parse().unwrap(),
        market: market("IN"),
        version,
        record: false,
        change: OrderChange::Participants(people.to_vec()),
    }
}

pub fn completion(order: &str, version: u64) -> OrderUpdate {
    OrderUpdate {
        order_id: order.parse().unwrap(),
        market: market("IN"),
        version,
        record: false,
        change: OrderChange::End(EndTerms::default()),
    }
}

impl Fx {
    /// Applies an order event as the assign function would.
    pub async fn event(&self, update: &OrderUpdate, at: i64) -> Outcome {
        self.assign.apply(update, at).await.expect("event applies")
    }

    pub async fn send(&self, event: Value) -> Answer {
        send(&self.router, event).await
    }

    /// `user` asks for the contacts of `order`, through an API Gateway event with their JWT claims.
    pub async fn ask(&self, user: &str, order: &str) -> Answer {
        self.send(jwt_event(&format!("/v1/orders/{order}/contacts"), user))
            .await
    }
}

pub fn fixture_json(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{FIXTURES}/{name}")).expect("fixture exists");
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// The JWT fixture, for `raw_path` and with `sub` as the user claim.
pub fn jwt_event(raw_path: &str, sub: &str) -> Value {
    let mut event = fixture_json("apigw_v2_jwt.json");
    set_path(&mut event, raw_path);
    event["requestContext"]["authorizer"]["jwt"]["claims"]["sub"] = json!(sub);
    event["requestContext"]["authorizer"]["jwt"]["claims"]["username"] = json!(sub);
    event
}

/// Points an event at another path (the raw path is what lambda_http routes on).
pub fn set_path(event: &mut Value, raw_path: &str) {
    event["rawPath"] = json!(raw_path);
    event["requestContext"]["http"]["path"] = json!(raw_path);
    if let Some(params) = event["pathParameters"].as_object_mut() {
        params.clear();
    }
}

/// A response, read back.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    /// The body as sent, for byte-for-byte comparisons.
    pub bytes: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }

    /// (other party's user id, number) pairs of a 200 answer, in answer order.
    pub fn numbers(&self) -> Vec<(String, String)> {
        assert_eq!(self.status, StatusCode::OK, "{:?}", self.body);
        self.body["contacts"]
            .as_array()
            .expect("contacts")
            .iter()
            .map(|c| {
                (
                    c["user_id"].as_str().unwrap().to_owned(),
                    c["virtual_number"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    pub fn problem_type(&self) -> &str {
        self.body["type"].as_str().unwrap_or("")
    }
}

/// Sends an API Gateway v2 event through lambda_http's own event parsing and the router.
pub async fn send(router: &Router, event: Value) -> Answer {
    let request = lambda_http::request::from_str(&event.to_string()).expect("a valid v2 event");
    send_request(router, request).await
}

/// Sends a request straight to the router, its path untouched (lambda_http's event parsing
/// resolves `.` and `..` segments; another front might not).
pub async fn send_request(router: &Router, request: lambda_http::Request) -> Answer {
    let response = router.clone().oneshot(request).await.expect("infallible");
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!(
                "response body is not JSON: {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
        bytes: bytes.to_vec(),
    }
}
