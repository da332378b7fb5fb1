//! Authentication: a request that does not prove it comes from the provider gets 403 and
//! costs no DynamoDB read at all. Counted on DynamoDB Local through the real SDK.

use std::sync::Arc;

use axum::body::Body;
use http::Request;
use vnmask::domain::VirtualNumber;
use vnmask::providers::exotel;
use vnmask::store::Store;
use vnmask_tests::people::{customer, driver};
use vnmask_tests::{local_dynamo, now, pool, seed_pool, CallCounter};
use webhook::WebhookConfig;

use crate::common;
use common::*;

struct Fx {
    store: Arc<dyn Store>,
    calls: CallCounter,
    vn: VirtualNumber,
}

/// C and D in one order over DynamoDB Local.
async fn fx() -> Fx {
    let d = local_dynamo().await;
    let store: Arc<dyn Store> = d.store.clone();
    seed_pool(store.as_ref(), &pool("IN", 1)).await;
    apply(&store, "ord-c", &[customer(1), driver(1)], now()).await;
    let vn = number_between(&store, "ord-c", &customer(1), &driver(1)).await;
    d.calls.reset();
    Fx {
        store,
        calls: d.calls.clone(),
        vn,
    }
}

const C: &str = "+919810000001";
const D: &str = "+919710000001";

impl Fx {
    async fn forbidden(&self, app: &axum::Router, req: Request<Body>) {
        self.calls.reset();
        let answer = send(app, req).await;
        assert_eq!(answer.status, 403, "{answer:?}");
        assert!(!answer.body.contains(D));
        assert_eq!(self.calls.total(), 0, "a rejected request looks nothing up");
    }

    async fn connects(&self, app: &axum::Router, req: Request<Body>) {
        let answer = send(app, req).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert!(answer.body.contains(D), "{answer:?}");
    }
}

#[tokio::test]
async fn twilio_signature_must_cover_token_url_and_every_parameter() {
    let fx = fx().await;
    let app = app(fx.store.clone());
    let params = voice_params(C, fx.vn.as_str());
    let url = format!("{BASE_URL}{VOICE}");
    fx.connects(&app, twilio_signed_for(VOICE, &params, TWILIO_TOKEN, &url))
        .await;

    // Wrong token.
    fx.forbidden(
        &app,
        twilio_signed_for(VOICE, &params, "ffffffffffffffffffffffffffffffff", &url),
    )
    .await;

    // A parameter changed after signing: a stranger replaying C's signature.
    let signature = vnmask::providers::twilio::sign(TWILIO_TOKEN.as_bytes(), &url, &owned(&params));
    let mut tampered = params.clone();
    tampered
        .iter_mut()
        .filter(|(k, _)| *k == "From" || *k == "Caller")
        .for_each(|p| p.1 = "+919810000009");
    fx.forbidden(&app, with_signature(&tampered, &signature))
        .await;

    // A parameter added after signing.
    let mut added = params.clone();
    added.push(("ForwardedFrom", "+919810000009"));
    fx.forbidden(&app, with_signature(&added, &signature)).await;

    // A parameter removed after signing.
    fx.forbidden(&app, with_signature(&params[1..], &signature))
        .await;

    // Signed for another URL: the SMS endpoint, another host, plain http.
    for other in [
        format!("{BASE_URL}{SMS}"),
        format!("https://evil.test{VOICE}"),
        format!("http://hooks.vnmask.test{VOICE}"),
    ] {
        fx.forbidden(
            &app,
            twilio_signed_for(VOICE, &params, TWILIO_TOKEN, &other),
        )
        .await;
    }

    // No signature at all, or an empty one.
    let unsigned = Request::post(VOICE)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(form(&params)))
        .unwrap();
    fx.forbidden(&app, unsigned).await;
    fx.forbidden(&app, with_signature(&params, "")).await;
}

fn with_signature(params: &[(&str, &str)], signature: &str) -> Request<Body> {
    Request::post(VOICE)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(Body::from(form(params)))
        .unwrap()
}

