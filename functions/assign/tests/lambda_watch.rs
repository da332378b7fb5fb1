//! End to end: the real `assign` binary under `cargo lambda watch` on 127.0.0.1, invoked with
//! an SqsEvent fixture, against DynamoDB Local, moto's SQS and moto's KMS (wrapped keys).

use crate::common;

use std::time::{Duration, Instant};

use assign::outbox::attribute;
use aws_lambda_events::event::sqs::SqsBatchResponse;
use common::*;
use vnmask::routing::live_route;
use vnmask::store::AssignmentStore;
use vnmask_tests::watch::{LambdaWatch, WatchSpec};
use vnmask_tests::{kms_store, local_sdk, pool, seed_pool};

/// The first build of the binary can take minutes on a cold target directory.
const STARTUP: Duration = Duration::from_secs(20 * 60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_binary_under_cargo_lambda_watch_applies_an_sqs_batch() {
    // GIVEN a table, KMS-wrapped keys, a seeded pool and the function's queues
    let sdk = local_sdk().await;
    let (mut env, store) = kms_store(&sdk).await;
    seed_pool(&store, &pool("IN", 20)).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let dead_letter_url = create_queue(&sqs, "watch-dlq", false).await;
    let notify_url = create_queue(&sqs, "watch-notify", false).await;
    env.insert("VNMASK_MARKETS".into(), "IN".into());
    env.insert("VNMASK_DLQ_URL".into(), dead_letter_url.clone());
    env.insert("VNMASK_NOTIFY_QUEUE_URL".into(), notify_url.clone());
    env.insert("RUST_LOG".into(), "info".into());

    // AND the function running under cargo lambda watch
    let watch = LambdaWatch::start(WatchSpec {
        package: "assign",
        binary: None,
        env,
    });

    // WHEN it is invoked with a batch of ten order events, one of them poison
    let event = fixture("batch_with_poison.json");
    let poison_id = event.records[6].message_id.clone();
    let body = std::fs::read_to_string(fixture_path("batch_with_poison.json")).unwrap();
    let response = reqwest::Client::builder()
        .timeout(STARTUP)
        .build()
        .unwrap()
        .post(watch.invoke_url())
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the invocation is answered");
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "{status}: {text}\n{}", watch.log());

    // THEN nothing is left for retry, nine orders have numbers, the poison is dead-lettered
    let answer: SqsBatchResponse = serde_json::from_str(&text).expect("an SqsBatchResponse");
    assert!(answer.batch_item_failures.is_empty(), "{text}");
    for k in (1..=10).filter(|k| *k != 7) {
        let order = format!("ord-2{k:03}").parse().unwrap();
        let session = store.session(&order).await.unwrap().expect("applied");
        assert_eq!(session.contacts.len(), 1);
        let route = live_route(
            &store,
            &session.participants[1].phone,
            &session.contacts[0].number,
            vnmask_tests::now(),
        )
        .await
        .unwrap()
        .expect("the driver reaches the customer");
        assert_eq!(route.callee, session.participants[0].phone);
    }
    let letters = drain(&sqs, &dead_letter_url).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(
        attribute(&letters[0], attribute::SOURCE_MESSAGE_ID),
        poison_id
    );
    assert_eq!(
        attribute(&letters[0], attribute::REASON).as_deref(),
        Some("invalid_phone")
    );
    assert_eq!(drain(&sqs, &notify_url).await.len(), 9);

    // AND its log lines and metrics name outcomes, never a real number
    let deadline = Instant::now() + Duration::from_secs(10);
    while !watch.log().contains("HandlerLatency") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let output = watch.log();
    assert!(output.contains("dead_lettered"), "{output}");
    assert!(output.contains("\"Function\":\"assign\""), "{output}");
    for number in fixture_phone_numbers() {
        assert!(
            !output.contains(&number),
            "the function's output holds a real number"
        );
    }
    drop(watch);
}
