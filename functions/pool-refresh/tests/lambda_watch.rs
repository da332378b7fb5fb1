//! End to end: the real `pool-refresh` binary under `cargo lambda watch` on 127.0.0.1, invoked
//! with an EventBridge Scheduler event, against DynamoDB Local and a wiremock-faked Twilio. Its
//! keys are wrapped by moto's KMS and unwrapped at cold start, as in a deployment (moves of
//! pairs off numbers leaving service open sessions).

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use vnmask::domain::{Capabilities, NumberState, PoolNumber, VirtualNumber};
use vnmask::store::{AssignmentStore, PoolStore};
use vnmask_tests::watch::{LambdaWatch, WatchSpec};
use vnmask_tests::{kms_store_env, local_dynamo, local_sdk, put_secret};
use wiremock::MockServer;

/// A cold target directory can take many minutes to build the binary on 2 cores.
const BUILD_AND_START: Duration = Duration::from_secs(20 * 60);

fn twilio_number(n: &str) -> PoolNumber {
    PoolNumber {
        number: VirtualNumber::parse(n).unwrap(),
        provider: "twilio".parse().unwrap(),
        market: market("US"),
        capabilities: Capabilities::VOICE_AND_SMS,
        state: NumberState::Active,
        hold: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_binary_under_cargo_lambda_watch_refreshes_the_pool() {
    // GIVEN a table with a US pool of two Twilio numbers
    let dynamo = local_dynamo().await;
    let store = dynamo.store.clone();
    for n in ["+14155551000", "+14155551001"] {
        store.put_number(&twilio_number(n)).await.unwrap();
    }
    // AND a Twilio that lists +14155551000 and a new +14155551002, not +14155551001
    let twilio = MockServer::start().await;
    twilio_lists(
        &twilio,
        &[("+14155551000", true, true), ("+14155551002", true, true)],
    )
    .await;
    // AND the account's token in the function's secret (moto's Secrets Manager)
    let secret = put_secret(
        &local_sdk().await,
        &[("VNMASK_TWILIO_AUTH_TOKEN", TWILIO_TOKEN)],
    )
    .await;
    let mut env = kms_store_env(&local_sdk().await, &dynamo.table).await;
    env.extend(
        [
            ("VNMASK_SECRETS_ID", secret),
            ("VNMASK_MARKETS", "US".to_owned()),
            ("VNMASK_PROVIDERS", "twilio".to_owned()),
            ("VNMASK_TWILIO_ACCOUNT_SID", TWILIO_SID.to_owned()),
            ("VNMASK_TWILIO_API_BASE", twilio.uri()),
            // Twilio numbers are taken only when their calls come to this URL.
            ("VNMASK_VOICE_URL", TWILIO_VOICE_URL.to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );

    // AND the function running under cargo lambda watch
    let watch = LambdaWatch::start(WatchSpec {
        package: "pool-refresh",
        binary: None,
        env,
    });

    // WHEN the scheduler invokes it
    let response = reqwest::Client::builder()
        .timeout(BUILD_AND_START)
        .build()
        .unwrap()
        .post(watch.invoke_url())
        .header("content-type", "application/json")
        .body(fixture("scheduler/scheduled_event.json"))
        .send()
        .await
        .expect("the invocation is answered");
    let status = response.status();
    let body = response.text().await.unwrap();
    assert!(status.is_success(), "{status}: {body}\n{}", watch.log());

    // THEN it answers with its summary, and the pool is in step with Twilio
    let summary: serde_json::Value = serde_json::from_str(&body).expect("a JSON summary");
    let us = &summary["markets"][0];
    assert_eq!(us["market"], "US", "{body}");
    assert_eq!(
        (us["added"].as_u64(), us["retired"].as_u64()),
        (Some(1), Some(1)),
        "{body}"
    );
    assert_eq!(summary["providers"][0]["listed"], 2, "{body}");
    let pool: Vec<(String, NumberState)> = store
        .pool(&market("US"))
        .await
        .unwrap()
        .into_iter()
        .map(|v| (v.number.as_str().to_owned(), v.state))
        .collect();
    assert_eq!(
        pool,
        [
            ("+14155551000".to_owned(), NumberState::Active),
            ("+14155551001".to_owned(), NumberState::Retired),
            ("+14155551002".to_owned(), NumberState::Active),
        ]
    );
    let requests = twilio.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1, "one listing page");

    // AND its output carries the market's metrics, never the Twilio credential
    let deadline = Instant::now() + Duration::from_secs(10);
    while !watch.log().contains("NumbersActive") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let output = watch.log();
    assert!(output.contains("\"Function\":\"pool-refresh\""), "{output}");
    assert!(output.contains("\"NumbersActive\":2.0"), "{output}");
    assert!(
        !output.contains(TWILIO_TOKEN),
        "the auth token reached the log"
    );
    drop(watch);
}
