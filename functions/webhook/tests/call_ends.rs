//! How a connected call ended: each provider's report (Twilio's `<Dial action>`, Exotel's
//! Passthru after Connect, the generic callback) is read against what the webhook noted of the
//! call after its answer, by call id alone, and recorded once on the interactions stream; so is
//! where a recorded order's call recording is. On both stores; needs moto's SQS and DynamoDB
//! Local.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::Request;
use serde_json::Value;
use vnmask::providers::{exotel, twilio};
use vnmask_tests::local_sdk;
use webhook::{router, Drain, InteractionQueue, Outbox, Webhook, ANSWER_WAIT};

use crate::common;
use common::*;

const CALL_SID: &str = "CAfedcba9876543210fedcba9876543210";

struct Fx {
    app: axum::Router,
    drain: Drain,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    s: Seeds,
    invocations: usize,
}

impl Fx {
    async fn new(s: Seeds) -> Fx {
        let sqs = aws_sdk_sqs::Client::new(&local_sdk().await);
        let queue_url = new_queue(&sqs).await;
        let queue = InteractionQueue::new(sqs.clone(), queue_url.clone(), Duration::from_secs(2));
        let (outbox, drain) = Outbox::new(Some(queue));
        let app = router(Arc::new(Webhook::new(
            s.store.clone(),
            config(),
            Some(outbox),
        )));
        Fx {
            app,
            drain,
            sqs,
            queue_url,
            s,
            invocations: 0,
        }
    }

    /// One invocation, as Lambda runs it: the answer, then the after-the-answer work.
    async fn invoke(&mut self, req: Request<Body>) -> Answer {
        self.invocations += 1;
        let id = format!("req-{}", self.invocations);
        let answer = send(&self.app, in_invocation(req, &id)).await;
        self.drain.flush_invocation(&id, ANSWER_WAIT).await;
        answer
    }

    /// The events published so far, with a check that no real number went out.
    async fn events(&self) -> Vec<Value> {
        let events = published(&self.sqs, &self.queue_url).await;
        let all = serde_json::to_string(&events).unwrap();
        for person in [&self.s.c, &self.s.d, &self.s.n] {
            assert!(!all.contains(&phone(person)[3..]), "a real number: {all}");
        }
        events
    }

    /// The outcome events published so far.
    async fn outcomes(&self) -> Vec<Value> {
        of_kind(self.events().await, "outcome")
    }
}

fn of_kind(events: Vec<Value>, kind: &str) -> Vec<Value> {
    events.into_iter().filter(|e| e["kind"] == kind).collect()
}

fn dial_end(call_sid: &str, status: &str, duration: &str) -> Request<Body> {
    // Twilio's documented <Dial action> parameters.
    twilio_request(
        twilio::DIAL_END_PATH,
        &[
            ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
            ("ApiVersion", "2010-04-01"),
            ("CallSid", call_sid),
            ("CallStatus", "in-progress"),
            ("DialCallSid", "CA0123456789abcdef0123456789abcdef"),
            ("DialCallStatus", status),
            ("DialCallDuration", duration),
            ("Direction", "inbound"),
        ],
    )
}

fn exotel_end(call_sid: &str, status: &str, duration: &str, token: &str) -> Request<Body> {
    exotel_end_with(call_sid, status, duration, token, &[])
}

fn exotel_end_with(
    call_sid: &str,
    status: &str,
    duration: &str,
    token: &str,
    more: &[(&str, &str)],
) -> Request<Body> {
    // The Passthru applet placed after Connect, as Exotel sends it.
    let mut params = vec![
        ("CallSid", call_sid),
        ("CallFrom", "09810000001"),
        ("CallTo", "01140001000"),
        ("Direction", "incoming"),
        ("Created", "Wed, 02 Dec 2026 10:15:00"),
        ("DialCallDuration", duration),
        ("StartTime", "2026-12-02 10:15:00"),
        ("EndTime", "1970-01-01 05:30:00"),
        ("CallType", "completed"),
        ("DialWhomNumber", "09710000001"),
        ("DialCallStatus", status),
        ("digits", ""),
        (exotel::TOKEN_PARAM, token),
    ];
    params.extend_from_slice(more);
    let query = form(&params);
    Request::get(format!("/v1/providers/exotel/call-end?{query}"))
        .body(Body::empty())
        .unwrap()
}

