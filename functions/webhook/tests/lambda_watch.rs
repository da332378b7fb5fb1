//! End to end: the real binary under `cargo lambda watch` on 127.0.0.1, with its keys unwrapped
//! by KMS (moto) and its routes in DynamoDB Local, answers a signed Twilio request with TwiML.
//!
//! `cargo lambda watch` serves HTTP functions at `/lambda-url/<function>/<path>` and hands them
//! API Gateway v2 events (form bodies base64-encoded), so the path, the body decoding and the
//! signature are exercised as in Lambda. The first request waits for the binary's first build.
//! Its credentials come from Secrets Manager (moto), and until they can be read every call is
//! refused in Twilio's format.

use std::time::Duration;

use vnmask::providers::twilio;
use vnmask_tests::people::{customer, driver};
use vnmask_tests::watch::{LambdaWatch, WatchSpec};
use vnmask_tests::{kms_store, local_sdk, now, pool, put_secret_named, secret_name, seed_pool};

use crate::common;
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn real_binary_under_cargo_lambda_watch_answers_a_signed_twilio_call() {
    // GIVEN C and D in an order, in a table whose keys KMS (moto) wraps
    let sdk = local_sdk().await;
    let (mut env, store) = kms_store(&sdk).await;
    let store: std::sync::Arc<dyn vnmask::store::Store> = std::sync::Arc::new(store);
    seed_pool(store.as_ref(), &pool("IN", 1)).await;
    apply(&store, "ord-c", &[customer(1), driver(1)], now()).await;
    let vn = number_between(&store, "ord-c", &customer(1), &driver(1)).await;

    // AND the function's environment: the local services, and the name of a secret that
    // does not exist yet
    let secret = secret_name();
    env.insert("VNMASK_SECRETS_ID".into(), secret.clone());
    env.insert("VNMASK_PUBLIC_BASE_URL".into(), BASE_URL.into());
    env.insert("VNMASK_REFUSAL_MESSAGE".into(), REFUSAL.into());

    // WHEN the real binary runs under cargo lambda watch
    let watch = LambdaWatch::start(WatchSpec {
        package: "webhook",
        binary: None,
        env,
    });
    let base = watch.function_url();
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

    // THEN, with no credentials to check it against, C's call is refused in Twilio's format
    let res = call(customer(1).phone.expose(), TWILIO_TOKEN)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", watch.log_tail()));
    assert_eq!(res.status(), 200, "{}", watch.log_tail());
    let body = res.text().await.unwrap();
    assert!(body.contains(REFUSAL), "{body}\n{}", watch.log_tail());

    // WHEN the secret is filled in, the function loads it on a later request (5 s apart at most)
    put_secret_named(
        &sdk,
        &secret,
        &[("VNMASK_TWILIO_AUTH_TOKENS", TWILIO_TOKEN)],
    )
    .await;
    let started = std::time::Instant::now();
    let (status, content_type, body) = loop {
        let res = call(customer(1).phone.expose(), TWILIO_TOKEN)
            .await
            .unwrap();
        let status = res.status();
        let content_type = res
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = res.text().await.unwrap();
        if !body.contains(REFUSAL) {
            break (status, content_type, body);
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the credentials were never loaded\n{}",
            watch.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // THEN C's signed call is connected to D, showing the virtual number
    assert_eq!(status, 200, "{body}\n{}", watch.log_tail());
    assert_eq!(content_type.as_deref(), Some("text/xml; charset=utf-8"));
    assert_eq!(
        body,
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Dial callerId=\"{vn}\" answerOnBridge=\"true\" \
             timeout=\"30\" timeLimit=\"3600\" action=\"{BASE_URL}/v1/providers/twilio/dial-end\">\
             <Number>{}</Number></Dial></Response>",
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
}
