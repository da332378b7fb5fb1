//! Concurrency stress against DynamoDB Local: many orders sharing drivers, assigned at once,
//! then completed and reassigned at once, each change delivered twice. After each wave the pair
//! invariant is checked over the whole table. Prints its figures (run with --nocapture to see
//! them).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vnmask::assignment::{
    AssignError, AssignSettings, Assigner, EndTerms, OrderChange, OrderUpdate, Outcome,
};
use vnmask::domain::{Participant, SessionState, UnixTime};
use vnmask::routing::live_route;
use vnmask::store::{AssignmentStore, AuditStore, PoolStore};
use vnmask_tests::people::{customer, driver};
use vnmask_tests::{local_dynamo, market, now, pool, seed_pool, LocalDynamo};

struct Run {
    orders: Vec<(String, Vec<Participant>)>,
    /// When the orders were assigned.
    at: UnixTime,
    applied: usize,
    exhausted: usize,
    retries: u32,
    elapsed_ms: u128,
    calls: BTreeMap<String, u64>,
}

type Orders = Vec<(String, Vec<Participant>)>;

/// `orders` two-party orders over `drivers` drivers (round robin) and `customers` customers (at random).
fn orders(orders: usize, drivers: usize, customers: usize) -> Orders {
    let mut rng = StdRng::seed_from_u64(7);
    (0..orders)
        .map(|i| {
            (
                format!("ord-{i}"),
                vec![customer(rng.gen_range(0..customers)), driver(i % drivers)],
            )
        })
        .collect()
}

