//! The assign handler against DynamoDB Local and moto's SQS, fed real SqsEvent fixtures.

use crate::common;

use std::sync::Arc;

use assign::outbox::attribute;
use assign::{RecordOutcome, RetryReason};
use common::*;
use serde_json::{json, Value};
use vnmask::domain::VirtualNumber;
use vnmask::routing::live_route;
use vnmask_tests::{now, participant, FaultyStore};

fn c() -> vnmask::domain::Participant {
    participant("customer", "u-c", "+919812345678")
}
fn n() -> vnmask::domain::Participant {
    participant("customer", "u-n", "+919812345679")
}
fn c2() -> vnmask::domain::Participant {
    participant("customer", "u-c2", "+919812345680")
}
fn d() -> vnmask::domain::Participant {
    participant("driver", "u-d", "+919898765432")
}
fn d2() -> vnmask::domain::Participant {
    participant("driver", "u-d2", "+919898765433")
}

#[tokio::test]
async fn driver_taking_two_orders_reaches_each_customer_on_its_own_number_until_grace_ends() {
    // GIVEN customers C and N order at the same time and driver D takes both (one batch)
    let fx = Fx::new().await;
    let report = fx.handler.process(fixture("seeds_assigned.json")).await;
    assert_eq!(labels(&report), ["applied", "applied"]);
    assert!(failed_ids(&report).is_empty());

    // THEN D has two different numbers, one reaching C and one reaching N, both ways
    let t = now();
    let to_c = fx.number_between("ord-1001", &d(), &c(), t).await;
    let to_n = fx.number_between("ord-1002", &d(), &n(), t).await;
    assert_ne!(to_c, to_n, "D must tell the two customers apart");
    let live: Vec<_> = fx.store.live_contacts(&d().phone, t).await.unwrap();
    assert_eq!(live.len(), 2);

    // WHEN both orders complete
    let report = fx.handler.process(fixture("seeds_completed.json")).await;
    assert_eq!(labels(&report), ["applied", "applied"]);
    let ended = now();

    // THEN the routes work through the grace period and are gone after it
    for (caller, vn) in [(d(), &to_c), (c(), &to_c), (d(), &to_n), (n(), &to_n)] {
        assert!(live_route(fx.store.as_ref(), &caller.phone, vn, ended + 60)
            .await
            .unwrap()
            .is_some());
        assert!(
            live_route(
                fx.store.as_ref(),
                &caller.phone,
                vn,
                ended + GRACE_SECONDS + 1
            )
            .await
            .unwrap()
            .is_none(),
            "{} can still call {vn} after the grace period",
            caller.user_id
        );
    }
}

