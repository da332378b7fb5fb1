//! PIN recovery: a caller from a phone the platform does not know, with no route on the number
//! they dialled, is asked for a PIN; the right one stands in for the participant it was given
//! to and reaches that participant's counterpart only; guessing is bounded per call, per caller
//! and hour, and per number. On both stores (the limits under concurrency on DynamoDB Local).

use std::sync::Arc;

use axum::body::Body;
use http::Request;
use vnmask::assignment::{Assigner, OrderUpdate};
use vnmask::domain::{Participant, Pin, VirtualNumber};
use vnmask::providers::{exotel, twilio};
use vnmask::store::Store;
use vnmask_tests::people::{customer, driver};
use vnmask_tests::{now, pool, seed_pool};
use webhook::WebhookConfig;

use crate::common;
use common::*;

/// A phone nobody registered: C's second SIM, say.
const STRANGER: &str = "+919720000042";

/// C and D's order, and X and Y's on the same number, in a market with PINs.
struct PinSeeds {
    store: Arc<dyn Store>,
    c: Participant,
    d: Participant,
    y: Participant,
    vn: VirtualNumber,
    /// The PINs given to C (reaches D), to D (reaches C) and to X (reaches Y).
    pin_c: Pin,
    pin_d: Pin,
    pin_x: Pin,
}

async fn pin_seeds(store: Arc<dyn Store>) -> PinSeeds {
    seed_pool(store.as_ref(), &pool("IN", 1)).await;
    let mut settings = settings();
    settings.pin_markets.insert(vnmask_tests::market("IN"));
    let assigner = Assigner::new(store.clone(), settings);
    let (c, d, x, y) = (customer(1), driver(1), customer(2), driver(2));
    for (order, people) in [
        ("ord-c", [c.clone(), d.clone()]),
        ("ord-x", [x.clone(), y.clone()]),
    ] {
        let update: OrderUpdate = assign(order, &people);
        assigner.apply(&update, now()).await.unwrap();
    }
    let session = |order: &str| {
        let store = store.clone();
        let order = order.to_owned();
        async move {
            store
                .session(&order.parse().unwrap())
                .await
                .unwrap()
                .unwrap()
        }
    };
    let (sc, sx) = (session("ord-c").await, session("ord-x").await);
    let vn = sc.contacts[0].number.clone();
    assert_eq!(
        sx.contacts[0].number, vn,
        "a pool of one: both orders share it"
    );
    PinSeeds {
        pin_c: sc.contacts[0].pin_of(&c.user_id).unwrap().clone(),
        pin_d: sc.contacts[0].pin_of(&d.user_id).unwrap().clone(),
        pin_x: sx.contacts[0].pin_of(&x.user_id).unwrap().clone(),
        store,
        c,
        d,
        y,
        vn,
    }
}

fn with_pins() -> WebhookConfig {
    let mut env = env();
    env.insert("VNMASK_PIN_RECOVERY".into(), "true".into());
    WebhookConfig::from_source(&env).unwrap()
}

fn twilio_call_as(sid: &str, from: &str, to: &str) -> Request<Body> {
    let mut params = voice_params(from, to);
    params.retain(|(k, _)| *k != "CallSid");
    params.push(("CallSid", sid));
    twilio_request(VOICE, &params)
}

fn twilio_pin(sid: &str, from: &str, to: &str, digits: &str) -> Request<Body> {
    twilio_request(
        twilio::PIN_PATH,
        &[
            ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
            ("CallSid", sid),
            ("From", from),
            ("To", to),
            ("Digits", digits),
            ("FinishedOnKey", ""),
        ],
    )
}

fn generic_pin(call_id: &str, caller: &str, dialled: &str, digits: &str) -> Request<Body> {
    let body = serde_json::json!({"call_id": call_id, "caller": caller, "dialled": dialled, "digits": digits});
    generic_signed_to(
        "/v1/providers/generic/pin",
        &body.to_string(),
        now(),
        GENERIC_SECRET,
    )
}

fn exotel_with_digits(sid: &str, from: &str, to: &str, digits: &str) -> Request<Body> {
    let query = form(&[
        ("CallSid", sid),
        ("CallFrom", from),
        ("CallTo", to),
        ("Direction", "incoming"),
        // Exotel wraps what a Gather applet collected in double quotes.
        ("digits", &format!("\"{digits}\"")),
        (exotel::TOKEN_PARAM, EXOTEL_TOKEN),
    ]);
    Request::get(format!("{EXOTEL}?{query}"))
        .body(Body::empty())
        .unwrap()
}