/// Assigns every order concurrently.
async fn run(d: &LocalDynamo, orders: Orders, pool_size: usize) -> Run {
    seed_pool(d.store.as_ref(), &pool("IN", pool_size)).await;
    d.calls.reset();
    let mut settings = AssignSettings::for_markets([market("IN")]);
    settings.max_attempts = 30;
    let assigner = Arc::new(Assigner::new(d.store.clone(), settings));
    let t = now();
    let started = Instant::now();
    let tasks: Vec<_> = orders
        .iter()
        .map(|(id, people)| {
            let assigner = assigner.clone();
            let update = OrderUpdate {
                order_id: id.parse().unwrap(),
                market: market("IN"),
                version: 1,
                record: false,
                change: OrderChange::Participants(people.clone()),
            };
            tokio::spawn(async move { assigner.apply(&update, t).await })
        })
        .collect();
    let (mut applied, mut exhausted, mut retries) = (0, 0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(Outcome::Applied { attempts, .. }) => {
                applied += 1;
                retries += attempts - 1;
            }
            Err(AssignError::PoolExhausted(_)) => exhausted += 1,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    Run {
        orders,
        at: t,
        applied,
        exhausted,
        retries,
        elapsed_ms: started.elapsed().as_millis(),
        calls: d.calls.snapshot(),
    }
}

/// Checks every invariant against what is stored: each session's routes exist, point back at it
/// with the right callee and caller id, use active pool numbers, and no person dials one number
/// for two orders; orders without a session have no route at all.
async fn check(d: &LocalDynamo, run: &Run, pool_size: usize) {
    let store = d.store.as_ref();
    let t = now();
    let active: HashSet<_> = pool("IN", pool_size)
        .into_iter()
        .map(|v| v.number)
        .collect();
    let mut held: HashMap<(String, String), String> = HashMap::new();
    for (id, people) in &run.orders {
        let session = store.session(&id.parse().unwrap()).await.unwrap();
        let Some(session) = session else {
            for p in people {
                assert!(
                    store
                        .live_contacts(&p.phone, t)
                        .await
                        .unwrap()
                        .iter()
                        .all(|c| c.order_id.as_str() != id),
                    "order {id} has no session but has a route"
                );
            }
            continue;
        };
        assert_eq!(session.contacts.len(), 1, "order {id} has all its contacts");
        for c in &session.contacts {
            assert!(
                active.contains(&c.number),
                "rule 2: {} is an active pool number",
                c.number
            );
            let a = session.participant(&c.a).unwrap();
            let b = session.participant(&c.b).unwrap();
            for (from, to) in [(a, b), (b, a)] {
                let route = live_route(store, &from.phone, &c.number, t)
                    .await
                    .unwrap()
                    .expect("route exists");
                assert_eq!(route.order_id.as_str(), id, "route points at its own order");
                assert_eq!(route.callee, to.phone);
                assert_eq!(route.caller_id(), &c.number);
                let previous =
                    held.insert((from.user_id.to_string(), c.number.to_string()), id.clone());
                assert!(
                    previous.is_none(),
                    "rule 1: {} dials {} for two orders",
                    from.user_id,
                    c.number
                );
            }
        }
    }
    // No route points at a session that does not list it.
    let orders: HashSet<&String> = run.orders.iter().map(|(id, _)| id).collect();
    let mut people: HashMap<String, &Participant> = HashMap::new();
    for (_, ps) in &run.orders {
        for p in ps {
            people.insert(p.user_id.to_string(), p);
        }
    }
    for p in people.values() {
        for live in store.live_contacts(&p.phone, t).await.unwrap() {
            assert!(orders.contains(&live.order_id.to_string()));
            assert_eq!(
                held.get(&(p.user_id.to_string(), live.number.to_string())),
                Some(&live.order_id.to_string()),
                "every live route belongs to a session contact"
            );
        }
    }
}

/// Live routes and sessions, counted over the walk an audit takes.
async fn walk(d: &LocalDynamo, t: UnixTime) -> (usize, usize) {
    let (mut routes, mut sessions, mut from) = (0, 0, None);
    loop {
        let page = d.store.audit_page(from, 100, t).await.unwrap();
        routes += page.routes.len();
        sessions += page.sessions.len();
        match page.next {
            Some(next) => from = Some(next),
            None => return (routes, sessions),
        }
    }
}

/// The pair invariant over the whole table: `vnmask::store::audit` finds no breach, and its walk
/// sees every live route and session that the orders' sessions account for (so that an audit
/// that sees nothing cannot pass).
async fn assert_pairs_whole(d: &LocalDynamo, orders: &Orders, t: UnixTime, when: &str) {
    let breaches = vnmask::store::audit(d.store.as_ref(), t).await.unwrap();
    let shown: Vec<String> = breaches.iter().map(|b| b.to_string()).collect();
    assert!(
        breaches.is_empty(),
        "{when}: the pair invariant is broken:\n  {}",
        shown.join("\n  ")
    );
    let (mut sessions, mut pairs) = (0, 0);
    for (id, _) in orders {
        if let Some(s) = d.store.session(&id.parse().unwrap()).await.unwrap() {
            if s.is_live(t) {
                sessions += 1;
                pairs += s.contacts.len();
                // A moved pair's old number routes until its handover ends.
                pairs += s.handovers.iter().filter(|h| h.until > t).count();
            }
        }
    }
    let (walked_routes, walked_sessions) = walk(d, t).await;
    println!(
        "stress audit[{when}]: breaches=0 live_sessions={sessions} live_pairs={pairs} \
         walked_routes={walked_routes} walked_sessions={walked_sessions}"
    );
    assert_eq!(
        (walked_routes, walked_sessions),
        (2 * pairs, sessions),
        "{when}: the audit's walk sees both routes of every live pair and every live session"
    );
}

/// What the second wave did.
struct Churn {
    changes: usize,
    applied: usize,
    stale: usize,
    exhausted: usize,
    retries: u32,
    elapsed_ms: u128,
    /// Orders that took another driver, with the driver they replaced.
    reassigned: Vec<(String, Participant)>,
    ended: Vec<String>,
}

/// One change of the second wave, and the driver it replaces if it is a reassignment.
type Change = (OrderUpdate, Option<Participant>);

/// When the second wave's completions arrive.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Completions {
    /// At the same time as the reassignments.
    WithReassignments,
    /// Once the reassignments are in: late.
    AfterReassignments,
}

/// A second wave at `t`: every third order completes and every third (offset one) takes
/// another driver, as version 2, each change delivered twice at the same time, as SQS may
/// redeliver a message while its first delivery is still running.
async fn churn(
    d: &LocalDynamo,
    orders: &Orders,
    drivers: usize,
    t: UnixTime,
    completions: Completions,
) -> Churn {
    let mut settings = AssignSettings::for_markets([market("IN")]);
    settings.max_attempts = 30;
    let assigner = Arc::new(Assigner::new(d.store.clone(), settings));
    let mut rng = StdRng::seed_from_u64(11);
    let (mut ends, mut reassignments): (Vec<Change>, Vec<Change>) = (Vec::new(), Vec::new());
    for (i, (id, people)) in orders.iter().enumerate() {
        let update = |change| OrderUpdate {
            order_id: id.parse().unwrap(),
            market: market("IN"),
            version: 2,
            record: false,
            change,
        };
        match i % 3 {
            0 => ends.push((update(OrderChange::End(EndTerms::default())), None)),
            1 => {
                let old = people[1].clone();
                let index: usize = old.user_id.as_str()[1..].parse().unwrap();
                let new = driver((index + rng.gen_range(1..drivers)) % drivers);
                let change = OrderChange::Participants(vec![people[0].clone(), new]);
                reassignments.push((update(change), Some(old)));
            }
            _ => {}
        }
    }
    let mut churn = Churn {
        changes: ends.len() + reassignments.len(),
        applied: 0,
        stale: 0,
        exhausted: 0,
        retries: 0,
        elapsed_ms: 0,
        reassigned: Vec::new(),
        ended: Vec::new(),
    };
    let started = Instant::now();
    let batches = match completions {
        Completions::WithReassignments => vec![[reassignments, ends].concat()],
        Completions::AfterReassignments => vec![reassignments, ends],
    };
    for batch in batches {
        deliver_twice(&assigner, batch, t, &mut churn).await;
    }
    churn.elapsed_ms = started.elapsed().as_millis();
    churn
}

