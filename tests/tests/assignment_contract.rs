//! The assignment contract, run against both stores: DynamoDB Local through the real SDK, and memory.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use vnmask::assignment::{
    AssignError, AssignSettings, Assigner, EndTerms, OrderChange, OrderUpdate, Outcome,
};
use vnmask::domain::{
    CallId, Capabilities, Channel, Direction, NumberState, Participant, PoolNumber, RouteKey,
    Session, SessionState, VirtualNumber,
};
use vnmask::routing::{decide, live_route, Decision, Refusal, RouteQuery};
use vnmask::store::memory::MemoryStore;
use vnmask::store::AssignmentStore;
use vnmask::store::{audit, PairWrite, SessionCommit, Store};
use vnmask_tests::people::{customer, driver, merchant};
use vnmask_tests::{local_dynamo, market, now, pool, seed_pool, FaultyStore, LocalDynamo};

struct Fx {
    store: Arc<dyn Store>,
    assigner: Assigner,
    dynamo: Option<LocalDynamo>,
}

fn settings() -> AssignSettings {
    let mut s = AssignSettings::for_markets([market("IN")]);
    s.grace = Duration::from_secs(1800);
    s
}

async fn memory_fx(pool_size: usize) -> Fx {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    seed_pool(store.as_ref(), &pool("IN", pool_size)).await;
    Fx {
        assigner: Assigner::new(store.clone(), settings()),
        store,
        dynamo: None,
    }
}

async fn dynamo_fx(pool_size: usize) -> Fx {
    let d = local_dynamo().await;
    let store: Arc<dyn Store> = d.store.clone();
    seed_pool(store.as_ref(), &pool("IN", pool_size)).await;
    d.calls.reset();
    Fx {
        assigner: Assigner::new(store.clone(), settings()),
        store,
        dynamo: Some(d),
    }
}

fn assign(order: &str, version: u64, people: &[Participant]) -> OrderUpdate {
    OrderUpdate {
        order_id: order.parse().unwrap(),
        market: market("IN"),
        version,
        record: false,
        change: OrderChange::Participants(people.to_vec()),
    }
}

fn end(order: &str, version: u64) -> OrderUpdate {
    OrderUpdate {
        order_id: order.parse().unwrap(),
        market: market("IN"),
        version,
        record: false,
        change: OrderChange::End(EndTerms::default()),
    }
}

impl Fx {
    async fn apply(&self, u: &OrderUpdate, at: i64) -> Outcome {
        self.assigner.apply(u, at).await.expect("update applies")
    }

    /// The number `from` dials to reach `to` in `order`, checked in both directions.
    async fn number_between(
        &self,
        order: &str,
        from: &Participant,
        to: &Participant,
        at: i64,
    ) -> VirtualNumber {
        let session = self
            .store
            .session(&order.parse().unwrap())
            .await
            .unwrap()
            .expect("session exists");
        let contact = session
            .contacts
            .iter()
            .find(|c| c.joins(&from.user_id, &to.user_id))
            .expect("a contact joins them");
        for (caller, callee) in [(from, to), (to, from)] {
            let route = live_route(self.store.as_ref(), &caller.phone, &contact.number, at)
                .await
                .unwrap()
                .expect("route is live");
            assert_eq!(route.callee, callee.phone, "route reaches the other party");
            assert_eq!(
                route.caller_id(),
                &contact.number,
                "caller id is the same virtual number"
            );
            assert_eq!(route.order_id.as_str(), order);
            assert_eq!(route.caller_role, caller.role);
            assert_eq!(route.callee_role, callee.role);
        }
        contact.number.clone()
    }

    /// A comparable picture of everything the store holds for these orders and people.
    async fn picture(&self, orders: &[&str], people: &[Participant], at: i64) -> String {
        let mut out = String::new();
        for o in orders {
            out += &format!(
                "{:?}\n",
                self.store.session(&o.parse().unwrap()).await.unwrap()
            );
        }
        for p in people {
            let mut live = self.store.live_contacts(&p.phone, at).await.unwrap();
            live.sort_by(|a, b| a.number.cmp(&b.number));
            out += &format!("{}: {:?}\n", p.user_id, live);
        }
        if let Some(d) = &self.dynamo {
            let mut items: Vec<String> = d
                .items()
                .await
                .iter()
                .map(vnmask_tests::canonical)
                .collect();
            items.sort();
            out += &items.join("\n");
        }
        out
    }
}

async fn two_party_order_connects_both_ways(fx: Fx) {
    let (c, d) = (customer(1), driver(1));
    let t = now();
    assert!(matches!(
        fx.apply(&assign("ord-1", 1, &[c.clone(), d.clone()]), t)
            .await,
        Outcome::Applied { attempts: 1, .. }
    ));
    fx.number_between("ord-1", &c, &d, t).await;
}

async fn driver_with_two_orders_gets_two_numbers(fx: Fx) {
    // The seeds' scenario: customers C and N order at once, driver D takes both.
    let (c, n, d) = (customer(1), customer(2), driver(1));
    let t = now();
    fx.apply(&assign("ord-c", 1, &[c.clone(), d.clone()]), t)
        .await;
    fx.apply(&assign("ord-n", 1, &[n.clone(), d.clone()]), t)
        .await;
    let to_c = fx.number_between("ord-c", &d, &c, t).await;
    let to_n = fx.number_between("ord-n", &d, &n, t).await;
    assert_ne!(
        to_c, to_n,
        "D must be able to tell C and N apart by the number"
    );
}

async fn numbers_are_shared_between_unrelated_orders(fx: Fx) {
    // Two numbers, ten unrelated orders: every order is served.
    let t = now();
    for i in 0..10 {
        fx.apply(
            &assign(&format!("ord-{i}"), 1, &[customer(i), driver(i)]),
            t,
        )
        .await;
    }
    let mut used = HashSet::new();
    for i in 0..10 {
        used.insert(
            fx.number_between(&format!("ord-{i}"), &customer(i), &driver(i), t)
                .await,
        );
    }
    assert!(used.len() <= 2);
}

async fn duplicate_event_changes_nothing(fx: Fx) {
    let people = [customer(1), driver(1)];
    let t = now();
    fx.apply(&assign("ord-1", 3, &people), t).await;
    let before = fx.picture(&["ord-1"], &people, t).await;
    assert!(matches!(
        fx.apply(&assign("ord-1", 3, &people), t + 5).await,
        Outcome::Stale { stored_version: 3 }
    ));
    assert_eq!(fx.picture(&["ord-1"], &people, t).await, before);
}

async fn older_event_after_newer_changes_nothing(fx: Fx) {
    let t = now();
    fx.apply(&assign("ord-1", 5, &[customer(1), driver(2)]), t)
        .await;
    let everyone = [customer(1), driver(1), driver(2)];
    let before = fx.picture(&["ord-1"], &everyone, t).await;
    // The older assignment (driver 1) arrives late.
    assert!(matches!(
        fx.apply(&assign("ord-1", 4, &[customer(1), driver(1)]), t)
            .await,
        Outcome::Stale { stored_version: 5 }
    ));
    assert!(matches!(
        fx.apply(&end("ord-1", 2), t).await,
        Outcome::Stale { .. }
    ));
    assert_eq!(fx.picture(&["ord-1"], &everyone, t).await, before);
}

async fn completion_before_assignment_makes_the_assignment_stale(fx: Fx) {
    let t = now();
    assert!(matches!(
        fx.apply(&end("ord-1", 9), t).await,
        Outcome::Applied { .. }
    ));
    assert!(matches!(
        fx.apply(&assign("ord-1", 3, &[customer(1), driver(1)]), t)
            .await,
        Outcome::Stale { stored_version: 9 }
    ));
    assert!(fx
        .store
        .live_contacts(&customer(1).phone, t)
        .await
        .unwrap()
        .is_empty());
}