fn generic_end(body: &str, secret: &str) -> Request<Body> {
    generic_signed_to(
        "/v1/providers/generic/call-end",
        body,
        vnmask_tests::now(),
        secret,
    )
}

/// The example of the interactions stream's `kind` in docs/events.md.
fn documented_event(kind: &str) -> Value {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/events.md"))
        .unwrap();
    doc.split("```json")
        .skip(1)
        .map(|block| serde_json::from_str::<Value>(block.split("```").next().unwrap()).unwrap())
        .find(|example| example["kind"] == kind)
        .unwrap_or_else(|| panic!("docs/events.md shows a {kind} event"))
}

async fn twilio_reports_a_connected_calls_end_once(s: Seeds) {
    let mut fx = Fx::new(s).await;
    let (c, vn) = (phone(&fx.s.c).to_owned(), fx.s.vn_cd.clone());

    // GIVEN C's call to D, connected, and Twilio told where to report its end
    let answer = fx.invoke(twilio_call(&c, vn.as_str())).await;
    assert!(
        answer
            .body
            .contains(&format!(" action=\"{BASE_URL}{}\"", twilio::DIAL_END_PATH)),
        "{}",
        answer.body
    );

    // WHEN Twilio reports it answered and lasted 42 s
    let end = fx.invoke(dial_end(CALL_SID, "completed", "42")).await;

    // THEN the call simply ends, and its outcome is on the stream, by role and order
    assert_eq!(end.status.as_u16(), 200);
    assert!(end.body.ends_with("<Response></Response>"), "{}", end.body);
    let events = fx.events().await;
    let decisions = of_kind(events.clone(), "decision");
    let outcomes = of_kind(events, "outcome");
    assert_eq!((decisions.len(), outcomes.len()), (1, 1), "{outcomes:?}");
    let o = &outcomes[0];
    assert_eq!(o["provider"], "twilio");
    assert_eq!(o["call_id"], CALL_SID);
    assert_eq!(o["order_id"], "ord-c");
    assert_eq!(o["number"], vn.as_str());
    assert_eq!(o["market"], "IN");
    assert_eq!(o["direction"], "customer->driver");
    assert_eq!(o["status"], "answered");
    assert_eq!(o["talk_seconds"], 42);
    // AND both kinds of event have the fields docs/events.md shows
    for (kind, event) in [("decision", &decisions[0]), ("outcome", o)] {
        let documented = documented_event(kind);
        let keys = |v: &Value| {
            v.as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect::<std::collections::BTreeSet<_>>()
        };
        assert_eq!(keys(event), keys(&documented), "{kind}");
    }
    // AND it counts on the number's answer tally
    let tally =
        fx.s.store
            .answer_tally(&vn, vnmask_tests::now(), 7)
            .await
            .unwrap();
    assert_eq!((tally.attempted, tally.answered), (1, 1));

    // AND the same report again, an unknown call's and a forged one record nothing more
    assert_eq!(
        fx.invoke(dial_end(CALL_SID, "completed", "42"))
            .await
            .status
            .as_u16(),
        200
    );
    let unknown = fx
        .invoke(dial_end("CA00000000000000000000000000000000", "busy", "0"))
        .await;
    assert_eq!(unknown.status.as_u16(), 200, "accepted, not an error");
    let mut forged = dial_end("CA11111111111111111111111111111111", "busy", "0");
    forged
        .headers_mut()
        .insert(twilio::SIGNATURE_HEADER, "forged".parse().unwrap());
    assert_eq!(fx.invoke(forged).await.status.as_u16(), 403);
    assert_eq!(fx.outcomes().await, Vec::<Value>::new());
    let tally =
        fx.s.store
            .answer_tally(&vn, vnmask_tests::now(), 7)
            .await
            .unwrap();
    assert_eq!(
        tally.attempted, 1,
        "a repeat, an unknown call and a forgery count nothing"
    );
}

