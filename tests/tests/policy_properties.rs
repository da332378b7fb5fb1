//! Property tests of order histories as the world delivers them. Order events (assign,
//! reassign, complete, some ends closing the driver's way to the customer; customers and drivers drawn from small sets, so shared across orders)
//! arrive late, out of order and at least once; customers and drivers sometimes call from an
//! alternate phone, drawn from a small set shared by people and orders (one of them another
//! customer's own phone); the lookup fallback applies an order's current
//! snapshot ahead of its events; time jumps to and past the grace and the session TTL.
//!
//! Number health quarantines numbers, pool refresh moves orders' pairs off them (their old pairs
//! handed over), and operators release them at once, between any two steps.
//!
//! The market has PINs: after every step, every PIN a live session holds answers for its
//! participant and reaches that contact's other side, and no PIN ever issued answers for
//! anything else.
//!
//! After every step the pair invariant holds over the whole store (`vnmask::store::audit`,
//! docs/data-model.md), rules 1–2 hold, a replayed or older event is stale and nothing else is,
//! an applied session's routes exist, and `PoolExhausted` only comes when the policy's bound
//! allows it. The same histories run on the memory store and, fewer of them, on DynamoDB Local.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use vnmask::assignment::{
    plan_contacts, AssignError, AssignSettings, Assigner, EndTerms, Moved, OrderChange,
    OrderUpdate, Outcome, PlanRequest,
};
use vnmask::domain::{
    Capabilities, ContactPolicy, Direction, NumberState, OrderId, Participant, PinKey, PoolNumber,
    Session, SessionState, UnixTime, VirtualNumber,
};
use vnmask::routing::live_route;
use vnmask::store::memory::MemoryStore;
use vnmask::store::Store;
use vnmask_tests::people::{customer, driver, merchant};
use vnmask_tests::{local_dynamo, market, pool};

/// Short, so that histories of a few dozen steps cross them often; the grace is shorter than
/// the TTL, as in production.
const GRACE: i64 = 600;
const SESSION_TTL: i64 = 3_600;
const START: UnixTime = 1_800_000_000;

/// What happens in the Orders service: each happening is one new event of one order.
#[derive(Debug, Clone)]
enum Happening {
    /// The participants become one customer, one driver and optionally a merchant (`true`) or
    /// a second customer (`false`): a new order, or a whole new snapshot of an open one.
    Assign {
        customer: usize,
        driver: usize,
        extra: Option<(bool, usize)>,
        /// The customer's and the driver's alternate phone, if any ([`spare`]).
        alternates: (Option<usize>, Option<usize>),
    },
    /// Another driver takes an open order.
    Reassign { driver: usize },
    /// An open order is over; with `driver_closed`, the end (a sessions API one) closes the
    /// driver's way to the customer while the customer's way to the driver connects on.
    Complete { driver_closed: bool },
    /// An order that is over is cancelled too: a second end.
    Cancel,
}

#[derive(Debug, Clone)]
enum Step {
    /// An event happens to the order `pick` chooses (modulo the orders it can happen to; for an
    /// assignment, one more choice is a new order). It is queued, or also delivered at once.
    Happen {
        pick: usize,
        what: Happening,
        delivered_at_once: bool,
    },
    /// The oldest queued event is delivered.
    DeliverOldest,
    /// A queued event, not necessarily the oldest, is delivered (index modulo the queue).
    DeliverAny(usize),
    /// A delivered event is delivered again (index modulo the delivered ones): the same event
    /// twice, or an older version after a newer.
    Redeliver(usize),
    /// The lookup fallback for an order (index modulo the orders): its current snapshot, with
    /// its current version, applied now, if the Orders service says it is active.
    Lookup(usize),
    /// Time passes, by this many seconds.
    Wait(i64),
    /// Time passes until the next live session's routes end (its TTL or its grace runs out),
    /// and one second more if `past`.
    WaitForLapse { past: bool },
    /// Number health quarantines a pool number in service (index modulo those carrying a live
    /// contact, else modulo all): no new pairs, its pairs to be moved.
    Quarantine(usize),
    /// Pool refresh moves an order's pairs off numbers leaving service (index modulo the orders
    /// with a contact on one, else modulo all), racing nothing here: the stress test races
    /// moves with events.
    Move(usize),
    /// An operator releases a quarantined number at once (index modulo them): it serves new
    /// pairs while handovers on it may still run.
    Release(usize),
}