/// Delivers every change of `batch` twice, all at once, and tallies the outcomes.
async fn deliver_twice(
    assigner: &Arc<Assigner>,
    batch: Vec<Change>,
    t: UnixTime,
    churn: &mut Churn,
) {
    let running: Vec<_> = batch
        .into_iter()
        .map(|(update, replaced)| {
            let id = update.order_id.to_string();
            let twins = [update.clone(), update].map(|u| {
                let assigner = assigner.clone();
                tokio::spawn(async move { assigner.apply(&u, t).await })
            });
            (id, replaced, twins)
        })
        .collect();
    for (id, replaced, twins) in running {
        let (mut applied, mut stale) = (0, 0);
        for task in twins {
            match task.await.unwrap() {
                Ok(Outcome::Applied { attempts, .. }) => {
                    applied += 1;
                    churn.retries += attempts - 1;
                }
                Ok(Outcome::Stale { stored_version }) => {
                    assert_eq!(stored_version, 2, "{id}: stale only against its twin");
                    stale += 1;
                }
                Err(AssignError::PoolExhausted(_)) if replaced.is_some() => churn.exhausted += 1,
                other => panic!("{id}: unexpected outcome {other:?}"),
            }
        }
        assert!(
            applied <= 1,
            "{id}: one delivery of a change applies it, not two"
        );
        assert!(
            stale == 0 || applied == 1,
            "{id}: a twin is stale only if the other applied"
        );
        if replaced.is_none() {
            assert_eq!(
                (applied, stale),
                (1, 1),
                "{id}: a completion applies once, and its twin is stale"
            );
        }
        churn.applied += applied;
        churn.stale += stale;
        if applied == 1 {
            match replaced {
                Some(old) => churn.reassigned.push((id, old)),
                None => churn.ended.push(id),
            }
        }
    }
}

/// After the second wave, at `t`: ended orders are ended, and a replaced driver has no live
/// route of the order any more; then the pair invariant over the whole table.
async fn check_churn(d: &LocalDynamo, orders: &Orders, churn: &Churn, t: UnixTime) {
    for id in &churn.ended {
        let session = d.store.session(&id.parse().unwrap()).await.unwrap();
        let session = session.expect("an applied end leaves a session");
        assert_eq!(session.state, SessionState::Ended, "{id} is ended");
    }
    for (id, old) in &churn.reassigned {
        let live = d.store.live_contacts(&old.phone, t).await.unwrap();
        assert!(
            live.iter().all(|c| c.order_id.as_str() != id),
            "{id}: the replaced driver {} keeps no route of the order",
            old.user_id
        );
    }
    assert_pairs_whole(d, orders, t, "after the second wave").await;
}

fn report_churn(name: &str, churn: &Churn) {
    println!(
        "stress[{name}, second wave]: changes={} deliveries={} applied={} stale={} \
         pool_exhausted={} retries={} ended={} reassigned={} elapsed_ms={}",
        churn.changes,
        2 * churn.changes,
        churn.applied,
        churn.stale,
        churn.exhausted,
        churn.retries,
        churn.ended.len(),
        churn.reassigned.len(),
        churn.elapsed_ms,
    );
}

fn report(name: &str, run: &Run, pool_size: usize) {
    let transactions = run.calls.get("TransactWriteItems").copied().unwrap_or(0);
    let total: u64 = run.calls.values().sum();
    println!(
        "stress[{name}]: orders={} applied={} pool_exhausted={} pool={} retries={} elapsed_ms={} \
         dynamodb_calls={:?} calls_per_order={:.2} transactions_per_order={:.2}",
        run.orders.len(),
        run.applied,
        run.exhausted,
        pool_size,
        run.retries,
        run.elapsed_ms,
        run.calls,
        total as f64 / run.orders.len() as f64,
        transactions as f64 / run.orders.len() as f64,
    );
}