#[tokio::test]
async fn twilio_reports_a_connected_calls_end_once_in_memory() {
    twilio_reports_a_connected_calls_end_once(memory().await).await;
}

#[tokio::test]
async fn twilio_reports_a_connected_calls_end_once_on_dynamodb() {
    twilio_reports_a_connected_calls_end_once(dynamo().await).await;
}

#[tokio::test]
async fn exotels_passthru_reports_the_end_of_a_call_connected_in_national_form() {
    let mut fx = Fx::new(dynamo().await).await;
    let national = |e164: &str| format!("0{}", &e164[3..]);
    let (c, vn) = (phone(&fx.s.c).to_owned(), fx.s.vn_cd.clone());
    let sid = "b6cf1c5c8ec8d2bd0a1a6c4a4e3d1b7a";
    let answer = fx
        .invoke(exotel_call_as(sid, &national(&c), &national(vn.as_str())))
        .await;
    assert_eq!(answer.json()["outgoing_phone_number"], vn.as_str());

    let end = fx.invoke(exotel_end(sid, "busy", "12", EXOTEL_TOKEN)).await;
    assert_eq!(end.status.as_u16(), 200);
    assert_eq!(end.json()["result"], "recorded");
    let outcomes = fx.outcomes().await;
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(outcomes[0]["provider"], "exotel");
    assert_eq!(outcomes[0]["status"], "busy");
    assert_eq!(
        outcomes[0]["talk_seconds"], 0,
        "no talk time when unanswered"
    );

    let unknown = fx
        .invoke(exotel_end("c0ffee", "completed", "30", EXOTEL_TOKEN))
        .await;
    assert_eq!(unknown.json()["result"], "unknown_call");
    let again = fx.invoke(exotel_end(sid, "busy", "12", EXOTEL_TOKEN)).await;
    assert_eq!(again.json()["result"], "repeat");
    let wrong = fx
        .invoke(exotel_end(sid, "busy", "12", "not-the-token"))
        .await;
    assert_eq!(wrong.status.as_u16(), 403);
    assert_eq!(fx.outcomes().await, Vec::<Value>::new());
}

#[tokio::test]
async fn the_generic_callback_reports_a_calls_end_signed_like_a_route_question() {
    let mut fx = Fx::new(memory().await).await;
    let (d, vn) = (phone(&fx.s.d).to_owned(), fx.s.vn_cd.clone());
    let answer = fx.invoke(generic_call(&d, vn.as_str())).await;
    assert_eq!(answer.json()["action"], "connect");

    let body = r#"{"call_id": "carrier-77", "status": "no-answer"}"#;
    assert_eq!(
        fx.invoke(generic_end(body, "not-the-secret-at-all-0000000000000"))
            .await
            .status
            .as_u16(),
        403
    );
    let end = fx.invoke(generic_end(body, GENERIC_SECRET)).await;
    assert_eq!(end.json()["result"], "recorded");
    let outcomes = fx.outcomes().await;
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(outcomes[0]["provider"], "generic");
    assert_eq!(outcomes[0]["direction"], "driver->customer");
    assert_eq!(outcomes[0]["status"], "no-answer");

    let malformed = fx
        .invoke(generic_end(
            r#"{"call_id": "carrier-77", "status": "ringing"}"#,
            GENERIC_SECRET,
        ))
        .await;
    assert_eq!(malformed.status.as_u16(), 400);
}