fn happening() -> impl Strategy<Value = Happening> {
    prop_oneof![
        4 => (
            0..3usize,
            0..2usize,
            proptest::option::of((any::<bool>(), 0..2usize)),
            (proptest::option::of(0..4usize), proptest::option::of(0..4usize)),
        )
            .prop_map(|(customer, driver, extra, alternates)| Happening::Assign {
                customer,
                driver,
                extra,
                alternates,
            }),
        2 => (0..2usize).prop_map(|driver| Happening::Reassign { driver }),
        2 => any::<bool>().prop_map(|driver_closed| Happening::Complete { driver_closed }),
        1 => Just(Happening::Cancel),
    ]
}

/// A little time, a while, or exactly to or just past the grace or the session TTL.
fn wait() -> impl Strategy<Value = i64> {
    prop_oneof![
        2 => 1..120i64,
        2 => GRACE..SESSION_TTL,
        1 => Just(GRACE),
        1 => Just(GRACE + 1),
        1 => Just(SESSION_TTL),
        1 => Just(SESSION_TTL + 1),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..4usize, happening(), any::<bool>()).prop_map(|(pick, what, delivered_at_once)| {
            Step::Happen { pick, what, delivered_at_once }
        }),
        3 => Just(Step::DeliverOldest),
        2 => (0..16usize).prop_map(Step::DeliverAny),
        2 => (0..16usize).prop_map(Step::Redeliver),
        1 => (0..8usize).prop_map(Step::Lookup),
        3 => wait().prop_map(Step::Wait),
        1 => any::<bool>().prop_map(|past| Step::WaitForLapse { past }),
        2 => (0..8usize).prop_map(Step::Quarantine),
        3 => (0..8usize).prop_map(Step::Move),
        1 => (0..8usize).prop_map(Step::Release),
    ]
}

#[derive(Debug, Clone)]
struct History {
    steps: Vec<Step>,
    pool_size: usize,
    /// The first number is draining (keeps its routes, gets no new ones).
    draining: bool,
    /// One more number, retired: it must never be handed out.
    retired: bool,
}

fn history(steps: std::ops::Range<usize>) -> impl Strategy<Value = History> {
    (
        proptest::collection::vec(step(), steps),
        // Mostly pools that two or three people's orders contend for; sometimes one that
        // cannot serve a three-party order, or one that rarely runs out.
        prop_oneof![3 => 2usize..5, 1 => 1usize..7],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(steps, pool_size, draining, retired)| History {
            steps,
            pool_size,
            draining,
            retired,
        })
}

/// The `i`-th alternate phone: a second SIM anybody may call from, or (3) customer 2's own phone.
fn spare(i: usize) -> vnmask::domain::RealNumber {
    match i {
        3 => customer(2).phone,
        i => vnmask::domain::RealNumber::parse(&format!("+91972000000{i}")).unwrap(),
    }
}

/// One order as the Orders service knows it: `o<index>`.
struct Order {
    version: u64,
    people: Vec<Participant>,
    ended: bool,
    /// Its newest event: what the lookup fallback would fetch.
    latest: OrderUpdate,
}

struct World {
    store: Arc<dyn Store>,
    assigner: Assigner,
    pool: Vec<PoolNumber>,
    now: UnixTime,
    orders: Vec<Order>,
    /// Events generated and not yet delivered, oldest first.
    queue: Vec<OrderUpdate>,
    delivered: Vec<OrderUpdate>,
    /// Per order, the newest version the store has applied: what decides staleness.
    applied: HashMap<String, u64>,
    /// What each step did, printed when a check fails.
    log: Vec<String>,
    /// Every PIN any applied session held.
    pins_issued: HashSet<PinKey>,
}

fn describe(u: &OrderUpdate) -> String {
    match &u.change {
        OrderChange::Participants(people) => {
            let ids: Vec<String> = people.iter().map(|p| p.user_id.to_string()).collect();
            format!("{} v{} [{}]", u.order_id, u.version, ids.join(" "))
        }
        OrderChange::End(terms) => {
            format!("{} v{} end {:?}", u.order_id, u.version, terms.closed)
        }
    }
}

