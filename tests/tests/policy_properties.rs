//! Property tests: random sequences of assign / re-assign / complete over random people and
//! pools never break rules 1–2, and never fail while the policy's bound says a number exists.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use proptest::prelude::*;
use vnmask::assignment::{
    AssignError, AssignSettings, Assigner, OrderChange, OrderUpdate, Outcome,
};
use vnmask::domain::{ContactPolicy, NumberState, Participant, VirtualNumber};
use vnmask::store::memory::MemoryStore;
use vnmask::store::Store;
use vnmask_tests::people::{customer, driver, merchant};
use vnmask_tests::{market, pool};

const GRACE: i64 = 600;

#[derive(Debug, Clone)]
enum Op {
    /// An order with one customer, one driver, and optionally a second customer or a merchant.
    Assign {
        order: usize,
        customer: usize,
        driver: usize,
        extra: Option<(bool, usize)>,
    },
    Reassign {
        order: usize,
        driver: usize,
    },
    Complete {
        order: usize,
    },
    /// Time passes beyond the grace period.
    Wait,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..8usize, 0..6usize, 0..4usize, proptest::option::of((any::<bool>(), 0..3usize)))
            .prop_map(|(order, customer, driver, extra)| Op::Assign { order, customer, driver, extra }),
        2 => (0..8usize, 0..4usize).prop_map(|(order, driver)| Op::Reassign { order, driver }),
        2 => (0..8usize).prop_map(|order| Op::Complete { order }),
        1 => Just(Op::Wait),
    ]
}

struct World {
    store: Arc<MemoryStore>,
    assigner: Assigner,
    pool: Vec<VirtualNumber>,
    now: i64,
    versions: HashMap<usize, u64>,
    people: HashMap<usize, Vec<Participant>>,
}

impl World {
    fn update(&mut self, order: usize, change: OrderChange) -> OrderUpdate {
        let v = self.versions.entry(order).or_insert(0);
        *v += 1;
        OrderUpdate {
            order_id: format!("o{order}").parse().unwrap(),
            market: market("IN"),
            version: *v,
            change,
        }
    }

    async fn live(&self, p: &Participant, except_order: &str) -> usize {
        let live = self.store.live_contacts(&p.phone, self.now).await.unwrap();
        live.iter()
            .filter(|c| c.order_id.as_str() != except_order)
            .count()
    }

    /// Does the bound promise a number for some pair of this order? (It must, if we failed.)
    async fn bound_allowed_failure(&self, order: &str, people: &[Participant]) -> bool {
        let eligible = self
            .pool
            .iter()
            .filter(|v| v.state == NumberState::Active)
            .count();
        let pairs = ContactPolicy::default().pairs(people);
        for &(i, j) in &pairs {
            // The order's own other pairs count as live contacts too.
            let own = |k: usize| pairs.iter().filter(|&&(a, b)| a == k || b == k).count() - 1;
            let live = self.live(&people[i], order).await
                + own(i)
                + self.live(&people[j], order).await
                + own(j);
            if eligible <= live {
                return true;
            }
        }
        false
    }

    async fn check_invariants(&self) {
        let mut claimed: HashMap<(String, String), String> = HashMap::new();
        for order in self.versions.keys() {
            let id = format!("o{order}");
            let Some(session) = self.store.session(&id.parse().unwrap()).await.unwrap() else {
                continue;
            };
            let live = session.is_live(self.now);
            for c in &session.contacts {
                let vn = self
                    .pool
                    .iter()
                    .find(|v| v.number == c.number)
                    .expect("contact uses a pool number");
                assert_ne!(vn.state, NumberState::Retired, "rule 2");
                let (a, b) = (
                    session.participant(&c.a).unwrap(),
                    session.participant(&c.b).unwrap(),
                );
                for (from, to) in [(a, b), (b, a)] {
                    let route = self
                        .store
                        .route(&from.phone, &c.number, self.now)
                        .await
                        .unwrap();
                    if !live {
                        continue;
                    }
                    let route = route.expect("a live session's routes are live");
                    assert_eq!(route.order_id.as_str(), id);
                    assert_eq!(route.callee, to.phone);
                    let before = claimed
                        .insert((from.user_id.to_string(), c.number.to_string()), id.clone());
                    assert!(
                        before.is_none(),
                        "rule 1: {} dials {} in two live orders",
                        from.user_id,
                        c.number
                    );
                }
            }
        }
    }
}

async fn play(ops: Vec<Op>, pool_size: usize, draining: bool) {
    let store = Arc::new(MemoryStore::new());
    let mut numbers = pool("IN", pool_size);
    if draining {
        numbers[0].state = NumberState::Draining;
    }
    for n in &numbers {
        store.put_number(n).await.unwrap();
    }
    let mut settings = AssignSettings::for_markets([market("IN")]);
    settings.grace = std::time::Duration::from_secs(GRACE as u64);
    let assigner = Assigner::new(store.clone(), settings);
    let mut w = World {
        store,
        assigner,
        pool: numbers,
        now: 1_800_000_000,
        versions: HashMap::new(),
        people: HashMap::new(),
    };
    for op in ops {
        let (order, update) = match op {
            Op::Wait => {
                w.now += GRACE + 1;
                continue;
            }
            Op::Assign {
                order,
                customer: c,
                driver: d,
                extra,
            } => {
                let mut people = vec![customer(c), driver(d)];
                match extra {
                    Some((true, m)) => people.push(merchant(m)),
                    Some((false, c2)) if c2 + 10 != c => people.push(customer(c2 + 10)),
                    _ => {}
                }
                w.people.insert(order, people.clone());
                (order, w.update(order, OrderChange::Participants(people)))
            }
            Op::Reassign { order, driver: d } => {
                let Some(mut people) = w.people.get(&order).cloned() else {
                    continue;
                };
                people.retain(|p| p.role.as_str() != "driver");
                people.push(driver(d));
                w.people.insert(order, people.clone());
                (order, w.update(order, OrderChange::Participants(people)))
            }
            Op::Complete { order } => (order, w.update(order, OrderChange::End)),
        };
        match w.assigner.apply(&update, w.now).await {
            Ok(Outcome::Applied { .. }) => {}
            Ok(Outcome::Stale { .. }) => panic!("versions only grow here"),
            Err(AssignError::PoolExhausted(_)) => {
                let people = w.people.get(&order).cloned().unwrap_or_default();
                assert!(
                    w.bound_allowed_failure(update.order_id.as_str(), &people).await,
                    "pool exhausted although every pair had more eligible numbers than live contacts"
                );
            }
            Err(e) => panic!("unexpected error {e}"),
        }
        w.check_invariants().await;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_order_histories_keep_rules_one_and_two(
        ops in proptest::collection::vec(op(), 1..40),
        pool_size in 1usize..7,
        draining in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(play(ops, pool_size, draining));
    }
}

#[test]
fn people_in_fixtures_are_distinct() {
    let phones: HashSet<_> = (0..20)
        .flat_map(|i| [customer(i).phone, driver(i).phone, merchant(i).phone])
        .collect();
    assert_eq!(phones.len(), 60);
}
