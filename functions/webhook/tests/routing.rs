//! The seeds' call flow through the webhook, on DynamoDB Local (through the real SDK) and in memory:
//! customers C and N each have an order with driver D; each caller reaches the right person,
//! shown the right virtual number; strangers and expired routes are refused.

use std::time::Duration;

use vnmask::domain::NumberState;
use vnmask_tests::people::{customer, driver};
use vnmask_tests::{local_sdk, now, pool};
use webhook::InteractionQueue;

use crate::common;
use common::*;

async fn each_caller_reaches_the_right_person_with_the_right_caller_id(s: Seeds) {
    let app = app(s.store.clone());
    for (from, vn, to) in [
        (&s.c, &s.vn_cd, &s.d),
        (&s.d, &s.vn_cd, &s.c),
        (&s.n, &s.vn_nd, &s.d),
        (&s.d, &s.vn_nd, &s.n),
    ] {
        let answer = send(&app, twilio_call(phone(from), vn.as_str())).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.content_type, "text/xml; charset=utf-8");
        assert_eq!(
            answer.dial(),
            Some((vn.as_str().to_owned(), phone(to).to_owned())),
            "{} dialling {vn}: {}",
            from.user_id,
            answer.body
        );
        assert!(answer
            .body
            .contains("answerOnBridge=\"true\" timeout=\"25\" timeLimit=\"3600\""));
    }
}

async fn a_stranger_dialling_a_virtual_number_is_refused(s: Seeds) {
    let app = app(s.store.clone());
    let stranger = customer(9);
    for vn in [&s.vn_cd, &s.vn_nd] {
        let answer = send(&app, twilio_call(phone(&stranger), vn.as_str())).await;
        assert!(answer.is_twiml_refusal(), "{answer:?}");
    }
    // Nor can C use N's number with D.
    let answer = send(&app, twilio_call(phone(&s.c), s.vn_nd.as_str())).await;
    assert!(answer.is_twiml_refusal(), "{answer:?}");
}

async fn a_participant_of_another_order_sharing_the_number_reaches_their_own_counterpart(s: Seeds) {
    // An unrelated order: with two numbers in the pool it shares one with C's or N's order.
    let (x, y) = (customer(3), driver(2));
    apply(&s.store, "ord-x", &[x.clone(), y.clone()], now()).await;
    let shared = number_between(&s.store, "ord-x", &x, &y).await;
    assert!(shared == s.vn_cd || shared == s.vn_nd);
    let app = app(s.store.clone());
    let answer = send(&app, twilio_call(phone(&x), shared.as_str())).await;
    assert_eq!(
        answer.dial(),
        Some((shared.as_str().to_owned(), phone(&y).to_owned()))
    );
    let answer = send(&app, twilio_call(phone(&y), shared.as_str())).await;
    assert_eq!(
        answer.dial(),
        Some((shared.as_str().to_owned(), phone(&x).to_owned()))
    );
    // D dialling the same number still reaches his own customer, not X.
    let ds_customer = if shared == s.vn_cd { &s.c } else { &s.n };
    let answer = send(&app, twilio_call(phone(&s.d), shared.as_str())).await;
    assert_eq!(
        answer.dial(),
        Some((shared.as_str().to_owned(), phone(ds_customer).to_owned()))
    );
}

async fn an_expired_route_is_refused(s: Seeds) {
    let (old_c, old_d) = (customer(4), driver(3));
    // Assigned so long ago that its routes expired a minute ago.
    let ttl = settings().session_ttl.as_secs() as i64;
    apply(
        &s.store,
        "ord-old",
        &[old_c.clone(), old_d.clone()],
        now() - ttl - 60,
    )
    .await;
    let vn = number_between(&s.store, "ord-old", &old_c, &old_d).await;
    let answer = send(
        &app(s.store.clone()),
        twilio_call(phone(&old_c), vn.as_str()),
    )
    .await;
    assert!(answer.is_twiml_refusal(), "{answer:?}");
}

async fn a_draining_number_keeps_routing_its_live_sessions(s: Seeds) {
    let mut numbers = pool("IN", 2);
    for n in &mut numbers {
        n.state = NumberState::Draining;
        s.store.put_number(n).await.unwrap();
    }
    let answer = send(
        &app(s.store.clone()),
        twilio_call(phone(&s.c), s.vn_cd.as_str()),
    )
    .await;
    assert_eq!(
        answer.dial(),
        Some((s.vn_cd.as_str().to_owned(), phone(&s.d).to_owned()))
    );
}

async fn every_provider_connects_the_same_route(s: Seeds) {
    let app = app(s.store.clone());
    let exo = send(&app, exotel_call(phone(&s.n), s.vn_nd.as_str())).await;
    assert_eq!(exo.status, 200);
    assert_eq!(exo.content_type, "application/json");
    assert_eq!(
        exo.json(),
        serde_json::json!({
            "fetch_after_attempt": false,
            "destination": {"numbers": [phone(&s.d)]},
            "outgoing_phone_number": s.vn_nd.as_str(),
            "record": false,
            "max_ringing_duration": 25,
            "max_conversation_duration": 3600,
        })
    );
    let gen = send(&app, generic_call(phone(&s.d), s.vn_nd.as_str())).await;
    assert_eq!(
        gen.json(),
        serde_json::json!({"action": "connect", "callee": phone(&s.n), "caller_id": s.vn_nd.as_str()})
    );
    let refused = send(&app, generic_call(phone(&customer(9)), s.vn_nd.as_str())).await;
    assert_eq!(
        refused.json(),
        serde_json::json!({"action": "reject", "reason": "no_route"})
    );
    let refused = send(&app, exotel_call(phone(&customer(9)), s.vn_nd.as_str())).await;
    assert_eq!(
        refused.json(),
        serde_json::json!({"fetch_after_attempt": false, "destination": {"numbers": []}})
    );
}

