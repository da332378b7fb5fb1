//! Call routing end to end: the real webhook binary under `cargo lambda watch` on 127.0.0.1,
//! its keys unwrapped by moto's KMS and its routes in DynamoDB Local, driven by a bounded load
//! generator of signed Twilio voice webhooks. Reports requests/s, p50/p99 latency and the share
//! of the time spent waiting on DynamoDB Local, measured by a timing proxy in front of it.
//! Writes the "routing-e2e" section. Needs the local services (`make bench` starts them).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use vnmask::providers::twilio;
use vnmask::store::Store;
use vnmask_tests::bench::{human, machine, publish, target, timing_proxy, Busy, Latencies};
use vnmask_tests::people::{customer, driver};
use vnmask_tests::watch::{target_dir, LambdaWatch, WatchSpec};
use vnmask_tests::{kms_store, local_sdk, now, pool, put_secret, seed_pool};

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
    /// moto's CPU time over the level's wall time.
    moto_share: f64,
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
        moto_share: 0.0,
        failures,
    }
}

/// The webhook under cargo lambda watch, reaching DynamoDB Local through a timing proxy and
/// publishing its interactions to `interactions` when given; the load levels run against it.
async fn run(
    store_env: &std::collections::BTreeMap<String, String>,
    calls: &Arc<Vec<Call>>,
    interactions: Option<&str>,
) -> Vec<Level> {
    let busy = Busy::default();
    let mut env = env();
    env.extend(store_env.clone());
    let dynamodb = std::env::var("AWS_ENDPOINT_URL_DYNAMODB")
        .expect("the local services' environment (make bench starts them)");
    env.insert(
        "AWS_ENDPOINT_URL_DYNAMODB".into(),
        timing_proxy(&dynamodb, busy.clone()).await,
    );
    env.insert("RUST_LOG".into(), "warn".into());
    // As deployed: the credentials in a secret (moto), never in the environment.
    let credentials: Vec<(&str, String)> = vnmask::secrets::CREDENTIAL_VARS
        .iter()
        .filter_map(|var| env.remove(*var).map(|value| (*var, value)))
        .collect();
    let credentials: Vec<(&str, &str)> =
        credentials.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.insert(
        "VNMASK_SECRETS_ID".into(),
        put_secret(&local_sdk().await, &credentials).await,
    );
    if let Some(url) = interactions {
        env.insert("VNMASK_INTERACTIONS_QUEUE_URL".into(), url.to_owned());
    }
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
    let warm = load(&http, &url, calls, 1, &busy).await;
    assert_eq!(warm.failures, 0, "warm-up failed:\n{}", watch.log_tail());
    let mut levels = Vec::new();
    for in_flight in LEVELS {
        let (cpu, started) = (moto_cpu(), Instant::now());
        let mut l = load(&http, &url, calls, in_flight, &busy).await;
        assert_eq!(l.failures, 0, "requests failed:\n{}", watch.log_tail());
        l.moto_share = (moto_cpu() - cpu).as_secs_f64() / started.elapsed().as_secs_f64();
        levels.push(l);
    }
    levels
}

/// moto's process id, from the local services' state directory.
fn moto_pid() -> Option<String> {
    let dir = std::env::var("VNMASK_LOCAL_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.local"));
    std::fs::read_to_string(dir.join("moto.pid"))
        .ok()
        .map(|pid| pid.trim().to_owned())
}