async fn completed_order_routes_work_for_the_grace_period_only(fx: Fx) {
    let (c, d) = (customer(1), driver(1));
    let t = now();
    fx.apply(&assign("ord-1", 1, &[c.clone(), d.clone()]), t)
        .await;
    let vn = fx.number_between("ord-1", &c, &d, t).await;
    let Outcome::Applied { session, .. } = fx.apply(&end("ord-1", 2), t).await else {
        panic!("end applies")
    };
    assert_eq!(
        (session.state, session.routes_until),
        (SessionState::Ended, t + 1800)
    );
    assert!(
        live_route(fx.store.as_ref(), &c.phone, &vn, t + 1799)
            .await
            .unwrap()
            .is_some(),
        "still reachable in grace"
    );
    assert!(
        live_route(fx.store.as_ref(), &c.phone, &vn, t + 1800)
            .await
            .unwrap()
            .is_none(),
        "refused after grace"
    );
    // After grace the number is free for these people again, with no TTL deletion assumed.
    let two = Assigner::new(fx.store.clone(), settings());
    assert!(matches!(
        two.apply(&assign("ord-2", 1, &[c.clone(), d.clone()]), t + 1801)
            .await,
        Ok(Outcome::Applied { .. })
    ));
}

async fn reassigned_driver_loses_routes_and_customer_keeps_number(fx: Fx) {
    let (c, d1, d2) = (customer(1), driver(1), driver(2));
    let t = now();
    fx.apply(&assign("ord-1", 1, &[c.clone(), d1.clone()]), t)
        .await;
    let before = fx.number_between("ord-1", &c, &d1, t).await;
    fx.apply(&assign("ord-1", 2, &[c.clone(), d2.clone()]), t)
        .await;
    let after = fx.number_between("ord-1", &c, &d2, t).await;
    assert_eq!(
        before, after,
        "the customer keeps the number for the driver role"
    );
    assert!(
        live_route(fx.store.as_ref(), &d1.phone, &before, t)
            .await
            .unwrap()
            .is_none(),
        "old driver's route ends at once"
    );
    assert!(fx
        .store
        .live_contacts(&d1.phone, t)
        .await
        .unwrap()
        .is_empty());
}

async fn reassigned_driver_gets_another_number_when_the_old_one_clashes(fx: Fx) {
    let (c, other, d1, d2) = (customer(1), customer(2), driver(1), driver(2));
    let t = now();
    fx.apply(&assign("ord-1", 1, &[c.clone(), d1.clone()]), t)
        .await;
    let old = fx.number_between("ord-1", &c, &d1, t).await;
    // d2 already dials `old` in another order, so the customer cannot keep it.
    let mut busy = None;
    for i in 10..40 {
        fx.apply(
            &assign(&format!("ord-x{i}"), 1, &[customer(i), d2.clone()]),
            t,
        )
        .await;
        if live_route(fx.store.as_ref(), &d2.phone, &old, t)
            .await
            .unwrap()
            .is_some()
        {
            busy = Some(i);
            break;
        }
    }
    assert!(busy.is_some(), "d2 came to hold the number");
    fx.apply(&assign("ord-1", 2, &[c.clone(), d2.clone()]), t)
        .await;
    let new = fx.number_between("ord-1", &c, &d2, t).await;
    assert_ne!(new, old);
    let _ = other;
}

async fn shared_ride_pairs_the_driver_with_each_customer_only(fx: Fx) {
    let (c1, c2, d) = (customer(1), customer(2), driver(1));
    let t = now();
    let Outcome::Applied { session, .. } = fx
        .apply(
            &assign("ride-1", 1, &[c1.clone(), c2.clone(), d.clone()]),
            t,
        )
        .await
    else {
        panic!("applies")
    };
    assert_eq!(
        session.contacts.len(),
        2,
        "customer-customer is not a contact"
    );
    let a = fx.number_between("ride-1", &d, &c1, t).await;
    let b = fx.number_between("ride-1", &d, &c2, t).await;
    assert_ne!(a, b);
    assert!(
        live_route(fx.store.as_ref(), &c1.phone, &b, t)
            .await
            .unwrap()
            .is_none(),
        "a rider cannot reach the other rider"
    );
}

async fn merchant_order_links_all_three(fx: Fx) {
    let (c, d, m) = (customer(1), driver(1), merchant(1));
    let t = now();
    fx.apply(&assign("ord-1", 1, &[c.clone(), d.clone(), m.clone()]), t)
        .await;
    let numbers: HashSet<_> = [
        fx.number_between("ord-1", &c, &d, t).await,
        fx.number_between("ord-1", &c, &m, t).await,
        fx.number_between("ord-1", &d, &m, t).await,
    ]
    .into();
    assert_eq!(numbers.len(), 3, "each person's numbers are distinct");
}

async fn draining_numbers_keep_live_routes_but_get_no_new_ones(fx: Fx) {
    let t = now();
    fx.apply(&assign("ord-1", 1, &[customer(1), driver(1)]), t)
        .await;
    let vn = fx
        .number_between("ord-1", &customer(1), &driver(1), t)
        .await;
    let mut numbers = pool("IN", 3);
    for n in &mut numbers {
        if n.number == vn {
            n.state = NumberState::Draining;
            fx.store.put_number(n).await.unwrap();
        }
    }
    let fresh = Assigner::new(fx.store.clone(), settings());
    // A new version of the same pair keeps its draining number.
    fresh
        .apply(&assign("ord-1", 2, &[customer(1), driver(1)]), t)
        .await
        .unwrap();
    assert_eq!(
        fx.number_between("ord-1", &customer(1), &driver(1), t)
            .await,
        vn
    );
    for i in 2..12 {
        fresh
            .apply(
                &assign(&format!("ord-{i}"), 1, &[customer(i), driver(i)]),
                t,
            )
            .await
            .unwrap();
        assert_ne!(
            fx.number_between(&format!("ord-{i}"), &customer(i), &driver(i), t)
                .await,
            vn
        );
    }
}

async fn exhausted_pool_is_a_typed_error_and_writes_nothing(fx: Fx) {
    // Pool of 2: a driver with two live orders cannot take a third.
    let d = driver(1);
    let t = now();
    fx.apply(&assign("ord-1", 1, &[customer(1), d.clone()]), t)
        .await;
    fx.apply(&assign("ord-2", 1, &[customer(2), d.clone()]), t)
        .await;
    let everyone = [customer(1), customer(2), customer(3), d.clone()];
    let before = fx.picture(&["ord-1", "ord-2", "ord-3"], &everyone, t).await;
    match fx
        .assigner
        .apply(&assign("ord-3", 1, &[customer(3), d.clone()]), t)
        .await
    {
        Err(AssignError::PoolExhausted(e)) => {
            assert_eq!(e.market.as_str(), "IN");
            assert_eq!(e.live_contacts, 2);
            assert_eq!(e.eligible, 2);
        }
        other => panic!("expected PoolExhausted, got {other:?}"),
    }
    assert!(fx
        .assigner
        .apply(&assign("ord-3", 1, &[customer(3), d]), t)
        .await
        .unwrap_err()
        .is_transient());
    assert_eq!(
        fx.picture(&["ord-1", "ord-2", "ord-3"], &everyone, t).await,
        before
    );
}

async fn bad_input_is_refused_and_writes_nothing(fx: Fx) {
    let t = now();
    let before = fx.picture(&["ord-1"], &[customer(1)], t).await;
    let twice = [
        customer(1),
        vnmask_tests::participant("driver", "d9", customer(1).phone.expose()),
    ];
    let cases = [
        assign("ord-1", 1, &[]),
        assign("ord-1", 1, &twice),
        assign(
            "ord-1",
            1,
            &[
                customer(1),
                customer(2),
                customer(3),
                customer(4),
                customer(5),
                customer(6),
                driver(1),
            ],
        ),
        OrderUpdate {
            market: market("US"),
            ..assign("ord-1", 1, &[customer(1), driver(1)])
        },
    ];
    for case in &cases {
        let err = fx.assigner.apply(case, t).await.unwrap_err();
        assert!(!err.is_transient(), "{err} is permanent");
        assert!(
            !err.to_string().contains("98100"),
            "errors never carry a number: {err}"
        );
    }
    assert_eq!(fx.picture(&["ord-1"], &[customer(1)], t).await, before);
}

