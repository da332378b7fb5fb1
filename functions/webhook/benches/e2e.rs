//! Call routing end to end: the real webhook binary under `cargo lambda watch` on 127.0.0.1,
//! its keys unwrapped by moto's KMS and its routes in DynamoDB Local, driven by a bounded load
//! generator of signed Twilio voice webhooks. Reports requests/s, p50/p99 latency and the share
//! of the time spent waiting on DynamoDB Local, measured by a timing proxy in front of it.
//! Writes the "routing-e2e" section. Needs the local services (`make bench` starts them).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use vnmask::providers::twilio;
use vnmask::store::Store;
use vnmask_tests::bench::{human, machine, publish, timing_proxy, Busy, Latencies};
use vnmask_tests::people::{customer, driver};
use vnmask_tests::watch::{target_dir, LambdaWatch, WatchSpec};
use vnmask_tests::{kms_store, local_sdk, now, pool, seed_pool};

const ORDERS: usize = 40;
const REQUESTS_PER_LEVEL: usize = 1500;
/// Requests in flight at once; `cargo lambda watch` runs one instance of the function, as
/// Lambda runs one request per instance, so above 1 requests queue for it.
const LEVELS: [usize; 3] = [1, 4, 16];

/// A signed Twilio voice webhook, ready to send, and the number it must connect to.
struct Call {
    body: String,
    signature: String,
    callee: String,
}

struct Level {
    in_flight: usize,
    rate: f64,
    latencies: Latencies,
    dynamodb_share: f64,
    failures: usize,
}

async fn load(
    http: &reqwest::Client,
    url: &str,
    calls: &Arc<Vec<Call>>,
    in_flight: usize,
    busy: &Busy,
) -> Level {
    let started = Instant::now();
    let workers: Vec<_> = (0..in_flight)
        .map(|w| {
            let (http, url, calls) = (http.clone(), url.to_owned(), calls.clone());
            tokio::spawn(async move {
                let mut taken = Vec::new();
                let mut failures = 0;
                for n in (w..REQUESTS_PER_LEVEL).step_by(in_flight) {
                    let call = &calls[n % calls.len()];
                    let began = Instant::now();
                    let res = http
                        .post(&url)
                        .header("content-type", "application/x-www-form-urlencoded")
                        .header("x-twilio-signature", &call.signature)
                        .body(call.body.clone())
                        .send()
                        .await;
                    let ok = match res {
                        Ok(res) if res.status() == 200 => res.text().await.is_ok_and(|b| {
                            b.contains(&format!("<Number>{}</Number>", call.callee))
                        }),
                        _ => false,
                    };
                    taken.push(began.elapsed());
                    failures += usize::from(!ok);
                }
                (taken, failures)
            })
        })
        .collect();
    let mut taken = Vec::new();
    let mut failures = 0;
    for w in workers {
        let (t, f) = w.await.unwrap();
        taken.extend(t);
        failures += f;
    }
    let elapsed = started.elapsed();
    Level {
        in_flight,
        rate: taken.len() as f64 / elapsed.as_secs_f64(),
        dynamodb_share: busy.within(started, started + elapsed).as_secs_f64()
            / elapsed.as_secs_f64(),
        latencies: Latencies::new(taken),
        failures,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // GIVEN 40 orders' routes in DynamoDB Local, under keys KMS (moto) wraps
    let (store_env, store) = kms_store(&local_sdk().await).await;
    let store: Arc<dyn Store> = Arc::new(store);
    seed_pool(store.as_ref(), &pool("IN", 4)).await;
    let mut calls = Vec::new();
    for i in 0..ORDERS {
        let order = format!("ord-{i}");
        apply(&store, &order, &[customer(i), driver(i)], now()).await;
        let vn = number_between(&store, &order, &customer(i), &driver(i)).await;
        let params = owned(&voice_params(customer(i).phone.expose(), vn.as_str()));
        calls.push(Call {
            signature: twilio::sign(
                TWILIO_TOKEN.as_bytes(),
                &format!("{BASE_URL}{VOICE}"),
                &params,
            ),
            body: serde_urlencoded::to_string(&params).unwrap(),
            callee: driver(i).phone.expose().to_owned(),
        });
    }
    let calls = Arc::new(calls);

    // AND the webhook under cargo lambda watch, reaching DynamoDB Local through a timing proxy
    let busy = Busy::default();
    let mut env = env();
    env.extend(store_env);
    let dynamodb = std::env::var("AWS_ENDPOINT_URL_DYNAMODB")
        .expect("the local services' environment (make bench starts them)");
    env.insert(
        "AWS_ENDPOINT_URL_DYNAMODB".into(),
        timing_proxy(&dynamodb, busy.clone()).await,
    );
    env.insert("RUST_LOG".into(), "warn".into());
    // The binary `make bench` built, under the watch's Lambda APIs: nothing to compile here.
    let watch = LambdaWatch::start(WatchSpec {
        package: "webhook",
        binary: Some(target_dir().join("release/webhook")),
        env,
    });
    let url = format!("{}{VOICE}", watch.function_url());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1200))
        .build()
        .unwrap();

    // WHEN the load generator sends signed calls, after a warm-up (the first waits for the build)
    let warm = load(&http, &url, &calls, 1, &busy).await;
    assert_eq!(warm.failures, 0, "warm-up failed:\n{}", watch.log_tail());
    let mut rows = String::new();
    let mut serial_share = 0.0;
    for in_flight in LEVELS {
        let l = load(&http, &url, &calls, in_flight, &busy).await;
        assert_eq!(l.failures, 0, "requests failed:\n{}", watch.log_tail());
        if l.in_flight == 1 {
            serial_share = l.dynamodb_share;
        }
        rows.push_str(&format!(
            "| {} | {} | {:.0} | {} | {} | {:.0} % |\n",
            l.in_flight,
            l.latencies.len(),
            l.rate,
            human(l.latencies.percentile(50.0)),
            human(l.latencies.percentile(99.0)),
            l.dynamodb_share * 100.0,
        ));
    }
    drop(watch);

    let md = format!(
        "## Call routing end to end\n\n\
         Method: `cargo bench --workspace --bench e2e` on {}. The webhook's real binary (bench \
         profile) against `cargo lambda watch --only-lambda-apis` on 127.0.0.1: the emulator's \
         function URL and runtime API and one function instance, to which, as on Lambda, one \
         request goes at a time. Its keys are unwrapped by moto's KMS and {ORDERS} orders' \
         routes are in DynamoDB Local. A load generator in the same process keeps a fixed \
         number of signed Twilio voice webhooks in flight ({REQUESTS_PER_LEVEL} per level, \
         after a warm-up of as many) and checks every answer connects the right callee. \
         \"In DynamoDB Local\" is the share of the run's wall time during which the function had a \
         request outstanding at DynamoDB Local, timed by a proxy in front of it. Everything \
         (load generator, cargo lambda's emulator, the function, DynamoDB Local) shares the \
         machine's 2 cores.\n\n\
         | in flight | requests | requests/s | p50 | p99 | in DynamoDB Local |\n\
         | --- | --- | --- | --- | --- | --- |\n{rows}\n\
         With one request at a time, {:.0} % of each request's latency is the route read at \
         DynamoDB Local; the rest is cargo lambda's emulator (HTTP in, an API Gateway event to the \
         runtime API, the answer back), the function's decision (see the CPU figures above) and \
         the load generator.\n",
        machine(),
        serial_share * 100.0,
    );
    publish("routing-e2e", &md);
}
