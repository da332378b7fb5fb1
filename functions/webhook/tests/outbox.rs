//! Interactions are published after the answer: the handler leaves them in an outbox and
//! Lambda's INVOKE event (the internal extension) flushes it, so a provider never waits on SQS
//! and nothing is left when the function is frozen or stopped. Needs moto's SQS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use vnmask::providers::twilio;
use vnmask_tests::local_sdk;
use webhook::{router, Drain, InteractionQueue, Outbox, Webhook};

use crate::common;
use common::*;

fn webhook(s: &Seeds, queue: InteractionQueue) -> (axum::Router, Drain) {
    let (outbox, drain) = Outbox::new(Some(queue));
    let app = router(Arc::new(Webhook::new(
        s.store.clone(),
        config(),
        Some(outbox),
    )));
    (app, drain)
}

#[tokio::test]
async fn the_last_interaction_of_a_run_is_published_before_the_function_stops() {
    let s = memory().await;
    let sqs = aws_sdk_sqs::Client::new(&local_sdk().await);
    let queue_url = new_queue(&sqs).await;
    let queue = InteractionQueue::new(sqs.clone(), queue_url.clone(), Duration::from_secs(2));
    let (app, mut drain) = webhook(&s, queue);

    // WHEN two calls are answered, each followed by its invocation's flush
    let first = send(
        &app,
        in_invocation(twilio_call(phone(&s.c), s.vn_cd.as_str()), "req-1"),
    )
    .await;
    assert!(first.dial().is_some());
    // Its interaction, and the connected call to note.
    assert_eq!(drain.flush_invocation("req-1", ANSWER).await, 2);
    let last = send(
        &app,
        in_invocation(twilio_call(phone(&s.d), s.vn_cd.as_str()), "req-2"),
    )
    .await;
    assert!(last.dial().is_some());
    assert_eq!(drain.flush_invocation("req-2", ANSWER).await, 2);
    // AND the function stops right after the last one
    drop((app, drain));

    // THEN both are on the queue, the last one included
    let events = published(&sqs, &queue_url).await;
    let directions: Vec<_> = events.iter().map(|e| e["direction"].clone()).collect();
    assert_eq!(
        directions,
        ["customer->driver", "driver->customer"],
        "{events:?}"
    );
}

const ANSWER: Duration = Duration::from_secs(3);

#[tokio::test]
async fn the_answer_does_not_wait_for_the_interactions_queue() {
    let s = memory().await;
    // A queue endpoint that accepts connections and never answers: as slow as SQS can be.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            held.push(conn);
        }
    });
    let sdk = local_sdk().await;
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&sdk)
            .endpoint_url(&endpoint)
            .build(),
    );
    let publish_timeout = Duration::from_millis(800);
    let queue = InteractionQueue::new(sqs, format!("{endpoint}/000000000000/q"), publish_timeout);
    let (app, mut drain) = webhook(&s, queue);

    // WHEN a call is answered while the queue hangs
    let started = Instant::now();
    let answer = send(
        &app,
        in_invocation(twilio_call(phone(&s.c), s.vn_cd.as_str()), "req-1"),
    )
    .await;
    let answered_in = started.elapsed();

    // THEN the answer is the route's, long before a send could have timed out
    assert_eq!(
        answer.dial(),
        Some((s.vn_cd.as_str().to_owned(), phone(&s.d).to_owned()))
    );
    assert!(answered_in < Duration::from_millis(300), "{answered_in:?}");
    // AND the flush after it gives up at the publish timeout, not at the answer's deadline
    let started = Instant::now();
    assert_eq!(drain.flush_invocation("req-1", ANSWER).await, 2);
    let flushed_in = started.elapsed();
    assert!(
        flushed_in >= publish_timeout && flushed_in < publish_timeout * 2,
        "{flushed_in:?}"
    );
}

#[tokio::test]
async fn a_flush_waits_for_its_own_invocation_only() {
    let s = memory().await;
    let sqs = aws_sdk_sqs::Client::new(&local_sdk().await);
    let queue_url = new_queue(&sqs).await;
    let queue = InteractionQueue::new(sqs.clone(), queue_url.clone(), Duration::from_secs(2));
    let (app, mut drain) = webhook(&s, queue);

    // A request turned away (a bad signature) is answered too: its flush does not wait.
    let mut forged = twilio_call(phone(&s.c), s.vn_cd.as_str());
    forged
        .headers_mut()
        .insert(twilio::SIGNATURE_HEADER, "forged".parse().unwrap());
    let answer = send(&app, in_invocation(forged, "req-forged")).await;
    assert_eq!(answer.status.as_u16(), 403);
    let started = Instant::now();
    assert_eq!(drain.flush_invocation("req-forged", ANSWER).await, 0);
    assert!(started.elapsed() < Duration::from_millis(500));

    // A flush whose invocation is answered later waits for it, then publishes its interaction.
    let flush = tokio::spawn(async move {
        let n = drain.flush_invocation("req-late", ANSWER).await;
        (n, drain)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    send(
        &app,
        in_invocation(twilio_call(phone(&s.c), s.vn_cd.as_str()), "req-late"),
    )
    .await;
    let (n, mut drain) = flush.await.unwrap();
    assert_eq!(n, 2);

    // An invocation that never reached the router (Lambda could not read it) holds the flush
    // at most the wait, and what an earlier invocation left is published with it.
    send(&app, twilio_call(phone(&s.d), s.vn_cd.as_str())).await;
    let started = Instant::now();
    assert_eq!(
        drain
            .flush_invocation("req-unread", Duration::from_millis(300))
            .await,
        2
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    assert_eq!(published(&sqs, &queue_url).await.len(), 2);
}

#[tokio::test]
async fn what_a_flush_could_not_send_goes_with_the_next_one() {
    let s = memory().await;
    let sqs = aws_sdk_sqs::Client::new(&local_sdk().await);
    // A queue that does not exist yet: the first flush fails.
    let name = queue_name();
    let queue_url = format!(
        "{}/123456789012/{name}",
        std::env::var("AWS_ENDPOINT_URL_SQS").unwrap()
    );
    let queue = InteractionQueue::new(sqs.clone(), queue_url.clone(), Duration::from_secs(2));
    let (app, mut drain) = webhook(&s, queue);
    send(
        &app,
        in_invocation(twilio_call(phone(&s.c), s.vn_cd.as_str()), "req-1"),
    )
    .await;
    assert_eq!(drain.flush_invocation("req-1", ANSWER).await, 2);

    // WHEN the queue is back and the next call is flushed
    let created = sqs.create_queue().queue_name(&name).send().await.unwrap();
    assert_eq!(created.queue_url.as_deref(), Some(queue_url.as_str()));
    send(
        &app,
        in_invocation(twilio_call(phone(&s.d), s.vn_cd.as_str()), "req-2"),
    )
    .await;
    // Its interaction and connected call, and the one kept from before.
    assert_eq!(drain.flush_invocation("req-2", ANSWER).await, 2);

    // THEN both calls' interactions are on it, the kept one first
    let events = published(&sqs, &queue_url).await;
    let directions: Vec<_> = events.iter().map(|e| e["direction"].clone()).collect();
    assert_eq!(directions, ["customer->driver", "driver->customer"]);
}