/// Issue 14's history: o1's routes lapse, o2 takes the customer's number, then o1's completion
/// arrives late. It ends o1 and revives nothing: the driver of o1 reaches nobody on that number.
async fn late_completion_after_the_routes_lapsed_revives_nothing(fx: Fx) {
    let (c, d, e) = (customer(1), driver(1), driver(2));
    let t = now();
    let ttl = settings().session_ttl.as_secs() as i64;
    // GIVEN o1 pairs C and D on the market's only number v
    fx.apply(&assign("o1", 1, &[c.clone(), d.clone()]), t).await;
    let v = fx.number_between("o1", &c, &d, t).await;
    // AND o1 hears nothing for longer than the session TTL, so o2 pairs C with E on v
    let later = t + ttl + 1;
    fx.apply(&assign("o2", 1, &[c.clone(), e.clone()]), later)
        .await;
    assert_eq!(fx.number_between("o2", &c, &e, later).await, v);
    // WHEN o1's completion arrives late
    let at = later + 10;
    let Outcome::Applied { session, .. } = fx.apply(&end("o1", 2), at).await else {
        panic!("the late end applies")
    };
    // THEN o1 is ended and not live, D reaches nobody on v, and C still reaches E
    assert_eq!(session.state, SessionState::Ended);
    assert!(!session.is_live(at));
    assert!(live_route(fx.store.as_ref(), &d.phone, &v, at)
        .await
        .unwrap()
        .is_none());
    let c_route = live_route(fx.store.as_ref(), &c.phone, &v, at)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (c_route.order_id.as_str(), &c_route.callee),
        ("o2", &e.phone)
    );
    assert_eq!(fx.number_between("o2", &c, &e, at).await, v);
    assert_eq!(audit(fx.store.as_ref(), at).await.unwrap(), vec![]);
    // AND replays of o1's events, from the DLQ or a late redelivery, change nothing
    let before = fx
        .picture(&["o1", "o2"], &[c.clone(), d.clone(), e.clone()], at)
        .await;
    for replay in [end("o1", 2), assign("o1", 1, &[c.clone(), d.clone()])] {
        assert!(matches!(
            fx.apply(&replay, at + 1).await,
            Outcome::Stale { stored_version: 2 }
        ));
    }
    let after = fx.picture(&["o1", "o2"], &[c, d, e], at).await;
    assert_eq!(after, before);
}

/// A second end (cancelled after completed) keeps the first grace period: it never extends.
async fn a_second_end_keeps_the_first_grace(fx: Fx) {
    let (c, d) = (customer(1), driver(1));
    let t = now();
    fx.apply(&assign("o1", 1, &[c.clone(), d.clone()]), t).await;
    let v = fx.number_between("o1", &c, &d, t).await;
    fx.apply(&end("o1", 2), t).await;
    let Outcome::Applied { session, .. } = fx.apply(&end("o1", 3), t + 1000).await else {
        panic!("the second end applies")
    };
    assert_eq!(session.routes_until, t + 1800);
    assert!(live_route(fx.store.as_ref(), &d.phone, &v, t + 1800)
        .await
        .unwrap()
        .is_none());
    assert_eq!(audit(fx.store.as_ref(), t + 1000).await.unwrap(), vec![]);
}

/// An order reassigned after its routes lapsed and its number went to another order of the
/// same customer: the pair moves whole to another number, and the other order is untouched.
async fn reassignment_after_the_routes_lapsed_moves_the_pair_whole(fx: Fx) {
    let (c, d1, d2, e) = (customer(1), driver(1), driver(2), driver(3));
    let t = now();
    let ttl = settings().session_ttl.as_secs() as i64;
    fx.apply(&assign("o1", 1, &[c.clone(), d1.clone()]), t)
        .await;
    let v = fx.number_between("o1", &c, &d1, t).await;
    let later = t + ttl + 1;
    fx.apply(&assign("o2", 1, &[c.clone(), e.clone()]), later)
        .await;
    assert_eq!(fx.number_between("o2", &c, &e, later).await, v);
    // A second number joins the pool; o1's new driver arrives.
    let w = vnmask_tests::pool("IN", 2).pop().unwrap();
    fx.store.put_number(&w).await.unwrap();
    let at = later + 10;
    fx.apply(&assign("o1", 2, &[c.clone(), d2.clone()]), at)
        .await;
    assert_eq!(fx.number_between("o1", &c, &d2, at).await, w.number);
    assert_eq!(fx.number_between("o2", &c, &e, at).await, v);
    assert!(live_route(fx.store.as_ref(), &d1.phone, &v, at)
        .await
        .unwrap()
        .is_none());
    assert_eq!(audit(fx.store.as_ref(), at).await.unwrap(), vec![]);
}

/// A stored half pair (as an older release could leave) is found by the audit, and the
/// order's end ends that pair both ways instead of extending its surviving direction.
async fn an_end_ends_a_half_pair_both_ways(fx: Fx) {
    let (c, d) = (customer(1), driver(1));
    let t = now();
    let Outcome::Applied { session, .. } =
        fx.apply(&assign("o1", 1, &[c.clone(), d.clone()]), t).await
    else {
        panic!("assignment applies")
    };
    let v = fx.number_between("o1", &c, &d, t).await;
    // GIVEN D's direction is gone while C's still leads to D
    fx.store
        .commit(&SessionCommit {
            session: Session {
                version: 2,
                revision: 2,
                ..session
            },
            session_expires_at: t + 100_000,
            expected_revision: Some(1),
            pairs: vec![],
            pair_write: PairWrite::Claim,
            handovers: Vec::new(),
            delete_routes: vec![RouteKey {
                caller: d.phone.clone(),
                number: v.clone(),
            }],
            delete_pins: Vec::new(),
            former_users: Vec::new(),
            people_entries: true,
            now: t,
        })
        .await
        .unwrap();
    let kinds: Vec<_> = audit(fx.store.as_ref(), t)
        .await
        .unwrap()
        .iter()
        .map(|b| b.kind())
        .collect();
    assert_eq!(kinds, ["half_pair", "missing_route"]);
    // WHEN the order ends
    let Outcome::Applied { session, .. } = fx.apply(&end("o1", 3), t + 1).await else {
        panic!("end applies")
    };
    // THEN the pair is dropped whole: neither direction connects, and nothing is left broken
    assert!(session.contacts.is_empty());
    assert!(live_route(fx.store.as_ref(), &c.phone, &v, t + 1)
        .await
        .unwrap()
        .is_none());
    assert!(live_route(fx.store.as_ref(), &d.phone, &v, t + 1)
        .await
        .unwrap()
        .is_none());
    assert_eq!(audit(fx.store.as_ref(), t + 1).await.unwrap(), vec![]);
}

/// Lookup's fallback assigns from the Orders API while the same event is being applied: the
/// change is written once, whole, and the loser is stale.
async fn fallback_racing_its_event_applies_once(fx: Fx) {
    let (c, d) = (customer(1), driver(1));
    let t = now();
    let fallback = Assigner::new(fx.store.clone(), settings());
    let update = assign("o1", 1, &[c.clone(), d.clone()]);
    let (event, looked_up) =
        tokio::join!(fx.assigner.apply(&update, t), fallback.apply(&update, t));
    let outcomes = [event.unwrap(), looked_up.unwrap()];
    let applied = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Applied { .. }))
        .count();
    assert_eq!(applied, 1, "{outcomes:?}");
    fx.number_between("o1", &c, &d, t).await;
    assert_eq!(audit(fx.store.as_ref(), t).await.unwrap(), vec![]);
}