impl World {
    /// The Orders service records a happening and returns the event it sends, if any: with no
    /// open order there is nobody to reassign or complete, with no ended one nothing to cancel.
    fn happen(&mut self, pick: usize, what: &Happening) -> Option<OrderUpdate> {
        let (open, ended): (Vec<usize>, Vec<usize>) =
            (0..self.orders.len()).partition(|&i| !self.orders[i].ended);
        let chosen = |among: &[usize]| (!among.is_empty()).then(|| among[pick % among.len()]);
        let (index, change) = match what {
            Happening::Assign {
                customer: c,
                driver: d,
                extra,
                alternates: (c_alt, d_alt),
            } => {
                let mut people = vec![customer(*c), driver(*d)];
                match extra {
                    Some((true, m)) => people.push(merchant(*m)),
                    Some((false, c2)) => people.push(customer(10 + c2)),
                    None => {}
                }
                // The Orders service never sends one phone twice in an order.
                for (who, alt) in [(0, c_alt), (1, d_alt)] {
                    if let Some(phone) = alt.map(spare) {
                        if people.iter().all(|p| p.phones().all(|q| q != &phone)) {
                            people[who].alternate_phones.push(phone);
                        }
                    }
                }
                let index = match pick % (open.len() + 1) {
                    new if new == open.len() => self.orders.len(),
                    i => open[i],
                };
                (index, OrderChange::Participants(people))
            }
            Happening::Reassign { driver: d } => {
                let index = chosen(&open)?;
                let mut people = self.orders[index].people.clone();
                people.retain(|p| p.role.as_str() != "driver");
                people.push(driver(*d));
                (index, OrderChange::Participants(people))
            }
            Happening::Complete {
                driver_closed: false,
            } => (chosen(&open)?, OrderChange::End(EndTerms::default())),
            Happening::Complete {
                driver_closed: true,
            } => (
                chosen(&open)?,
                OrderChange::End(EndTerms {
                    grace: None,
                    closed: vec![Direction {
                        from: "driver".parse().unwrap(),
                        to: "customer".parse().unwrap(),
                    }],
                }),
            ),
            Happening::Cancel => (chosen(&ended)?, OrderChange::End(EndTerms::default())),
        };
        let version = self.orders.get(index).map_or(0, |o| o.version) + 1;
        let update = OrderUpdate {
            order_id: format!("o{index}").parse().unwrap(),
            market: market("IN"),
            version,
            record: false,
            change,
        };
        let people = match &update.change {
            OrderChange::Participants(people) => people.clone(),
            OrderChange::End(_) => self.orders[index].people.clone(),
        };
        let order = Order {
            version,
            people,
            ended: matches!(update.change, OrderChange::End(_)),
            latest: update.clone(),
        };
        if index == self.orders.len() {
            self.orders.push(order);
        } else {
            self.orders[index] = order;
        }
        Some(update)
    }

    fn fail(&self, what: String) -> ! {
        panic!(
            "{what}\nat t={} (start + {} s)\nhistory:\n  {}",
            self.now,
            self.now - START,
            self.log.join("\n  ")
        )
    }

    /// Applies one event as the assign function (or the lookup fallback) does, and checks its
    /// outcome against what the model says the store holds.
    async fn apply(&mut self, update: &OrderUpdate, how: &str) {
        let order = update.order_id.to_string();
        let newest = self.applied.get(&order).copied().unwrap_or(0);
        let outcome = self.assigner.apply(update, self.now).await;
        let shown = match &outcome {
            Ok(Outcome::Applied { .. }) => "applied".to_owned(),
            Ok(Outcome::Stale { .. }) => "stale".to_owned(),
            Err(e) => format!("error: {e}"),
        };
        self.log.push(format!(
            "t+{} {how} {}: {shown}",
            self.now - START,
            describe(update)
        ));
        match outcome {
            Ok(Outcome::Applied { session, .. }) => {
                if newest >= update.version {
                    self.fail(format!(
                        "{order} v{} applied over v{newest}",
                        update.version
                    ));
                }
                self.applied.insert(order, update.version);
                assert_eq!(session.version, update.version);
                for c in &session.contacts {
                    if let Some(pins) = &c.pins {
                        for pin in [&pins.a, &pins.b] {
                            self.pins_issued.insert(PinKey {
                                number: c.number.clone(),
                                pin: pin.clone(),
                            });
                        }
                    }
                }
                match &update.change {
                    OrderChange::Participants(_) => {
                        assert_eq!(session.state, SessionState::Active);
                        assert!(session.is_live(self.now), "an assigned session is live");
                        self.assert_routes_exist(&session).await;
                    }
                    OrderChange::End(_) => {
                        assert_eq!(session.state, SessionState::Ended);
                        assert!(session.routes_until <= self.now + GRACE);
                        if session.is_live(self.now) {
                            self.assert_routes_exist(&session).await;
                        }
                    }
                }
            }
            Ok(Outcome::Stale { stored_version }) => {
                if newest < update.version {
                    self.fail(format!(
                        "{order} v{} is stale though the newest applied is v{newest}",
                        update.version
                    ));
                }
                assert_eq!(
                    stored_version, newest,
                    "the stored session is the newest applied"
                );
            }
            Err(AssignError::PoolExhausted(_)) => {
                let OrderChange::Participants(people) = &update.change else {
                    self.fail("an end never needs a number".to_owned());
                };
                if newest >= update.version {
                    self.fail(format!(
                        "{order} v{} is stale, not exhausted",
                        update.version
                    ));
                }
                if !self.bound_allowed_failure(&order, people).await {
                    self.fail(
                        "pool exhausted although every pair had more eligible numbers than live \
                         contacts"
                            .to_owned(),
                    );
                }
            }
            Err(e) => self.fail(format!("unexpected error {e}")),
        }
    }

