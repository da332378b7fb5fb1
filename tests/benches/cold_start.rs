//! Cold start of each function: the deployable zip's size, the time from process start to the
//! first request for an event, with and without the network, and the peak resident memory then.
//!
//! Each function's real binary (built for this machine with the bench profile) is started as
//! Lambda starts it: the Lambda environment variables, its configuration, and
//! `AWS_LAMBDA_RUNTIME_API` pointing at a listener here that notes when the runtime's first
//! `GET …/runtime/invocation/next` arrives; the function is ready for its first event then.
//! Its AWS endpoints (moto's KMS and SQS, DynamoDB Local) go through loopback proxies that
//! time every request, so that the time spent waiting on AWS (KMS unwrapping the keys, on
//! Lambda a network round trip) is reported apart. Writes the "cold-start" section.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use vnmask::domain::RealNumber;
use vnmask_tests::bench::{machine, publish, target, timing_proxy, Busy};
use vnmask_tests::watch::target_dir;
use vnmask_tests::{create_table, kms_store_env, local_sdk, put_secret};

const RUNS: usize = 15;
const FUNCTIONS: [&str; 4] = ["webhook", "lookup", "assign", "pool-refresh"];
const TARGET: Duration = Duration::from_millis(20);

/// The Extensions API's answer to a registration (the webhook registers an internal extension
/// during its init, as on Lambda).
fn registered() -> String {
    let body = r#"{"functionName":"bench","functionVersion":"1","handler":"bootstrap"}"#;
    format!(
        "HTTP/1.1 200 OK\r\nLambda-Extension-Identifier: bench\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Lambda's runtime API, as far as a cold start goes: answers an extension's registration and
/// notes when the first `next` arrives.
async fn runtime_api(first_next: Arc<Mutex<Option<Instant>>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let first_next = first_next.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = conn.read(&mut buf).await {
                    seen.extend_from_slice(&buf[..n]);
                    let request = String::from_utf8_lossy(&seen);
                    if request.contains("/extension/register") && request.contains("\r\n\r\n{") {
                        seen.clear();
                        if conn.write_all(registered().as_bytes()).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    if request.contains("/runtime/invocation/next") {
                        first_next.lock().unwrap().get_or_insert_with(Instant::now);
                        break;
                    }
                }
                // Holding the connection open keeps the runtime waiting, as for a quiet function.
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    addr.to_string()
}

struct Run {
    init: Duration,
    network: Duration,
    peak_rss_kib: u64,
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The environment each function is configured with (as `make dev` configures it).
fn function_env(function: &str, common: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut env = common.clone();
    let set = |env: &mut BTreeMap<String, String>, pairs: &[(&str, &str)]| {
        for (k, v) in pairs {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
    };
    match function {
        "webhook" => set(
            &mut env,
            &[
                ("VNMASK_PUBLIC_BASE_URL", "https://hooks.vnmask.test"),
                ("VNMASK_EXOTEL_ALLOWED_SOURCES", "203.0.113.0/24"),
            ],
        ),
        "lookup" => set(
            &mut env,
            &[
                ("VNMASK_MARKETS", "IN"),
                ("ORDERS_API_URL", "http://127.0.0.1:9/orders-api"),
            ],
        ),
        "assign" => set(
            &mut env,
            &[
                ("VNMASK_MARKETS", "IN"),
                (
                    "VNMASK_DLQ_URL",
                    "http://127.0.0.1:9/000000000000/order-events-dlq",
                ),
                (
                    "VNMASK_NOTIFY_QUEUE_URL",
                    "http://127.0.0.1:9/000000000000/notifications",
                ),
            ],
        ),
        "pool-refresh" => set(
            &mut env,
            &[
                ("VNMASK_MARKETS", "IN"),
                ("VNMASK_PROVIDERS", "twilio"),
                (
                    "VNMASK_TWILIO_ACCOUNT_SID",
                    "AC0123456789abcdef0123456789abcdef",
                ),
                ("VNMASK_TWILIO_API_BASE", "http://127.0.0.1:9"),
                (
                    "VNMASK_VOICE_URL",
                    "https://hooks.vnmask.test/v1/providers/twilio/voice",
                ),
            ],
        ),
        _ => unreachable!("a function of this workspace"),
    }
    env
}

/// The credentials each function reads from its secret at cold start.
fn credentials(function: &str) -> &'static [(&'static str, &'static str)] {
    match function {
        "webhook" => &[
            (
                "VNMASK_TWILIO_AUTH_TOKENS",
                "8f3c1a9e5b7d2046c1e9a3f5b7d90e12",
            ),
            ("VNMASK_EXOTEL_TOKENS", "exotel-3c5e7f9b1d3f5a7c9e1f"),
            (
                "VNMASK_GENERIC_SECRETS",
                "generic-3c5e7f9b1d3f5a7c9e1f3a5c7e9b",
            ),
        ],
        "pool-refresh" => &[(
            "VNMASK_TWILIO_AUTH_TOKEN",
            "8f3c1a9e5b7d2046c1e9a3f5b7d90e12",
        )],
        _ => &[],
    }
}

async fn cold_start(
    binary: &Path,
    env: &BTreeMap<String, String>,
    runtime: &str,
    first_next: &Arc<Mutex<Option<Instant>>>,
    busy: &Busy,
) -> Run {
    *first_next.lock().unwrap() = None;
    busy.clear();
    let started = Instant::now();
    let mut child = Command::new(binary)
        .env_clear()
        .envs(env)
        .env("AWS_LAMBDA_RUNTIME_API", runtime)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the function starts");
    let deadline = started + Duration::from_secs(20);
    let ready = loop {
        if let Some(at) = *first_next.lock().unwrap() {
            break at;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            panic!("{} exited during init ({status}):\n{err}", binary.display());
        }
        assert!(
            Instant::now() < deadline,
            "{} never asked for an event",
            binary.display()
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    };
    let peak_rss_kib = peak_rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    Run {
        init: ready - started,
        network: busy.within(started, ready),
        peak_rss_kib,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[tokio::main]
async fn main() {
    let started = Instant::now();
    RealNumber::parse("+919810000001").expect("a valid number");
    let plan_load = started.elapsed();
    let sdk = local_sdk().await;
    let table = create_table(&aws_sdk_dynamodb::Client::new(&sdk)).await;
    let store_env = kms_store_env(&sdk, &table).await;

    // Every AWS endpoint the functions use, through a timing proxy.
    let busy = Busy::default();
    let mut common: BTreeMap<String, String> = BTreeMap::new();
    for (var, value) in std::env::vars() {
        if !var.starts_with("AWS_") {
            continue;
        }
        let value = match var.as_str() {
            "AWS_ENDPOINT_URL"
            | "AWS_ENDPOINT_URL_DYNAMODB"
            | "AWS_ENDPOINT_URL_KMS"
            | "AWS_ENDPOINT_URL_SECRETS_MANAGER"
            | "AWS_ENDPOINT_URL_SQS" => timing_proxy(&value, busy.clone()).await,
            _ => value,
        };
        common.insert(var, value);
    }
    common.extend(store_env);
    for (k, v) in [
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/bench"),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "bench"),
        ("RUST_LOG", "info"),
    ] {
        common.insert(k.to_owned(), v.to_owned());
    }
    let first_next: Arc<Mutex<Option<Instant>>> = Arc::default();
    let runtime = runtime_api(first_next.clone()).await;

    let binaries = target_dir().join("release");
    let lambda_dir = target_dir().join("lambda");
    let mut rows = String::new();
    let mut worst = Duration::ZERO;
    for function in FUNCTIONS {
        let binary = binaries.join(function);
        assert!(
            binary.exists(),
            "{} is missing: build it with `cargo build --profile bench -p {function}`",
            binary.display()
        );
        let mut env = function_env(function, &common);
        env.insert("AWS_LAMBDA_FUNCTION_NAME".into(), function.into());
        if !credentials(function).is_empty() {
            let secret = put_secret(&sdk, credentials(function)).await;
            env.insert("VNMASK_SECRETS_ID".into(), secret);
        }
        let mut runs = Vec::new();
        for _ in 0..RUNS {
            runs.push(cold_start(&binary, &env, &runtime, &first_next, &busy).await);
        }
        let init = median(runs.iter().map(|r| r.init).collect());
        let network = median(runs.iter().map(|r| r.network).collect());
        let local = median(
            runs.iter()
                .map(|r| r.init.saturating_sub(r.network))
                .collect(),
        );
        let local_max = runs
            .iter()
            .map(|r| r.init.saturating_sub(r.network))
            .max()
            .unwrap_or_default();
        worst = worst.max(local);
        let rss = runs.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0) * 1024;
        let zip = lambda_dir.join(function).join("bootstrap.zip");
        let zip = std::fs::metadata(&zip)
            .map(|m| mib(m.len()))
            .unwrap_or_else(|_| "not built".into());
        rows.push_str(&format!(
            "| {function} | {zip} | {} | {} | **{}** (max {}) | {} |\n",
            ms(init),
            ms(network),
            ms(local),
            ms(local_max),
            mib(rss),
        ));
    }
    let verdict = if worst <= TARGET {
        format!("met: the slowest function's median is {}", ms(worst))
    } else {
        format!(
            "missed by {} (the slowest function's median is {})",
            ms(worst - TARGET),
            ms(worst)
        )
    };
    let md = format!(
        "## Cold start\n\n\
         Method: `cargo bench --workspace --bench cold_start` on {}. Zip: `cargo lambda build \
         --release --arm64 --output-format zip` (the deployed artefact: arm64, LTO, stripped). \
         Init: each function's binary for this machine (x86_64, bench profile: release without \
         LTO) started {RUNS} times the way Lambda starts it, timed from process start to its \
         runtime's first request for an event, against a stand-in for Lambda's runtime API on \
         127.0.0.1 (which also answers the webhook's internal extension's registration, part of \
         its init as on Lambda). Its calls to AWS at init (KMS unwrapping the data keys, against moto) pass \
         through timing proxies; \"of which AWS\" is the time a request was outstanding, and \
         init without the network is the rest. Peak RSS is the process's high-water mark when it \
         asked for its first event (the largest of the runs). Medians.\n\n\
         | function | zip (arm64) | init | of which AWS (KMS) | init without the network | peak RSS |\n\
         | --- | --- | --- | --- | --- | --- |\n{rows}\n\
         Target: init ≤ {} without the network: {verdict}.\n\n\
         No function loads the numbering plan's metadata at init, and the webhook never does: \
         it checks only the E.164 form of a caller and a dialled number (only strictly parsed \
         numbers ever get a route). Parsing a number strictly the first time in a process \
         (loading the plan and compiling the country's patterns) took {} here; assign pays it on \
         its first order event, lookup only on its first fallback to the Orders service.\n",
        machine(),
        ms(TARGET),
        ms(plan_load),
    );
    target(
        "Cold start",
        &format!("init ≤ {} per function (network excluded)", ms(TARGET)),
        &verdict,
    );
    publish("cold-start", &md);
}