/// A retired number keeps its live pairs whole until the order changes; the change moves each
/// pair whole to an eligible number.
async fn a_retired_number_hands_its_pairs_over_whole(fx: Fx) {
    let (c, d1, d2) = (customer(1), driver(1), driver(2));
    let t = now();
    fx.apply(&assign("o1", 1, &[c.clone(), d1.clone()]), t)
        .await;
    let v = fx.number_between("o1", &c, &d1, t).await;
    let mut retired = pool("IN", 3).into_iter().find(|n| n.number == v).unwrap();
    retired.state = NumberState::Retired;
    fx.store.put_number(&retired).await.unwrap();
    assert_eq!(audit(fx.store.as_ref(), t).await.unwrap(), vec![]);
    let fresh = Assigner::new(fx.store.clone(), settings());
    fresh
        .apply(&assign("o1", 2, &[c.clone(), d2.clone()]), t + 5)
        .await
        .unwrap();
    assert_ne!(fx.number_between("o1", &c, &d2, t + 5).await, v);
    for p in [&c, &d1, &d2] {
        assert!(live_route(fx.store.as_ref(), &p.phone, &v, t + 5)
            .await
            .unwrap()
            .is_none());
    }
    assert_eq!(audit(fx.store.as_ref(), t + 5).await.unwrap(), vec![]);
}

const VOICE: Capabilities = Capabilities {
    voice: true,
    sms: false,
};

/// `count` numbers of `market`'s test numbering from the `first`th on, carrying `caps`.
fn numbers(market: &str, first: usize, count: usize, caps: Capabilities) -> Vec<PoolNumber> {
    pool(market, first + count)
        .into_iter()
        .skip(first)
        .map(|n| PoolNumber {
            capabilities: caps,
            ..n
        })
        .collect()
}

/// An assigner over `fx`'s store serving `markets` with their channels, after seeding `numbers`.
async fn serving(fx: &Fx, markets: &[(&str, Capabilities)], numbers: &[PoolNumber]) -> Assigner {
    seed_pool(fx.store.as_ref(), numbers).await;
    let settings = markets
        .iter()
        .fold(AssignSettings::for_markets([]), |s, (m, needs)| {
            s.with_needs(market(m), *needs)
        });
    Assigner::new(fx.store.clone(), settings)
}

fn order_in(m: &str, order: &str, people: &[Participant]) -> OrderUpdate {
    OrderUpdate {
        market: market(m),
        ..assign(order, 1, people)
    }
}

/// The numbers of an applied outcome's contacts, with what each carries.
fn contacts_of(outcome: Result<Outcome, AssignError>) -> Vec<(VirtualNumber, Capabilities)> {
    match outcome {
        Ok(Outcome::Applied { session, .. }) => session
            .contacts
            .iter()
            .map(|c| (c.number.clone(), c.capabilities))
            .collect(),
        other => panic!("expected the order applied, got {other:?}"),
    }
}

async fn a_voice_only_market_assigns_from_voice_only_numbers(fx: Fx) {
    // GIVEN India needs voice only and its pool is three voice-only numbers
    let voice_only = numbers("IN", 0, 3, VOICE);
    let assigner = serving(&fx, &[("IN", VOICE)], &voice_only).await;
    let (c, d, m) = (customer(1), driver(1), merchant(1));
    let t = now();
    // WHEN a three-party order arrives
    let contacts = contacts_of(
        assigner
            .apply(&order_in("IN", "o1", &[c.clone(), d.clone(), m.clone()]), t)
            .await,
    );
    // THEN every pair is served by one of them, and says it carries voice only
    assert_eq!(contacts.len(), 3);
    for (number, caps) in &contacts {
        assert!(voice_only.iter().any(|v| &v.number == number));
        assert_eq!(*caps, VOICE);
    }
    fx.number_between("o1", &c, &d, t).await;
    fx.number_between("o1", &d, &m, t).await;
}

async fn a_voice_and_sms_market_never_takes_a_voice_only_number(fx: Fx) {
    // GIVEN the US needs voice and SMS; its pool has one such number and three voice-only ones
    let both = numbers("US", 0, 1, Capabilities::VOICE_AND_SMS);
    let voice_only = numbers("US", 1, 3, VOICE);
    let pool: Vec<_> = both.iter().chain(&voice_only).cloned().collect();
    let assigner = serving(&fx, &[("US", Capabilities::VOICE_AND_SMS)], &pool).await;
    let d = driver(1);
    let t = now();
    // WHEN a driver takes a first order, then a second
    let first = contacts_of(
        assigner
            .apply(&order_in("US", "o1", &[customer(1), d.clone()]), t)
            .await,
    );
    let second = assigner
        .apply(&order_in("US", "o2", &[customer(2), d.clone()]), t)
        .await;
    // THEN the first gets the voice+sms number, and the second finds the pool exhausted
    // although three voice-only numbers are free
    assert_eq!(
        first,
        vec![(both[0].number.clone(), Capabilities::VOICE_AND_SMS)]
    );
    match second {
        Err(AssignError::PoolExhausted(e)) => {
            assert_eq!((e.eligible, e.live_contacts), (1, 1), "{e}");
        }
        other => panic!("expected PoolExhausted, got {other:?}"),
    }
    for v in &voice_only {
        assert!(live_route(fx.store.as_ref(), &d.phone, &v.number, t)
            .await
            .unwrap()
            .is_none());
    }
}

async fn a_mixed_pool_serves_each_market_from_its_subset_and_bounds_each_apart(fx: Fx) {
    // GIVEN India (voice) and the US (voice+sms), each with two voice-only numbers and two
    // voice+sms ones, and one driver who works in both
    let mut pool = numbers("IN", 0, 2, VOICE);
    pool.extend(numbers("IN", 2, 2, Capabilities::VOICE_AND_SMS));
    pool.extend(numbers("US", 0, 2, VOICE));
    pool.extend(numbers("US", 2, 2, Capabilities::VOICE_AND_SMS));
    let assigner = serving(
        &fx,
        &[("IN", VOICE), ("US", Capabilities::VOICE_AND_SMS)],
        &pool,
    )
    .await;
    let d = driver(1);
    let t = now();
    let mut india = Vec::new();
    let mut us = Vec::new();
    // WHEN the driver takes four Indian orders, then two American ones
    for i in 0..4 {
        let order = format!("in-{i}");
        india.extend(contacts_of(
            assigner
                .apply(&order_in("IN", &order, &[customer(i), d.clone()]), t)
                .await,
        ));
    }
    for i in 4..6 {
        let order = format!("us-{i}");
        us.extend(contacts_of(
            assigner
                .apply(&order_in("US", &order, &[customer(i), d.clone()]), t)
                .await,
        ));
    }
    // THEN India used all four of its numbers, each contact saying what its number carries;
    // the US only its two voice+sms numbers
    let carried = |n: &VirtualNumber| pool.iter().find(|v| &v.number == n).unwrap();
    assert_eq!(india.iter().collect::<HashSet<_>>().len(), 4);
    for (n, caps) in india.iter().chain(&us) {
        assert_eq!(carried(n).capabilities, *caps);
    }
    assert!(india.iter().all(|(n, _)| carried(n).market == market("IN")));
    assert_eq!(
        us.iter().map(|(n, _)| n).collect::<HashSet<_>>(),
        pool[6..].iter().map(|v| &v.number).collect()
    );
    // AND each market's bound counts only its own eligible numbers: India is full at four, the
    // US at two, although the driver holds six live contacts in all
    for (m, order, eligible) in [("IN", "in-x", 4), ("US", "us-x", 2)] {
        match assigner
            .apply(&order_in(m, order, &[customer(9), d.clone()]), t)
            .await
        {
            Err(AssignError::PoolExhausted(e)) => {
                assert_eq!(
                    (e.eligible, e.live_contacts),
                    (eligible, eligible),
                    "{m}: {e}"
                );
            }
            other => panic!("{m}: expected PoolExhausted, got {other:?}"),
        }
    }
    // AND the live-contacts peak recorded for pool-refresh is per market
    let day = vnmask::pool::day_key(t);
    assert_eq!(
        fx.store.live_peak(&market("IN"), &day).await.unwrap(),
        Some(4)
    );
    assert_eq!(
        fx.store.live_peak(&market("US"), &day).await.unwrap(),
        Some(2)
    );
}

