//! End to end: the real `lookup` binary under `cargo lambda watch` on 127.0.0.1, with its keys
//! unwrapped by (moto's) KMS and its table in DynamoDB Local, answers a lookup whose identity
//! comes from the documented local-claims header.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use vnmask::assignment::{AssignSettings, Assigner, OrderChange, OrderUpdate, Outcome};
use vnmask::config::StoreConfig;
use vnmask::store::Store;
use vnmask_tests::people::{customer, driver};
use vnmask_tests::{create_table, kms_store_env, local_sdk, market, now, pool, seed_pool};

const LOCAL_CLAIMS_HEADER: &str = "x-vnmask-local-claims";

/// `cargo lambda watch` in its own process group, killed with all its children when dropped
/// (also when the test fails).
struct Watch {
    child: Child,
    log: PathBuf,
}

impl Watch {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let kill = |signal: &str| {
            let _ = Command::new("kill")
                .args([signal, "--", &group])
                .stderr(Stdio::null())
                .status();
        };
        kill("-TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Whatever survived the TERM (nothing, normally: the group is gone).
        kill("-KILL");
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn start_watch(port: u16, env: &[(String, String)]) -> Watch {
    use std::os::unix::process::CommandExt;
    let root = workspace_root();
    let log = std::env::temp_dir().join(format!("vnmask-lookup-watch-{}.log", std::process::id()));
    let out = std::fs::File::create(&log).unwrap();
    // The Makefile installs cargo-lambda into the project's .venv.
    let path = format!(
        "{}:{}",
        root.join(".venv/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // A developer's environment, not the test harness's: cargo sets variables for tests
    // (`CARGO_PKG_*`, …) that would make `cargo run` rebuild build-script crates such as ring.
    let inherited = std::env::vars().filter(|(name, _)| {
        matches!(
            name.as_str(),
            "HOME" | "USER" | "LANG" | "TMPDIR" | "CARGO_HOME" | "CARGO_TARGET_DIR" | "RUSTFLAGS"
        ) || name.starts_with("RUSTUP_")
    });
    let child = Command::new("cargo")
        .args([
            "lambda",
            "watch",
            "--invoke-address",
            "127.0.0.1",
            "--invoke-port",
        ])
        .arg(port.to_string())
        .args(["--ignore-changes", "--package", "lookup", "--bin", "lookup"])
        .current_dir(&root)
        .env_clear()
        .envs(inherited)
        .env("PATH", path)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .process_group(0)
        .spawn()
        .expect("cargo lambda watch starts (is cargo-lambda installed? `make deps`)");
    Watch { child, log }
}

#[tokio::test(flavor = "multi_thread")]
async fn real_binary_under_cargo_lambda_watch_answers_a_lookup() {
    // GIVEN a table, KMS-wrapped keys and an assigned order, as a deployment would have them
    let sdk = local_sdk().await;
    let table = create_table(&aws_sdk_dynamodb::Client::new(&sdk)).await;
    let store_env = kms_store_env(&sdk, &table).await;
    let store: Arc<dyn Store> = Arc::new(
        StoreConfig::from_source(&store_env)
            .unwrap()
            .connect(&sdk)
            .await
            .unwrap(),
    );
    seed_pool(store.as_ref(), &pool("IN", 3)).await;
    let (c, d) = (customer(1), driver(1));
    let assigner = Assigner::new(store.clone(), AssignSettings::for_markets([market("IN")]));
    let update = OrderUpdate {
        order_id: "ord-e2e".parse().unwrap(),
        market: market("IN"),
        version: 1,
        change: OrderChange::Participants(vec![c.clone(), d.clone()]),
    };
    let Outcome::Applied { session, .. } = assigner.apply(&update, now()).await.unwrap() else {
        panic!("the assignment applies");
    };
    let number = session.contacts[0].number.as_str().to_owned();

    // WHEN the binary runs under cargo lambda watch with the local-claims header enabled
    let mut env: Vec<(String, String)> = store_env.into_iter().collect();
    for var in [
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_ENDPOINT_URL_SQS",
        "AWS_ENDPOINT_URL_KMS",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_EC2_METADATA_DISABLED",
    ] {
        if let Ok(value) = std::env::var(var) {
            env.push((var.into(), value));
        }
    }
    env.push(("VNMASK_MARKETS".into(), "IN".into()));
    env.push((
        "VNMASK_LOCAL_CLAIMS_HEADER".into(),
        LOCAL_CLAIMS_HEADER.into(),
    ));
    env.push(("RUST_LOG".into(), "info".into()));
    let port = free_port();
    let watch = start_watch(port, &env);
    let url = format!("http://127.0.0.1:{port}/lambda-url/lookup/v1/orders/ord-e2e/contacts");
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
