//! Provider requests as they reach the function: API Gateway HTTP API (payload 2.0) events,
//! base64 bodies included, turned into requests by lambda_http exactly as in Lambda. The
//! fixtures carry parameter sets shaped like Twilio's and Exotel's documented webhooks; their
//! signatures were computed independently, with Python's `hmac` module. Exotel's come in
//! national format too (`CallFrom=09810000001`), as Exotel sends them from an Indian account.

use std::sync::Arc;

use vnmask::domain::Channel;
use vnmask::providers::{parse_form, twilio};
use vnmask::store::memory::MemoryStore;
use vnmask::store::Store;
use vnmask_tests::people::{customer, driver};
use vnmask_tests::{now, pool, seed_pool};
use webhook::WebhookConfig;

use crate::common;
use common::*;

const VN: &str = "+911140001000";
const C: &str = "+919810000001";
const D: &str = "+919710000001";

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// C and D in one order; a pool of one number, so that the fixtures know it.
async fn store() -> Arc<dyn Store> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    seed_pool(store.as_ref(), &pool("IN", 1)).await;
    apply(&store, "ord-c", &[customer(1), driver(1)], now()).await;
    assert_eq!(
        number_between(&store, "ord-c", &customer(1), &driver(1))
            .await
            .as_str(),
        VN
    );
    store
}

#[test]
fn twilio_form_bodies_read_as_queries() {
    let voice =
        twilio::voice_query(&parse_form(fixture("twilio-voice.form").as_bytes()).unwrap()).unwrap();
    assert_eq!(voice.channel, Channel::Voice);
    assert_eq!(voice.call_id.as_str(), "CA5d0f4a1b2c3d4e5f60718293a4b5c6d7");
    assert_eq!(voice.caller.as_ref().unwrap().expose(), C);
    assert_eq!(voice.dialled.as_ref().unwrap().as_str(), VN);
    let sms =
        twilio::message_query(&parse_form(fixture("twilio-sms.form").as_bytes()).unwrap()).unwrap();
    assert_eq!(sms.channel, Channel::Sms);
    assert_eq!(
        sms.text.as_deref(),
        Some("At gate <3> & \"lobby\", it's ]]> ok")
    );
}