async fn changing_a_markets_channels_applies_to_new_assignments_only(fx: Fx) {
    // GIVEN India served voice+sms, with one voice+sms number and two voice-only ones, and a
    // live order on the voice+sms number
    let mut pool = numbers("IN", 0, 1, Capabilities::VOICE_AND_SMS);
    pool.extend(numbers("IN", 1, 2, VOICE));
    let before = serving(&fx, &[("IN", Capabilities::VOICE_AND_SMS)], &pool).await;
    let (c, d) = (customer(1), driver(1));
    let t = now();
    before
        .apply(&order_in("IN", "o1", &[c.clone(), d.clone()]), t)
        .await
        .unwrap();
    // WHEN the market turns voice-only (a new deployment) and the driver takes two more orders
    let after = serving(&fx, &[("IN", VOICE)], &[]).await;
    for (i, order) in [(2, "o2"), (3, "o3")] {
        after
            .apply(&order_in("IN", order, &[customer(i), d.clone()]), t + 1)
            .await
            .unwrap();
    }
    // THEN the live order keeps its number, and the new ones use the voice-only numbers
    assert_eq!(fx.number_between("o1", &c, &d, t + 1).await, pool[0].number);
    let newer: HashSet<_> = [
        fx.number_between("o2", &customer(2), &d, t + 1).await,
        fx.number_between("o3", &customer(3), &d, t + 1).await,
    ]
    .into();
    assert_eq!(newer, pool[1..].iter().map(|v| v.number.clone()).collect());
}

/// Every route of `order`'s pairs (both directions), as the webhook reads it at `at`.
async fn routes_of(fx: &Fx, order: &str, at: i64) -> Vec<vnmask::domain::Route> {
    let session = fx
        .store
        .session(&order.parse().unwrap())
        .await
        .unwrap()
        .expect("session exists");
    let mut routes = Vec::new();
    for pair in session.route_pairs(session.routes_until) {
        for r in pair.routes() {
            routes.push(
                live_route(fx.store.as_ref(), &r.caller, &r.number, at)
                    .await
                    .unwrap()
                    .expect("route is live"),
            );
        }
    }
    routes
}

/// Recording is the order's choice, kept on its session and on both directions of every pair,
/// written in the same transaction as the pair: a pair records both ways or neither, a newer
/// event turns it on or off for every pair at once, an end keeps it and a stale event changes
/// nothing. The audit finds every pair whole throughout.
async fn recording_is_the_orders_and_both_directions_of_each_pair_carry_it(fx: Fx) {
    let (c, d, m) = (customer(1), driver(1), merchant(1));
    let t = now();
    let people = [c.clone(), d.clone(), m.clone()];
    let recorded = |version, record| OrderUpdate {
        record,
        ..assign("ord-1", version, &people)
    };
    let records = |routes: &[vnmask::domain::Route]| -> Vec<bool> {
        routes.iter().map(|r| r.record).collect()
    };

    fx.apply(&assign("ord-1", 1, &people), t).await;
    let routes = routes_of(&fx, "ord-1", t).await;
    assert_eq!(routes.len(), 6, "three pairs, both ways");
    assert_eq!(records(&routes), vec![false; 6], "off by default");

    let Outcome::Applied { session, .. } = fx.apply(&recorded(2, true), t + 1).await else {
        panic!("applies")
    };
    assert!(session.record);
    let on = routes_of(&fx, "ord-1", t + 1).await;
    assert_eq!(records(&on), vec![true; 6]);
    assert_eq!(
        on.iter().map(|r| r.number.clone()).collect::<Vec<_>>(),
        routes.iter().map(|r| r.number.clone()).collect::<Vec<_>>(),
        "recording changes no number"
    );
    assert_eq!(audit(fx.store.as_ref(), t + 1).await.unwrap(), vec![]);

    // A stale event that did not record changes nothing.
    assert!(matches!(
        fx.apply(&recorded(1, false), t + 2).await,
        Outcome::Stale { stored_version: 2 }
    ));
    assert_eq!(
        records(&routes_of(&fx, "ord-1", t + 2).await),
        vec![true; 6]
    );

    // The end keeps the order's choice for its grace period.
    fx.apply(&end("ord-1", 3), t + 3).await;
    assert_eq!(
        records(&routes_of(&fx, "ord-1", t + 3).await),
        vec![true; 6]
    );
    assert_eq!(audit(fx.store.as_ref(), t + 3).await.unwrap(), vec![]);

    // Another order turns it off at a newer version: every pair, both ways, at once.
    let people2 = [c.clone(), d.clone()];
    fx.apply(
        &OrderUpdate {
            record: true,
            ..assign("ord-2", 1, &people2)
        },
        t + 4,
    )
    .await;
    assert_eq!(
        records(&routes_of(&fx, "ord-2", t + 4).await),
        vec![true; 2]
    );
    fx.apply(&assign("ord-2", 2, &people2), t + 5).await;
    assert_eq!(
        records(&routes_of(&fx, "ord-2", t + 5).await),
        vec![false; 2]
    );
    assert_eq!(audit(fx.store.as_ref(), t + 5).await.unwrap(), vec![]);
}

/// A participant's alternate phone dials their contacts as their main phone does, and calls to
/// them ring the main phone; its routes are the pair's, written, renewed and ended with it; and
/// rule 1 holds for it as for any phone.
async fn an_alternate_phone_calls_in_as_its_person(fx: Fx) {
    let t = now();
    let alt = vnmask::domain::RealNumber::parse("+919720000001").unwrap();
    let (c, d) = (customer(1), driver(1));
    let d_with_alt = Participant {
        alternate_phones: vec![alt.clone()],
        ..d.clone()
    };
    fx.apply(&assign("o1", 1, &[c.clone(), d_with_alt.clone()]), t)
        .await;
    let vn = fx.number_between("o1", &c, &d_with_alt, t).await;
    let from_alt = live_route(fx.store.as_ref(), &alt, &vn, t)
        .await
        .unwrap()
        .expect("the alternate dials D's contact");
    assert_eq!(from_alt.callee, c.phone);
    assert_eq!(from_alt.caller_role.as_str(), "driver");
    assert_eq!(from_alt.stands_for, Some(d.phone.clone()));
    let to_d = live_route(fx.store.as_ref(), &c.phone, &vn, t)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(to_d.callee, d.phone, "calls to D ring D's main phone");
    assert_eq!(audit(fx.store.as_ref(), t).await.unwrap(), vec![]);

    // Rule 1: the alternate's owner in another live order never gets the number it dials in o1.
    let x = Participant {
        phone: alt.clone(),
        ..customer(7)
    };
    fx.apply(&assign("o2", 1, &[x.clone(), driver(2)]), t).await;
    let other = fx.number_between("o2", &x, &driver(2), t).await;
    assert_ne!(other, vn, "the alternate already dials {vn} in o1");
    assert_eq!(audit(fx.store.as_ref(), t).await.unwrap(), vec![]);

    // D drops the alternate: its route ends at once, the pair's main routes stay.
    fx.apply(&assign("o1", 2, &[c.clone(), d.clone()]), t + 1)
        .await;
    assert_eq!(fx.number_between("o1", &c, &d, t + 1).await, vn);
    assert!(live_route(fx.store.as_ref(), &alt, &vn, t + 1)
        .await
        .unwrap()
        .is_none());
    assert_eq!(audit(fx.store.as_ref(), t + 1).await.unwrap(), vec![]);

    // An ended order's alternate routes live out the grace with the pair, and end with it.
    let (c3, d3) = (customer(3), driver(3));
    let alt3 = vnmask::domain::RealNumber::parse("+919720000003").unwrap();
    let c3_with_alt = Participant {
        alternate_phones: vec![alt3.clone()],
        ..c3.clone()
    };
    fx.apply(&assign("o3", 1, &[c3_with_alt, d3.clone()]), t)
        .await;
    let vn3 = fx.number_between("o3", &c3, &d3, t).await;
    fx.apply(&end("o3", 2), t + 10).await;
    for (at, live) in [(t + 10 + 1799, true), (t + 10 + 1800, false)] {
        let route = live_route(fx.store.as_ref(), &alt3, &vn3, at)
            .await
            .unwrap();
        assert_eq!(route.is_some(), live, "at grace + {}", at - t - 10);
    }
    assert_eq!(audit(fx.store.as_ref(), t + 10).await.unwrap(), vec![]);
}

