//! Plivo, Vonage and Telnyx at the webhook, as Twilio, Exotel and the generic contract are: the
//! pair connects both ways in the provider's format, a stranger is refused in it, a request that
//! does not prove where it comes from gets 403 and costs no read, a malformed one 400 without
//! any number, a replayed call id is refused, and a failing store refuses within 2 s.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::Request;
use vnmask::aws::{sdk_config, SdkTimeouts};
use vnmask::domain::CallId;
use vnmask::providers::{plivo, telnyx, vonage};
use vnmask::store::dynamodb::DynamoStore;
use vnmask::store::Store;
use vnmask_tests::{now, test_vault};

use crate::common;
use common::*;

/// The digits of an E.164 number: how Plivo and Vonage write it.
fn digits(e164: &str) -> &str {
    e164.trim_start_matches('+')
}

fn connects(answer: &Answer, callee: &str, vn: &str) -> bool {
    answer.status == 200 && answer.body.contains(digits(callee)) && answer.body.contains(digits(vn))
}

fn plivo_refused(answer: &Answer) -> bool {
    answer.status == 200
        && answer.content_type.starts_with("text/xml")
        && answer.body.contains(REFUSAL)
        && answer.body.contains("<Hangup")
        && !answer.body.contains("<Dial")
}

fn vonage_refused(answer: &Answer) -> bool {
    answer.status == 200
        && answer.json() == serde_json::json!([{"action": "talk", "text": REFUSAL}])
}

fn telnyx_refused(answer: &Answer) -> bool {
    answer.status == 200
        && answer.body.contains(&format!("<Say>{REFUSAL}</Say>"))
        && !answer.body.contains("<Dial")
}

async fn pairs_connect_and_strangers_are_refused(s: Seeds) {
    let app = app(s.store.clone());
    let (c, n, d) = (phone(&s.c), phone(&s.n), phone(&s.d));
    let (cd, nd) = (s.vn_cd.as_str(), s.vn_nd.as_str());

    // Plivo XML: C reaches D on their number and D calls back; N is a stranger on it.
    let answer = send(&app, plivo_call(c, cd)).await;
    assert!(connects(&answer, d, cd), "{answer:?}");
    assert!(answer.body.contains("<Dial") && answer.body.contains("<Number>"));
    assert!(connects(&send(&app, plivo_call(d, cd)).await, c, cd));
    let stranger = send(&app, plivo_call(n, cd)).await;
    assert!(plivo_refused(&stranger), "{stranger:?}");
    assert!(!stranger.body.contains(digits(d)));

    // A Plivo text is relayed from the number; a stranger's is dropped, answering nothing.
    let text = plivo_request(
        PLIVO_SMS,
        &[
            ("MessageUUID", &unique_id("sms")),
            ("From", digits(n)),
            ("To", digits(nd)),
            ("Text", "at the <gate> & waiting"),
            ("Type", "sms"),
        ],
    );
    let relayed = send(&app, text).await;
    assert!(relayed.body.contains("<Message"), "{relayed:?}");
    assert!(relayed.body.contains(digits(d)) && relayed.body.contains("&lt;gate&gt;"));
    let dropped = plivo_request(
        PLIVO_SMS,
        &[
            ("MessageUUID", &unique_id("sms")),
            ("From", digits(c)),
            ("To", digits(nd)),
            ("Text", "hello"),
        ],
    );
    let dropped = send(&app, dropped).await;
    assert!(!dropped.body.contains("<Message") && !dropped.body.contains(digits(d)));

    // Vonage NCCO.
    let answer = send(&app, vonage_call(c, cd)).await;
    assert!(connects(&answer, d, cd), "{answer:?}");
    let ncco = answer.json();
    assert_eq!(ncco[0]["action"], "connect");
    assert_eq!(ncco[0]["from"], digits(cd));
    assert_eq!(ncco[0]["endpoint"][0]["number"], digits(d));
    assert!(vonage_refused(&send(&app, vonage_call(n, cd)).await));

    // Telnyx TeXML.
    let answer = send(&app, telnyx_call(c, cd)).await;
    assert!(connects(&answer, d, cd), "{answer:?}");
    assert!(answer.body.contains(&format!("callerId=\"{cd}\"")));
    assert!(telnyx_refused(&send(&app, telnyx_call(n, cd)).await));
}

#[tokio::test]
async fn each_provider_connects_the_pair_and_refuses_a_stranger_in_memory() {
    pairs_connect_and_strangers_are_refused(memory().await).await;
}

#[tokio::test]
async fn each_provider_connects_the_pair_and_refuses_a_stranger_on_dynamodb() {
    pairs_connect_and_strangers_are_refused(dynamo().await).await;
}

