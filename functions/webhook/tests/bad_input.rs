//! Bad input, properly signed so that it reaches the parser: a clear 4xx or a refusal, never
//! a 5xx, never a connection to a number the request made up.

use std::sync::Arc;

use axum::body::Body;
use http::Request;
use vnmask::domain::VirtualNumber;
use vnmask::providers::{exotel, generic};
use vnmask::store::memory::MemoryStore;
use vnmask::store::Store;
use vnmask_tests::people::{customer, driver};
use vnmask_tests::{now, pool, seed_pool};

use crate::common;
use common::*;

const C: &str = "+919810000001";
const D: &str = "+919710000001";
/// The number an attacker would like to be connected to.
const TARGET: &str = "+14155550100";

async fn fx() -> (axum::Router, VirtualNumber) {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    seed_pool(store.as_ref(), &pool("IN", 1)).await;
    apply(&store, "ord-c", &[customer(1), driver(1)], now()).await;
    let vn = number_between(&store, "ord-c", &customer(1), &driver(1)).await;
    (app(store), vn)
}

fn injections() -> Vec<String> {
    vec![
        format!("\"><Dial><Number>{TARGET}</Number></Dial>"),
        format!("{C}</Number><Number>{TARGET}"),
        format!("{C}\n{TARGET}"),
        format!("{C},{TARGET}"),
        format!("{C}&To={TARGET}"),
        format!("{C}\"}}, \"callee\": \"{TARGET}"),
        format!("<![CDATA[{TARGET}]]>"),
        "' OR '1'='1".into(),
        "${jndi:ldap://127.0.0.1/a}".into(),
        "\u{0}\u{1}\u{7f}".into(),
        "+91 98100 00001".into(),
        "x".repeat(5000),
    ]
}

fn assert_not_connected(answer: &Answer, what: &str) {
    assert!(!answer.status.is_server_error(), "{what}: {answer:?}");
    assert!(!answer.body.contains(TARGET), "{what}: {}", answer.body);
    assert!(
        !answer.body.contains(D),
        "{what} connected: {}",
        answer.body
    );
}