/// An assigner of `fx`'s store whose market IN has PINs.
fn with_pins(fx: &Fx) -> Assigner {
    let mut s = settings();
    s.pin_markets.insert(market("IN"));
    Assigner::new(fx.store.clone(), s)
}

/// The route PIN `pin` on `number` stands for, if live at `at`.
async fn pin_route(
    fx: &Fx,
    number: &VirtualNumber,
    pin: &vnmask::domain::Pin,
    at: i64,
) -> Option<vnmask::domain::Route> {
    fx.store
        .pin_route(&vnmask::domain::PinKey {
            number: number.clone(),
            pin: pin.clone(),
        })
        .await
        .unwrap()
        .filter(|r| r.is_live(at))
}

/// Each side of a contact gets a PIN that stands for them on the contact's number: entered
/// there, it reaches their counterpart. PINs are written, kept, renewed and ended with their
/// pair, unique among the live PINs of their number, and a replaced participant's PIN ends at
/// once with their routes.
async fn pins_stand_for_their_participant_and_live_and_die_with_the_pair(fx: Fx) {
    let t = now();
    let pins = with_pins(&fx);
    let (c, d, d2) = (customer(1), driver(1), driver(2));
    let session = |o: Outcome| match o {
        Outcome::Applied { session, .. } => session,
        other => panic!("{other:?}"),
    };
    let s1 = session(
        pins.apply(&assign("o1", 1, &[c.clone(), d.clone()]), t)
            .await
            .unwrap(),
    );
    let contact = s1.contacts[0].clone();
    let (pin_c, pin_d) = (
        contact.pin_of(&c.user_id).unwrap().clone(),
        contact.pin_of(&d.user_id).unwrap().clone(),
    );
    assert_ne!(pin_c, pin_d);
    let vn = contact.number.clone();
    let as_c = pin_route(&fx, &vn, &pin_c, t)
        .await
        .expect("C's PIN is live");
    assert_eq!((&as_c.caller, &as_c.callee), (&c.phone, &d.phone));
    assert_eq!(as_c.order_id.as_str(), "o1");
    let as_d = pin_route(&fx, &vn, &pin_d, t)
        .await
        .expect("D's PIN is live");
    assert_eq!((&as_d.caller, &as_d.callee), (&d.phone, &c.phone));
    assert_eq!(as_d.expires_at, as_c.expires_at);
    assert_eq!(audit(fx.store.as_ref(), t).await.unwrap(), vec![]);

    // A newer snapshot of the same people keeps the PINs they were told.
    let s2 = session(
        pins.apply(&assign("o1", 2, &[c.clone(), d.clone()]), t + 1)
            .await
            .unwrap(),
    );
    assert_eq!(s2.contacts[0].pins, contact.pins);

    // Another order on the same number gets other PINs.
    let (x, y) = (customer(5), driver(5));
    let other = session(
        pins.apply(&assign("o2", 1, &[x.clone(), y.clone()]), t + 1)
            .await
            .unwrap(),
    );
    let theirs = &other.contacts[0];
    if theirs.number == vn {
        let all = [
            &pin_c,
            &pin_d,
            &theirs.pins.as_ref().unwrap().a,
            &theirs.pins.as_ref().unwrap().b,
        ];
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), 4, "PINs are unique on their number");
    }

    // D is replaced: C keeps the number with new PINs, and D's PIN reaches nobody at once.
    let s3 = session(
        pins.apply(&assign("o1", 3, &[c.clone(), d2.clone()]), t + 2)
            .await
            .unwrap(),
    );
    assert_eq!(s3.contacts[0].number, vn, "C keeps the number");
    assert!(
        pin_route(&fx, &vn, &pin_d, t + 2).await.is_none(),
        "D's PIN ended with D's routes"
    );
    let new_c = s3.contacts[0].pin_of(&c.user_id).unwrap();
    let as_c = pin_route(&fx, &vn, new_c, t + 2)
        .await
        .expect("C's new PIN");
    assert_eq!(as_c.callee, d2.phone);
    if new_c != &pin_c {
        assert!(pin_route(&fx, &vn, &pin_c, t + 2).await.is_none());
    }
    assert_eq!(audit(fx.store.as_ref(), t + 2).await.unwrap(), vec![]);

    // The end renews the PINs for the grace, and they lapse with the routes.
    pins.apply(&end("o1", 4), t + 10).await.unwrap();
    assert!(pin_route(&fx, &vn, new_c, t + 10 + 1799).await.is_some());
    assert!(pin_route(&fx, &vn, new_c, t + 10 + 1800).await.is_none());
    assert!(
        live_route(fx.store.as_ref(), &c.phone, &vn, t + 10 + 1800)
            .await
            .unwrap()
            .is_none(),
        "and so do the routes"
    );

    // A market without PINs issues none.
    let plain = session(
        fx.apply(&assign("o3", 1, &[customer(7), driver(7)]), t)
            .await,
    );
    assert!(plain.contacts.iter().all(|c| c.pins.is_none()));
}

/// A PIN held by another live pair on the same number refuses the whole commit, and the
/// assigner draws another.
async fn a_pin_held_by_another_pair_is_refused_and_nothing_is_written(fx: Fx) {
    let t = now();
    let pins = with_pins(&fx);
    let Outcome::Applied { session, .. } = pins
        .apply(&assign("o1", 1, &[customer(1), driver(1)]), t)
        .await
        .unwrap()
    else {
        panic!("applies")
    };
    let held = session.contacts[0].pins.clone().unwrap().a;
    let vn = session.contacts[0].number.clone();
    // Another order's session that names the same PIN on the same number.
    let (x, y) = (customer(2), driver(2));
    let mut theirs = Session {
        order_id: "o2".parse().unwrap(),
        market: market("IN"),
        version: 1,
        revision: 1,
        handovers: Vec::new(),
        state: SessionState::Active,
        participants: vec![x.clone(), y.clone()],
        contacts: vec![vnmask::domain::Contact {
            a: x.user_id.clone(),
            b: y.user_id.clone(),
            number: vn.clone(),
            capabilities: Capabilities::VOICE_AND_SMS,
            pins: Some(vnmask::domain::ContactPins {
                a: held.clone(),
                b: vnmask::domain::Pin::parse("999999").unwrap(),
            }),
        }],
        updated_at: t,
        routes_until: t + 3600,
        record: false,
        closed_after_end: Vec::new(),
    };
    let commit = |s: &Session| SessionCommit {
        session: s.clone(),
        session_expires_at: t + 7200,
        expected_revision: None,
        pairs: s.route_pairs(t + 3600),
        pair_write: PairWrite::Claim,
        handovers: Vec::new(),
        delete_routes: Vec::new(),
        delete_pins: Vec::new(),
        former_users: Vec::new(),
        people_entries: true,
        now: t,
    };
    match fx.store.commit(&commit(&theirs)).await {
        Err(vnmask::store::CommitError::PinsTaken(keys)) => {
            assert_eq!(keys.len(), 1);
            assert_eq!(keys[0].number, vn);
        }
        other => panic!("{other:?}"),
    }
    assert!(fx
        .store
        .session(&"o2".parse().unwrap())
        .await
        .unwrap()
        .is_none());
    assert!(live_route(fx.store.as_ref(), &x.phone, &vn, t)
        .await
        .unwrap()
        .is_none());
    // With another PIN it goes through.
    theirs.contacts[0].pins.as_mut().unwrap().a = vnmask::domain::Pin::parse("999998").unwrap();
    fx.store.commit(&commit(&theirs)).await.unwrap();
    assert_eq!(
        pin_route(&fx, &vn, &held, t)
            .await
            .unwrap()
            .order_id
            .as_str(),
        "o1"
    );
}

