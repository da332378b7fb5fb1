//! End to end: the real binary under `cargo lambda watch` on 127.0.0.1, with its keys unwrapped
//! by KMS (moto) and its routes in DynamoDB Local, answers a signed Twilio request with TwiML.
//!
//! `cargo lambda watch` serves HTTP functions at `/lambda-url/<function>/<path>` and hands them
//! API Gateway v2 events (form bodies base64-encoded), so the path, the body decoding and the
//! signature are exercised as in Lambda. The first request waits for the binary's first build.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vnmask::config::StoreConfig;
use vnmask::providers::twilio;
use vnmask_tests::people::{customer, driver};
use vnmask_tests::{create_table, kms_store_env, local_sdk, now, pool, seed_pool};

mod common;
use common::*;

/// The `cargo lambda watch` process group, stopped whatever the test's outcome.
struct Watch {
    child: Child,
    log: PathBuf,
}

impl Drop for Watch {
    fn drop(&mut self) {
        // The group holds cargo, cargo-watch and the function: signal it whole, by its id.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

impl Watch {
    fn log_tail(&self) -> String {
        let log = std::fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(&log[log.len().saturating_sub(4000)..]).into_owned()
    }
}

fn cargo_lambda() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let local = workspace.join(".venv/bin/cargo-lambda");
    if local.exists() {
        return local;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("cargo-lambda"))
                .find(|p| p.exists())
        })
        .expect("cargo-lambda is not installed: run `make deps` (it goes into .venv/bin)")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread")]
async fn real_binary_under_cargo_lambda_watch_answers_a_signed_twilio_call() {
    // GIVEN C and D in an order, in a table whose keys KMS (moto) wraps
    let sdk = local_sdk().await;
    let table = create_table(&aws_sdk_dynamodb::Client::new(&sdk)).await;
    let mut env = kms_store_env(&sdk, &table).await;
    let store: std::sync::Arc<dyn vnmask::store::Store> = std::sync::Arc::new(
        StoreConfig::from_source(&env)
            .unwrap()
            .connect(&sdk)
            .await
            .unwrap(),
    );
    seed_pool(store.as_ref(), &pool("IN", 1)).await;
    apply(&store, "ord-c", &[customer(1), driver(1)], now()).await;
    let vn = number_between(&store, "ord-c", &customer(1), &driver(1)).await;

    // AND the function's environment: the local services and the webhook's secrets
    env.insert("VNMASK_PUBLIC_BASE_URL".into(), BASE_URL.into());
    env.insert("VNMASK_TWILIO_AUTH_TOKENS".into(), TWILIO_TOKEN.into());
    env.insert("VNMASK_REFUSAL_MESSAGE".into(), REFUSAL.into());
    for (k, v) in std::env::vars() {
        if k.starts_with("AWS_") {
            env.insert(k, v);
        }
    }
    let dir = std::env::temp_dir().join(format!("vnmask-webhook-watch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let env_file = dir.join("function.env");
    let mut f = std::fs::File::create(&env_file).unwrap();
    for (k, v) in &env {
        assert!(!v.contains('\''), "{k} cannot be single-quoted");
        writeln!(f, "{k}='{v}'").unwrap();
    }
    let log = dir.join("watch.log");
    let port = free_port();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");

    // WHEN the real binary runs under cargo lambda watch
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(cargo_lambda())
        .args([
            "lambda",
            "watch",
            "--invoke-address",
            "127.0.0.1",
            "--invoke-port",
            &port.to_string(),
        ])
        .args(["--package", "webhook", "--ignore-changes", "--env-file"])
        .arg(&env_file)
        .current_dir(&workspace)
        .envs(&env)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .process_group(0)
        .spawn()
        .expect("cargo lambda watch starts");
    let mut watch = Watch { child, log };
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        let exited = watch.child.try_wait().unwrap().is_some();
        assert!(
            !exited && Instant::now() < deadline,
            "cargo lambda watch did not listen:\n{}",
            watch.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let base = format!("http://127.0.0.1:{port}/lambda-url/webhook");
    // The first invocation waits for the function's first build.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1200))
        .build()
        .unwrap();
    let call = |from: &str, token: &str| {
        let params = owned(&voice_params(from, vn.as_str()));
        let signature = twilio::sign(token.as_bytes(), &format!("{BASE_URL}{VOICE}"), &params);
        http.post(format!("{base}{VOICE}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", signature)
            .body(serde_urlencoded::to_string(&params).unwrap())
            .send()
    };

    // THEN C's signed call is connected to D, showing the virtual number
    let res = call(customer(1).phone.expose(), TWILIO_TOKEN)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", watch.log_tail()));
    let status = res.status();
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = res.text().await.unwrap();
    assert_eq!(status, 200, "{body}\n{}", watch.log_tail());
    assert_eq!(content_type.as_deref(), Some("text/xml; charset=utf-8"));
    assert_eq!(
        body,
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Dial callerId=\"{vn}\" answerOnBridge=\"true\" \
             timeout=\"30\" timeLimit=\"3600\"><Number>{}</Number></Dial></Response>",
            driver(1).phone.expose()
        )
    );
    // AND a stranger hears the refusal, and a forged request is forbidden
    let res = call(customer(9).phone.expose(), TWILIO_TOKEN)
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains(&format!("<Say>{REFUSAL}</Say><Hangup/>")));
    let res = call(
        customer(1).phone.expose(),
        "ffffffffffffffffffffffffffffffff",
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 403);
    drop(watch);
    let _ = std::fs::remove_dir_all(&dir);
}