#[tokio::test]
async fn twilio_url_is_accepted_with_or_without_the_default_port() {
    let fx = fx().await;
    let params = voice_params(C, fx.vn.as_str());
    // Twilio signed the URL with the port; we are configured without it.
    let app_plain = app(fx.store.clone());
    let with_port = format!("https://hooks.vnmask.test:443{VOICE}");
    fx.connects(
        &app_plain,
        twilio_signed_for(VOICE, &params, TWILIO_TOKEN, &with_port),
    )
    .await;
    // And the other way round.
    let mut env = env();
    env.insert(
        "VNMASK_PUBLIC_BASE_URL".into(),
        "https://hooks.vnmask.test:443".into(),
    );
    let app_port = app_with(
        fx.store.clone(),
        WebhookConfig::from_source(&env).unwrap(),
        None,
    );
    fx.connects(
        &app_port,
        twilio_signed_for(VOICE, &params, TWILIO_TOKEN, &format!("{BASE_URL}{VOICE}")),
    )
    .await;
    // Another port is another URL.
    let other_port = format!("https://hooks.vnmask.test:8443{VOICE}");
    fx.forbidden(
        &app_plain,
        twilio_signed_for(VOICE, &params, TWILIO_TOKEN, &other_port),
    )
    .await;
}

#[tokio::test]
async fn twilio_signature_covers_the_query_string() {
    let fx = fx().await;
    let app = app(fx.store.clone());
    let params = voice_params(C, fx.vn.as_str());
    let path = format!("{VOICE}?market=IN&trace=a%20b");
    fx.connects(
        &app,
        twilio_signed_for(&path, &params, TWILIO_TOKEN, &format!("{BASE_URL}{path}")),
    )
    .await;
    fx.forbidden(
        &app,
        twilio_signed_for(&path, &params, TWILIO_TOKEN, &format!("{BASE_URL}{VOICE}")),
    )
    .await;
}

#[tokio::test]
async fn both_twilio_tokens_are_accepted_during_a_rotation() {
    let fx = fx().await;
    let app = app(fx.store.clone());
    let params = voice_params(C, fx.vn.as_str());
    let url = format!("{BASE_URL}{VOICE}");
    fx.connects(&app, twilio_signed_for(VOICE, &params, TWILIO_TOKEN, &url))
        .await;
    fx.connects(
        &app,
        twilio_signed_for(VOICE, &params, TWILIO_NEXT_TOKEN, &url),
    )
    .await;
    // Once the old token is removed from the configuration, it stops working.
    let mut env = env();
    env.insert("VNMASK_TWILIO_AUTH_TOKENS".into(), TWILIO_NEXT_TOKEN.into());
    let rotated = app_with(
        fx.store.clone(),
        WebhookConfig::from_source(&env).unwrap(),
        None,
    );
    fx.forbidden(
        &rotated,
        twilio_signed_for(VOICE, &params, TWILIO_TOKEN, &url),
    )
    .await;
    fx.connects(
        &rotated,
        twilio_signed_for(VOICE, &params, TWILIO_NEXT_TOKEN, &url),
    )
    .await;
}

#[tokio::test]
async fn exotel_needs_the_token_in_the_path_or_the_query() {
    let fx = fx().await;
    let app = app(fx.store.clone());
    let call = form(&[
        ("CallSid", "b6cf1c5c8ec8d2bd0a1a6c4a4e3d1b7a"),
        ("CallFrom", C),
        ("CallTo", fx.vn.as_str()),
    ]);
    let get = |uri: String| Request::get(uri).body(Body::empty()).unwrap();
    fx.connects(
        &app,
        get(format!(
            "{EXOTEL}?{call}&{}={EXOTEL_TOKEN}",
            exotel::TOKEN_PARAM
        )),
    )
    .await;
    fx.connects(&app, get(format!("{EXOTEL}/{EXOTEL_TOKEN}?{call}")))
        .await;
    fx.forbidden(&app, get(format!("{EXOTEL}?{call}"))).await;
    fx.forbidden(
        &app,
        get(format!(
            "{EXOTEL}?{call}&{}=exotel-guess",
            exotel::TOKEN_PARAM
        )),
    )
    .await;
    fx.forbidden(&app, get(format!("{EXOTEL}/exotel-guess?{call}")))
        .await;
}