#[tokio::test]
async fn missing_from_or_to_is_a_clear_400() {
    let (app, vn) = fx().await;
    let full = voice_params(C, vn.as_str());
    for missing in ["From", "To", "CallSid"] {
        let params: Vec<_> = full
            .iter()
            .copied()
            .filter(|(k, _)| *k != missing)
            .collect();
        let answer = send(&app, twilio_request(VOICE, &params)).await;
        assert_eq!(answer.status, 400, "{answer:?}");
        assert_eq!(answer.body, format!("parameter {missing} is missing"));
    }
    let answer = send(
        &app,
        twilio_request(SMS, &[("From", C), ("To", vn.as_str())]),
    )
    .await;
    assert_eq!(answer.status, 400);
    let query = form(&[
        ("CallSid", "abc"),
        ("CallTo", vn.as_str()),
        (exotel::TOKEN_PARAM, EXOTEL_TOKEN),
    ]);
    let answer = send(
        &app,
        Request::get(format!("{EXOTEL}?{query}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        (answer.status.as_u16(), answer.body.as_str()),
        (400, "parameter CallFrom is missing")
    );
}

#[tokio::test]
async fn empty_caller_id_is_refused_not_guessed() {
    let (app, vn) = fx().await;
    for from in [
        "",
        "anonymous",
        "Restricted",
        "+266696687",
        "09810000001",
        "client:alice",
    ] {
        let answer = send(&app, twilio_call(from, vn.as_str())).await;
        assert!(answer.is_twiml_refusal(), "{from:?}: {answer:?}");
    }
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let (app, vn) = fx().await;
    let big = "x".repeat(webhook::BODY_LIMIT + 1);
    let mut params = voice_params(C, vn.as_str());
    params.push(("Padding", &big));
    let answer = send(&app, twilio_request(VOICE, &params)).await;
    assert_eq!(answer.status, 413);
    let body = generic_body(C, vn.as_str(), "voice") + &" ".repeat(webhook::BODY_LIMIT);
    let answer = send(&app, generic_signed(&body, now(), GENERIC_SECRET)).await;
    assert_eq!(answer.status, 413);
}

#[tokio::test]
async fn invalid_utf8_is_a_clear_400() {
    let (app, vn) = fx().await;
    let url = format!("{BASE_URL}{VOICE}");
    // Raw bytes that are not UTF-8, and percent-escapes that decode to non-UTF-8.
    let raw: Vec<u8> = [
        b"From=%2B919810000001&To=".as_slice(),
        vn.as_str().as_bytes(),
        b"&CallSid=CA1&Body=\xff\xfe",
    ]
    .concat();
    let escaped = format!(
        "From=%2B919810000001&To={}&CallSid=CA1&Body=%C3%28",
        vn.as_str().replace('+', "%2B")
    );
    for body in [raw, escaped.into_bytes()] {
        let req = Request::post(VOICE)
            .header(
                "x-twilio-signature",
                vnmask::providers::twilio::sign(TWILIO_TOKEN.as_bytes(), &url, &[("", "")]),
            )
            .body(Body::from(body))
            .unwrap();
        let answer = send(&app, req).await;
        assert_eq!(
            (answer.status.as_u16(), answer.body.as_str()),
            (400, "the request is not valid UTF-8")
        );
    }
    // Through API Gateway, base64-encoded.
    let mut event = ApiGatewayEvent::get(VOICE, "");
    event.method = "POST";
    event.base64 = true;
    event.body = Some(base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        b"From=\xc3\x28",
    ));
    event.headers.insert(
        "x-twilio-signature".into(),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
    );
    let answer = send(&app, event.request()).await;
    assert_eq!(answer.status, 400);
    // A signed generic body that is not UTF-8.
    let answer = send(&app, generic_bytes(b"{\"caller\": \"\xff\"}")).await;
    assert_eq!(answer.status, 400);
}

fn generic_bytes(body: &[u8]) -> Request<Body> {
    let ts = now().to_string();
    Request::post(GENERIC)
        .header(generic::TIMESTAMP_HEADER, &ts)
        .header(
            generic::SIGNATURE_HEADER,
            generic::sign(GENERIC_SECRET.as_bytes(), &ts, body),
        )
        .body(Body::from(body.to_vec()))
        .unwrap()
}

#[tokio::test]
async fn malformed_generic_json_is_a_clear_400() {
    let (app, vn) = fx().await;
    let vn = vn.as_str();
    for body in [
        "".to_owned(),
        "null".to_owned(),
        "[]".to_owned(),
        format!(r#"{{"caller": "{C}", "dialled": "{vn}", "call_id": "c1"}}"#),
        format!(r#"{{"caller": "{C}", "dialled": "{vn}", "call_id": "c1", "channel": "fax"}}"#),
        format!(
            r#"{{"caller": 919810000001, "dialled": "{vn}", "call_id": "c1", "channel": "voice"}}"#
        ),
        format!(r#"{{"caller": "{C}", "dialled": "{vn}", "call_id": "c1", "channel": "voice""#),
    ] {
        let answer = send(&app, generic_bytes(body.as_bytes())).await;
        assert_eq!(answer.status, 400, "{body}: {answer:?}");
        assert!(
            !answer.body.contains("9810"),
            "errors do not echo input: {}",
            answer.body
        );
    }
}

#[tokio::test]
async fn injection_in_the_routing_parameters_never_connects() {
    let (app, vn) = fx().await;
    for payload in injections() {
        for field in ["From", "To", "CallSid"] {
            let mut params = voice_params(C, vn.as_str());
            params
                .iter_mut()
                .filter(|(k, _)| *k == field)
                .for_each(|p| p.1 = &payload);
            let answer = send(&app, twilio_request(VOICE, &params)).await;
            assert_not_connected(&answer, &format!("twilio {field}={payload:?}"));
        }
        for field in ["CallFrom", "CallTo", "CallSid"] {
            let mut params = vec![
                ("CallSid", "b6cf1c5c8ec8d2bd0a1a6c4a4e3d1b7a"),
                ("CallFrom", C),
                ("CallTo", vn.as_str()),
                (exotel::TOKEN_PARAM, EXOTEL_TOKEN),
            ];
            params
                .iter_mut()
                .filter(|(k, _)| *k == field)
                .for_each(|p| p.1 = &payload);
            let req = Request::get(format!("{EXOTEL}?{}", form(&params)))
                .body(Body::empty())
                .unwrap();
            assert_not_connected(
                &send(&app, req).await,
                &format!("exotel {field}={payload:?}"),
            );
        }
        for field in ["caller", "dialled", "call_id", "channel"] {
            let mut body = serde_json::json!({"caller": C, "dialled": vn.as_str(), "call_id": "c1", "channel": "voice"});
            body[field] = payload.clone().into();
            let answer = send(
                &app,
                generic_signed(&body.to_string(), now(), GENERIC_SECRET),
            )
            .await;
            assert_not_connected(&answer, &format!("generic {field}={payload:?}"));
        }
    }
}

#[tokio::test]
async fn injection_in_other_parameters_changes_nothing() {
    let (app, vn) = fx().await;
    for payload in injections() {
        for field in ["AccountSid", "Caller", "Called", "ApiVersion", "CallStatus"] {
            let mut params = voice_params(C, vn.as_str());
            params
                .iter_mut()
                .filter(|(k, _)| *k == field)
                .for_each(|p| p.1 = &payload);
            let answer = send(&app, twilio_request(VOICE, &params)).await;
            assert_eq!(answer.status, 200);
            assert_eq!(
                answer.dial(),
                Some((vn.as_str().to_owned(), D.to_owned())),
                "{field}={payload:?}"
            );
            assert!(!answer.body.contains(TARGET));
        }
        // In a text's body, the payload is relayed as text, escaped.
        let answer = send(&app, twilio_text(C, vn.as_str(), &payload)).await;
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.body.matches("<Message").count(),
            1,
            "{}",
            answer.body
        );
        assert!(!answer.body.contains("<Dial"), "{}", answer.body);
        assert!(!answer.body.contains("<Number"), "{}", answer.body);
        assert!(
            !answer.body.contains('\u{0}'),
            "XML forbids NUL even escaped"
        );
    }
}