    /// Both routes of every contact of `session` are live, name its order and reach the other
    /// party, and each is closed exactly when the session's end closed its direction.
    async fn assert_routes_exist(&self, session: &Session) {
        for c in &session.contacts {
            let a = session
                .participant(&c.a)
                .expect("contact names a participant");
            let b = session
                .participant(&c.b)
                .expect("contact names a participant");
            for (from, phone, to) in a
                .phones()
                .map(|phone| (a, phone, b))
                .chain(b.phones().map(|phone| (b, phone, a)))
            {
                let route = live_route(self.store.as_ref(), phone, &c.number, self.now)
                    .await
                    .unwrap();
                let (who, order, number) = (&from.user_id, &session.order_id, &c.number);
                match route {
                    None => self.fail(format!("applied {order}: {who} has no route on {number}")),
                    Some(r) if &r.order_id != order => self.fail(format!(
                        "applied {order}: {who} dials {number} into {}",
                        r.order_id
                    )),
                    Some(r) if r.callee != to.phone => self.fail(format!(
                        "applied {order}: {who} reaches someone else than {} on {number}",
                        to.user_id
                    )),
                    Some(r) if r.closed == session.admits(&from.role, &to.role) => {
                        self.fail(format!(
                        "applied {order}: {who}'s way to {} on {number} is closed: {}, ended: {:?}",
                        to.user_id, r.closed, session.state
                    ))
                    }
                    Some(_) => {}
                }
            }
        }
    }

    /// The numbers `p` dials in other live orders, from any of their phones.
    async fn live(&self, p: &Participant, except_order: &str) -> usize {
        let mut numbers = HashSet::new();
        for phone in p.phones() {
            let live = self.store.live_contacts(phone, self.now).await.unwrap();
            numbers.extend(
                live.into_iter()
                    .filter(|c| c.order_id.as_str() != except_order)
                    .map(|c| c.number),
            );
        }
        numbers.len()
    }

    /// Does the bound promise a number for some pair of this order? (It must, if we failed.)
    async fn bound_allowed_failure(&self, order: &str, people: &[Participant]) -> bool {
        let eligible = self
            .pool
            .iter()
            .filter(|v| v.state == NumberState::Active)
            .count();
        let pairs = ContactPolicy::default().pairs(people);
        // The numbers this order's running handovers still route for a person are not theirs
        // to be given again in it (docs/data-model.md, "Number health").
        let stored = self.store.session(&order.parse().unwrap()).await.unwrap();
        let handed_over = |p: &Participant| {
            stored
                .as_ref()
                .filter(|s| s.is_live(self.now))
                .map_or(0, |s| {
                    s.handovers
                        .iter()
                        .filter(|h| h.until > self.now && h.contact.involves(&p.user_id))
                        .count()
                })
        };
        for &(i, j) in &pairs {
            // The order's own other pairs count as live contacts too.
            let own = |k: usize| pairs.iter().filter(|&&(a, b)| a == k || b == k).count() - 1;
            let live = self.live(&people[i], order).await
                + own(i)
                + handed_over(&people[i])
                + self.live(&people[j], order).await
                + own(j)
                + handed_over(&people[j]);
            if eligible <= live {
                return true;
            }
        }
        false
    }