#[tokio::test]
async fn exotel_source_allow_list_uses_api_gateways_source_ip() {
    let fx = fx().await;
    let mut env = env();
    env.insert(
        "VNMASK_EXOTEL_ALLOWED_SOURCES".into(),
        "203.0.113.0/24, 2001:db8::/32".into(),
    );
    let app = app_with(
        fx.store.clone(),
        WebhookConfig::from_source(&env).unwrap(),
        None,
    );
    let query = form(&[
        ("CallSid", "b6cf1c5c8ec8d2bd0a1a6c4a4e3d1b7a"),
        ("CallFrom", C),
        ("CallTo", fx.vn.as_str()),
        (exotel::TOKEN_PARAM, EXOTEL_TOKEN),
    ]);
    let event = |ip| ApiGatewayEvent::get(EXOTEL, &query).with_source_ip(ip);
    for ip in ["203.0.113.10", "2001:db8::7"] {
        let answer = send(&app, event(ip).request()).await;
        assert_eq!(answer.json()["destination"]["numbers"][0], D, "{ip}");
    }
    for ip in ["198.51.100.1", "203.0.114.10", ""] {
        fx.calls.reset();
        let answer = send(&app, event(ip).request()).await;
        assert_eq!(answer.status, 403, "{ip}");
        assert_eq!(fx.calls.total(), 0);
    }
    // Without API Gateway's context there is no source address: not allowed.
    fx.forbidden(
        &app,
        Request::get(format!("{EXOTEL}?{query}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
}

#[tokio::test]
async fn generic_requests_must_be_signed_and_recent() {
    let fx = fx().await;
    let app = app(fx.store.clone());
    let body = generic_body(C, fx.vn.as_str(), "voice");
    let t = now();
    fx.connects(&app, generic_signed(&body, t, GENERIC_SECRET))
        .await;
    fx.connects(&app, generic_signed(&body, t - 290, GENERIC_SECRET))
        .await;
    // A captured request replayed more than five minutes later.
    fx.forbidden(&app, generic_signed(&body, t - 301, GENERIC_SECRET))
        .await;
    fx.forbidden(&app, generic_signed(&body, t + 400, GENERIC_SECRET))
        .await;
    fx.forbidden(
        &app,
        generic_signed(&body, t, "generic-wrong-secret-0000000000000000"),
    )
    .await;
    // The body changed after signing.
    let mut tampered = generic_signed(&body, t, GENERIC_SECRET);
    *tampered.body_mut() = Body::from(generic_body("+919810000009", fx.vn.as_str(), "voice"));
    fx.forbidden(&app, tampered).await;
    // The timestamp changed after signing (to dodge the replay window).
    let mut moved = generic_signed(&body, t - 600, GENERIC_SECRET);
    moved
        .headers_mut()
        .insert("x-vnmask-timestamp", t.to_string().parse().unwrap());
    fx.forbidden(&app, moved).await;
    let unsigned = Request::post(GENERIC)
        .body(Body::from(body.clone()))
        .unwrap();
    fx.forbidden(&app, unsigned).await;
    let mut bad_ts = generic_signed(&body, t, GENERIC_SECRET);
    bad_ts
        .headers_mut()
        .insert("x-vnmask-timestamp", "yesterday".parse().unwrap());
    fx.forbidden(&app, bad_ts).await;
}

#[tokio::test]
async fn an_unconfigured_provider_is_not_served() {
    let fx = fx().await;
    let mut env = env();
    env.remove("VNMASK_TWILIO_AUTH_TOKENS");
    env.remove("VNMASK_EXOTEL_TOKENS");
    let app = app_with(
        fx.store.clone(),
        WebhookConfig::from_source(&env).unwrap(),
        None,
    );
    let answer = send(&app, twilio_call(C, fx.vn.as_str())).await;
    assert_eq!(answer.status, 404);
    let answer = send(&app, exotel_call(C, fx.vn.as_str())).await;
    assert_eq!(answer.status, 404);
    assert_eq!(fx.calls.total(), 0);
    fx.connects(&app, generic_call(C, fx.vn.as_str())).await;
}