/// CPU time moto (SQS) has used so far: it shares the machine's cores with everything else.
fn moto_cpu() -> Duration {
    let stat = moto_pid()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .unwrap_or_default();
    // utime and stime, the 14th and 15th fields, in clock ticks (100 a second on Linux); the
    // command name before them is in parentheses and may hold spaces.
    let ticks: u64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|t| t.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Reads and deletes what the webhook publishes, counting it.
async fn consume(sqs: aws_sdk_sqs::Client, queue_url: String, consumed: Arc<AtomicUsize>) {
    loop {
        let Ok(out) = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
        else {
            continue;
        };
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            continue;
        }
        let entries = messages
            .iter()
            .enumerate()
            .filter_map(|(n, m)| {
                aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                    .id(n.to_string())
                    .set_receipt_handle(m.receipt_handle.clone())
                    .build()
                    .ok()
            })
            .collect();
        consumed.fetch_add(messages.len(), Ordering::Relaxed);
        let _ = sqs
            .delete_message_batch()
            .queue_url(&queue_url)
            .set_entries(Some(entries))
            .send()
            .await;
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

    // AND an interactions queue in moto, read as fast as it fills (as a consumer would)
    let sqs = aws_sdk_sqs::Client::new(&local_sdk().await);
    let queue_url = sqs
        .create_queue()
        .queue_name(format!("vnmask-bench-interactions-{}", std::process::id()))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let consumed = Arc::new(AtomicUsize::new(0));
    let consumer = tokio::spawn(consume(sqs, queue_url.clone(), consumed.clone()));

    let mut rows = String::new();
    let mut serial_share = 0.0;
    let mut p50s: Vec<(usize, Duration, Duration)> = Vec::new();
    for (mode, interactions) in [("off", false), ("published", true)] {
        let levels = run(
            &store_env,
            &calls,
            interactions.then_some(queue_url.as_str()),
        )
        .await;
        for l in levels {
            if l.in_flight == 1 && !interactions {
                serial_share = l.dynamodb_share;
            }
            let p50 = l.latencies.percentile(50.0);
            match p50s.iter_mut().find(|(n, _, _)| *n == l.in_flight) {
                Some(row) => row.2 = p50,
                None => p50s.push((l.in_flight, p50, Duration::ZERO)),
            }
            rows.push_str(&format!(
                "| {} | {} | {} | {:.0} | {} | {} | {:.0} % | {:.0} % |\n",
                mode,
                l.in_flight,
                l.latencies.len(),
                l.rate,
                human(p50),
                human(l.latencies.percentile(99.0)),
                l.dynamodb_share * 100.0,
                l.moto_share * 100.0,
            ));
        }
    }
    // Everything published was read: the interactions of every answered call.
    let answered = REQUESTS_PER_LEVEL * (LEVELS.len() + 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumed.load(Ordering::Relaxed) < answered && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    consumer.abort();
    let published = consumed.load(Ordering::Relaxed);
    let ratios: Vec<String> = p50s
        .iter()
        .map(|(n, off, on)| {
            format!(
                "{:+.0} % at {n} in flight",
                (on.as_secs_f64() / off.as_secs_f64() - 1.0) * 100.0
            )
        })
        .collect();
    let worst = p50s
        .iter()
        .map(|(_, off, on)| on.as_secs_f64() / off.as_secs_f64())
        .fold(0.0, f64::max);
    target(
        "Call routing end to end",
        "with interactions published, p50 within 10 % of the run without them",
        &format!(
            "{}: {} ({published} of {answered} interactions published during the run)",
            // A run that published few of its interactions did not measure their cost.
            if published * 10 < answered * 9 {
                "not measured"
            } else if worst <= 1.10 {
                "met"
            } else {
                "not met"
            },
            ratios.join(", ")
        ),
    );

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
         It runs twice: interactions off, then published to an SQS queue in moto \
         (`VNMASK_INTERACTIONS_QUEUE_URL`), which a consumer in the load generator reads as it \
         fills ({published} interactions were read, of {answered} calls answered with them on). \
         The emulator hands the extension its INVOKE events irregularly (from one per few \
         invocations to a handful a run, where Lambda sends one per invocation), so an \
         instance's flushes come in bursts and the last interactions of a run may still be in \
         the outbox when it is stopped.\n\n\
         \"moto CPU\" is the CPU time moto's process used over the level's wall time: SQS, which \
         in AWS runs elsewhere, here takes its share of the same 2 cores.\n\n\
         | interactions | in flight | requests | requests/s | p50 | p99 | in DynamoDB Local | moto CPU |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |\n{rows}\n\
         With one request at a time, {:.0} % of each request's latency is the route read at \
         DynamoDB Local; the rest is cargo lambda's emulator (HTTP in, an API Gateway event to the \
         runtime API, the answer back), the function's decision (see the CPU figures above) and \
         the load generator. With interactions on, each is sent by the webhook's internal \
         extension after the answer has gone back (the emulator, like Lambda, waits for the \
         extension before it hands the instance its next request).\n",
        machine(),
        serial_share * 100.0,
    );
    publish("routing-e2e", &md);
}