async fn a_stranger_is_asked_for_a_pin_only_where_recovery_is_on(s: PinSeeds) {
    let vn = s.vn.as_str();
    // Off (the default): refused as ever, on every provider.
    let off = app(s.store.clone());
    assert!(send(&off, twilio_call_as("CA01", STRANGER, vn))
        .await
        .is_twiml_refusal());
    let generic = send(&off, generic_call(STRANGER, vn)).await.json();
    assert_eq!(generic["action"], "reject");
    // A PIN sent anyway is not looked at.
    let sent = send(&off, twilio_pin("CA01", STRANGER, vn, s.pin_c.expose())).await;
    assert!(sent.dial().is_none(), "{}", sent.body);

    // On: Twilio gathers six digits for the PIN endpoint, then ends the call if none come.
    let on = app_with(s.store.clone(), with_pins(), None);
    let asked = send(&on, twilio_call_as("CA02", STRANGER, vn)).await;
    assert!(
        asked.body.contains(&format!(
            "<Gather input=\"dtmf\" numDigits=\"6\" timeout=\"10\" action=\"{BASE_URL}{}\">",
            twilio::PIN_PATH
        )),
        "{}",
        asked.body
    );
    assert!(asked.body.ends_with(&format!(
        "</Gather><Say>{REFUSAL}</Say><Hangup/></Response>"
    )));
    assert!(asked.dial().is_none());
    let generic = send(&on, generic_call(STRANGER, vn)).await.json();
    assert_eq!(
        generic,
        serde_json::json!({"action": "collect_pin", "again": false})
    );
    let exo = send(&on, exotel_call_as("ex01", STRANGER, vn)).await.json();
    assert_eq!(exo["destination"]["numbers"], serde_json::json!([]));
    // Texts are never asked for a PIN.
    let text = send(&on, twilio_text(STRANGER, vn, "hi")).await;
    assert!(!text.body.contains("Gather"), "{}", text.body);
}

async fn the_right_pin_reaches_that_participants_counterpart_on_each_provider(s: PinSeeds) {
    let app = app_with(s.store.clone(), with_pins(), None);
    let vn = s.vn.as_str();
    // C's PIN stands in for C: it reaches D, showing the number, as C's own phone would.
    let twilio = send(&app, twilio_pin("CA11", STRANGER, vn, s.pin_c.expose())).await;
    assert_eq!(twilio.dial(), Some((vn.to_owned(), phone(&s.d).to_owned())));
    // D's PIN reaches C.
    let twilio = send(&app, twilio_pin("CA12", STRANGER, vn, s.pin_d.expose())).await;
    assert_eq!(twilio.dial(), Some((vn.to_owned(), phone(&s.c).to_owned())));
    // X's PIN, of another order on the same number, reaches only X's counterpart.
    let twilio = send(&app, twilio_pin("CA13", STRANGER, vn, s.pin_x.expose())).await;
    assert_eq!(twilio.dial(), Some((vn.to_owned(), phone(&s.y).to_owned())));

    let generic = send(&app, generic_pin("g-1", STRANGER, vn, s.pin_c.expose()))
        .await
        .json();
    assert_eq!(
        generic,
        serde_json::json!({"action": "connect", "callee": phone(&s.d), "caller_id": vn})
    );
    let national = |e164: &str| format!("0{}", &e164[3..]);
    let exo = send(
        &app,
        exotel_with_digits("ex11", &national(STRANGER), &national(vn), s.pin_d.expose()),
    )
    .await
    .json();
    assert_eq!(
        exo["destination"]["numbers"],
        serde_json::json!([phone(&s.c)])
    );
    assert_eq!(exo["outgoing_phone_number"], vn);
}

async fn a_caller_with_a_route_is_never_asked_and_their_route_decides(s: PinSeeds) {
    let app = app_with(s.store.clone(), with_pins(), None);
    let vn = s.vn.as_str();
    let call = send(&app, twilio_call_as("CA21", phone(&s.c), vn)).await;
    assert!(!call.body.contains("Gather"), "{}", call.body);
    assert_eq!(call.dial(), Some((vn.to_owned(), phone(&s.d).to_owned())));
    // C keying X's PIN still reaches D, by C's own route.
    let keyed = send(&app, twilio_pin("CA22", phone(&s.c), vn, s.pin_x.expose())).await;
    assert_eq!(keyed.dial(), Some((vn.to_owned(), phone(&s.d).to_owned())));
}