    /// The pair invariant over the whole store, then rules 1–2 from each order's session, and a
    /// count of what the audit's walk saw against those sessions, so that an audit that sees
    /// nothing cannot pass.
    async fn check(&self, step: &str) {
        let breaches = vnmask::store::audit(self.store.as_ref(), self.now)
            .await
            .unwrap();
        if !breaches.is_empty() {
            let shown: Vec<String> = breaches.iter().map(|b| b.to_string()).collect();
            self.fail(format!(
                "after {step}, the pair invariant is broken:\n  {}",
                shown.join("\n  ")
            ));
        }
        let mut claimed: HashMap<(String, String), String> = HashMap::new();
        let (mut live_sessions, mut live_pairs, mut live_routes) = (0, 0, 0);
        for order in 0..self.orders.len() {
            let id = format!("o{order}");
            let Some(session) = self.store.session(&id.parse().unwrap()).await.unwrap() else {
                continue;
            };
            let live = session.is_live(self.now);
            if live {
                live_sessions += 1;
                live_pairs += session.contacts.len();
                live_routes += session
                    .route_pairs(session.routes_until)
                    .iter()
                    .chain(&session.handover_pairs())
                    .filter(|pair| pair.routes().iter().all(|r| r.is_live(self.now)))
                    .map(|pair| pair.routes().len())
                    .sum::<usize>();
            }
            for c in &session.contacts {
                let vn = self
                    .pool
                    .iter()
                    .find(|v| v.number == c.number)
                    .expect("contact uses a pool number");
                assert_ne!(vn.state, NumberState::Retired, "rule 2");
                if !live {
                    continue;
                }
                for user in [&c.a, &c.b] {
                    let p = session
                        .participant(user)
                        .expect("contact names a participant");
                    for phone in p.phones() {
                        let dials = (phone.expose().to_owned(), c.number.to_string());
                        if claimed.insert(dials, id.clone()).is_some() {
                            self.fail(format!(
                                "rule 1: a phone of {user} dials {} in two live orders",
                                c.number
                            ));
                        }
                    }
                }
            }
        }
        self.check_pins(step).await;
        let (routes, sessions) = self.walk().await;
        if (routes, sessions) != (live_routes, live_sessions) {
            self.fail(format!(
                "after {step}, the audit's walk saw {routes} live routes and {sessions} live \
                 sessions; the sessions hold {live_pairs} pairs ({live_routes} routes) in \
                 {live_sessions}"
            ));
        }
    }

    /// Every PIN of a live session answers for its participant and reaches the other side of
    /// its contact, in its order; every other PIN ever issued answers for nobody.
    async fn check_pins(&self, step: &str) {
        let mut held: HashMap<PinKey, (String, String, String)> = HashMap::new();
        for order in 0..self.orders.len() {
            let id = format!("o{order}");
            let Some(session) = self.store.session(&id.parse().unwrap()).await.unwrap() else {
                continue;
            };
            if !session.is_live(self.now) {
                continue;
            }
            for c in &session.contacts {
                let pins = c.pins.as_ref().expect("the market has PINs");
                let (a, b) = (
                    session.participant(&c.a).unwrap(),
                    session.participant(&c.b).unwrap(),
                );
                for (pin, from, to) in [(&pins.a, a, b), (&pins.b, b, a)] {
                    let key = PinKey {
                        number: c.number.clone(),
                        pin: pin.clone(),
                    };
                    let expected = (
                        from.phone.expose().to_owned(),
                        to.phone.expose().to_owned(),
                        id.clone(),
                    );
                    if held.insert(key, expected).is_some() {
                        self.fail(format!(
                            "after {step}, two live pairs hold one PIN on {}",
                            c.number
                        ));
                    }
                }
            }
        }
        for key in self.pins_issued.iter().chain(held.keys()) {
            let answers = self
                .store
                .pin_route(key)
                .await
                .unwrap()
                .filter(|r| r.is_live(self.now))
                .map(|r| {
                    (
                        r.caller.expose().to_owned(),
                        r.callee.expose().to_owned(),
                        r.order_id.to_string(),
                    )
                });
            if answers.as_ref() != held.get(key) {
                self.fail(format!(
                    "after {step}, a PIN on {} answers for {:?} where its live pair is {:?} \
                     (caller, callee, order)",
                    key.number,
                    answers.map(|a| a.2),
                    held.get(key).map(|h| &h.2),
                ));
            }
        }
    }

    /// Live routes and sessions, counted over the same walk the audit takes.
    async fn walk(&self) -> (usize, usize) {
        let (mut routes, mut sessions, mut from) = (0, 0, None);
        loop {
            let page = self.store.audit_page(from, 50, self.now).await.unwrap();
            routes += page.routes.len();
            sessions += page.sessions.len();
            match page.next {
                Some(next) => from = Some(next),
                None => return (routes, sessions),
            }
        }
    }

