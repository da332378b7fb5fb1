//! Fail closed, fast: when DynamoDB is unreachable or hangs, every provider still gets its
//! refusal within 2 s (Twilio waits 15 s, Vonage and Sinch 5 s), and nothing is connected.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use vnmask::aws::{sdk_config, SdkTimeouts};
use vnmask::store::dynamodb::DynamoStore;
use vnmask::store::Store;
use vnmask_tests::{local_sdk, test_vault};

use crate::common;
use common::*;

const C: &str = "+919810000001";
const VN: &str = "+911140001000";

fn store_at(sdk: &SdkConfig, endpoint: &str) -> Arc<dyn Store> {
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(sdk)
            .endpoint_url(endpoint)
            .build(),
    );
    Arc::new(DynamoStore::new(client, "vnmask-unreachable", test_vault()))
}

/// A port where nothing listens: connections are refused at once.
fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// A server that accepts connections and never answers.
fn black_hole() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    format!("http://127.0.0.1:{port}")
}

async fn timed(app: &axum::Router, req: http::Request<axum::body::Body>) -> (Answer, Duration) {
    let started = Instant::now();
    let answer = send(app, req).await;
    (answer, started.elapsed())
}

#[tokio::test]
async fn unreachable_dynamodb_refuses_at_once() {
    let sdk = sdk_config(SdkTimeouts::INTERACTIVE).await;
    let app = app(store_at(&sdk, &closed_port()));
    let (answer, took) = timed(&app, twilio_call(C, VN)).await;
    assert!(answer.is_twiml_refusal(), "{answer:?}");
    assert!(took < TWO_SECONDS, "took {took:?}");
    let (answer, _) = timed(&app, generic_call(C, VN)).await;
    assert_eq!(
        answer.json(),
        serde_json::json!({"action": "reject", "reason": "store_error"})
    );
}

#[tokio::test]
async fn hanging_dynamodb_refuses_within_two_seconds() {
    // The function's own SDK timeouts.
    let sdk = sdk_config(SdkTimeouts::INTERACTIVE).await;
    let app = app(store_at(&sdk, &black_hole()));
    let (answer, took) = timed(&app, twilio_call(C, VN)).await;
    assert!(answer.is_twiml_refusal(), "{answer:?}");
    assert!(took < TWO_SECONDS, "took {took:?}");
    let (answer, took) = timed(&app, exotel_call(C, VN)).await;
    assert_eq!(
        answer.json(),
        serde_json::json!({"fetch_after_attempt": false, "destination": {"numbers": []}})
    );
    assert!(took < TWO_SECONDS, "took {took:?}");
    let (answer, took) = timed(&app, generic_call(C, VN)).await;
    assert_eq!(
        answer.json(),
        serde_json::json!({"action": "reject", "reason": "store_timeout"})
    );
    assert!(took < TWO_SECONDS, "took {took:?}");
}

#[tokio::test]
async fn the_lookup_budget_holds_even_with_patient_sdk_timeouts() {
    // Background timeouts allow 20 s per operation; the webhook's own budget still bounds the wait.
    let sdk = local_sdk().await;
    let app = app(store_at(&sdk, &black_hole()));
    let (answer, took) = timed(&app, twilio_call(C, VN)).await;
    assert!(answer.is_twiml_refusal(), "{answer:?}");
    assert!(
        took >= Duration::from_millis(1400) && took < TWO_SECONDS,
        "took {took:?}"
    );
}
