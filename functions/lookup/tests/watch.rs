//! End to end: the real `lookup` binary under `cargo lambda watch` on 127.0.0.1, with its keys
//! unwrapped by (moto's) KMS and its table in DynamoDB Local, answers a lookup whose identity
//! comes from the documented local-claims header.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use vnmask::assignment::{AssignSettings, Assigner, OrderChange, OrderUpdate, Outcome};
use vnmask::store::Store;
use vnmask_tests::people::{customer, driver};
use vnmask_tests::watch::{LambdaWatch, WatchSpec};
use vnmask_tests::{kms_store, local_sdk, market, now, pool, seed_pool};

const LOCAL_CLAIMS_HEADER: &str = "x-vnmask-local-claims";

#[tokio::test(flavor = "multi_thread")]
async fn real_binary_under_cargo_lambda_watch_answers_a_lookup() {
    // GIVEN a table, KMS-wrapped keys and an assigned order, as a deployment would have them
    let sdk = local_sdk().await;
    let (mut env, store) = kms_store(&sdk).await;
    let store: Arc<dyn Store> = Arc::new(store);
    seed_pool(store.as_ref(), &pool("IN", 3)).await;
    let (c, d) = (customer(1), driver(1));
    let assigner = Assigner::new(store.clone(), AssignSettings::for_markets([market("IN")]));
    let update = OrderUpdate {
        order_id: "ord-e2e".parse().unwrap(),
        market: market("IN"),
        version: 1,
        record: false,
        change: OrderChange::Participants(vec![c.clone(), d.clone()]),
    };
    let Outcome::Applied { session, .. } = assigner.apply(&update, now()).await.unwrap() else {
        panic!("the assignment applies");
    };
    let number = session.contacts[0].number.as_str().to_owned();

    // WHEN the binary runs under cargo lambda watch with the local-claims header enabled
    env.insert("VNMASK_MARKETS".into(), "IN".into());
    env.insert(
        "VNMASK_LOCAL_CLAIMS_HEADER".into(),
        LOCAL_CLAIMS_HEADER.into(),
    );
    env.insert("RUST_LOG".into(), "info".into());
    let watch = LambdaWatch::start(WatchSpec {
        package: "lookup",
        binary: None,
        env,
    });
    let url = format!("{}/v1/orders/ord-e2e/contacts", watch.function_url());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();

    // The first request waits for the build and the cold start (minutes on a cold cache).
    let started = Instant::now();
    let response = loop {
        let attempt = http
            .get(&url)
            .header(LOCAL_CLAIMS_HEADER, r#"{"sub": "c1"}"#)
            .send()
            .await;
        match attempt {
            Ok(response) => break response,
            Err(_) if started.elapsed() < Duration::from_secs(900) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("no answer within 15 minutes: {e}\n{}", watch.log_tail()),
        }
    };
    println!(
        "first answer after {:?} (build + cold start)",
        started.elapsed()
    );

    // THEN the customer gets the driver's number, read from the table through the real binary
    let status = response.status();
    let cache_control = response
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "{body}\n{}", watch.log_tail());
    assert_eq!(body["order_id"], "ord-e2e");
    assert_eq!(body["contacts"][0]["user_id"], "d1");
    assert_eq!(body["contacts"][0]["virtual_number"], number.as_str());
    assert_eq!(cache_control.as_deref(), Some("private, max-age=30"));

    // A warm request, timed end to end through the emulator.
    let warm = Instant::now();
    let again = http
        .get(&url)
        .header(LOCAL_CLAIMS_HEADER, r#"{"sub": "d1"}"#)
        .send()
        .await
        .unwrap();
    println!(
        "warm lookup through cargo lambda watch: {:?}",
        warm.elapsed()
    );
    assert_eq!(again.status(), 200);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["contacts"][0]["user_id"], "c1");

    // AND without the header there is no identity: the emulator has no authorizer.
    let anonymous = http.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.headers()["content-type"],
        "application/problem+json"
    );
    drop(watch);
}