    async fn step(&mut self, step: &Step) {
        match step {
            Step::Happen {
                pick,
                what,
                delivered_at_once,
            } => {
                let Some(update) = self.happen(*pick, what) else {
                    return;
                };
                if *delivered_at_once {
                    self.apply(&update, "deliver at once").await;
                    self.delivered.push(update);
                } else {
                    self.log.push(format!("queue {}", describe(&update)));
                    self.queue.push(update);
                }
            }
            Step::DeliverOldest | Step::DeliverAny(_) if self.queue.is_empty() => {}
            Step::DeliverOldest => {
                let update = self.queue.remove(0);
                self.apply(&update, "deliver oldest").await;
                self.delivered.push(update);
            }
            Step::DeliverAny(i) => {
                let update = self.queue.remove(i % self.queue.len());
                self.apply(&update, "deliver").await;
                self.delivered.push(update);
            }
            Step::Redeliver(_) if self.delivered.is_empty() => {}
            Step::Redeliver(i) => {
                let update = self.delivered[i % self.delivered.len()].clone();
                self.apply(&update, "redeliver").await;
            }
            Step::Lookup(_) if self.orders.is_empty() => {}
            Step::Lookup(i) => {
                let order = &self.orders[i % self.orders.len()];
                // The fallback only assigns an active order, from its participants snapshot.
                if !order.ended {
                    let latest = order.latest.clone();
                    self.apply(&latest, "lookup fallback").await;
                }
            }
            Step::WaitForLapse { past } => {
                let mut next: Option<UnixTime> = None;
                for i in 0..self.orders.len() {
                    let id = format!("o{i}").parse().unwrap();
                    let Some(session) = self.store.session(&id).await.unwrap() else {
                        continue;
                    };
                    if session.is_live(self.now) {
                        let until = session.routes_until;
                        next = Some(next.map_or(until, |n| n.min(until)));
                    }
                }
                if let Some(next) = next {
                    let secs = next - self.now + i64::from(*past);
                    self.log
                        .push(format!("wait {secs} s, until a session lapses"));
                    self.now += secs;
                }
            }
            Step::Wait(secs) => {
                self.now += secs;
                self.log.push(format!("wait {secs} s"));
            }
            Step::Quarantine(i) => {
                // A number carrying a live contact if there is one: that is what moves test.
                let mut carrying = HashSet::new();
                for k in 0..self.orders.len() {
                    let id: OrderId = format!("o{k}").parse().unwrap();
                    if let Some(s) = self.store.session(&id).await.unwrap() {
                        if s.is_live(self.now) {
                            carrying.extend(s.contacts.iter().map(|c| c.number.clone()));
                        }
                    }
                }
                let serving: Vec<usize> = (0..self.pool.len())
                    .filter(|&k| self.pool[k].state.keeps_contacts())
                    .collect();
                let busy: Vec<usize> = serving
                    .iter()
                    .copied()
                    .filter(|&k| carrying.contains(&self.pool[k].number))
                    .collect();
                let serving = if busy.is_empty() { serving } else { busy };
                if let Some(&k) = serving.get(i % serving.len().max(1)) {
                    let held = vnmask::pool::quarantined(
                        &self.pool[k],
                        vnmask::domain::HoldReason::Operator,
                        None,
                        self.now,
                    );
                    self.store.put_number(&held).await.unwrap();
                    self.log.push(format!("quarantine {}", held.number));
                    self.pool[k] = held;
                }
            }
            Step::Release(i) => {
                let held: Vec<usize> = (0..self.pool.len())
                    .filter(|&k| self.pool[k].state == NumberState::Quarantined)
                    .collect();
                if let Some(&k) = held.get(i % held.len().max(1)) {
                    let active = vnmask::pool::release(&self.pool[k], 0, true, self.now).unwrap();
                    self.store.put_number(&active).await.unwrap();
                    self.log.push(format!("release {} at once", active.number));
                    self.pool[k] = active;
                }
            }
            Step::Move(_) if self.orders.is_empty() => {}
            Step::Move(i) => {
                let mut on_leaving = Vec::new();
                for k in 0..self.orders.len() {
                    let id: OrderId = format!("o{k}").parse().unwrap();
                    let session = self.store.session(&id).await.unwrap();
                    let leaving = session.is_some_and(|s| {
                        s.contacts.iter().any(|c| {
                            self.pool
                                .iter()
                                .any(|v| v.number == c.number && !v.state.keeps_contacts())
                        })
                    });
                    if leaving {
                        on_leaving.push(id);
                    }
                }
                let order: OrderId = match on_leaving.get(i % on_leaving.len().max(1)) {
                    Some(id) => id.clone(),
                    None => format!("o{}", i % self.orders.len()).parse().unwrap(),
                };
                let moved = self.assigner.move_off(&order, self.now).await;
                let shown = match &moved {
                    Ok(Moved::Moved { pairs, .. }) => format!("{pairs} pair(s) moved"),
                    Ok(Moved::Nothing) => "nothing to move".to_owned(),
                    Err(e) => format!("error: {e}"),
                };
                self.log
                    .push(format!("t+{} move {order}: {shown}", self.now - START));
                match moved {
                    Ok(Moved::Moved { session, .. }) => {
                        let applied = self.applied.get(order.as_str()).copied();
                        if applied != Some(session.version) {
                            self.fail(format!(
                                "a move of {order} wrote v{} over the applied {applied:?}",
                                session.version
                            ));
                        }
                        let leaving = |n: &VirtualNumber| {
                            self.pool
                                .iter()
                                .any(|v| &v.number == n && !v.state.keeps_contacts())
                        };
                        if session.contacts.iter().any(|c| leaving(&c.number)) {
                            self.fail(format!(
                                "{order} kept a contact on a number leaving service"
                            ));
                        }
                        self.assert_routes_exist(&session).await;
                    }
                    Ok(Moved::Nothing) | Err(AssignError::PoolExhausted(_)) => {}
                    Err(e) => self.fail(format!("unexpected error moving {order}: {e}")),
                }
            }
        }
    }
}