#[tokio::test]
async fn a_request_that_does_not_prove_its_provider_is_forbidden_and_reads_nothing() {
    let s = dynamo().await;
    let calls = s.calls.clone().unwrap();
    let app = app(s.store.clone());
    let (c, d, vn) = (phone(&s.c), phone(&s.d), s.vn_cd.as_str());
    let at = now();
    let plivo_params = [
        ("CallUUID", "pl-forged"),
        ("From", digits(c)),
        ("To", digits(vn)),
    ];
    let plivo_with = |signature: String, nonce: Option<&str>| {
        let mut req = Request::post(PLIVO_VOICE)
            .header("content-type", "application/x-www-form-urlencoded")
            .header(plivo::SIGNATURE_HEADER, signature);
        if let Some(nonce) = nonce {
            req = req.header(plivo::NONCE_HEADER, nonce);
        }
        req.body(Body::from(form(&plivo_params))).unwrap()
    };
    let url = format!("{BASE_URL}{PLIVO_VOICE}");
    let other_seed = [9u8; 32];
    let telnyx_body = form(&[("CallSid", "v3:forged"), ("From", c), ("To", vn)]);
    let telnyx_with = |seed: &[u8; 32], ts: i64, body: &str| {
        Request::post(TELNYX_VOICE)
            .header("content-type", "application/x-www-form-urlencoded")
            .header(telnyx::TIMESTAMP_HEADER, ts.to_string())
            .header(
                telnyx::SIGNATURE_HEADER,
                telnyx::sign(seed, &ts.to_string(), body.as_bytes()),
            )
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    let forged: Vec<(&str, Request<Body>)> = vec![
        (
            "plivo: another token",
            plivo_with(
                plivo::sign(b"not-the-token-at-all", "POST", &url, &plivo_params, "n1"),
                Some("n1"),
            ),
        ),
        (
            "plivo: no nonce",
            plivo_with(
                plivo::sign(PLIVO_TOKEN.as_bytes(), "POST", &url, &plivo_params, "n1"),
                None,
            ),
        ),
        (
            "plivo: signed for another caller",
            plivo_with(
                plivo::sign(
                    PLIVO_TOKEN.as_bytes(),
                    "POST",
                    &url,
                    &[
                        ("CallUUID", "pl-forged"),
                        ("From", digits(d)),
                        ("To", digits(vn)),
                    ],
                    "n1",
                ),
                Some("n1"),
            ),
        ),
        (
            "vonage: another secret",
            vonage_call_signed("vg-forged", c, vn, "another-secret-of-thirty-two-bytes", at),
        ),
        (
            "vonage: ten minutes old",
            vonage_call_signed("vg-forged", c, vn, VONAGE_SECRET, at - 600),
        ),
        (
            "vonage: no token",
            Request::post(VONAGE)
                .header("content-type", "application/json")
                .body(Body::from(r#"{"from":"1","to":"2","uuid":"x"}"#))
                .unwrap(),
        ),
        (
            "telnyx: another key",
            telnyx_with(&other_seed, at, &telnyx_body),
        ),
        (
            "telnyx: ten minutes old",
            telnyx_with(&TELNYX_SEED, at - 600, &telnyx_body),
        ),
        ("telnyx: body changed after signing", {
            let signed = telnyx_with(&TELNYX_SEED, at, &telnyx_body);
            let (parts, _) = signed.into_parts();
            let tampered = form(&[("CallSid", "v3:forged"), ("From", d), ("To", vn)]);
            Request::from_parts(parts, Body::from(tampered))
        }),
    ];
    for (what, req) in forged {
        calls.reset();
        let answer = send(&app, req).await;
        assert_eq!(answer.status, 403, "{what}: {answer:?}");
        assert!(!answer.body.contains(digits(d)), "{what}");
        assert_eq!(
            calls.total(),
            0,
            "{what}: a rejected request looks nothing up"
        );
    }
    // A rotation: Vonage's next secret is accepted as the current one.
    let rotated = vonage_call_signed(&unique_id("vg"), c, vn, VONAGE_NEXT_SECRET, at);
    assert!(connects(&send(&app, rotated).await, d, vn));
}

#[tokio::test]
async fn a_malformed_request_is_a_bad_request_that_names_no_number() {
    let s = memory().await;
    let app = app(s.store.clone());
    let (c, vn) = (phone(&s.c), s.vn_cd.as_str());
    let vonage_post = |body: &str| {
        Request::post(VONAGE)
            .header("content-type", "application/json")
            .header(
                vonage::AUTHORIZATION_HEADER,
                vonage::sign(VONAGE_SECRET.as_bytes(), Some(body.as_bytes()), now()),
            )
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    let malformed: Vec<(&str, Request<Body>)> = vec![
        (
            "plivo: no To",
            plivo_request(PLIVO_VOICE, &[("CallUUID", "pl-1"), ("From", digits(c))]),
        ),
        (
            "plivo: a call id of another alphabet",
            plivo_request(
                PLIVO_VOICE,
                &[
                    ("CallUUID", "pl 1/2"),
                    ("From", digits(c)),
                    ("To", digits(vn)),
                ],
            ),
        ),
        (
            "vonage: no uuid",
            vonage_post(&format!(
                r#"{{"from":"{}","to":"{}"}}"#,
                digits(c),
                digits(vn)
            )),
        ),
        ("vonage: not JSON", vonage_post("from=1")),
        (
            "telnyx: no CallSid",
            telnyx_signed(TELNYX_VOICE, form(&[("From", c), ("To", vn)]), now()),
        ),
    ];
    for (what, req) in malformed {
        let answer = send(&app, req).await;
        assert_eq!(answer.status, 400, "{what}: {answer:?}");
        assert!(
            !answer.body.contains(digits(c)) && !answer.body.contains(digits(vn)),
            "{what}: {answer:?}"
        );
    }
    // A withheld caller id is read, and refused in the provider's format.
    let withheld = send(
        &app,
        plivo_request(
            PLIVO_VOICE,
            &[
                ("CallUUID", "pl-2"),
                ("From", "anonymous"),
                ("To", digits(vn)),
            ],
        ),
    )
    .await;
    assert!(plivo_refused(&withheld), "{withheld:?}");
    let post = format!(
        r#"{{"from":"{}","to":"{}","uuid":"vg-post-1","conversation_uuid":"CON-1"}}"#,
        digits(c),
        digits(vn)
    );
    let answer = send(&app, vonage_post(&post)).await;
    assert!(
        connects(&answer, phone(&s.d), vn),
        "a POSTed answer_url: {answer:?}"
    );
    // GET is not served: its query is covered by no signature.
    let get = Request::get(format!("{VONAGE}?from=1&to=2&uuid=x"))
        .header(
            vonage::AUTHORIZATION_HEADER,
            vonage::sign(VONAGE_SECRET.as_bytes(), None, now()),
        )
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, get).await.status, 405);
    // A token signed without this body does not carry it.
    let unbound = Request::post(VONAGE)
        .header("content-type", "application/json")
        .header(
            vonage::AUTHORIZATION_HEADER,
            vonage::sign(VONAGE_SECRET.as_bytes(), None, now()),
        )
        .body(Body::from(post.clone()))
        .unwrap();
    assert_eq!(send(&app, unbound).await.status, 403);
}

#[tokio::test]
async fn a_replayed_call_id_is_refused_and_a_retry_answered() {
    let s = memory().await;
    let app = app(s.store.clone());
    let (c, d, vn) = (phone(&s.c), phone(&s.d), s.vn_cd.as_str());
    let (pl, vg, tx) = (unique_id("pl"), unique_id("vg"), unique_id("v3:tx"));
    let requests = || {
        vec![
            ("plivo-voice", pl.clone(), plivo_call_as(&pl, c, vn)),
            (
                "vonage-answer",
                vg.clone(),
                vonage_call_signed(&vg, c, vn, VONAGE_SECRET, now()),
            ),
            ("telnyx-voice", tx.clone(), telnyx_call_as(&tx, c, vn)),
        ]
    };
    for (endpoint, _, req) in requests().into_iter().chain(requests()) {
        let answer = send(&app, req).await;
        assert!(
            connects(&answer, d, vn),
            "{endpoint} and its retry: {answer:?}"
        );
    }
    // Their ids first seen two minutes ago: replays.
    let s = memory().await;
    let app = app_for(&s);
    let (c, d, vn) = (phone(&s.c), phone(&s.d), s.vn_cd.as_str());
    let requests = vec![
        ("plivo-voice", pl.clone(), plivo_call_as(&pl, c, vn)),
        (
            "vonage-answer",
            vg.clone(),
            vonage_call_signed(&vg, c, vn, VONAGE_SECRET, now()),
        ),
        ("telnyx-voice", tx.clone(), telnyx_call_as(&tx, c, vn)),
    ];
    for (endpoint, id, _) in &requests {
        s.store
            .sight(
                endpoint,
                &CallId::parse(id).unwrap(),
                now() - 120,
                now() + 86_400,
            )
            .await
            .unwrap();
    }
    let answers: Vec<Answer> = {
        let mut out = Vec::new();
        for (_, _, req) in requests {
            out.push(send(&app, req).await);
        }
        out
    };
    assert!(plivo_refused(&answers[0]), "{:?}", answers[0]);
    assert!(vonage_refused(&answers[1]), "{:?}", answers[1]);
    assert!(telnyx_refused(&answers[2]), "{:?}", answers[2]);
    assert!(answers.iter().all(|a| !a.body.contains(digits(d))));
}

fn app_for(s: &Seeds) -> axum::Router {
    app(s.store.clone())
}

/// A server that accepts connections and never answers.
fn black_hole() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn a_hanging_store_is_refused_in_each_format_within_two_seconds() {
    let sdk = sdk_config(SdkTimeouts::INTERACTIVE).await;
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk)
            .endpoint_url(black_hole())
            .build(),
    );
    let store: Arc<dyn Store> = Arc::new(DynamoStore::new(client, "vnmask-hangs", test_vault()));
    let app = app(store);
    let (c, vn) = ("+919810000001", "+911140001000");
    for (which, req) in [
        ("plivo", plivo_call(c, vn)),
        ("vonage", vonage_call(c, vn)),
        ("telnyx", telnyx_call(c, vn)),
    ] {
        let started = Instant::now();
        let answer = send(&app, req).await;
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "{which} took {took:?}");
        let refused = match which {
            "plivo" => plivo_refused(&answer),
            "vonage" => vonage_refused(&answer),
            _ => telnyx_refused(&answer),
        };
        assert!(refused, "{which}: {answer:?}");
    }
}