/// Order `ord-c` (C and D) records its calls from version 2 on; `ord-n` (N and D) does not.
async fn record_ord_c(s: &Seeds) {
    let update = vnmask::assignment::OrderUpdate {
        version: 2,
        record: true,
        ..assign("ord-c", &[s.c.clone(), s.d.clone()])
    };
    vnmask::assignment::Assigner::new(s.store.clone(), settings())
        .apply(&update, vnmask_tests::now())
        .await
        .unwrap();
    assert_eq!(
        number_between(&s.store, "ord-c", &s.c, &s.d).await,
        s.vn_cd,
        "recording changes no number"
    );
}

const RECORDING_SID: &str = "RE0123456789abcdef0123456789abcdef";

fn recording_ready(call_sid: &str) -> Request<Body> {
    // Twilio's documented recording-status parameters for a <Dial record> recording.
    let url = format!(
        "https://api.twilio.com/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Recordings/{RECORDING_SID}"
    );
    twilio_request(
        twilio::RECORDING_PATH,
        &[
            ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
            ("CallSid", call_sid),
            ("RecordingSid", RECORDING_SID),
            ("RecordingUrl", &url),
            ("RecordingStatus", "completed"),
            ("RecordingDuration", "41"),
            ("RecordingChannels", "2"),
            ("RecordingSource", "DialVerb"),
            ("RecordingStartTime", "Thu, 03 Dec 2026 12:00:05 +0000"),
        ],
    )
}