fn settings() -> AssignSettings {
    let mut settings = AssignSettings::for_markets([market("IN")]);
    settings.grace = Duration::from_secs(GRACE as u64);
    settings.session_ttl = Duration::from_secs(SESSION_TTL as u64);
    settings.pin_markets.insert(market("IN"));
    // Number health changes the pool between steps: every plan reads it.
    settings.pool_cache = Duration::ZERO;
    settings
}

/// Plays a history on `store`, checking after every step; then delivers what is still queued
/// (every event arrives at least once) and lets every session lapse.
async fn play(store: Arc<dyn Store>, history: History) {
    let mut numbers = pool("IN", history.pool_size + 1);
    if history.draining {
        numbers[0].state = NumberState::Draining;
    }
    if history.retired {
        numbers[history.pool_size].state = NumberState::Retired;
    } else {
        numbers.pop();
    }
    for n in &numbers {
        store.put_number(n).await.unwrap();
    }
    let mut w = World {
        assigner: Assigner::new(store.clone(), settings()),
        store,
        pool: numbers,
        now: START,
        orders: Vec::new(),
        queue: Vec::new(),
        delivered: Vec::new(),
        applied: HashMap::new(),
        log: Vec::new(),
        pins_issued: HashSet::new(),
    };
    for (n, step) in history.steps.iter().enumerate() {
        w.step(step).await;
        w.check(&format!("step {n} ({step:?})")).await;
    }
    while !w.queue.is_empty() {
        w.step(&Step::DeliverOldest).await;
        w.check("a final delivery").await;
    }
    w.step(&Step::Wait(SESSION_TTL + 1)).await;
    w.check("the session TTL after the last event").await;
    if w.walk().await != (0, 0) {
        w.fail("routes outlive the session TTL".to_owned());
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn late_reordered_and_repeated_events_never_cross_a_pair_in_memory(
        history in history(20..60),
    ) {
        runtime().block_on(play(Arc::new(MemoryStore::new()), history));
    }
}

proptest! {
    // Each case creates a table on DynamoDB Local and drops it after a pass.
    #![proptest_config(ProptestConfig {
        cases: 24,
        max_shrink_time: 120_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn late_reordered_and_repeated_events_never_cross_a_pair_on_dynamodb(
        history in history(20..60),
    ) {
        runtime().block_on(async {
            let d = local_dynamo().await;
            play(d.store.clone(), history).await;
            d.client.delete_table().table_name(&d.table).send().await.unwrap();
        });
    }
}

#[test]
fn people_in_fixtures_are_distinct() {
    let phones: HashSet<_> = (0..20)
        .flat_map(|i| [customer(i).phone, driver(i).phone, merchant(i).phone])
        .collect();
    assert_eq!(phones.len(), 60);
}

const VOICE: Capabilities = Capabilities {
    voice: true,
    sms: false,
};

/// A market's pool of up to ten numbers, each voice-only or voice+sms and in any state.
fn mixed_pool() -> impl Strategy<Value = Vec<PoolNumber>> {
    proptest::collection::vec((any::<bool>(), 0..4u8), 0..10).prop_map(|kinds| {
        pool("IN", kinds.len())
            .into_iter()
            .zip(kinds)
            .map(|(n, (sms, state))| PoolNumber {
                capabilities: if sms {
                    Capabilities::VOICE_AND_SMS
                } else {
                    VOICE
                },
                state: match state {
                    0 => NumberState::Draining,
                    1 => NumberState::Retired,
                    _ => NumberState::Active,
                },
                ..n
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Whatever a market needs, the policy hands out only active numbers carrying it, distinct
    /// for each person, and runs dry only when the market's own bound says so: a pair's two
    /// parties already dial every eligible number.
    #[test]
    fn a_market_gets_only_numbers_with_its_channels_and_runs_dry_only_over_them(
        numbers in mixed_pool(),
        sms_needed in any::<bool>(),
        busy_picks in proptest::collection::vec(proptest::collection::vec(0..10usize, 0..6), 3),
    ) {
        let needs = if sms_needed { Capabilities::VOICE_AND_SMS } else { VOICE };
        let people = [customer(0), driver(0), merchant(0)];
        let busy: Vec<HashSet<VirtualNumber>> = busy_picks
            .iter()
            .map(|picks| {
                picks
                    .iter()
                    .filter_map(|&i| numbers.get(i).map(|v| v.number.clone()))
                    .collect()
            })
            .collect();
        let in_market = market("IN");
        let order: OrderId = "o1".parse().unwrap();
        let policy = ContactPolicy::default();
        let eligible: HashSet<&VirtualNumber> = numbers
            .iter()
            .filter(|v| v.state == NumberState::Active && v.capabilities.contains(needs))
            .map(|v| &v.number)
            .collect();
        let planned = plan_contacts(&PlanRequest {
            order_id: &order,
            market: &in_market,
            participants: &people,
            previous: None,
            busy: &busy,
            pool: &numbers,
            contact_policy: &policy,
            needs,
        });
        match planned {
            Ok(contacts) => {
                prop_assert_eq!(contacts.len(), policy.pairs(&people).len());
                let mut dialled: Vec<HashSet<VirtualNumber>> = busy.clone();
                for c in &contacts {
                    prop_assert!(eligible.contains(&c.number), "{} is not eligible", c.number);
                    let carried = numbers.iter().find(|v| v.number == c.number).unwrap();
                    prop_assert_eq!(c.capabilities, carried.capabilities);
                    for (k, p) in people.iter().enumerate() {
                        if c.involves(&p.user_id) {
                            prop_assert!(dialled[k].insert(c.number.clone()), "a person dials a number twice");
                        }
                    }
                }
            }
            Err(e) => {
                prop_assert_eq!(e.eligible, eligible.len());
                // Running dry means a pair's two parties dial every eligible number between
                // them: their other orders' eligible numbers, and at most one more each from
                // this order's other pair.
                let held = |k: usize| busy[k].iter().filter(|n| eligible.contains(n)).count();
                prop_assert!(e.live_contacts <= eligible.len());
                prop_assert!(policy
                    .pairs(&people)
                    .iter()
                    .any(|&(i, j)| held(i) + held(j) + 2 >= eligible.len()));
            }
        }
    }

    /// SMS missing costs no number: a voice-only market over voice-only numbers plans exactly
    /// what a voice+sms market plans over the same numbers carrying SMS.
    #[test]
    fn a_voice_only_market_plans_as_a_voice_and_sms_one_does(
        size in 1..12usize,
        busy_picks in proptest::collection::vec(proptest::collection::vec(0..12usize, 0..8), 3),
    ) {
        let people = [customer(0), driver(0), merchant(0)];
        let with_sms = pool("IN", size);
        let voice_only: Vec<PoolNumber> = with_sms
            .iter()
            .map(|v| PoolNumber { capabilities: VOICE, ..v.clone() })
            .collect();
        let busy: Vec<HashSet<VirtualNumber>> = busy_picks
            .iter()
            .map(|picks| picks.iter().filter_map(|&i| with_sms.get(i).map(|v| v.number.clone())).collect())
            .collect();
        let (in_market, order, policy) = (market("IN"), "o1".parse::<OrderId>().unwrap(), ContactPolicy::default());
        let plan = |numbers: &[PoolNumber], needs| {
            plan_contacts(&PlanRequest {
                order_id: &order,
                market: &in_market,
                participants: &people,
                previous: None,
                busy: &busy,
                pool: numbers,
                contact_policy: &policy,
                needs,
            })
            .map(|cs| cs.into_iter().map(|c| c.number).collect::<Vec<_>>())
            .map_err(|e| (e.eligible, e.live_contacts))
        };
        prop_assert_eq!(plan(&voice_only, VOICE), plan(&with_sms, Capabilities::VOICE_AND_SMS));
    }
}