async fn a_wrong_pin_is_asked_again_then_the_call_ends(s: PinSeeds) {
    let app = app_with(s.store.clone(), with_pins(), None);
    let vn = s.vn.as_str();
    let wrong = |n: u32| {
        // Neither any PIN of the number nor a PIN at all, in turn.
        let digits = if n == 2 { "12" } else { "000000" };
        assert!(![&s.pin_c, &s.pin_d, &s.pin_x]
            .iter()
            .any(|p| p.expose() == digits));
        twilio_pin("CA31", STRANGER, vn, digits)
    };
    for n in 1..=2 {
        let again = send(&app, wrong(n)).await;
        assert!(again.body.contains("<Gather "), "try {n}: {}", again.body);
        assert!(
            again.body.contains("That PIN did not work"),
            "{}",
            again.body
        );
    }
    let ended = send(&app, wrong(3)).await;
    assert_eq!(
        ended.body,
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Say>{REFUSAL}</Say><Hangup/></Response>")
    );
    // The call has had its tries: even the right PIN is refused now.
    let late = send(&app, twilio_pin("CA31", STRANGER, vn, s.pin_c.expose())).await;
    assert!(late.dial().is_none(), "{}", late.body);
    // A generic carrier hears `collect_pin` again, then `pin_wrong` (another phone: this one
    // has had 4 of its 6 tries on the number this hour).
    let g = |d: &str| generic_pin("g-31", "+919720000043", vn, d);
    assert_eq!(send(&app, g("000000")).await.json()["again"], true);
    assert_eq!(send(&app, g("000001")).await.json()["again"], true);
    assert_eq!(
        send(&app, g("000002")).await.json(),
        serde_json::json!({"action": "reject", "reason": "pin_wrong"})
    );
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $name() {
                let store: std::sync::Arc<dyn vnmask::store::Store> =
                    std::sync::Arc::new(vnmask::store::memory::MemoryStore::new());
                super::$name(super::pin_seeds(store).await).await
            })*
        }
        mod dynamodb {
            $(#[tokio::test] async fn $name() {
                let d = vnmask_tests::local_dynamo().await;
                super::$name(super::pin_seeds(d.store.clone()).await).await
            })*
        }
    };
}

on_both_stores! {
    a_stranger_is_asked_for_a_pin_only_where_recovery_is_on,
    the_right_pin_reaches_that_participants_counterpart_on_each_provider,
    a_caller_with_a_route_is_never_asked_and_their_route_decides,
    a_wrong_pin_is_asked_again_then_the_call_ends,
}

/// Sends every request at once, each on its own task; the answers in request order.
async fn all_at_once(app: &axum::Router, requests: Vec<Request<Body>>) -> Vec<Answer> {
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|req| {
            let app = app.clone();
            tokio::spawn(async move { send(&app, req).await })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

/// Guessing at once from many calls: one caller gets at most its hourly tries on a number, and
/// wrong PINs from many callers lock the number's PINs for the hour, the right one included.
#[tokio::test]
async fn the_hourly_cap_and_the_number_lock_hold_under_concurrent_attempts() {
    let d = vnmask_tests::local_dynamo().await;
    let s = pin_seeds(d.store.clone()).await;
    let app = app_with(s.store.clone(), with_pins(), None);
    let vn = s.vn.as_str();

    // One caller, 20 calls at once, each with a wrong PIN: 6 are looked at, the rest limited.
    let answers = all_at_once(
        &app,
        (0..20)
            .map(|i| {
                generic_pin(
                    &format!("burst-{i}"),
                    STRANGER,
                    vn,
                    &format!("{:06}", 100 + i),
                )
            })
            .collect(),
    )
    .await;
    let limited = answers
        .iter()
        .filter(|a| a.json()["reason"] == "pin_limited")
        .count();
    assert_eq!(
        limited,
        14,
        "{:?}",
        answers.iter().map(|a| a.json()).collect::<Vec<_>>()
    );

    // 14 more callers' wrong PINs bring the number to 20 failures: its PINs are locked.
    all_at_once(
        &app,
        (0..14)
            .map(|i| {
                generic_pin(
                    &format!("crowd-{i}"),
                    &format!("+9197200001{i:02}"),
                    vn,
                    "000000",
                )
            })
            .collect(),
    )
    .await;
    let locked = send(
        &app,
        generic_pin("late", "+919720000199", vn, s.pin_c.expose()),
    )
    .await
    .json();
    assert_eq!(
        locked,
        serde_json::json!({"action": "reject", "reason": "pin_limited"})
    );
}