/// Telnyx's messaging webhook for an inbound text from `from` to `to`, signed.
fn telnyx_text(id: &str, from: &str, to: &str, text: &str) -> Request<Body> {
    let body = serde_json::json!({
        "data": {
            "event_type": "message.received",
            "id": format!("ev-{id}"),
            "record_type": "event",
            "payload": {
                "id": id,
                "direction": "inbound",
                "from": {"phone_number": from},
                "to": [{"phone_number": to}],
                "text": text,
                "type": "SMS"
            }
        },
        "meta": {"attempt": 1}
    })
    .to_string();
    let mut req = telnyx_signed("/v1/providers/telnyx/sms", body, now());
    req.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    req
}

#[tokio::test]
async fn a_telnyx_text_is_relayed_through_its_api_after_the_answer_and_a_strangers_is_not() {
    use wiremock::matchers::{body_json, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let telnyx_api = MockServer::start().await;
    let s = memory().await;
    let (c, n, d, vn) = (phone(&s.c), phone(&s.n), phone(&s.d), s.vn_cd.as_str());
    Mock::given(method("POST"))
        .and(path("/v2/messages"))
        .and(header("authorization", "Bearer KEY-telnyx-test"))
        .and(body_json(
            serde_json::json!({"from": vn, "to": d, "text": "at the gate"}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"data": {}})))
        .expect(1)
        .mount(&telnyx_api)
        .await;
    let mut env = env();
    env.insert("VNMASK_TELNYX_API_KEY".into(), "KEY-telnyx-test".into());
    env.insert("VNMASK_TELNYX_API_BASE".into(), telnyx_api.uri());
    let app = app_with(
        s.store.clone(),
        webhook::WebhookConfig::from_source(&env).unwrap(),
        None,
    );

    let message = unique_id("msg");
    let relayed = send(&app, telnyx_text(&message, c, vn, "at the gate")).await;
    assert_eq!(relayed.status, 200, "{relayed:?}");
    assert_eq!(relayed.json()["result"], "relayed");
    assert!(
        !relayed.body.contains(digits(d)),
        "the answer carries no number"
    );
    // Telnyx's retry of it (say, after a slow answer) is answered alike and sends nothing more.
    let retry = send(&app, telnyx_text(&message, c, vn, "at the gate")).await;
    assert_eq!(retry.json()["result"], "relayed");
    let stranger = send(&app, telnyx_text(&unique_id("msg"), n, vn, "hello?")).await;
    assert_eq!(stranger.json()["result"], "refused");
    // A delivery report is acknowledged and ignored.
    let report = serde_json::json!({"data": {"event_type": "message.finalized", "id": "ev-1",
        "payload": {"id": "m-1", "to": [{"phone_number": d, "status": "delivered"}]}}})
    .to_string();
    let report = send(
        &app,
        telnyx_signed("/v1/providers/telnyx/sms", report, now()),
    )
    .await;
    assert_eq!(report.json()["result"], "ignored");
    // The relay happens after the answer: wait for it (the mock expects exactly one send).
    for _ in 0..50 {
        if !telnyx_api.received_requests().await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Time for a second send, were the retry to make one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    telnyx_api.verify().await;
    // A forged one is forbidden.
    let mut forged = telnyx_text(&unique_id("msg"), c, vn, "x");
    forged.headers_mut().insert(
        telnyx::TIMESTAMP_HEADER,
        http::HeaderValue::from_static("1"),
    );
    assert_eq!(send(&app, forged).await.status, 403);
}