async fn a_text_is_relayed_escaped_from_the_virtual_number(s: Seeds) {
    let nasty = "Gate 3 <b>now</b> & \"quick\" 'ok' ]]> <![CDATA[x]]>";
    let answer = send(
        &app(s.store.clone()),
        twilio_text(phone(&s.c), s.vn_cd.as_str(), nasty),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.body,
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message to=\"{}\" from=\"{}\">\
             Gate 3 &lt;b&gt;now&lt;/b&gt; &amp; &quot;quick&quot; &apos;ok&apos; ]]&gt; \
             &lt;![CDATA[x]]&gt;</Message></Response>",
            phone(&s.d),
            s.vn_cd
        )
    );
    let refused = send(
        &app(s.store.clone()),
        twilio_text(phone(&customer(9)), s.vn_cd.as_str(), nasty),
    )
    .await;
    assert_eq!(
        refused.body, "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>",
        "a refused text gets no reply and is not relayed"
    );
}

async fn a_call_from_an_alternate_phone_reaches_the_counterpart_and_is_called_back_on_the_main(
    s: Seeds,
) {
    // C adds a second SIM to her order (a newer snapshot).
    let second_sim = vnmask::domain::RealNumber::parse("+919720000011").unwrap();
    let c = vnmask::domain::Participant {
        alternate_phones: vec![second_sim.clone()],
        ..s.c.clone()
    };
    let update = vnmask::assignment::OrderUpdate {
        version: 2,
        ..assign("ord-c", &[c, s.d.clone()])
    };
    vnmask::assignment::Assigner::new(s.store.clone(), settings())
        .apply(&update, now())
        .await
        .unwrap();
    let app = app(s.store.clone());
    for provider_call in [twilio_call, exotel_call, generic_call] {
        let answer = send(&app, provider_call(second_sim.expose(), s.vn_cd.as_str())).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert!(answer.body.contains(phone(&s.d)), "{}", answer.body);
        assert!(answer.body.contains(s.vn_cd.as_str()), "{}", answer.body);
    }
    // D calling back on the number rings C's main phone, never the second SIM.
    let back = send(&app, twilio_call(phone(&s.d), s.vn_cd.as_str())).await;
    assert_eq!(
        back.dial(),
        Some((s.vn_cd.as_str().to_owned(), phone(&s.c).to_owned()))
    );
    // The second SIM is nobody on N's number.
    let elsewhere = send(&app, twilio_call(second_sim.expose(), s.vn_nd.as_str())).await;
    assert!(elsewhere.is_twiml_refusal(), "{elsewhere:?}");
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $name() { super::$name(super::memory().await).await })*
        }
        mod dynamodb {
            $(#[tokio::test] async fn $name() { super::$name(super::dynamo().await).await })*
        }
    };
}

on_both_stores! {
    each_caller_reaches_the_right_person_with_the_right_caller_id,
    a_stranger_dialling_a_virtual_number_is_refused,
    a_participant_of_another_order_sharing_the_number_reaches_their_own_counterpart,
    an_expired_route_is_refused,
    a_draining_number_keeps_routing_its_live_sessions,
    every_provider_connects_the_same_route,
    a_text_is_relayed_escaped_from_the_virtual_number,
    a_call_from_an_alternate_phone_reaches_the_counterpart_and_is_called_back_on_the_main,
}

/// One read of the route, and in parallel one conditional put of the call id (the replay
/// ledger): no other round trip before the answer. After it, a connected call is noted on its
/// ledger entry (one update), for the provider's report of its end.
#[tokio::test]
async fn a_call_costs_one_dynamodb_read_and_one_ledger_write() {
    let s = dynamo().await;
    let calls = s.calls.clone().unwrap();
    let app = app(s.store.clone());
    for (req, connected) in [
        (twilio_call(phone(&s.c), s.vn_cd.as_str()), true),
        (twilio_call(phone(&customer(9)), s.vn_cd.as_str()), false),
        (exotel_call(phone(&s.n), s.vn_nd.as_str()), true),
        (generic_call(phone(&s.d), s.vn_nd.as_str()), true),
    ] {
        calls.reset();
        send(&app, req).await;
        // The after-the-answer work runs beside the test: give it its moment.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let mut expected: std::collections::BTreeMap<String, u64> =
            [("GetItem".to_owned(), 1), ("PutItem".to_owned(), 1)].into();
        if connected {
            expected.insert("UpdateItem".to_owned(), 1);
        }
        assert_eq!(
            calls.snapshot(),
            expected,
            "one GetItem and one PutItem per call, and a connected call's note"
        );
    }
    // Nothing to look up for a withheld caller: no read at all.
    calls.reset();
    let answer = send(&app, twilio_call("anonymous", s.vn_cd.as_str())).await;
    assert!(answer.is_twiml_refusal());
    assert_eq!(calls.total(), 0);
}

#[tokio::test]
async fn an_unreachable_interactions_queue_never_fails_the_call() {
    let s = memory().await;
    let sdk = local_sdk().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let missing = format!(
        "{}/000000000000/no-such-queue",
        std::env::var("AWS_ENDPOINT_URL_SQS").unwrap()
    );
    let queue = InteractionQueue::new(sqs, missing, Duration::from_millis(200));
    let app = app_with(s.store.clone(), config(), Some(queue));
    let started = std::time::Instant::now();
    let answer = send(&app, twilio_call(phone(&s.c), s.vn_cd.as_str())).await;
    assert_eq!(
        answer.dial(),
        Some((s.vn_cd.as_str().to_owned(), phone(&s.d).to_owned()))
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}
