//! Throughput of the assign handler against the local services (not a timed test: it reports).
//!
//! Pushes 5,000 order events through the handler in SQS-sized batches, one batch after another
//! as one Lambda instance would, and prints events per second and DynamoDB calls per event.
//! It starts nothing: run it with the local services' environment, e.g. `make bench-assign`.
//!
//! `BENCH_EVENTS` (default 5000) and `BENCH_BATCH` (default 10) change the load.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use assign::{AssignHandler, Outbox, QueueConfig};
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use serde_json::json;
use vnmask::assignment::{AssignSettings, Assigner};
use vnmask_tests::{local_dynamo, local_sdk, market, pool, seed_pool};

const ORDERS_PER_DRIVER: usize = 6;
const ORDERS_PER_MERCHANT: usize = 12;

fn env_usize(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn phone(prefix: &str, i: usize) -> String {
    format!("+91{prefix}{i:05}")
}

/// The `round`-th event of order `i`: assigned, merchant joins, driver replaced, completed.
fn order_event(i: usize, round: usize, drivers: usize, merchants: usize) -> serde_json::Value {
    let customer =
        json!({"role": "customer", "user_id": format!("c{i}"), "phone": phone("98100", i)});
    let driver = |d: usize| json!({"role": "driver", "user_id": format!("d{d}"), "phone": phone("97100", d)});
    let merchant = json!({"role": "merchant", "user_id": format!("m{}", i % merchants), "phone": phone("96100", i % merchants)});
    let (kind, participants) = match round {
        0 => (
            "DriverAssigned",
            Some(json!([customer, driver(i % drivers)])),
        ),
        1 => (
            "ParticipantAdded",
            Some(json!([customer, driver(i % drivers), merchant])),
        ),
        2 => (
            "DriverReassigned",
            Some(json!([customer, driver((i + 1) % drivers), merchant])),
        ),
        _ => ("OrderCompleted", None),
    };
    let mut event = json!({
        "event_id": format!("e-{i}-{round}"), "type": kind, "order_id": format!("ord-{i}"),
        "version": round + 1, "occurred_at": "2026-11-24T10:15:00Z", "market": "IN",
    });
    if let Some(p) = participants {
        event["participants"] = p;
    }
    event
}

/// A record shaped as Lambda delivers it (the fixtures' shape), carrying `body`.
fn record(template: &SqsMessage, n: usize, body: String) -> SqsMessage {
    let mut r = template.clone();
    r.message_id = Some(format!("00000000-0000-4000-8000-{n:012}"));
    r.body = Some(body);
    r
}

#[tokio::main]
async fn main() {
    let events = env_usize("BENCH_EVENTS", 5000);
    let batch = env_usize("BENCH_BATCH", 10).clamp(1, 10_000);
    let orders = events.div_ceil(4);
    let drivers = orders.div_ceil(ORDERS_PER_DRIVER);
    let merchants = orders.div_ceil(ORDERS_PER_MERCHANT);

    let dynamo = local_dynamo().await;
    seed_pool(dynamo.store.as_ref(), &pool("IN", 100)).await;
    let sqs = aws_sdk_sqs::Client::new(&local_sdk().await);
    let dead_letter_url = sqs
        .create_queue()
        .queue_name(format!("assign-bench-dlq-{}", std::process::id()))
        .send()
        .await
        .expect("create the dead-letter queue")
        .queue_url
        .expect("queue url");
    let config = QueueConfig {
        dead_letter_url,
        notify_url: None,
        concurrency: QueueConfig::DEFAULT_CONCURRENCY,
    };
    let handler = AssignHandler::new(
        Arc::new(Assigner::new(
            dynamo.store.clone(),
            AssignSettings::for_markets([market("IN")]),
        )),
        Outbox::new(sqs, &config),
        config.concurrency,
    );

    let fixture = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seeds_assigned.json"),
    )
    .expect("fixture");
    let template: SqsEvent = serde_json::from_str(&fixture).expect("an SqsEvent");
    let template = &template.records[0];
    // Rounds in turn, orders interleaved: a batch holds different orders, as a busy queue would.
    let records: Vec<SqsMessage> = (0..4)
        .flat_map(|round| (0..orders).map(move |i| (round, i)))
        .take(events)
        .enumerate()
        .map(|(n, (round, i))| {
            record(
                template,
                n,
                order_event(i, round, drivers, merchants).to_string(),
            )
        })
        .collect();

    dynamo.calls.reset();
    let mut outcomes: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut latencies: Vec<Duration> = Vec::new();
    let mut contention = 0u64;
    let started = Instant::now();
    for chunk in records.chunks(batch) {
        let mut event = SqsEvent::default();
        event.records = chunk.to_vec();
        let report = handler.process(event).await;
        latencies.push(report.elapsed);
        for r in &report.records {
            *outcomes.entry(r.outcome.label()).or_default() += 1;
            contention += u64::from(r.contention_retries);
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];

    let calls = dynamo.calls.snapshot();
    let total: u64 = calls.values().sum();
    println!(
        "assign throughput: {events} events ({orders} orders, {drivers} drivers, {merchants} merchants) in batches of {batch}"
    );
    println!(
        "  {:.0} events/s  ({:.2} s; batch latency p50 {:.1} ms, p99 {:.1} ms)",
        events as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        pct(0.5).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0
    );
    println!(
        "  {:.2} DynamoDB calls per event ({total} calls)",
        total as f64 / events as f64
    );
    for (op, n) in &calls {
        println!(
            "    {op:<20} {n:>7}  ({:.2}/event)",
            *n as f64 / events as f64
        );
    }
    println!("  outcomes: {outcomes:?}, contention retries: {contention}");
}