/// The audit finds a PIN whose pair is gone (planted by hand: no write of vnmask leaves one)
/// and never a PIN of a live pair.
async fn the_audit_finds_a_pin_that_outlived_its_pair(fx: Fx) {
    let t = now();
    let pins = with_pins(&fx);
    pins.apply(&assign("o1", 1, &[customer(1), driver(1)]), t)
        .await
        .unwrap();
    assert_eq!(audit(fx.store.as_ref(), t).await.unwrap(), vec![]);
    // A session whose PIN item is written without the routes it stands for.
    let (x, y) = (customer(2), driver(2));
    let Outcome::Applied { session, .. } = pins
        .apply(&assign("o2", 1, &[x.clone(), y.clone()]), t)
        .await
        .unwrap()
    else {
        panic!("applies")
    };
    let pair = session.route_pairs(session.routes_until).remove(0);
    fx.store
        .commit(&SessionCommit {
            session: Session {
                version: 2,
                revision: 2,
                ..session.clone()
            },
            session_expires_at: t + 7200,
            expected_revision: Some(1),
            pairs: Vec::new(),
            pair_write: PairWrite::Claim,
            handovers: Vec::new(),
            delete_routes: pair.keys(),
            delete_pins: Vec::new(),
            former_users: Vec::new(),
            people_entries: true,
            now: t,
        })
        .await
        .unwrap();
    let found = audit(fx.store.as_ref(), t).await.unwrap();
    let kinds: Vec<&str> = found.iter().map(|b| b.kind()).collect();
    // The session still lists the pair, so its routes are missing too; both PINs are orphans.
    assert_eq!(
        kinds,
        ["missing_route", "orphan_pin", "orphan_pin"],
        "{found:?}"
    );
    assert!(found
        .iter()
        .all(|b| b.orders() == [&"o2".parse::<vnmask::domain::OrderId>().unwrap()]));
}

/// A PIN stands for a phone: when a participant calls from another main phone, their PIN is
/// drawn anew and the old one answers no more.
async fn a_participants_new_phone_ends_the_pin_of_the_old_one(fx: Fx) {
    let t = now();
    let pins = with_pins(&fx);
    let (c, d) = (customer(1), driver(1));
    let Outcome::Applied { session, .. } = pins
        .apply(&assign("o1", 1, &[c.clone(), d.clone()]), t)
        .await
        .unwrap()
    else {
        panic!("applies")
    };
    let (vn, old) = (
        session.contacts[0].number.clone(),
        session.contacts[0].pin_of(&d.user_id).unwrap().clone(),
    );
    let d_new = Participant {
        phone: vnmask::domain::RealNumber::parse("+919720000077").unwrap(),
        ..d.clone()
    };
    let Outcome::Applied { session, .. } = pins
        .apply(&assign("o1", 2, &[c.clone(), d_new.clone()]), t + 1)
        .await
        .unwrap()
    else {
        panic!("applies")
    };
    let new = session.contacts[0].pin_of(&d.user_id).unwrap().clone();
    assert_ne!(new, old);
    assert!(
        pin_route(&fx, &vn, &old, t + 1).await.is_none(),
        "the old phone's PIN is gone"
    );
    let as_d = pin_route(&fx, &vn, &new, t + 1).await.unwrap();
    assert_eq!((&as_d.caller, &as_d.callee), (&d_new.phone, &c.phone));
    assert_eq!(audit(fx.store.as_ref(), t + 1).await.unwrap(), vec![]);
}

