//! Each interaction is logged and published without a real number. In a test binary of its own:
//! it captures log lines with a thread-scoped subscriber, which other tests running at the same
//! time in the same process would race (tracing caches each callsite's interest process-wide).

use std::time::Duration;

use vnmask_tests::people::customer;
use vnmask_tests::{local_sdk, CapturedLogs};
use webhook::InteractionQueue;

use crate::common;
use common::*;

#[tokio::test(flavor = "current_thread")]
async fn interactions_are_logged_and_published_without_real_numbers() {
    let s = memory().await;
    let sdk = local_sdk().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue_url = sqs
        .create_queue()
        .queue_name(format!("vnmask-interactions-{}", std::process::id()))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let queue = InteractionQueue::new(sqs.clone(), queue_url.clone(), Duration::from_secs(2));
    let app = app_with(s.store.clone(), config(), Some(queue));
    // A current-thread runtime polls every task here, where the subscriber is.
    let logs = CapturedLogs::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    // WHEN C calls D, and a stranger calls the same number
    let connected = send(&app, twilio_call(phone(&s.c), s.vn_cd.as_str())).await;
    assert!(connected.dial().is_some());
    let refused = send(&app, twilio_call(phone(&customer(9)), s.vn_cd.as_str())).await;
    assert!(refused.is_twiml_refusal());

    // THEN both are logged, by role and order, with no real number anywhere
    let logs = logs.text();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &serde_json::Value| l["fields"]["message"] == "interaction")
        .collect();
    assert_eq!(lines.len(), 2, "{logs}");
    let f = &lines[0]["fields"];
    assert_eq!(f["provider"], "twilio");
    assert_eq!(f["order_id"], "ord-c");
    assert_eq!(f["direction"], "customer->driver");
    assert_eq!(f["outcome"], "connected");
    assert_eq!(f["call_id"], "CAfedcba9876543210fedcba9876543210");
    assert_eq!(lines[1]["fields"]["outcome"], "refused");
    assert_eq!(lines[1]["fields"]["reason"], "no_route");

    // AND both are on the queue
    let mut bodies = Vec::new();
    for _ in 0..10 {
        let out = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        bodies.extend(
            out.messages
                .unwrap_or_default()
                .into_iter()
                .filter_map(|m| m.body),
        );
        if bodies.len() >= 2 {
            break;
        }
    }
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    let events: Vec<serde_json::Value> = bodies
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    let connected = events
        .iter()
        .find(|e| e["outcome"] == "connected")
        .expect("a connected event");
    assert_eq!(connected["order_id"], "ord-c");
    assert_eq!(connected["direction"], "customer->driver");
    assert_eq!(connected["number"], s.vn_cd.as_str());
    assert_eq!(connected["provider"], "twilio");
    assert_eq!(connected["channel"], "voice");
    for person in [&s.c, &s.d, &customer(9)] {
        let digits = &phone(person)[3..];
        assert!(!logs.contains(digits), "a real number was logged");
        assert!(
            !bodies.concat().contains(digits),
            "a real number was published"
        );
    }
}