#[tokio::test]
async fn twilio_voice_event_with_a_base64_body_connects() {
    let event = fixture("apigw-v2-twilio-voice.json");
    assert!(event.contains("\"isBase64Encoded\": true"));
    let answer = send(&app(store().await), lambda_request(&event)).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.dial(),
        Some((VN.to_owned(), D.to_owned())),
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn twilio_sms_event_relays_the_escaped_text() {
    let answer = send(
        &app(store().await),
        lambda_request(&fixture("apigw-v2-twilio-sms.json")),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(
        answer.body.ends_with(&format!(
            "<Message to=\"{D}\" from=\"{VN}\">At gate &lt;3&gt; &amp; &quot;lobby&quot;, it&apos;s ]]&gt; ok</Message></Response>"
        )),
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn tampered_twilio_event_is_forbidden() {
    let mut event: serde_json::Value =
        serde_json::from_str(&fixture("apigw-v2-twilio-voice.json")).unwrap();
    // The stranger +919810000009 in place of C, signature unchanged.
    let body = String::from_utf8(
        base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            event["body"].as_str().unwrap(),
        )
        .unwrap(),
    )
    .unwrap()
    .replace("%2B919810000001", "%2B919810000009");
    event["body"] = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, body).into();
    let answer = send(&app(store().await), lambda_request(&event.to_string())).await;
    assert_eq!(answer.status, 403);
}

#[tokio::test]
async fn exotel_event_connects_from_an_allowed_source() {
    let mut env = env();
    env.insert(
        "VNMASK_EXOTEL_ALLOWED_SOURCES".into(),
        "203.0.113.0/24".into(),
    );
    let app = app_with(
        store().await,
        WebhookConfig::from_source(&env).unwrap(),
        None,
    );
    let answer = send(
        &app,
        lambda_request(&fixture("apigw-v2-exotel-connect.json")),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.content_type, "application/json");
    assert_eq!(
        answer.json()["destination"]["numbers"],
        serde_json::json!([D])
    );
    assert_eq!(answer.json()["outgoing_phone_number"], VN);
}

#[tokio::test]
async fn generic_event_connects_once_signed_for_now() {
    let mut event: serde_json::Value =
        serde_json::from_str(&fixture("apigw-v2-generic-route.json")).unwrap();
    let app = app(store().await);
    // As recorded, the request is older than five minutes: a replay.
    let answer = send(&app, lambda_request(&event.to_string())).await;
    assert_eq!(answer.status, 403);
    let ts = now().to_string();
    let body = event["body"].as_str().unwrap().to_owned();
    event["headers"]["x-vnmask-timestamp"] = ts.clone().into();
    event["headers"]["x-vnmask-signature"] =
        vnmask::providers::generic::sign(GENERIC_SECRET.as_bytes(), &ts, body.as_bytes()).into();
    let answer = send(&app, lambda_request(&event.to_string())).await;
    assert_eq!(
        answer.json(),
        serde_json::json!({"action": "connect", "callee": D, "caller_id": VN})
    );
}

/// The forms Exotel may use for an Indian number, E.164 last.
fn indian_forms(e164: &str) -> Vec<String> {
    let national = e164.strip_prefix("+91").unwrap();
    let mut forms = vec![format!("0{national}"), format!("91{national}")];
    if matches!(national.as_bytes()[0], b'6'..=b'9') {
        forms.push(national.to_owned());
    }
    forms.push(e164.to_owned());
    forms
}

fn exotel_dial(answer: &Answer) -> (serde_json::Value, serde_json::Value) {
    let json = answer.json();
    (
        json["destination"]["numbers"].clone(),
        json["outgoing_phone_number"].clone(),
    )
}

#[tokio::test]
async fn exotel_connect_event_in_national_format_connects() {
    let event = fixture("apigw-v2-exotel-connect-national.json");
    assert!(event.contains("CallFrom=09810000001&CallTo=01140001000"));
    let answer = send(&app(store().await), lambda_request(&event)).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        exotel_dial(&answer),
        (serde_json::json!([D]), serde_json::json!(VN))
    );
}

/// Passthru's query, with `CallFrom`/`CallTo` and with only the older `From`/`To`.
#[tokio::test]
async fn exotel_passthru_queries_in_national_format_connect() {
    let app = app(store().await);
    for name in [
        "exotel-passthru-national.query",
        "exotel-passthru-legacy.query",
    ] {
        let query = fixture(name);
        let answer = send(&app, ApiGatewayEvent::get(EXOTEL, query.trim()).request()).await;
        assert_eq!(answer.status, 200, "{name}: {answer:?}");
        assert_eq!(
            exotel_dial(&answer),
            (serde_json::json!([D]), serde_json::json!(VN)),
            "{name}"
        );
    }
}

#[tokio::test]
async fn every_national_form_routes_to_the_same_pair_as_its_e164_twin() {
    let app = app(store().await);
    let mut sid = 0;
    for (caller, callee) in [(C, D), (D, C)] {
        for from in indian_forms(caller) {
            for to in indian_forms(VN) {
                sid += 1;
                let call = exotel_call_as(&format!("national-{sid}"), &from, &to);
                let answer = send(&app, call).await;
                assert_eq!(
                    exotel_dial(&answer),
                    (serde_json::json!([callee]), serde_json::json!(VN)),
                    "{from} -> {to}"
                );
            }
        }
    }
    // Every caller form of C and D, times the VN's three (a landline has no bare form).
    assert_eq!(sid, 2 * 4 * 3);
}

#[tokio::test]
async fn malformed_or_foreign_looking_exotel_numbers_are_refused() {
    let app = app(store().await);
    let refused = [
        "",
        "anonymous",
        "+91 9810000001",
        "0981000000",
        "098100000011",
        "981000000",
        "9198100000011",
        "00919810000001",
        "0919810000001",
        "09810-000001",
        "1140001000",
    ];
    let mut sid = 0;
    for bad in refused {
        for (from, to) in [(bad, VN), (C, bad)] {
            sid += 1;
            let answer = send(&app, exotel_call_as(&format!("bad-{sid}"), from, to)).await;
            assert_eq!(answer.status, 200, "{from} -> {to}: {answer:?}");
            assert_eq!(
                answer.json()["destination"]["numbers"],
                serde_json::json!([]),
                "{from:?} -> {to:?}"
            );
        }
    }
}

/// Twilio and generic callers send E.164: a national form there is refused, as before.
#[tokio::test]
async fn only_exotel_reads_national_forms() {
    let app = app(store().await);
    let answer = send(&app, twilio_call("09810000001", VN)).await;
    assert!(answer.is_twiml_refusal(), "{answer:?}");
    let answer = send(&app, generic_call("09810000001", VN)).await;
    assert_eq!(answer.json()["action"], "reject", "{answer:?}");
}

#[tokio::test]
async fn exotel_in_another_market_takes_e164_only() {
    let mut env = env();
    env.insert("VNMASK_EXOTEL_MARKET".into(), "US".into());
    let app = app_with(
        store().await,
        WebhookConfig::from_source(&env).unwrap(),
        None,
    );
    let answer = send(&app, exotel_call_as("us-1", "09810000001", "01140001000")).await;
    assert_eq!(
        answer.json()["destination"]["numbers"],
        serde_json::json!([])
    );
    let answer = send(&app, exotel_call_as("us-2", C, VN)).await;
    assert_eq!(
        answer.json()["destination"]["numbers"],
        serde_json::json!([D])
    );
}
