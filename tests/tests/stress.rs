//! Concurrency stress against DynamoDB Local: many orders sharing drivers, assigned at once.
//! Prints its figures (run with --nocapture to see them).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vnmask::assignment::{
    AssignError, AssignSettings, Assigner, OrderChange, OrderUpdate, Outcome,
};
use vnmask::domain::Participant;
use vnmask::store::Store;
use vnmask_tests::people::{customer, driver};
use vnmask_tests::{local_dynamo, market, now, pool, seed_pool, LocalDynamo};

struct Run {
    orders: Vec<(String, Vec<Participant>)>,
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
                let route = store
                    .route(&from.phone, &c.number, t)
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
}