/// The most orders any one person of `role` takes part in.
fn busiest(orders: &Orders, role: &str) -> usize {
    let mut count: HashMap<String, usize> = HashMap::new();
    for (_, ps) in orders {
        for p in ps.iter().filter(|p| p.role.as_str() == role) {
            *count.entry(p.user_id.to_string()).or_default() += 1;
        }
    }
    count.into_values().max().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_orders_sharing_drivers_keep_every_rule_with_a_just_big_enough_pool() {
    // 200 orders, 20 drivers (10 orders each), 150 customers. The pool is the policy's bound:
    // a pair is always served when the pool exceeds the two parties' other live contacts.
    let d = local_dynamo().await;
    let plan = orders(200, 20, 150);
    let pool_size = busiest(&plan, "driver") + busiest(&plan, "customer") - 1;
    let run = run(&d, plan, pool_size).await;
    report("just-big-enough", &run, pool_size);
    assert_eq!(
        run.applied, 200,
        "every order is served when the bound says a number exists"
    );
    check(&d, &run, pool_size).await;
    assert_pairs_whole(&d, &run.orders, now(), "after the burst").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_orders_on_a_small_pool_get_all_routes_or_a_clean_pool_exhausted() {
    let d = local_dynamo().await;
    let run = run(&d, orders(200, 20, 150), 6).await;
    report("small-pool", &run, 6);
    assert!(
        run.exhausted > 0,
        "a pool of 6 cannot serve drivers with 10 orders each"
    );
    assert_eq!(run.applied + run.exhausted, 200);
    check(&d, &run, 6).await;
    assert_pairs_whole(&d, &run.orders, now(), "after the burst").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_completions_and_reassignments_delivered_twice_keep_every_pair_whole() {
    // GIVEN 200 orders over 20 drivers, assigned at once on a pool just big enough for them
    let d = local_dynamo().await;
    let plan = orders(200, 20, 150);
    let pool_size = busiest(&plan, "driver") + busiest(&plan, "customer") - 1;
    let run = run(&d, plan, pool_size).await;
    assert_eq!(run.applied, 200);
    // WHEN a third of them complete and a third take another driver, all at once, and every
    // change is delivered twice at the same time
    let t = now();
    let churn = churn(&d, &run.orders, 20, t, Completions::WithReassignments).await;
    report_churn("in time", &churn);
    // THEN each change applies once at most and its twin is stale, a replaced driver keeps no
    // route of the order, and the audit finds no breach in the whole table
    assert_eq!(churn.ended.len(), 67, "every completion applies");
    assert!(!churn.reassigned.is_empty(), "some reassignments apply");
    check_churn(&d, &run.orders, &churn, t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_completions_after_the_session_ttl_revive_no_pair_that_reassignments_took() {
    // GIVEN 200 orders over 20 drivers, assigned at once on a pool just big enough for them
    let d = local_dynamo().await;
    let plan = orders(200, 20, 150);
    let pool_size = busiest(&plan, "driver") + busiest(&plan, "customer") - 1;
    let run = run(&d, plan, pool_size).await;
    assert_eq!(run.applied, 200);
    // WHEN, after every session lapsed (no event for the session TTL), a third of the orders
    // take another driver and so claim numbers that lapsed pairs held, and then a third
    // complete, late; each wave at once and every change delivered twice
    let ttl = AssignSettings::for_markets([market("IN")]).session_ttl;
    let t = run.at + i64::try_from(ttl.as_secs()).unwrap() + 1;
    let churn = churn(&d, &run.orders, 20, t, Completions::AfterReassignments).await;
    report_churn("after the session TTL", &churn);
    // THEN the late completions revive nothing (no ended session is live) and the audit finds
    // no breach: no half pair of a lapsed order next to a pair that took its number
    assert_eq!(churn.ended.len(), 67, "every completion applies");
    assert!(!churn.reassigned.is_empty(), "some reassignments apply");
    for id in &churn.ended {
        let session = d
            .store
            .session(&id.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert!(!session.is_live(t), "{id}: a late end revives nothing");
    }
    check_churn(&d, &run.orders, &churn, t).await;
}

/// What one racing change did.
enum Raced {
    Applied(u64),
    Other,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moves_racing_events_of_every_version_keep_every_rule_and_the_latest_version() {
    // GIVEN 120 orders over 15 drivers on a pool with room to spare, three of whose numbers
    // are then quarantined
    let d = local_dynamo().await;
    let plan = orders(120, 15, 90);
    let pool_size = busiest(&plan, "driver") + busiest(&plan, "customer") + 4;
    let run = run(&d, plan, pool_size).await;
    assert_eq!(run.applied, 120);
    let numbers = pool("IN", pool_size);
    let quarantined: HashSet<_> = numbers[..3].iter().map(|n| n.number.clone()).collect();
    for n in &numbers[..3] {
        let held = vnmask::pool::quarantined(n, vnmask::domain::HoldReason::Operator, None, run.at);
        d.store.put_number(&held).await.unwrap();
    }
    let mut settings = AssignSettings::for_markets([market("IN")]);
    settings.max_attempts = 30;
    settings.pool_cache = std::time::Duration::ZERO;
    let assigner = Arc::new(Assigner::new(d.store.clone(), settings));
    // WHEN every order is moved twice while, at the same time, a third complete, a third take
    // a new driver at version 2 and another at version 3 (the two racing each other), and the
    // last third only move
    let t = run.at + 5;
    let mut tasks = Vec::new();
    for (i, (id, people)) in run.orders.iter().enumerate() {
        let order: vnmask::domain::OrderId = id.parse().unwrap();
        for _ in 0..2 {
            let (assigner, order) = (assigner.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                assigner.move_off(&order, t).await.unwrap();
                (order, Raced::Other)
            }));
        }
        let changes: Vec<(u64, OrderChange)> = match i % 3 {
            0 => vec![(2, OrderChange::End(EndTerms::default()))],
            1 => [(2, 7), (3, 3)]
                .into_iter()
                .map(|(version, shift)| {
                    let new_driver = driver(15 + (i + shift) % 15);
                    let people = vec![people[0].clone(), new_driver];
                    (version, OrderChange::Participants(people))
                })
                .collect(),
            _ => Vec::new(),
        };
        for (version, change) in changes {
            let (assigner, order) = (assigner.clone(), order.clone());
            let update = OrderUpdate {
                order_id: order.clone(),
                market: market("IN"),
                version,
                change,
                record: false,
            };
            tasks.push(tokio::spawn(async move {
                match assigner.apply(&update, t).await {
                    Ok(Outcome::Applied { .. }) => (order, Raced::Applied(version)),
                    Ok(Outcome::Stale { .. }) | Err(AssignError::PoolExhausted(_)) => {
                        (order, Raced::Other)
                    }
                    Err(e) => panic!("{order}: {e}"),
                }
            }));
        }
    }
    let mut latest: HashMap<vnmask::domain::OrderId, u64> = HashMap::new();
    for task in tasks {
        if let (order, Raced::Applied(version)) = task.await.unwrap() {
            let v = latest.entry(order).or_insert(1);
            *v = (*v).max(version);
        }
    }
    // THEN the whole table keeps the pair invariant and rule 1, and each order's session is at
    // the newest version applied to it, whatever order the writes landed in
    assert_pairs_whole(&d, &run.orders, t, "after the races").await;
    for (id, _) in &run.orders {
        let order: vnmask::domain::OrderId = id.parse().unwrap();
        let session = d.store.session(&order).await.unwrap().unwrap();
        assert_eq!(
            session.version,
            latest.get(&order).copied().unwrap_or(1),
            "{id} keeps its newest version"
        );
        if session.state == SessionState::Active {
            assert!(
                session
                    .contacts
                    .iter()
                    .all(|c| !quarantined.contains(&c.number)),
                "{id}: an active order is planned off quarantined numbers"
            );
        }
    }
    // AND once more moves ran, no live order holds a contact on a quarantined number (only
    // handovers, which the audit accepts)
    for (id, _) in &run.orders {
        assigner
            .move_off(&id.parse().unwrap(), t + 1)
            .await
            .unwrap();
    }
    assert_pairs_whole(&d, &run.orders, t + 1, "after the last moves").await;
    for (id, _) in &run.orders {
        let session = d
            .store
            .session(&id.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        if session.is_live(t + 1) {
            assert!(
                session
                    .contacts
                    .iter()
                    .all(|c| !quarantined.contains(&c.number)),
                "{id}: no live contact left on a quarantined number"
            );
        }
    }
    assert_pairs_whole(&d, &run.orders, t + 3600, "after the handovers").await;
}