/// A change that cannot fit one transaction is refused whole, saying why, and writes nothing.
async fn a_change_too_large_for_one_transaction_is_refused_whole(fx: Fx) {
    let t = now();
    let pins = with_pins(&fx);
    let roles = [
        "customer", "driver", "merchant", "courier", "support", "packer",
    ];
    let crew = |first: usize| -> Vec<Participant> {
        roles
            .iter()
            .enumerate()
            .map(|(i, role)| {
                let mut p = vnmask_tests::participant(
                    role,
                    &format!("u{}", first + i),
                    &format!("+9198100{:05}", first + i),
                );
                if i < 2 {
                    p.alternate_phones = vec![vnmask::domain::RealNumber::parse(&format!(
                        "+9197300{:05}",
                        first + i
                    ))
                    .unwrap()];
                }
                p
            })
            .collect()
    };
    pins.apply(&assign("o1", 1, &crew(100)), t).await.unwrap();
    let before = fx.picture(&["o1"], &crew(100), t).await;
    // Everyone replaced at once: the new pairs' routes and PINs, and the old ones' deletes.
    match pins.apply(&assign("o1", 2, &crew(200)), t + 1).await {
        Err(AssignError::Invalid(e)) => {
            assert!(e.to_string().contains("items in one transaction"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        fx.picture(&["o1"], &crew(100), t).await,
        before,
        "nothing written"
    );
}

/// A sessions API end may close a direction: the driver may no longer reach the customer while
/// the customer may still reach the driver through the grace. Both route items (and both PINs)
/// of the pair still live, end and revive together (the pair invariant); only the decision
/// refuses the closed direction, for calls, texts and its PIN alike. The driver's closed route
/// still counts as theirs on the number, so rule 1 keeps the number from them in another order,
/// and a newer participants change reopens both directions.
async fn an_end_may_close_one_direction_while_the_pair_lives_and_ends_together(fx: Fx) {
    let t = now();
    let pins = with_pins(&fx);
    let (c, d) = (customer(1), driver(1));
    pins.apply(&assign("ord-1", 1, &[c.clone(), d.clone()]), t)
        .await
        .unwrap();
    let vn = fx.number_between("ord-1", &c, &d, t).await;
    let closing = OrderUpdate {
        change: OrderChange::End(EndTerms {
            grace: Some(Duration::from_secs(3600)),
            closed: vec![Direction {
                from: "driver".parse().unwrap(),
                to: "customer".parse().unwrap(),
            }],
        }),
        ..end("ord-1", 2)
    };
    let Ok(Outcome::Applied { session, .. }) = pins.apply(&closing, t).await else {
        panic!("the end applies")
    };
    assert_eq!(session.routes_until, t + 3600);
    let ask = |from: &Participant, channel: Channel| {
        RouteQuery::new(
            channel,
            CallId::parse("CA1").unwrap(),
            from.phone.expose(),
            vn.as_str(),
            Some("hi".into()),
        )
    };
    let budget = Duration::from_secs(1);
    for channel in [Channel::Voice, Channel::Sms] {
        match decide(fx.store.as_ref(), &ask(&c, channel), t + 10, budget).await {
            Decision::Connect(route) => assert_eq!(route.callee, d.phone),
            other => panic!("the customer's way is open: {other:?}"),
        }
        assert_eq!(
            decide(fx.store.as_ref(), &ask(&d, channel), t + 10, budget).await,
            Decision::Refuse(Refusal::ClosedAfterEnd)
        );
    }
    // Both items are there and end together; only the driver's is closed.
    let (to_d, to_c) = (
        live_route(fx.store.as_ref(), &c.phone, &vn, t + 10)
            .await
            .unwrap()
            .unwrap(),
        live_route(fx.store.as_ref(), &d.phone, &vn, t + 10)
            .await
            .unwrap()
            .unwrap(),
    );
    assert_eq!((to_d.closed, to_c.closed), (false, true));
    assert_eq!(to_d.expires_at, to_c.expires_at);
    // Each PIN stands for its participant's way: the driver's is closed too.
    let contact = &session.contacts[0];
    let (pin_c, pin_d) = (
        contact.pin_of(&c.user_id).unwrap(),
        contact.pin_of(&d.user_id).unwrap(),
    );
    assert!(!pin_route(&fx, &vn, pin_c, t + 10).await.unwrap().closed);
    assert!(pin_route(&fx, &vn, pin_d, t + 10).await.unwrap().closed);
    assert_eq!(audit(fx.store.as_ref(), t + 10).await.unwrap(), vec![]);
    // The driver still holds the number in this order: another order gives them another one.
    let other = pins
        .apply(&assign("ord-2", 1, &[customer(2), d.clone()]), t + 20)
        .await
        .unwrap();
    let Outcome::Applied {
        session: second, ..
    } = other
    else {
        panic!("the second order applies")
    };
    assert_ne!(
        second.contacts[0].number, vn,
        "rule 1: one number, one live order per person"
    );
    // A newer change reopens the order: both ways connect again, and nothing is closed.
    pins.apply(&assign("ord-1", 3, &[c.clone(), d.clone()]), t + 30)
        .await
        .unwrap();
    assert_eq!(fx.number_between("ord-1", &c, &d, t + 30).await, vn);
    assert!(matches!(
        decide(fx.store.as_ref(), &ask(&d, Channel::Voice), t + 30, budget).await,
        Decision::Connect(_)
    ));
    let reopened = fx
        .store
        .session(&"ord-1".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(reopened.closed_after_end.is_empty());
    // A plain end closes nothing; after the grace, neither way connects.
    pins.apply(&end("ord-1", 4), t + 40).await.unwrap();
    for (from, at, open) in [
        (&d, t + 50, true),
        (&c, t + 40 + 1800, false),
        (&d, t + 40 + 1800, false),
    ] {
        let decision = decide(fx.store.as_ref(), &ask(from, Channel::Voice), at, budget).await;
        assert_eq!(
            matches!(decision, Decision::Connect(_)),
            open,
            "{decision:?}"
        );
    }
    assert_eq!(audit(fx.store.as_ref(), t + 50).await.unwrap(), vec![]);
    // A later end (a cancellation) closes the driver's way at the pair's own end: the grace
    // is the first end's, the customer's way stays open, and the pair is still whole.
    let cancel = OrderUpdate {
        change: OrderChange::End(EndTerms {
            grace: Some(Duration::from_secs(7200)),
            closed: vec![Direction {
                from: "driver".parse().unwrap(),
                to: "customer".parse().unwrap(),
            }],
        }),
        ..end("ord-1", 5)
    };
    pins.apply(&cancel, t + 60).await.unwrap();
    assert_eq!(
        decide(fx.store.as_ref(), &ask(&d, Channel::Voice), t + 70, budget).await,
        Decision::Refuse(Refusal::ClosedAfterEnd)
    );
    let to_d = live_route(fx.store.as_ref(), &c.phone, &vn, t + 70)
        .await
        .unwrap()
        .unwrap();
    assert!(!to_d.closed);
    assert_eq!(to_d.expires_at, t + 40 + 1800, "the first end's grace");
    assert_eq!(audit(fx.store.as_ref(), t + 70).await.unwrap(), vec![]);
}

macro_rules! contract {
    ($($name:ident: $pool:expr),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $name() { super::$name(super::memory_fx($pool).await).await })*
        }
        mod dynamodb {
            $(#[tokio::test] async fn $name() { super::$name(super::dynamo_fx($pool).await).await })*
        }
    };
}

contract! {
    two_party_order_connects_both_ways: 3,
    driver_with_two_orders_gets_two_numbers: 3,
    numbers_are_shared_between_unrelated_orders: 2,
    duplicate_event_changes_nothing: 3,
    older_event_after_newer_changes_nothing: 3,
    completion_before_assignment_makes_the_assignment_stale: 3,
    completed_order_routes_work_for_the_grace_period_only: 1,
    reassigned_driver_loses_routes_and_customer_keeps_number: 3,
    reassigned_driver_gets_another_number_when_the_old_one_clashes: 4,
    shared_ride_pairs_the_driver_with_each_customer_only: 3,
    merchant_order_links_all_three: 3,
    draining_numbers_keep_live_routes_but_get_no_new_ones: 3,
    exhausted_pool_is_a_typed_error_and_writes_nothing: 2,
    bad_input_is_refused_and_writes_nothing: 3,
    late_completion_after_the_routes_lapsed_revives_nothing: 1,
    a_second_end_keeps_the_first_grace: 3,
    reassignment_after_the_routes_lapsed_moves_the_pair_whole: 1,
    an_end_ends_a_half_pair_both_ways: 3,
    fallback_racing_its_event_applies_once: 3,
    a_retired_number_hands_its_pairs_over_whole: 3,
    a_voice_only_market_assigns_from_voice_only_numbers: 0,
    a_voice_and_sms_market_never_takes_a_voice_only_number: 0,
    a_mixed_pool_serves_each_market_from_its_subset_and_bounds_each_apart: 0,
    changing_a_markets_channels_applies_to_new_assignments_only: 0,
    recording_is_the_orders_and_both_directions_of_each_pair_carry_it: 5,
    an_alternate_phone_calls_in_as_its_person: 4,
    pins_stand_for_their_participant_and_live_and_die_with_the_pair: 1,
    a_pin_held_by_another_pair_is_refused_and_nothing_is_written: 1,
    the_audit_finds_a_pin_that_outlived_its_pair: 2,
    a_participants_new_phone_ends_the_pin_of_the_old_one: 1,
    a_change_too_large_for_one_transaction_is_refused_whole: 10,
    an_end_may_close_one_direction_while_the_pair_lives_and_ends_together: 2,
}

#[tokio::test]
async fn two_party_order_costs_one_parallel_read_set_and_one_transaction() {
    let fx = dynamo_fx(3).await;
    let d = fx.dynamo.as_ref().unwrap();
    let t = now();
    // Cold pool cache: the pool query joins the parallel reads.
    fx.apply(&assign("ord-1", 1, &[customer(1), driver(1)]), t)
        .await;
    let cold = d.calls.snapshot();
    assert_eq!(cold.get("GetItem"), Some(&1), "{cold:?}");
    assert_eq!(
        cold.get("Query"),
        Some(&3),
        "two participants and the pool: {cold:?}"
    );
    assert_eq!(cold.get("TransactWriteItems"), Some(&1), "{cold:?}");
    // After the commit, the process's first live-contacts high of the day is recorded for
    // pool-refresh (one conditional write per new high, not per order: none below).
    assert_eq!(cold.get("UpdateItem"), Some(&1), "{cold:?}");
    assert_eq!(d.calls.total(), 6);
    d.calls.reset();
    fx.apply(&assign("ord-2", 1, &[customer(2), driver(2)]), t)
        .await;
    let warm = d.calls.snapshot();
    assert_eq!(
        warm.get("Query"),
        Some(&2),
        "one per participant when the pool is cached: {warm:?}"
    );
    assert_eq!(d.calls.total(), 4, "{warm:?}");
}

#[tokio::test]
async fn transaction_conflicts_are_retried_then_given_up() {
    for inner in [memory_fx(3).await.store, dynamo_fx(3).await.store] {
        let faulty = Arc::new(FaultyStore::new(inner));
        let assigner = Assigner::new(faulty.clone(), settings());
        faulty
            .faults
            .conflicts
            .store(2, std::sync::atomic::Ordering::SeqCst);
        let out = assigner
            .apply(&assign("ord-1", 1, &[customer(1), driver(1)]), now())
            .await
            .unwrap();
        assert!(
            matches!(out, Outcome::Applied { attempts: 3, .. }),
            "{out:?}"
        );
        faulty
            .faults
            .conflicts
            .store(100, std::sync::atomic::Ordering::SeqCst);
        let err = assigner
            .apply(&assign("ord-2", 1, &[customer(2), driver(2)]), now())
            .await
            .unwrap_err();
        assert!(
            matches!(err, AssignError::Contention { attempts: 8 }),
            "{err:?}"
        );
        assert!(err.is_transient());
        assert!(
            faulty
                .session(&"ord-2".parse().unwrap())
                .await
                .unwrap()
                .is_none(),
            "nothing partial"
        );
    }
}

#[tokio::test]
async fn stored_items_hold_no_real_number_in_keys_or_plaintext() {
    let fx = dynamo_fx(3).await;
    let people = [customer(1), driver(1), merchant(1)];
    fx.apply(&assign("ord-1", 1, &people), now()).await;
    let items = fx.dynamo.as_ref().unwrap().items().await;
    assert!(items.len() > 3);
    let dump = format!("{items:?}");
    for p in &people {
        let digits = &p.phone.expose()[1..];
        assert!(!dump.contains(digits), "a real number leaked into an item");
        assert!(
            !dump.contains(&digits[2..]),
            "a national number leaked into an item"
        );
    }
}