async fn a_recorded_orders_twilio_call_is_recorded_and_its_recording_published(s: Seeds) {
    record_ord_c(&s).await;
    let mut fx = Fx::new(s).await;
    let (c, n, vn_cd, vn_nd) = (
        phone(&fx.s.c).to_owned(),
        phone(&fx.s.n).to_owned(),
        fx.s.vn_cd.clone(),
        fx.s.vn_nd.clone(),
    );

    // GIVEN N's order does not record: its call's TwiML is as it was before recording existed
    let plain = fx.invoke(twilio_call(&n, vn_nd.as_str())).await;
    assert!(plain.body.contains("<Dial "), "{}", plain.body);
    assert!(!plain.body.contains("record"), "{}", plain.body);

    // WHEN C calls D in the order that records
    let answer = fx
        .invoke(twilio_request(
            VOICE,
            &voice_params(&c, vn_cd.as_str())
                .into_iter()
                .map(|(k, v)| match k {
                    "CallSid" => (k, "CA22222222222222222222222222222222"),
                    _ => (k, v),
                })
                .collect::<Vec<_>>(),
        ))
        .await;

    // THEN Twilio records the bridged call from the answer, on two channels, and says where
    assert!(
        answer.body.contains(&format!(
            " record=\"record-from-answer-dual\" recordingStatusCallback=\"{BASE_URL}{}\"",
            twilio::RECORDING_PATH
        )),
        "{}",
        answer.body
    );

    // WHEN the call ends and Twilio reports the recording
    fx.invoke(dial_end(
        "CA22222222222222222222222222222222",
        "completed",
        "40",
    ))
    .await;
    let ready = fx
        .invoke(recording_ready("CA22222222222222222222222222222222"))
        .await;

    // THEN the recording is on the stream once, with the call's order, number and roles
    assert_eq!(ready.status.as_u16(), 200);
    assert_eq!(ready.json()["result"], "recorded");
    let recordings = of_kind(fx.events().await, "recording");
    assert_eq!(recordings.len(), 1, "{recordings:?}");
    let r = &recordings[0];
    assert_eq!(r["provider"], "twilio");
    assert_eq!(r["call_id"], "CA22222222222222222222222222222222");
    assert_eq!(r["order_id"], "ord-c");
    assert_eq!(r["number"], vn_cd.as_str());
    assert_eq!(r["direction"], "customer->driver");
    assert_eq!(r["recording_id"], RECORDING_SID);
    assert!(r["recording_url"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/Recordings/{RECORDING_SID}")));
    assert_eq!(r["recording_seconds"], 41);
    let keys = |v: &Value| {
        v.as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(keys(r), keys(&documented_event("recording")));

    // AND a repeat, a recording of a call not connected here and a forged one publish nothing
    let again = fx
        .invoke(recording_ready("CA22222222222222222222222222222222"))
        .await;
    assert_eq!(again.json()["result"], "repeat");
    let unknown = fx
        .invoke(recording_ready("CA33333333333333333333333333333333"))
        .await;
    assert_eq!(unknown.status.as_u16(), 200, "accepted, not an error");
    assert_eq!(unknown.json()["result"], "unknown_call");
    let mut forged = recording_ready("CA44444444444444444444444444444444");
    forged
        .headers_mut()
        .insert(twilio::SIGNATURE_HEADER, "forged".parse().unwrap());
    assert_eq!(fx.invoke(forged).await.status.as_u16(), 403);
    assert_eq!(of_kind(fx.events().await, "recording"), Vec::<Value>::new());
}

#[tokio::test]
async fn a_recorded_orders_twilio_call_is_recorded_and_its_recording_published_in_memory() {
    a_recorded_orders_twilio_call_is_recorded_and_its_recording_published(memory().await).await;
}

#[tokio::test]
async fn a_recorded_orders_twilio_call_is_recorded_and_its_recording_published_on_dynamodb() {
    a_recorded_orders_twilio_call_is_recorded_and_its_recording_published(dynamo().await).await;
}

#[tokio::test]
async fn exotel_records_only_a_recorded_orders_call_and_its_passthru_says_where() {
    let s = dynamo().await;
    record_ord_c(&s).await;
    let mut fx = Fx::new(s).await;
    let national = |e164: &str| format!("0{}", &e164[3..]);
    let (c, n, d) = (
        phone(&fx.s.c).to_owned(),
        phone(&fx.s.n).to_owned(),
        phone(&fx.s.d).to_owned(),
    );
    let (vn_cd, vn_nd) = (fx.s.vn_cd.clone(), fx.s.vn_nd.clone());

    let plain = fx
        .invoke(exotel_call_as(
            "a1",
            &national(&n),
            &national(vn_nd.as_str()),
        ))
        .await
        .json();
    assert_eq!(plain["record"], false);
    assert!(plain.get("recording_channels").is_none(), "{plain}");

    let recorded = fx
        .invoke(exotel_call_as(
            "b2",
            &national(&d),
            &national(vn_cd.as_str()),
        ))
        .await
        .json();
    assert_eq!(recorded["destination"]["numbers"][0], c.as_str());
    assert_eq!(recorded["record"], true);
    assert_eq!(recorded["recording_channels"], "dual");

    let url = "https://s3-ap-southeast-1.amazonaws.com/exotelrecordings/acme/b2.mp3";
    let end = exotel_end_with(
        "b2",
        "completed",
        "30",
        EXOTEL_TOKEN,
        &[("RecordingUrl", url)],
    );
    assert_eq!(fx.invoke(end).await.json()["result"], "recorded");
    let outcomes = fx.outcomes().await;
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(outcomes[0]["direction"], "driver->customer");
    assert_eq!(outcomes[0]["recording_url"], url);
    assert!(outcomes[0].get("recording_id").is_none());
}

#[tokio::test]
async fn the_generic_answer_asks_to_record_a_recorded_orders_call_and_its_end_says_where() {
    let s = memory().await;
    record_ord_c(&s).await;
    let mut fx = Fx::new(s).await;
    let (c, n, d) = (
        phone(&fx.s.c).to_owned(),
        phone(&fx.s.n).to_owned(),
        phone(&fx.s.d).to_owned(),
    );
    let call = |caller: &str, dialled: &str, call_id: &str| {
        let body = serde_json::json!({"caller": caller, "dialled": dialled, "call_id": call_id, "channel": "voice"});
        generic_signed(&body.to_string(), vnmask_tests::now(), GENERIC_SECRET)
    };
    let plain = fx
        .invoke(call(&n, fx.s.vn_nd.as_str(), "carrier-1"))
        .await
        .json();
    assert_eq!(
        plain,
        serde_json::json!({"action": "connect", "callee": d, "caller_id": fx.s.vn_nd.as_str()}),
        "no `record` unless the order records"
    );
    let recorded = fx
        .invoke(call(&c, fx.s.vn_cd.as_str(), "carrier-2"))
        .await
        .json();
    assert_eq!(recorded["record"], true);

    let body = r#"{"call_id": "carrier-2", "status": "answered", "talk_seconds": 30,
        "recording_id": "rec-9", "recording_url": "https://media.example.com/rec-9.wav"}"#;
    assert_eq!(
        fx.invoke(generic_end(body, GENERIC_SECRET)).await.json()["result"],
        "recorded"
    );
    let outcomes = fx.outcomes().await;
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(outcomes[0]["recording_id"], "rec-9");
    assert_eq!(
        outcomes[0]["recording_url"],
        "https://media.example.com/rec-9.wav"
    );
}

async fn answer_tallies_add_up_over_shards_and_days(store: Arc<dyn vnmask::store::Store>) {
    use vnmask::domain::{AnswerTally, CallId, VirtualNumber};
    const DAY: i64 = 86_400;
    let vn = VirtualNumber::parse("+911140009999").unwrap();
    let other = VirtualNumber::parse("+911140009998").unwrap();
    let today = vnmask_tests::now();
    // Today 40 calls, every third answered, over every shard; 5 yesterday, all answered;
    // 7 eight days ago; and one on another number.
    for n in 0..40 {
        let id = CallId::parse(&format!("CA{n:032x}")).unwrap();
        store
            .count_answer(&vn, &id, n % 3 == 0, today, today + 14 * DAY)
            .await
            .unwrap();
    }
    for n in 0..5 {
        let id = CallId::parse(&format!("CB{n:032x}")).unwrap();
        store
            .count_answer(&vn, &id, true, today - DAY, today + 13 * DAY)
            .await
            .unwrap();
    }
    for n in 0..7 {
        let id = CallId::parse(&format!("CC{n:032x}")).unwrap();
        store
            .count_answer(&vn, &id, false, today - 8 * DAY, today + 6 * DAY)
            .await
            .unwrap();
    }
    let id = CallId::parse("CD1").unwrap();
    store
        .count_answer(&other, &id, true, today, today + DAY)
        .await
        .unwrap();
    let shards: std::collections::BTreeSet<_> = (0..40)
        .map(|n| vnmask::store::answer_shard(&CallId::parse(&format!("CA{n:032x}")).unwrap()))
        .collect();
    assert_eq!(
        shards.len(),
        vnmask::store::ANSWER_SHARDS as usize,
        "every shard used"
    );

    let tally = |days| store.answer_tally(&vn, today, days);
    assert_eq!(
        tally(1).await.unwrap(),
        AnswerTally {
            attempted: 40,
            answered: 14
        }
    );
    assert_eq!(
        tally(7).await.unwrap(),
        AnswerTally {
            attempted: 45,
            answered: 19
        }
    );
    assert_eq!(tally(12).await.unwrap().attempted, 52);
    assert_eq!(tally(12).await.unwrap().rate(), Some(19.0 / 52.0));
    assert_eq!(
        store
            .answer_tally(&other, today, 7)
            .await
            .unwrap()
            .attempted,
        1
    );
}

#[tokio::test]
async fn answer_tallies_add_up_over_shards_and_days_in_memory() {
    answer_tallies_add_up_over_shards_and_days(Arc::new(vnmask::store::memory::MemoryStore::new()))
        .await;
}

#[tokio::test]
async fn answer_tallies_add_up_over_shards_and_days_on_dynamodb() {
    answer_tallies_add_up_over_shards_and_days(dynamo().await.store).await;
}
