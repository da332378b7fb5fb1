//! A pair's channels, on DynamoDB Local (through the real SDK) and in memory: C and D share a
//! voice-only number, whose pair takes calls and refuses texts (`channel_unavailable`); N and
//! D share a voice+sms number, whose pair takes both.

use std::sync::Arc;

use vnmask::domain::{
    Capabilities, Contact, NumberState, Participant, PoolNumber, Session, SessionState,
    VirtualNumber,
};
use vnmask::store::memory::MemoryStore;
use vnmask::store::{PairWrite, SessionCommit, Store};
use vnmask_tests::people::{customer, driver};
use vnmask_tests::{local_dynamo, now, seed_pool};

use crate::common;
use common::*;

const VOICE_ONLY: Capabilities = Capabilities {
    voice: true,
    sms: false,
};

/// An ExoPhone-style number: voice only.
fn voice_only_vn() -> VirtualNumber {
    VirtualNumber::parse("+918047113155").unwrap()
}

fn voice_and_sms_vn() -> VirtualNumber {
    VirtualNumber::parse("+911140001000").unwrap()
}

/// A live two-party order whose one contact is on `number`, carrying `capabilities`, written as
/// the assigner writes it: the session and both directions of its pair in one commit.
async fn order(
    store: &dyn Store,
    order: &str,
    people: [&Participant; 2],
    number: VirtualNumber,
    capabilities: Capabilities,
) {
    let t = now();
    let session = Session {
        order_id: order.parse().unwrap(),
        market: "IN".parse().unwrap(),
        version: 1,
        revision: 1,
        handovers: Vec::new(),
        state: SessionState::Active,
        participants: people.iter().map(|p| (*p).clone()).collect(),
        contacts: vec![Contact {
            a: people[0].user_id.clone(),
            b: people[1].user_id.clone(),
            number,
            capabilities,
            pins: None,
        }],
        updated_at: t,
        routes_until: t + 3600,
        record: false,
        closed_after_end: Vec::new(),
    };
    let pairs = session.route_pairs(session.routes_until);
    store
        .commit(&SessionCommit {
            session_expires_at: t + 7200,
            expected_revision: None,
            session,
            pairs,
            pair_write: PairWrite::Claim,
            handovers: Vec::new(),
            delete_routes: Vec::new(),
            delete_pins: Vec::new(),
            former_users: Vec::new(),
            people_entries: true,
            now: t,
        })
        .await
        .expect("the order's pair is written");
}

struct Pairs {
    store: Arc<dyn Store>,
    c: Participant,
    n: Participant,
    d: Participant,
}

async fn pairs(store: Arc<dyn Store>) -> Pairs {
    let pool = [
        (voice_only_vn(), VOICE_ONLY),
        (voice_and_sms_vn(), Capabilities::VOICE_AND_SMS),
    ]
    .map(|(number, capabilities)| PoolNumber {
        number,
        provider: "static".parse().unwrap(),
        market: "IN".parse().unwrap(),
        capabilities,
        state: NumberState::Active,
        hold: None,
    });
    seed_pool(store.as_ref(), &pool).await;
    let (c, n, d) = (customer(1), customer(2), driver(1));
    order(
        store.as_ref(),
        "ord-c",
        [&c, &d],
        voice_only_vn(),
        VOICE_ONLY,
    )
    .await;
    order(
        store.as_ref(),
        "ord-n",
        [&n, &d],
        voice_and_sms_vn(),
        Capabilities::VOICE_AND_SMS,
    )
    .await;
    Pairs { store, c, n, d }
}

fn generic_text(caller: &str, dialled: &str) -> http::Request<axum::body::Body> {
    generic_signed(&generic_body(caller, dialled, "sms"), now(), GENERIC_SECRET)
}

async fn a_text_to_a_voice_only_pair_is_refused_both_ways(p: Pairs) {
    let app = app(p.store.clone());
    let vn = voice_only_vn();
    for (from, to) in [(&p.c, &p.d), (&p.d, &p.c)] {
        // GIVEN a live voice-only pair; WHEN one side texts its number through Twilio
        let answer = send(&app, twilio_text(phone(from), vn.as_str(), "at the gate")).await;
        // THEN Twilio gets an empty answer: no reply, nothing relayed to the other side.
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(
            answer.body,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>"
        );
        assert!(!answer.body.contains(phone(to)));
        // AND a generic provider is told why.
        let answer = send(&app, generic_text(phone(from), vn.as_str())).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(
            answer.json(),
            serde_json::json!({"action": "reject", "reason": "channel_unavailable"})
        );
    }
}