#[tokio::test]
async fn reassigned_driver_loses_routes_at_once_and_customer_keeps_the_number() {
    let fx = Fx::new().await;
    // The fixture's two records, one batch each.
    let (mut assigned, mut reassigned) = (fixture("reassigned.json"), fixture("reassigned.json"));
    assigned.records.truncate(1);
    reassigned.records.remove(0);
    assert_eq!(labels(&fx.handler.process(assigned).await), ["applied"]);
    let t = now();
    let old = fx.number_between("ord-1101", &c(), &d(), t).await;

    assert_eq!(labels(&fx.handler.process(reassigned).await), ["applied"]);
    let t = now();
    let new = fx.number_between("ord-1101", &c(), &d2(), t).await;
    assert_eq!(
        new, old,
        "the customer keeps the number for the driver role"
    );
    assert!(live_route(fx.store.as_ref(), &d().phone, &old, t)
        .await
        .unwrap()
        .is_none());
    assert!(fx
        .store
        .live_contacts(&d().phone, t)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn shared_ride_driver_reaches_each_customer_who_cannot_reach_each_other() {
    let fx = Fx::new().await;
    let report = fx.handler.process(fixture("shared_ride.json")).await;
    assert_eq!(labels(&report), ["applied", "applied"]);
    let t = now();
    let to_c = fx.number_between("ord-1201", &d(), &c(), t).await;
    let to_c2 = fx.number_between("ord-1201", &d(), &c2(), t).await;
    assert_ne!(to_c, to_c2);
    let session = fx
        .store
        .session(&"ord-1201".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.version, 5);
    assert!(!session
        .contacts
        .iter()
        .any(|k| k.joins(&c().user_id, &c2().user_id)));
}

#[tokio::test]
async fn numbers_assigned_tells_each_participant_the_number_for_each_contact() {
    let fx = Fx::new().await;
    fx.handler.process(fixture("shared_ride.json")).await;
    let t = now();
    let to_c = fx.number_between("ord-1201", &d(), &c(), t).await;
    let to_c2 = fx.number_between("ord-1201", &d(), &c2(), t).await;

    let notes = fx.notifications().await;
    assert_eq!(notes.len(), 2, "one per applied participant list");
    let schema = validator(Some("NumbersAssigned"));
    for note in &notes {
        assert!(schema.is_valid(note), "{note} does not match the schema");
    }
    let latest = notes.iter().find(|n| n["version"] == 5).unwrap();
    let contacts_of = |user: &str| {
        let p = latest["participants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["user_id"] == user)
            .unwrap();
        let mut list: Vec<(String, String, String)> = p["contacts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["user_id"].as_str().unwrap().to_owned(),
                    k["role"].as_str().unwrap().to_owned(),
                    k["number"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        list.sort();
        list
    };
    let entry = |user: &str, role: &str, vn: &VirtualNumber| {
        (user.to_owned(), role.to_owned(), vn.as_str().to_owned())
    };
    assert_eq!(latest["type"], "NumbersAssigned");
    assert_eq!(latest["order_id"], "ord-1201");
    assert_eq!(latest["event_id"], "e-1201-5");
    assert_eq!(contacts_of("u-c"), [entry("u-d", "driver", &to_c)]);
    assert_eq!(contacts_of("u-c2"), [entry("u-d", "driver", &to_c2)]);
    let mut expected = vec![
        entry("u-c", "customer", &to_c),
        entry("u-c2", "customer", &to_c2),
    ];
    expected.sort();
    assert_eq!(contacts_of("u-d"), expected);

    let text = serde_json::to_string(&notes).unwrap();
    for number in fixture_phone_numbers() {
        assert!(
            !text.contains(&number),
            "a notification holds a real number"
        );
    }
}

#[tokio::test]
async fn completion_before_assignment_makes_the_late_assignment_stale() {
    let fx = Fx::new().await;
    assert_eq!(
        labels(&fx.handler.process(fixture("late_completion.json")).await),
        ["applied"]
    );
    let report = fx.handler.process(fixture("late_assignment.json")).await;
    assert_eq!(
        report.records[0].outcome,
        RecordOutcome::Stale { stored_version: 6 }
    );
    assert!(failed_ids(&report).is_empty());
    let t = now();
    assert!(fx
        .store
        .live_contacts(&c().phone, t)
        .await
        .unwrap()
        .is_empty());
    assert!(fx
        .store
        .live_contacts(&d().phone, t)
        .await
        .unwrap()
        .is_empty());
    assert!(fx.notifications().await.is_empty());
}

#[tokio::test]
async fn same_event_twice_changes_nothing() {
    let fx = Fx::new().await;
    fx.handler.process(fixture("seeds_assigned.json")).await;
    let before = fx.picture().await;

    // Redelivered as a whole batch…
    let report = fx.handler.process(fixture("seeds_assigned.json")).await;
    assert_eq!(labels(&report), ["stale", "stale"]);
    assert!(failed_ids(&report).is_empty());
    // …and published twice within one batch.
    let mut twice = fixture("seeds_assigned.json");
    let mut copy = twice.records[0].clone();
    copy.message_id = Some("2b0a5f0e-6f8e-4c57-9a43-0d7e3f1c9a11".into());
    twice.records.push(copy);
    let report = fx.handler.process(twice).await;
    assert_eq!(labels(&report), ["stale", "stale", "stale"]);

    assert_eq!(fx.picture().await, before);
    assert_eq!(
        fx.notifications().await.len(),
        2,
        "only the first delivery notifies"
    );
}

#[tokio::test]
async fn one_poison_message_goes_to_the_dead_letter_queue_and_the_other_nine_apply() {
    let fx = Fx::new().await;
    let event = fixture("batch_with_poison.json");
    let poison = event.records[6].clone();
    let report = fx.handler.process(event).await;

    let mut expected = vec!["applied"; 10];
    expected[6] = "dead_lettered";
    assert_eq!(labels(&report), expected);
    assert!(failed_ids(&report).is_empty(), "nothing is left for retry");
    for k in (1..=10).filter(|k| *k != 7) {
        assert_eq!(fx.version(&format!("ord-2{k:03}")).await, Some(1));
    }
    assert_eq!(fx.version("ord-2007").await, None);

    let letters = fx.dead_letters().await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.body, poison.body, "the original body, unchanged");
    assert_eq!(
        attribute(letter, attribute::REASON).as_deref(),
        Some("invalid_phone")
    );
    assert_eq!(
        attribute(letter, attribute::DETAIL).as_deref(),
        Some("field `participants[0].phone` is not a valid phone number (E.164, valid for its country)")
    );
    assert_eq!(
        attribute(letter, attribute::SOURCE_MESSAGE_ID),
        poison.message_id
    );
    assert_eq!(
        attribute(letter, attribute::SOURCE_QUEUE),
        poison.event_source_arn
    );

    // The metrics count both outcomes and the dead letter.
    let metrics: Vec<Value> = report.metrics().iter().map(|m| m.to_json()).collect();
    let events = |event_type: &str, outcome: &str| {
        metrics
            .iter()
            .find(|m| m["EventType"] == event_type && m["Outcome"] == outcome)
            .map(|m| m["Events"].clone())
    };
    assert_eq!(events("DriverAssigned", "applied"), Some(json!(9.0)));
    // A body that does not parse has no trustworthy type.
    assert_eq!(events("Unparsed", "dead_lettered"), Some(json!(1.0)));
    let totals = metrics.iter().find(|m| m.get("Records").is_some()).unwrap();
    assert_eq!(totals["DeadLettered"], json!(1.0));
    assert_eq!(totals["RetryReported"], json!(0.0));
    assert_eq!(
        totals["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "vnmask"
    );
}

#[tokio::test]
async fn every_kind_of_invalid_event_is_dead_lettered_with_its_reason() {
    let fx = Fx::new().await;
    let event = fixture("rejects.json");
    let ids = message_ids(&event);
    let report = fx.handler.process(event).await;
    let expected = [
        "malformed_json",
        "schema_violation",
        "schema_violation",
        "invalid_phone",
        "invalid_phone",
        "unknown_market",
        "person_twice",
        "too_many_participants",
        "schema_violation",
        "unknown_market",
    ];
    let reasons: Vec<&str> = report
        .records
        .iter()
        .map(|r| match &r.outcome {
            RecordOutcome::DeadLettered(rejection) => rejection.reason.as_str(),
            other => panic!("{other:?} is not dead-lettered"),
        })
        .collect();
    assert_eq!(reasons, expected);
    assert!(failed_ids(&report).is_empty());

    let letters = fx.dead_letters().await;
    assert_eq!(letters.len(), expected.len());
    for (id, reason) in ids.iter().zip(expected) {
        let letter = letters
            .iter()
            .find(|l| attribute(l, attribute::SOURCE_MESSAGE_ID).as_ref() == Some(id))
            .expect("each rejected record is dead-lettered");
        assert_eq!(
            attribute(letter, attribute::REASON).as_deref(),
            Some(reason)
        );
    }
    assert_eq!(fx.version("ord-9001").await, None);
}

#[tokio::test]
async fn unknown_event_type_is_acknowledged_and_counted() {
    let fx = Fx::new().await;
    let report = fx.handler.process(fixture("unknown_type.json")).await;
    assert_eq!(report.records[0].outcome, RecordOutcome::UnknownType);
    assert!(failed_ids(&report).is_empty());
    assert_eq!(fx.version("ord-1401").await, None);
    assert!(fx.dead_letters().await.is_empty());
    let counted = report.metrics().iter().map(|m| m.to_json()).any(|m| {
        m["EventType"] == "Other" && m["Outcome"] == "unknown_type" && m["Events"] == json!(1.0)
    });
    assert!(counted);
}

#[tokio::test]
async fn store_failing_for_some_orders_reports_exactly_their_records() {
    let faults = Arc::new(vnmask_tests::Faults::default());
    let injected = faults.clone();
    let fx = Fx::with(Setup {
        wrap: Box::new(move |inner| {
            Arc::new(FaultyStore {
                inner,
                faults: injected,
            })
        }),
        ..Setup::default()
    })
    .await;
    for order in ["ord-2003", "ord-2008"] {
        faults
            .broken_orders
            .lock()
            .unwrap()
            .insert(order.parse().unwrap());
    }
    let event = fixture("batch_with_poison.json");
    let ids = message_ids(&event);
    let report = fx.handler.process(event).await;

    let mut expected = vec![ids[2].clone(), ids[7].clone()];
    expected.sort();
    assert_eq!(failed_ids(&report), expected);
    assert_eq!(retry_reason(&report, 2), RetryReason::StoreUnavailable);
    let applied = labels(&report).iter().filter(|l| **l == "applied").count();
    assert_eq!(applied, 7);
    assert_eq!(labels(&report)[6], "dead_lettered");
    assert_eq!(fx.version("ord-2001").await, Some(1));
}

#[tokio::test]
async fn fifo_record_left_for_retry_holds_back_the_rest_of_its_group() {
    // One commit conflict and a single attempt: the first commit of the batch fails, transiently.
    // Orders run one at a time, so that the first commit is ord-3001's first record.
    let setup = || {
        let faults = Arc::new(vnmask_tests::Faults::default());
        faults
            .conflicts
            .store(1, std::sync::atomic::Ordering::SeqCst);
        let mut setup = Setup {
            concurrency: 1,
            wrap: Box::new(move |inner| Arc::new(FaultyStore { inner, faults })),
            ..Setup::default()
        };
        setup.settings.max_attempts = 1;
        setup
    };

    // FIFO: ord-3001's later records must not overtake its first one.
    let fx = Fx::with(setup()).await;
    let event = fixture("fifo_batch.json");
    let ids = message_ids(&event);
    let report = fx.handler.process(event).await;
    assert_eq!(
        labels(&report),
        ["retry", "applied", "retry", "applied", "retry"]
    );
    assert_eq!(retry_reason(&report, 0), RetryReason::Contention);
    assert_eq!(retry_reason(&report, 2), RetryReason::HeldBack);
    let mut expected = vec![ids[0].clone(), ids[2].clone(), ids[4].clone()];
    expected.sort();
    assert_eq!(failed_ids(&report), expected);
    assert_eq!(fx.version("ord-3001").await, None);
    assert_eq!(fx.version("ord-3002").await, Some(2));

    // The same records on a standard queue: versions decide, so later records go ahead.
    let fx = Fx::with(setup()).await;
    let mut event = fixture("fifo_batch.json");
    for r in &mut event.records {
        r.attributes.remove("MessageGroupId");
    }
    let report = fx.handler.process(event).await;
    assert_eq!(failed_ids(&report), [ids[0].clone()]);
    assert_eq!(fx.version("ord-3001").await, Some(3));
}

#[tokio::test]
async fn panic_in_one_order_leaves_only_that_order_for_retry() {
    // A bug below the handler: the store panics for one order.
    let faults = Arc::new(vnmask_tests::Faults::default());
    faults
        .panicking_orders
        .lock()
        .unwrap()
        .insert("ord-2004".parse().unwrap());
    let fx = Fx::with(Setup {
        wrap: Box::new(move |inner| Arc::new(FaultyStore { inner, faults })),
        ..Setup::default()
    })
    .await;
    let event = fixture("batch_with_poison.json");
    let ids = message_ids(&event);
    let report = fx.handler.process(event).await;
    assert_eq!(failed_ids(&report), [ids[3].clone()]);
    assert_eq!(retry_reason(&report, 3), RetryReason::Panicked);
    assert_eq!(
        labels(&report).iter().filter(|l| **l == "applied").count(),
        8
    );
    assert_eq!(fx.dead_letters().await.len(), 1);
}

#[tokio::test]
async fn unreachable_dead_letter_queue_leaves_the_poison_for_retry() {
    let endpoint = std::env::var("AWS_ENDPOINT_URL_SQS").unwrap();
    let fx = Fx::with(Setup {
        dead_letter_url: Some(format!("{endpoint}/123456789012/assign-no-such-queue")),
        ..Setup::default()
    })
    .await;
    let event = fixture("batch_with_poison.json");
    let ids = message_ids(&event);
    let report = fx.handler.process(event).await;
    assert_eq!(failed_ids(&report), [ids[6].clone()]);
    assert_eq!(retry_reason(&report, 6), RetryReason::DeadLetterUnavailable);
    assert_eq!(
        labels(&report).iter().filter(|l| **l == "applied").count(),
        9
    );
}

#[tokio::test]
async fn exhausted_pool_leaves_the_event_for_retry_and_counts_it() {
    // One number: D cannot dial it in two orders.
    let fx = Fx::with(Setup {
        pool_size: 1,
        ..Setup::default()
    })
    .await;
    let report = fx.handler.process(fixture("seeds_assigned.json")).await;
    let mut got = labels(&report);
    got.sort();
    assert_eq!(got, ["applied", "retry"]);
    let exhausted = report
        .records
        .iter()
        .position(|r| matches!(r.outcome, RecordOutcome::Retry { .. }))
        .unwrap();
    assert_eq!(retry_reason(&report, exhausted), RetryReason::PoolExhausted);
    assert_eq!(failed_ids(&report).len(), 1);
    let totals = report
        .metrics()
        .iter()
        .map(|m| m.to_json())
        .find(|m| m.get("Records").is_some())
        .unwrap();
    assert_eq!(totals["PoolExhausted"], json!(1.0));
    assert_eq!(totals["RetryReported"], json!(1.0));
}

#[tokio::test]
async fn contention_retries_are_counted() {
    let faults = Arc::new(vnmask_tests::Faults::default());
    faults
        .conflicts
        .store(2, std::sync::atomic::Ordering::SeqCst);
    let fx = Fx::with(Setup {
        wrap: Box::new(move |inner| Arc::new(FaultyStore { inner, faults })),
        ..Setup::default()
    })
    .await;
    let report = fx.handler.process(fixture("late_assignment.json")).await;
    assert_eq!(
        report.records[0].outcome,
        RecordOutcome::Applied { attempts: 3 }
    );
    let totals = report
        .metrics()
        .iter()
        .map(|m| m.to_json())
        .find(|m| m.get("Records").is_some())
        .unwrap();
    assert_eq!(totals["ContentionRetries"], json!(2.0));
}