async fn a_call_on_a_voice_only_pair_connects(p: Pairs) {
    let app = app(p.store.clone());
    let vn = voice_only_vn();
    for (from, to) in [(&p.c, &p.d), (&p.d, &p.c)] {
        let answer = send(&app, twilio_call(phone(from), vn.as_str())).await;
        assert_eq!(
            answer.dial(),
            Some((vn.as_str().to_owned(), phone(to).to_owned())),
            "{}",
            answer.body
        );
        let answer = send(&app, generic_call(phone(from), vn.as_str())).await;
        assert_eq!(
            answer.json(),
            serde_json::json!({"action": "connect", "callee": phone(to), "caller_id": vn.as_str()})
        );
    }
}

async fn a_text_to_a_voice_and_sms_pair_is_relayed(p: Pairs) {
    let app = app(p.store.clone());
    let vn = voice_and_sms_vn();
    let answer = send(&app, twilio_text(phone(&p.n), vn.as_str(), "at the gate")).await;
    assert_eq!(
        answer
            .body
            .matches(&format!("<Message to=\"{}\"", phone(&p.d)))
            .count(),
        1,
        "{}",
        answer.body
    );
    let answer = send(&app, generic_text(phone(&p.d), vn.as_str())).await;
    assert_eq!(answer.json()["action"], "connect", "{}", answer.body);
    assert_eq!(answer.json()["callee"], phone(&p.n));
}

async fn a_stranger_texting_a_voice_only_number_learns_nothing_of_its_channels(p: Pairs) {
    let app = app(p.store.clone());
    let answer = send(
        &app,
        generic_text(phone(&customer(9)), voice_only_vn().as_str()),
    )
    .await;
    assert_eq!(answer.json()["reason"], "no_route");
    // N has no pair on C's number either.
    let answer = send(&app, generic_text(phone(&p.n), voice_only_vn().as_str())).await;
    assert_eq!(answer.json()["reason"], "no_route");
}

async fn memory() -> Pairs {
    pairs(Arc::new(MemoryStore::new())).await
}

async fn dynamo() -> Pairs {
    pairs(local_dynamo().await.store).await
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod in_memory {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::memory().await).await
            })*
        }
        mod on_dynamodb_local {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::dynamo().await).await
            })*
        }
    };
}

on_both_stores!(
    a_text_to_a_voice_only_pair_is_refused_both_ways,
    a_call_on_a_voice_only_pair_connects,
    a_text_to_a_voice_and_sms_pair_is_relayed,
    a_stranger_texting_a_voice_only_number_learns_nothing_of_its_channels,
);

/// A route item written before routes carried channels has no `capabilities`: it reads as
/// voice and SMS, as it behaved then, so texts on it keep being relayed.
#[tokio::test]
async fn a_route_item_from_before_channels_takes_texts_as_it_did() {
    use aws_sdk_dynamodb::types::AttributeValue;

    let local = local_dynamo().await;
    let p = pairs(local.store.clone()).await;
    let vn = voice_only_vn();
    // GIVEN C and D's voice-only pair, with the attribute taken off both its route items
    let items = local
        .client
        .scan()
        .table_name(&local.table)
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    let routes: Vec<_> = items
        .iter()
        .filter(|i| {
            i["pk"].as_s().is_ok_and(|pk| pk.starts_with("ROUTE#"))
                && i["sk"].as_s().ok() == Some(&format!("VN#{}", vn.as_str()))
        })
        .collect();
    assert_eq!(routes.len(), 2, "both directions of the pair");
    for item in routes {
        assert_eq!(
            item["capabilities"],
            AttributeValue::L(vec![AttributeValue::S("voice".into())])
        );
        local
            .client
            .update_item()
            .table_name(&local.table)
            .key("pk", item["pk"].clone())
            .key("sk", item["sk"].clone())
            .update_expression("REMOVE capabilities")
            .send()
            .await
            .unwrap();
    }
    // WHEN C texts the number THEN the text is relayed to D
    let app = app(p.store.clone());
    let answer = send(&app, generic_text(phone(&p.c), vn.as_str())).await;
    assert_eq!(answer.json()["action"], "connect", "{}", answer.body);
    assert_eq!(answer.json()["callee"], phone(&p.d));
}
