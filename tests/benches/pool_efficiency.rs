//! Pool efficiency: a day of a realistic order stream through the real assignment policy.
//!
//! Publishes the "pool-efficiency" section (see `vnmask_tests::bench`): numbers needed by
//! vnmask vs the lower bound, exclusive leasing and the "2 × max sessions per person − 1"
//! sizing, the smallest pool that never runs out over the day, and the busiest number's share
//! of calls. The day is played in a voice+SMS market on voice+SMS numbers and in a voice-only
//! market on voice-only numbers, then in both on one mixed pool, to show that a market without
//! SMS needs no more numbers and that each market gets only numbers carrying its channels.
//! Last, the voice+SMS market's day is played again with numbers quarantined during it, to
//! show how many extra numbers each cooling-off period costs.
//! Then the day gets calls, and what carriers let one number carry (concurrent calls, calls an
//! hour) sizes the pool too: the voice+SMS market's calls are played on the smallest pool its
//! people need (the person bound) and on the pool its calls need (the capacity bound, from the
//! day's measured call load), to show how far past the caps the first goes and
//! whether the second keeps within them.
//!
//! Knobs (environment): `SIM_ORDERS_PER_DAY` (default 1 100 000: the evening peak then passes
//! 100 k concurrent orders, grace included, the scale the targets name), `SIM_SEED` (default 1),
//! `SIM_QUARANTINES` (numbers quarantined over the day, default 2: the first at the peak of live
//! orders, the worst moment, the others spread evenly over the day from it),
//! `SIM_COOLING_HOURS` (the cooling-off periods played, default `0,1,6,24`; 0 h is always
//! played, as it is the quarantine's own cost), `SIM_CALLS_PER_ORDER` (the mean calls of an
//! order, default 3; each order's count is Poisson around it), `SIM_CALL_SECONDS` (the mean
//! call length, default 60; lengths are exponential, clamped to 5–1800 s), `SIM_CAPACITY`
//! (what one number may carry per market, in `vnmask::pool::parse_capacities` form
//! `market:concurrent calls/calls per hour`, default `US:10/600,IN:10/600`; US must have one)
//! and `SIM_CAPACITY_SCALE` (default 2: the pool the calls need is played on a day of 1/2 the
//! orders on the pool that day's calls need, each number carrying about what it would at full
//! scale, for a quarter of the planning time, which is orders × numbers: the whole day on
//! ~1 100 numbers takes over 2 min on 2 cores; 1 plays the whole day).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::fmt::Write;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vnmask::assignment::{plan_contacts, AssignSettings, PlanRequest};
use vnmask::config::assign_settings;
use vnmask::domain::{
    Capabilities, Contact, ContactPolicy, Market, NumberState, OrderId, Participant, PoolNumber,
    RealNumber, VirtualNumber,
};
use vnmask::pool::{
    capacity_bound, parse_capacities, safe_mean_concurrent, CallCapacity, CallLoad,
};
use vnmask_tests::bench::{publish, target};
use vnmask_tests::pool;

const DAY: i64 = 86_400;
const GRACE: i64 = 30 * 60;
const SHARED_RIDE_SHARE: f64 = 0.05;
/// The busiest-share tally spreads this many calls of each order evenly over its contacts: a
/// share, which the count barely moves. The timed calls of the capacity plays follow
/// `SIM_CALLS_PER_ORDER` instead.
const CALLS_PER_ORDER: u64 = 3;
/// The share of calls made in the grace rather than during the order: a forgotten item, a
/// question about the fare. Most calls are about meeting, while the order runs.
const GRACE_CALL_SHARE: f64 = 0.05;
/// Call lengths are clamped to this range, so that the exponential's tails neither make a call
/// of no time nor one holding a channel for hours.
const CALL_SECONDS: (f64, f64) = (5.0, 1800.0);

/// A person of the simulation: (is a driver, index).
type Person = (bool, usize);

#[derive(Clone)]
struct Order {
    people: Vec<Person>,
    start: i64,
    end: i64,
}

/// The day's orders: arrivals follow a daily curve (night trough, evening peak at 2× the mean
/// rate), lengths 20–60 min, drivers holding 1–3 orders at once, 5 % shared rides.
fn order_stream(orders_per_day: usize, seed: u64) -> (Vec<Order>, usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mean_rate = orders_per_day as f64 / DAY as f64;
    // Drivers: enough that at the peak each holds two orders on average.
    let peak_concurrent = (2.0 * mean_rate * 40.0 * 60.0) as usize;
    let drivers = (peak_concurrent / 2).max(10);
    let capacity: Vec<usize> = (0..drivers).map(|_| rng.gen_range(1..=3)).collect();
    let customers = orders_per_day * 3;
    let mut busy = vec![0usize; drivers];
    let mut ends: BinaryHeap<Reverse<(i64, usize)>> = BinaryHeap::new();
    let mut free: Vec<usize> = (0..drivers).collect();
    let mut orders = Vec::with_capacity(orders_per_day);
    let mut t = 0.0f64;
    while orders.len() < orders_per_day {
        let phase = (t / DAY as f64) * std::f64::consts::TAU;
        let rate = mean_rate * (1.0 - (phase - 0.6).cos() * 0.95).max(0.05);
        t += -(1.0 - rng.gen::<f64>()).ln() / rate;
        let start = t as i64;
        while let Some(Reverse((end, d))) = ends.peek().copied() {
            if end > start {
                break;
            }
            ends.pop();
            if busy[d] == capacity[d] {
                free.push(d);
            }
            busy[d] -= 1;
        }
        let Some(slot) = (!free.is_empty()).then(|| rng.gen_range(0..free.len())) else {
            continue;
        };
        let d = free[slot];
        busy[d] += 1;
        if busy[d] == capacity[d] {
            free.swap_remove(slot);
        }
        let end = start + rng.gen_range(20 * 60..=60 * 60);
        ends.push(Reverse((end, d)));
        let mut people = vec![(true, d), (false, rng.gen_range(0..customers))];
        if rng.gen_bool(SHARED_RIDE_SHARE) {
            people.push((false, rng.gen_range(0..customers)));
        }
        orders.push(Order { people, start, end });
    }
    (orders, drivers)
}

/// What the order stream alone says, whatever the pool.
struct Demand {
    /// The most live contacts (pairs, incl. grace) one person holds at once: no pool can be smaller.
    lower_bound: usize,
    /// The most orders (incl. grace) one person is part of at once.
    max_sessions_per_person: usize,
    /// Exclusive leasing holds one number per order from its start to the end of its grace.
    peak_exclusive: usize,
    /// When the most orders are live (grace included): the most pairs to move and the least
    /// room to move them to.
    peak_at: i64,
    peak_active_orders: usize,
}

fn demand(orders: &[Order]) -> Demand {
    let policy = ContactPolicy::default();
    let phone = RealNumber::parse("+919810000001").unwrap();
    let mut contacts: HashMap<Person, Vec<i64>> = HashMap::new();
    let mut sessions: HashMap<Person, Vec<i64>> = HashMap::new();
    let (mut in_grace, mut active) = (BinaryHeap::new(), BinaryHeap::new());
    let mut d = Demand {
        lower_bound: 0,
        max_sessions_per_person: 0,
        peak_exclusive: 0,
        peak_at: 0,
        peak_active_orders: 0,
    };
    for order in orders {
        let (now, until) = (order.start, order.end + GRACE);
        for (heap, end) in [(&mut in_grace, until), (&mut active, order.end)] {
            while heap.peek().is_some_and(|Reverse(e)| *e <= now) {
                heap.pop();
            }
            heap.push(Reverse(end));
        }
        if in_grace.len() > d.peak_exclusive {
            d.peak_exclusive = in_grace.len();
            d.peak_at = now;
        }
        d.peak_active_orders = d.peak_active_orders.max(active.len());
        let people: Vec<Participant> = order
            .people
            .iter()
            .map(|&p| participant(p, &phone))
            .collect();
        let pairs = policy.pairs(&people);
        for (k, person) in order.people.iter().enumerate() {
            let held = contacts.entry(*person).or_default();
            held.retain(|e| *e > now);
            held.extend(
                pairs
                    .iter()
                    .filter(|&&(a, b)| a == k || b == k)
                    .map(|_| until),
            );
            d.lower_bound = d.lower_bound.max(held.len());
            let held = sessions.entry(*person).or_default();
            held.retain(|e| *e > now);
            held.push(until);
            d.max_sessions_per_person = d.max_sessions_per_person.max(held.len());
        }
    }
    d
}

/// The policy never looks at phones; one valid number stands in for everyone's.
fn participant((driver, id): Person, phone: &RealNumber) -> Participant {
    Participant {
        role: if driver { "driver" } else { "customer" }.parse().unwrap(),
        user_id: format!("{}{id}", if driver { "d" } else { "c" })
            .parse()
            .unwrap(),
        phone: phone.clone(),
        alternate_phones: Vec::new(),
    }
}

/// The markets the day is played in, set as an operator sets them: one whose pairs need voice
/// and SMS, one whose pairs need voice only.
const MARKETS: &str = "US:voice+sms,IN:voice";

/// Where numbers without SMS start in the US test numbering, clear of the voice+SMS ones.
const US_VOICE_ONLY_FROM: usize = 1000;

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

/// One market of the bench and the channels its pairs need.
struct Served {
    code: &'static str,
    market: Market,
    needs: Capabilities,
}

impl Served {
    fn new(settings: &AssignSettings, code: &'static str) -> Self {
        let market: Market = code.parse().unwrap();
        let needs = settings.needs_for(&market).expect("market in MARKETS");
        Served {
            code,
            market,
            needs,
        }
    }

    /// The market's own numbers: `count` of them, carrying exactly the channels it needs.
    fn own(&self, count: usize) -> Vec<PoolNumber> {
        numbers(self.code, 0, count, self.needs)
    }

    fn channels(&self) -> String {
        self.needs
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join("+")
    }
}

#[derive(PartialEq)]
struct Outcome {
    /// Orders left unserved, and live pairs a quarantine could not move.
    failures: usize,
    /// Calls each number carried.
    calls: HashMap<VirtualNumber, u64>,
    /// Live pairs moved off quarantined numbers.
    moved: usize,
    /// Live pairs on a quarantined number that no other number could take (in `failures`).
    unmovable: usize,
}

impl Outcome {
    fn busiest_share(&self) -> f64 {
        let total: u64 = self.calls.values().sum();
        self.calls.values().copied().max().unwrap_or(0) as f64 / total.max(1) as f64
    }

    fn mean_share(&self) -> f64 {
        1.0 / self.calls.len().max(1) as f64
    }
}

/// Numbers quarantined during the day: at each instant of `at` the in-service number carrying
/// the most live pairs is quarantined, and it takes no new pair for `cooling` seconds after.
struct Health {
    at: Vec<i64>,
    cooling: i64,
}

impl Health {
    const NONE: Health = Health {
        at: Vec::new(),
        cooling: 0,
    };
}

/// `count` instants of the day: the first at `peak`, the others evenly spread from it.
fn quarantine_times(count: usize, peak: i64) -> Vec<i64> {
    let mut at: Vec<i64> = (0..count as i64)
        .map(|k| (peak + k * DAY / count as i64) % DAY)
        .collect();
    at.sort_unstable();
    at
}

/// One of a person's live contacts: its number, until when it lives, and which pair it is.
struct Held {
    number: VirtualNumber,
    until: i64,
    order: usize,
    with: Person,
}

/// Plays the day through `plan_contacts` in `served`'s market, offering it `numbers`, with
/// `health`'s quarantines.
fn simulate(orders: &[Order], served: &Served, numbers: &[PoolNumber], health: &Health) -> Outcome {
    play(orders, served, numbers, health, |_, _| {})
}

/// [`simulate`], telling `planned` each served order's contacts as planned at its start (a
/// quarantine's later moves are not told: the capacity plays have none).
fn play(
    orders: &[Order],
    served: &Served,
    numbers: &[PoolNumber],
    health: &Health,
    mut planned: impl FnMut(usize, &[Contact]),
) -> Outcome {
    let policy = ContactPolicy::default();
    let phone = RealNumber::parse("+919810000001").unwrap();
    let mut pool = numbers.to_vec();
    // Each person's live contacts, pruned as time passes.
    let mut live: HashMap<Person, Vec<Held>> = HashMap::new();
    let mut out = Outcome {
        failures: 0,
        calls: HashMap::new(),
        moved: 0,
        unmovable: 0,
    };
    let mut quarantines = health.at.iter().copied().peekable();
    // Quarantined numbers coming back: (when, index in `pool`).
    let mut returns: BinaryHeap<Reverse<(i64, usize)>> = BinaryHeap::new();
    for (i, order) in orders.iter().enumerate() {
        let (now, until) = (order.start, order.end + GRACE);
        // Health events up to this order's start, in time order; a number back at the very
        // instant of a quarantine may be the one quarantined.
        loop {
            let back = returns
                .peek()
                .map(|Reverse(e)| *e)
                .filter(|(t, _)| *t <= now);
            let next = quarantines.peek().copied().filter(|q| *q <= now);
            match (back, next) {
                (Some((t, k)), q) if q.is_none_or(|q| t <= q) => {
                    returns.pop();
                    pool[k].state = NumberState::Active;
                }
                (_, Some(q)) => {
                    quarantines.next();
                    if let Some(k) = quarantine(q, orders, served, &mut pool, &mut live, &mut out) {
                        returns.push(Reverse((q + health.cooling, k)));
                    }
                }
                (_, None) => break,
            }
        }
        let people: Vec<Participant> = order
            .people
            .iter()
            .map(|&p| participant(p, &phone))
            .collect();
        let busy: Vec<HashSet<VirtualNumber>> = order
            .people
            .iter()
            .map(|id| {
                let entry = live.entry(*id).or_default();
                entry.retain(|h| h.until > now);
                entry.iter().map(|h| h.number.clone()).collect()
            })
            .collect();
        let order_id: OrderId = format!("o{i}").parse().unwrap();
        let planned_now = plan_contacts(&PlanRequest {
            order_id: &order_id,
            market: &served.market,
            participants: &people,
            previous: None,
            busy: &busy,
            pool: &pool,
            contact_policy: &policy,
            needs: served.needs,
        });
        let Ok(contacts) = planned_now else {
            out.failures += 1;
            continue;
        };
        planned(i, &contacts);
        for (k, c) in contacts.iter().enumerate() {
            let share = CALLS_PER_ORDER / contacts.len() as u64
                + u64::from((k as u64) < CALLS_PER_ORDER % contacts.len() as u64);
            *out.calls.entry(c.number.clone()).or_default() += share;
        }
        for (p, id) in people.iter().zip(&order.people) {
            let entry = live.entry(*id).or_default();
            for c in contacts.iter().filter(|c| c.involves(&p.user_id)) {
                let with = people
                    .iter()
                    .position(|q| c.other(&p.user_id) == Some(&q.user_id))
                    .map(|k| order.people[k])
                    .expect("a contact joins two of the order's people");
                entry.push(Held {
                    number: c.number.clone(),
                    until,
                    order: i,
                    with,
                });
            }
        }
    }
    out
}

/// Quarantines, at `at`, the in-service number carrying the most live pairs, and moves each of
/// its live pairs at once to the number the policy plans for it then: one contact, so both
/// directions move together. Returns the quarantined number's index in `pool`.
fn quarantine(
    at: i64,
    orders: &[Order],
    served: &Served,
    pool: &mut [PoolNumber],
    live: &mut HashMap<Person, Vec<Held>>,
    out: &mut Outcome,
) -> Option<usize> {
    let k = {
        let mut load: HashMap<&VirtualNumber, usize> = HashMap::new();
        for h in live.values().flatten().filter(|h| h.until > at) {
            *load.entry(&h.number).or_default() += 1;
        }
        (0..pool.len())
            .filter(|&k| pool[k].eligible_for(&served.market, served.needs))
            .max_by_key(|&k| (load.get(&pool[k].number).copied(), Reverse(k)))?
    };
    // Quarantined: the policy gives it no new pair, and keeps none of its contacts.
    pool[k].state = NumberState::Quarantined;
    let number = pool[k].number.clone();
    // Each pair once (both its people hold it), in the order its order came.
    let pairs: BTreeSet<(usize, Person, Person)> = live
        .iter()
        .flat_map(|(p, held)| {
            held.iter()
                .filter(|h| h.until > at && h.number == number)
                .map(|h| (h.order, (*p).min(h.with), (*p).max(h.with)))
        })
        .collect();
    let policy = ContactPolicy::default();
    let phone = RealNumber::parse("+919810000001").unwrap();
    for (o, x, y) in pairs {
        // The two as the order lists them, under its own id: what a re-plan of its session sees.
        let mut two: Vec<Person> = Vec::with_capacity(2);
        for p in orders[o].people.iter().filter(|p| **p == x || **p == y) {
            if !two.contains(p) {
                two.push(*p);
            }
        }
        let people: Vec<Participant> = two.iter().map(|&p| participant(p, &phone)).collect();
        // Everything else either of them can dial now stays theirs: rule 1 across orders.
        let busy: Vec<HashSet<VirtualNumber>> = two
            .iter()
            .map(|p| {
                live.get(p)
                    .into_iter()
                    .flatten()
                    .filter(|h| h.until > at && h.number != number)
                    .map(|h| h.number.clone())
                    .collect()
            })
            .collect();
        let order_id: OrderId = format!("o{o}").parse().unwrap();
        let planned = plan_contacts(&PlanRequest {
            order_id: &order_id,
            market: &served.market,
            participants: &people,
            previous: None,
            busy: &busy,
            pool,
            contact_policy: &policy,
            needs: served.needs,
        });
        let moved_to = planned
            .ok()
            .and_then(|c| c.into_iter().next())
            .map(|c| c.number);
        match moved_to {
            Some(_) => out.moved += 1,
            None => {
                out.unmovable += 1;
                out.failures += 1;
            }
        }
        for (p, other) in [(x, y), (y, x)] {
            let held = live
                .get_mut(&p)
                .expect("both people of a live pair hold it");
            let this = |h: &Held| h.order == o && h.with == other && h.number == number;
            match &moved_to {
                Some(n) => held
                    .iter_mut()
                    .filter(|h| this(h))
                    .for_each(|h| h.number = n.clone()),
                // The pair has lost its number: nothing left of it to hold.
                None => held.retain(|h| !this(h)),
            }
        }
    }
    // Its pairs moved, it cools off (no new pair) until it comes back.
    pool[k].state = NumberState::CoolingOff;
    Some(k)
}

/// A market's search for the smallest pool of its own numbers that never runs out.
struct Search {
    /// Every pool size tried, smallest first, and how the day went.
    runs: Vec<(usize, Outcome)>,
    smallest: usize,
}

impl Search {
    /// From `first` numbers, grow the pool until a whole day with `health`'s quarantines
    /// passes with no order left unserved and no pair left unmoved.
    fn run(orders: &[Order], served: &Served, first: usize, health: &Health) -> Self {
        let mut runs = Vec::new();
        let mut size = first.max(1);
        loop {
            let out = simulate(orders, served, &served.own(size), health);
            let done = out.failures == 0;
            runs.push((size, out));
            if done {
                return Search {
                    runs,
                    smallest: size,
                };
            }
            size += 1;
        }
    }

    fn at(&self, size: usize) -> Option<&Outcome> {
        self.runs.iter().find(|(s, _)| *s == size).map(|(_, o)| o)
    }

    fn best(&self) -> &Outcome {
        self.at(self.smallest).expect("the smallest pool was run")
    }
}

/// A market played on a mixed pool: `own` of its own numbers among numbers it must not get.
struct MixedRun {
    own: usize,
    offered: usize,
    out: Outcome,
    /// Numbers that carried calls but are not among the market's own.
    outside: usize,
    /// The same unserved orders and the same calls on the same numbers as its own numbers alone.
    as_alone: bool,
}

fn mixed_run(
    orders: &[Order],
    served: &Served,
    search: &Search,
    own: usize,
    others: &[PoolNumber],
) -> MixedRun {
    let mine = served.own(own);
    let offered: Vec<PoolNumber> = mine.iter().chain(others).cloned().collect();
    let out = simulate(orders, served, &offered, &Health::NONE);
    let mine: HashSet<&VirtualNumber> = mine.iter().map(|n| &n.number).collect();
    let outside = out.calls.keys().filter(|n| !mine.contains(n)).count();
    let as_alone = search.at(own).is_some_and(|alone| *alone == out);
    MixedRun {
        own,
        offered: offered.len(),
        out,
        outside,
        as_alone,
    }
}

/// One call of the day. Drawn from the orders alone, never from a pool, so that every pool
/// carries the same calls.
struct Call {
    order: u32,
    start: i64,
    end: i64,
    /// Which of the order's contacts carries it: the one at this fraction of their list.
    pick: f32,
}

/// A Poisson count around `mean` (Knuth's product of uniforms, fine for the few calls of an
/// order).
fn poisson(rng: &mut StdRng, mean: f64) -> u32 {
    let floor = (-mean).exp();
    let (mut k, mut product) = (0, rng.gen::<f64>());
    while product > floor {
        k += 1;
        product *= rng.gen::<f64>();
    }
    k
}

/// The day's calls, in start order: each order makes a Poisson count of them around
/// `per_order`, each on one of its contacts picked at random, starting at a uniform moment of
/// the order (or, for [`GRACE_CALL_SHARE`] of them, of its grace) and lasting an exponential
/// time around `mean_seconds`, clamped to [`CALL_SECONDS`].
fn day_calls(orders: &[Order], per_order: f64, mean_seconds: f64, seed: u64) -> Vec<Call> {
    // A stream of its own, so that the order stream and every figure drawn from it stay as
    // they were without calls.
    let mut rng = StdRng::seed_from_u64(seed ^ 0xCA11_CA11);
    let mut calls = Vec::new();
    for (i, order) in orders.iter().enumerate() {
        for _ in 0..poisson(&mut rng, per_order) {
            let (from, to) = if rng.gen_bool(GRACE_CALL_SHARE) {
                (order.end, order.end + GRACE)
            } else {
                (order.start, order.end)
            };
            let start = rng.gen_range(from..to);
            let seconds = (-(1.0 - rng.gen::<f64>()).ln() * mean_seconds)
                .clamp(CALL_SECONDS.0, CALL_SECONDS.1);
            calls.push(Call {
                order: i as u32,
                start,
                end: start + seconds.round() as i64,
                pick: rng.gen(),
            });
        }
    }
    calls.sort_by_key(|c| c.start);
    calls
}

/// The most of `spans` (start, end), given in start order, in progress at once; one ending as
/// another starts is not.
fn most_at_once(spans: impl IntoIterator<Item = (i64, i64)>) -> usize {
    let mut ends = BinaryHeap::new();
    let mut most = 0;
    for (start, end) in spans {
        while ends.peek().is_some_and(|Reverse(e)| *e <= start) {
            ends.pop();
        }
        ends.push(Reverse(end));
        most = most.max(ends.len());
    }
    most
}

/// The market's day of calls as pool refresh would tally it.
struct Measured {
    load: CallLoad,
    /// The calls of the busiest clock hour (hours are counted from the day's start; calls of
    /// late orders past midnight fall in hours 24 and on, the night's quietest).
    peak_hour_calls: usize,
    /// The most calls in progress at once over the market.
    peak_concurrent: usize,
}

fn measure(calls: &[Call]) -> Measured {
    let mut per_hour: HashMap<i64, usize> = HashMap::new();
    for c in calls {
        *per_hour.entry(c.start / 3600).or_default() += 1;
    }
    let peak_hour_calls = per_hour.values().copied().max().unwrap_or(0);
    let seconds: i64 = calls.iter().map(|c| c.end - c.start).sum();
    let count = calls.len().max(1) as f64;
    Measured {
        load: CallLoad {
            calls_per_day: calls.len() as f64,
            peak_hour_share: peak_hour_calls as f64 / count,
            mean_call_seconds: seconds as f64 / count,
        },
        peak_hour_calls,
        peak_concurrent: most_at_once(calls.iter().map(|c| (c.start, c.end))),
    }
}

/// Plays the day on `size` of `served`'s own numbers; says how it went and each order's
/// contacts' numbers (indices into those numbers; none for an order left unserved).
fn plans_on(orders: &[Order], served: &Served, size: usize) -> (Outcome, Vec<Vec<u32>>) {
    let numbers = served.own(size);
    let index: HashMap<&VirtualNumber, u32> = numbers
        .iter()
        .enumerate()
        .map(|(k, n)| (&n.number, k as u32))
        .collect();
    let mut plans = vec![Vec::new(); orders.len()];
    let out = play(orders, served, &numbers, &Health::NONE, |i, contacts| {
        plans[i] = contacts.iter().map(|c| index[&c.number]).collect();
    });
    (out, plans)
}

/// How one pool carried the day's calls, against what a number may carry.
#[derive(Default)]
struct Carried {
    /// Numbers that carried calls at all.
    numbers_used: usize,
    /// Calls made: an order the pool left unserved makes none.
    calls: usize,
    /// The busiest number's most calls in progress at once, none refused, and the numbers that
    /// went over the concurrent cap at some moment.
    peak_concurrent: usize,
    over_concurrent: usize,
    /// The busiest number's most calls started in one clock hour, and the numbers that went
    /// over the hourly cap in some hour.
    peak_hour: usize,
    over_hourly: usize,
    /// Calls that found their number at its concurrent cap and were refused, their seconds,
    /// and all calls' seconds.
    refused: usize,
    refused_seconds: i64,
    seconds: i64,
    /// Calls started on a number past its hourly cap in their clock hour.
    beyond_hourly: usize,
}

impl Carried {
    fn refused_share(&self) -> f64 {
        self.refused as f64 / self.calls.max(1) as f64
    }

    fn refused_seconds_share(&self) -> f64 {
        self.refused_seconds as f64 / self.seconds.max(1) as f64
    }

    fn beyond_hourly_share(&self) -> f64 {
        self.beyond_hourly as f64 / self.calls.max(1) as f64
    }
}

/// Puts each call on the number its order planned for the contact it picked, and sweeps each
/// number's calls against `cap`.
fn carry(calls: &[Call], plans: &[Vec<u32>], pool: usize, cap: CallCapacity) -> Carried {
    let mut on: Vec<Vec<(i64, i64)>> = vec![Vec::new(); pool];
    let mut out = Carried::default();
    for c in calls {
        let contacts = &plans[c.order as usize];
        if contacts.is_empty() {
            continue;
        }
        let k = ((f64::from(c.pick) * contacts.len() as f64) as usize).min(contacts.len() - 1);
        on[contacts[k] as usize].push((c.start, c.end));
    }
    let (concurrent, per_hour) = (cap.concurrent as usize, cap.per_hour as usize);
    // `calls` is in start order, so each number's calls are too.
    for spans in on.iter().filter(|s| !s.is_empty()) {
        out.numbers_used += 1;
        out.calls += spans.len();
        let most = most_at_once(spans.iter().copied());
        out.peak_concurrent = out.peak_concurrent.max(most);
        out.over_concurrent += usize::from(most > concurrent);
        // With the cap enforced: a refused call holds no channel, so it refuses nobody after.
        let mut ends = BinaryHeap::new();
        for &(start, end) in spans {
            while ends.peek().is_some_and(|Reverse(e)| *e <= start) {
                ends.pop();
            }
            out.seconds += end - start;
            if ends.len() >= concurrent {
                out.refused += 1;
                out.refused_seconds += end - start;
            } else {
                ends.push(Reverse(end));
            }
        }
        // Clock hours: a number's calls of one hour come together.
        let (mut hour, mut in_hour, mut busiest) = (i64::MIN, 0usize, 0usize);
        for &(start, _) in spans {
            if start / 3600 != hour {
                (hour, in_hour) = (start / 3600, 0);
            }
            in_hour += 1;
            out.beyond_hourly += usize::from(in_hour > per_hour);
            busiest = busiest.max(in_hour);
        }
        out.peak_hour = out.peak_hour.max(busiest);
        out.over_hourly += usize::from(busiest > per_hour);
    }
    out
}

fn main() {
    let orders_per_day: usize = std::env::var("SIM_ORDERS_PER_DAY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_100_000);
    let seed: u64 = std::env::var("SIM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let quarantines: usize = std::env::var("SIM_QUARANTINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let mut cooling_hours: Vec<i64> = std::env::var("SIM_COOLING_HOURS")
        .ok()
        .and_then(|v| {
            v.split(',')
                .map(|h| h.trim().parse::<u32>().ok().map(i64::from))
                .collect()
        })
        .unwrap_or_else(|| vec![0, 1, 6, 24]);
    // 0 h is the quarantine's own cost, which every other period's is measured from.
    cooling_hours.push(0);
    cooling_hours.sort_unstable();
    cooling_hours.dedup();
    let calls_per_order: f64 = std::env::var("SIM_CALLS_PER_ORDER")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|m: &f64| m.is_finite() && *m >= 0.0)
        .unwrap_or(3.0);
    let call_seconds: f64 = std::env::var("SIM_CALL_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|m: &f64| m.is_finite() && *m > 0.0)
        .unwrap_or(60.0);
    let capacity_text =
        std::env::var("SIM_CAPACITY").unwrap_or_else(|_| "US:10/600,IN:10/600".to_owned());
    // A typo here would silently drop a market's cap, and with it the figures asked for.
    let caps = parse_capacities(&capacity_text).unwrap_or_else(|e| panic!("SIM_CAPACITY: {e}"));
    let capacity_scale: usize = std::env::var("SIM_CAPACITY_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|k| *k >= 1)
        .unwrap_or(2);
    let settings = assign_settings(&BTreeMap::from([(
        "VNMASK_MARKETS".to_owned(),
        MARKETS.to_owned(),
    )]))
    .expect("MARKETS is a valid VNMASK_MARKETS");
    let both = Served::new(&settings, "US");
    let voice = Served::new(&settings, "IN");
    assert!(both.needs.sms && voice.needs.voice && !voice.needs.sms);
    let us_cap = *caps
        .get(&both.market)
        .expect("SIM_CAPACITY gives US a capacity: its calls are played against it");

    let started = Instant::now();
    let (orders, drivers) = order_stream(orders_per_day, seed);
    let need = demand(&orders);
    let lower = need.lower_bound;
    // The two markets share nothing but the order stream: one thread each. Each pool grows
    // from a little below the lower bound.
    let first = lower.saturating_sub(3);
    let (s_both, s_voice) = std::thread::scope(|s| {
        let b = s.spawn(|| Search::run(&orders, &both, first, &Health::NONE));
        let v = s.spawn(|| Search::run(&orders, &voice, first, &Health::NONE));
        (b.join().unwrap(), v.join().unwrap())
    });
    // One pool for both markets, at their smallest sizes, plus US numbers without SMS: each
    // market is played again on it with one number fewer of its own, then with all of them.
    let no_sms = Capabilities {
        voice: true,
        sms: false,
    };
    let us_no_sms = numbers("US", US_VOICE_ONLY_FROM, s_both.smallest, no_sms);
    let voice_others: Vec<PoolNumber> = both
        .own(s_both.smallest)
        .into_iter()
        .chain(us_no_sms.iter().cloned())
        .collect();
    let both_others: Vec<PoolNumber> = voice
        .own(s_voice.smallest)
        .into_iter()
        .chain(us_no_sms.iter().cloned())
        .collect();
    let sizes = |n: usize| [n.saturating_sub(1).max(1), n];
    let (m_both, m_voice) = std::thread::scope(|s| {
        let b = s.spawn(|| {
            sizes(s_both.smallest).map(|k| mixed_run(&orders, &both, &s_both, k, &both_others))
        });
        let v = s.spawn(|| {
            sizes(s_voice.smallest).map(|k| mixed_run(&orders, &voice, &s_voice, k, &voice_others))
        });
        (b.join().unwrap(), v.join().unwrap())
    });
    // The voice+SMS market's day again with quarantines, from its smallest pool without them:
    // one thread per cooling-off period.
    let healthy = started.elapsed().as_secs_f64();
    let at = quarantine_times(quarantines, need.peak_at);
    let cooling: Vec<(i64, Search)> = std::thread::scope(|s| {
        let runs: Vec<_> = cooling_hours
            .iter()
            .map(|&hours| {
                let (orders, both, at) = (&orders, &both, &at);
                let first = s_both.smallest;
                s.spawn(move || {
                    let health = Health {
                        at: at.clone(),
                        cooling: hours * 3600,
                    };
                    (hours, Search::run(orders, both, first, &health))
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let elapsed = started.elapsed().as_secs_f64();

    // Calls: the same day's, carried by the smallest pool US's people need and by the pool its
    // calls need too.
    let calls_started = Instant::now();
    let calls = day_calls(&orders, calls_per_order, call_seconds, seed);
    let measured = measure(&calls);
    let person = s_both.smallest;
    let capacity = capacity_bound(&measured.load, us_cap) as usize;
    let needed = person.max(capacity);
    // Planning costs orders × numbers: the pool needed is played on a day scaled down, 1/scale
    // of the orders (a day of their own, drawn as the full one is) on the pool that day's calls
    // need, so that each number carries about what it would at full scale.
    let scaled = (capacity_scale > 1).then(|| {
        let (orders, _) = order_stream(orders_per_day / capacity_scale, seed);
        let calls = day_calls(&orders, calls_per_order, call_seconds, seed);
        let size = person.max(capacity_bound(&measure(&calls).load, us_cap) as usize);
        (orders, calls, size)
    });
    let (play_orders, play_calls, play_size) = scaled
        .as_ref()
        .map_or((&orders[..], &calls[..], needed), |(o, c, n)| {
            (&o[..], &c[..], *n)
        });
    // The test numbering's last US number: beyond, numbers would not be valid.
    assert!(
        play_size <= 9000,
        "the US test numbering holds 9 000 numbers, {play_size} needed"
    );
    // One thread per pool; the larger one's planning (each pair scores every number) is most
    // of the time.
    let ((out_person, plans_person), ((out_needed, plans_needed), needed_seconds)) =
        std::thread::scope(|s| {
            let a = s.spawn(|| plans_on(&orders, &both, person));
            let b = s.spawn(|| {
                let t = Instant::now();
                let planned = plans_on(play_orders, &both, play_size);
                (planned, t.elapsed().as_secs_f64())
            });
            (a.join().unwrap(), b.join().unwrap())
        });
    let on_person = carry(&calls, &plans_person, person, us_cap);
    let on_needed = carry(play_calls, &plans_needed, play_size, us_cap);
    drop((plans_person, plans_needed));
    let calls_elapsed = calls_started.elapsed().as_secs_f64();
    eprintln!(
        "pool-efficiency: calls and capacity plays took {calls_elapsed:.1} s, the pool of {play_size} \
         numbers {needed_seconds:.1} s"
    );

    let two_x = 2 * need.max_sessions_per_person - 1;
    let hhmm = |t: i64| format!("{:02}:{:02}", t / 3600, t % 3600 / 60);
    // What quarantines cost in numbers: each period's against the day without them, and the
    // quarantine's own (0 h) apart from the cooling period's.
    let extra = |s: &Search| s.smallest as i64 - s_both.smallest as i64;
    let own_cost = cooling
        .iter()
        .find(|(h, _)| *h == 0)
        .map_or(0, |(_, s)| extra(s));
    let most = cooling.iter().map(|(_, s)| extra(s)).max().unwrap_or(0);
    let periods = cooling
        .iter()
        .filter(|(h, _)| *h > 0)
        .map(|(h, s)| format!("{:+} for {h} h", extra(s) - own_cost))
        .collect::<Vec<_>>()
        .join(", ");
    let at_text = at
        .iter()
        .map(|&t| hhmm(t))
        .collect::<Vec<_>>()
        .join(" and ");
    let result = format!(
        "cooling-off costs up to {most} extra numbers at this day: with {} numbers quarantined (at {at_text}), \
         the smallest US pool that never runs out is {} numbers without quarantines and {} with them and no \
         cooling-off (the quarantine itself, its pairs moved at once: {own_cost:+}); cooling off then costs, on top \
         of that, {periods}",
        at.len(),
        s_both.smallest,
        s_both.smallest as i64 + own_cost,
    );
    let label = |m: &Served| format!("{} ({} needed)", m.code, m.channels());
    let mut md = String::new();
    writeln!(md, "## Pool efficiency\n").unwrap();
    writeln!(
        md,
        "Method: `cargo bench --workspace --bench pool_efficiency` (`SIM_ORDERS_PER_DAY`, `SIM_SEED` \
         change the day). A simulated day: {} orders ({} drivers holding 1–3 orders at once, {:.0} % shared rides, \
         orders of 20–60 min, {} min grace, arrivals on a daily curve peaking at 2× the mean rate), each planned by \
         the real policy (`vnmask::assignment::plan_contacts`). The same day is played in two markets, whose channels \
         come from `VNMASK_MARKETS={MARKETS}` read by the real configuration code: US pairs need voice and SMS and \
         US is offered voice+SMS numbers; IN pairs need voice only and IN is offered voice-only numbers (as Exotel's \
         ExoPhones are). Same orders, same people, same times: the lower bound and the other order-stream figures \
         are the markets' common ones, and only the numbers and the channels needed differ. For each market the pool \
         of its own numbers grows from 3 below the lower bound until a whole day passes with no order left unserved. \
         Then both markets' smallest pools and as many US numbers without SMS make one mixed pool, and each market is \
         played again on it, with one number fewer of its own and with all of them: eligibility must leave it exactly \
         its own numbers. Last, US's day is played again with numbers quarantined during it \
         (`SIM_QUARANTINES`, here {}: the first at the peak of live orders, {}, the worst moment, with the most \
         pairs to move and the least room; the others spread evenly over the day from it): each time the in-service \
         number carrying the most live pairs is quarantined (no new pairs), each of its live pairs is re-planned at \
         once by the policy on the remaining eligible numbers, both directions together, with \
         everything either person can dial in their other live orders busy (a pair that no number can take fails, as \
         an unserved order does; the old pair's 10-minute handover is left out: it holds no number anybody else \
         could take), and the number comes back active after cooling off for each period of \
         `SIM_COOLING_HOURS` (here {} h; 0 h is the quarantine's own cost); for each period the pool grows from the \
         smallest without quarantines until no order and no pair fails. Result: {result}. Seed {seed}; simulated \
         in {elapsed:.1} s, of which {:.1} s with quarantines (one thread per market, then one per cooling-off \
         period).\n",
        orders.len(),
        drivers,
        SHARED_RIDE_SHARE * 100.0,
        GRACE / 60,
        at.len(),
        hhmm(need.peak_at),
        cooling_hours
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        elapsed - healthy,
    )
    .unwrap();
    writeln!(md, "The order stream, the same in both markets:\n").unwrap();
    writeln!(md, "| figure | value |\n| --- | --- |").unwrap();
    writeln!(
        md,
        "| peak concurrent active orders | {} |",
        need.peak_active_orders
    )
    .unwrap();
    writeln!(
        md,
        "| lower bound: most live contacts one person holds at once (incl. grace) | {lower} |"
    )
    .unwrap();
    writeln!(
        md,
        "| \"2 × max sessions per person − 1\" sizing (max sessions per person: {}) | {two_x} |",
        need.max_sessions_per_person
    )
    .unwrap();
    writeln!(
        md,
        "| exclusive leasing (one number per order until the end of grace), peak | {} |",
        need.peak_exclusive
    )
    .unwrap();
    writeln!(md, "\nEach market, on its own numbers:\n").unwrap();
    writeln!(
        md,
        "| figure | {} on voice+SMS numbers | {} on voice-only numbers |\n| --- | --- | --- |",
        label(&both),
        label(&voice)
    )
    .unwrap();
    let per_market = |f: &dyn Fn(&Search) -> String| format!("{} | {}", f(&s_both), f(&s_voice));
    writeln!(
        md,
        "| **smallest vnmask pool that never runs out over the day** | {} |",
        per_market(&|s| format!(
            "**{}** ({:.2}× the lower bound)",
            s.smallest,
            s.smallest as f64 / lower as f64
        ))
    )
    .unwrap();
    writeln!(
        md,
        "| exclusive leasing's peak ÷ vnmask | {} |",
        per_market(&|s| format!("{:.0}×", need.peak_exclusive as f64 / s.smallest as f64))
    )
    .unwrap();
    writeln!(
        md,
        "| busiest number's share of calls at the smallest pool | {} |",
        per_market(&|s| {
            let best = s.best();
            format!(
                "{:.2} % (mean {:.2} %, {:.2}× the mean; {} numbers carried calls)",
                best.busiest_share() * 100.0,
                best.mean_share() * 100.0,
                best.busiest_share() / best.mean_share(),
                best.calls.len()
            )
        })
    )
    .unwrap();

    writeln!(md, "\nOrders the policy could not serve, by pool size:\n").unwrap();
    writeln!(
        md,
        "| pool | {} | {} |\n| --- | --- | --- |",
        label(&both),
        label(&voice)
    )
    .unwrap();
    let sizes: BTreeSet<usize> = s_both
        .runs
        .iter()
        .chain(&s_voice.runs)
        .map(|(k, _)| *k)
        .collect();
    let unserved = |s: &Search, k: usize| s.at(k).map_or("–".into(), |o| o.failures.to_string());
    for k in sizes {
        writeln!(
            md,
            "| {k} | {} | {} |",
            unserved(&s_both, k),
            unserved(&s_voice, k)
        )
        .unwrap();
    }

    writeln!(
        md,
        "\nOne mixed pool: {} US voice+SMS, {} US voice-only and {} IN voice-only numbers (a market's own \
         numbers fewer by one in its first row):\n",
        s_both.smallest, s_both.smallest, s_voice.smallest
    )
    .unwrap();
    writeln!(
        md,
        "| market | its own numbers | numbers offered | unserved orders | numbers that carried calls \
         | of them not its own | as on its own numbers alone |\n\
         | --- | --- | --- | --- | --- | --- | --- |"
    )
    .unwrap();
    for (served, runs) in [(&both, &m_both), (&voice, &m_voice)] {
        for r in runs {
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} |",
                label(served),
                r.own,
                r.offered,
                r.out.failures,
                r.out.calls.len(),
                r.outside,
                if r.as_alone {
                    "identical"
                } else {
                    "**differs**"
                }
            )
            .unwrap();
        }
    }

    writeln!(
        md,
        "\nQuarantines and cooling-off, {} on voice+SMS numbers: {} numbers quarantined, at {} \
         (simulated time):\n",
        label(&both),
        at.len(),
        if at.is_empty() {
            "no time".into()
        } else {
            at_text.clone()
        }
    )
    .unwrap();
    writeln!(
        md,
        "| cooling-off | smallest pool that never runs out | extra numbers against no quarantine \
         | of them, the quarantine itself (0 h) | of them, the cooling period | live pairs moved at that pool |\n\
         | --- | --- | --- | --- | --- | --- |"
    )
    .unwrap();
    for (hours, s) in &cooling {
        writeln!(
            md,
            "| {hours} h | **{}** | {:+} | {own_cost:+} | {:+} | {} |",
            s.smallest,
            extra(s),
            extra(s) - own_cost,
            s.best().moved
        )
        .unwrap();
    }
    writeln!(
        md,
        "\nWith quarantines, unserved orders + live pairs that could not be moved, by pool size:\n"
    )
    .unwrap();
    writeln!(
        md,
        "| pool | {} |\n| --- |{}",
        cooling
            .iter()
            .map(|(h, _)| format!("cooling {h} h"))
            .collect::<Vec<_>>()
            .join(" | "),
        " --- |".repeat(cooling.len())
    )
    .unwrap();
    let sizes: BTreeSet<usize> = cooling
        .iter()
        .flat_map(|(_, s)| s.runs.iter().map(|(k, _)| *k))
        .collect();
    for k in sizes {
        let cells = cooling
            .iter()
            .map(|(_, s)| {
                s.at(k).map_or("–".into(), |o| {
                    format!("{} + {}", o.failures - o.unmovable, o.unmovable)
                })
            })
            .collect::<Vec<_>>()
            .join(" | ");
        writeln!(md, "| {k} | {cells} |").unwrap();
    }

    // Planning costs orders × numbers: the pool needed may have been played scaled down.
    let scale_text = match &scaled {
        Some((o, c, n)) => format!(
            "The pool needed is played at 1/{capacity_scale} scale (`SIM_CAPACITY_SCALE`: planning costs \
             orders × numbers, so the whole day on {needed} numbers would cost {capacity_scale}² as much): \
             a day of {} orders drawn as the full one is, with its {} calls, on the {n} numbers its own calls' \
             capacity bound gives, so that each number carries about what it would at full scale; the busiest \
             number is then the busiest of {n} rather than {needed}, which tends to understate its peak a little. ",
            o.len(),
            c.len()
        ),
        None => String::new(),
    };
    writeln!(
        md,
        "\nCalls and carrier capacity, {}: the same day with calls. Each order makes a Poisson count \
         of calls around `SIM_CALLS_PER_ORDER` (here {calls_per_order}), each on one of the order's contacts \
         picked at random (the number the policy planned for that pair), starting at a uniform moment of the \
         order, or of its grace for {:.0} % of them (a forgotten item, a fare question), and lasting an \
         exponential time around `SIM_CALL_SECONDS` (here {call_seconds} s) clamped to {}–{} s; every pool \
         carries the same calls. From them, the call load (`vnmask::pool::CallLoad`: calls a day, which pool \
         refresh reads from the answer tallies, and the busiest clock hour's share and the mean length, which \
         it takes from its settings and which are measured here) gives the capacity bound, \
         `vnmask::pool::capacity_bound` at `SIM_CAPACITY` (here `{capacity_text}`): the fewest numbers that \
         keep an evenly spread pool within both caps at the busiest hour, with 3 standard deviations of room \
         for the calls in progress. The person bound is the smallest pool that never runs out, above; the \
         pool needed is the larger. US's day is then played on the person bound and on the pool needed, and \
         each number's calls are swept: the most in progress at once and the most started in one clock hour, \
         none refused; then with the concurrent cap enforced, the calls that found their number at its cap \
         (refused, as a carrier refuses them). {scale_text}Calls and these two plays took \
         {calls_elapsed:.1} s more, of which {needed_seconds:.1} s planning on the pool needed.\n",
        label(&both),
        GRACE_CALL_SHARE * 100.0,
        CALL_SECONDS.0,
        CALL_SECONDS.1,
    )
    .unwrap();
    let load = &measured.load;
    writeln!(
        md,
        "| the day's calls, both markets | value |\n| --- | --- |"
    )
    .unwrap();
    writeln!(md, "| calls a day | {} |", calls.len()).unwrap();
    writeln!(
        md,
        "| calls in the busiest clock hour | {} ({:.2} % of the day's) |",
        measured.peak_hour_calls,
        load.peak_hour_share * 100.0
    )
    .unwrap();
    writeln!(md, "| mean call length | {:.1} s |", load.mean_call_seconds).unwrap();
    writeln!(
        md,
        "| calls in progress at once: at the busiest hour by Little's law (the load's estimate) / most \
         measured | {:.0} / {} |",
        load.peak_concurrent_calls(),
        measured.peak_concurrent
    )
    .unwrap();
    writeln!(
        md,
        "\n| pool size | {} | {} |\n| --- | --- | --- |",
        label(&both),
        label(&voice)
    )
    .unwrap();
    let cap_of = |m: &Served| caps.get(&m.market).copied();
    let per_market = |f: &dyn Fn(&Served, &Search) -> String| {
        format!("{} | {}", f(&both, &s_both), f(&voice, &s_voice))
    };
    writeln!(
        md,
        "| cap per number: calls at once / calls an hour | {} |",
        per_market(&|m, _| cap_of(m).map_or("none".into(), |c| format!(
            "{} / {}",
            c.concurrent, c.per_hour
        )))
    )
    .unwrap();
    writeln!(
        md,
        "| person bound: smallest pool that never runs out | {} |",
        per_market(&|_, s| s.smallest.to_string())
    )
    .unwrap();
    let bound_of = |m: &Served| cap_of(m).map(|c| capacity_bound(load, c) as usize);
    writeln!(
        md,
        "| capacity bound (mean calls at once per number it allows) | {} |",
        per_market(&|m, _| cap_of(m).map_or("none".into(), |c| format!(
            "{} ({:.2})",
            capacity_bound(load, c),
            safe_mean_concurrent(c.concurrent)
        )))
    )
    .unwrap();
    writeln!(
        md,
        "| **pool needed: the larger** | {} |",
        per_market(&|m, s| format!("**{}**", s.smallest.max(bound_of(m).unwrap_or(0))))
    )
    .unwrap();
    writeln!(
        md,
        "\n{} played on each pool, against its cap of {} calls at once and {} an hour per number:\n",
        label(&both),
        us_cap.concurrent,
        us_cap.per_hour
    )
    .unwrap();
    writeln!(
        md,
        "| pool | numbers (carrying calls) | unserved orders | busiest number: most calls at once | numbers over \
         the concurrent cap | busiest number: most calls in one clock hour | numbers over the hourly cap | calls \
         refused at the concurrent cap | call time refused | calls beyond the hourly cap |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    .unwrap();
    for (name, size, out, carried) in [
        ("person bound".to_owned(), person, &out_person, &on_person),
        (
            if scaled.is_some() {
                format!("pool needed, at 1/{capacity_scale} scale")
            } else {
                "pool needed".to_owned()
            },
            play_size,
            &out_needed,
            &on_needed,
        ),
    ] {
        writeln!(
            md,
            "| {name} | {size} ({}) | {} | **{}** (cap {}) | {} | {} (cap {}) | {} | {:.2} % | {:.2} % | {:.2} % |",
            carried.numbers_used,
            out.failures,
            carried.peak_concurrent,
            us_cap.concurrent,
            carried.over_concurrent,
            carried.peak_hour,
            us_cap.per_hour,
            carried.over_hourly,
            carried.refused_share() * 100.0,
            carried.refused_seconds_share() * 100.0,
            carried.beyond_hourly_share() * 100.0,
        )
        .unwrap();
    }

    let vs_lower = |s: &Search| s.smallest as f64 / lower as f64;
    let busiest = |s: &Search| s.best().busiest_share() / s.best().mean_share();
    let vs_exclusive = need.peak_exclusive as f64 / s_both.smallest as f64;
    let mixed_ok = m_both
        .iter()
        .chain(&m_voice)
        .all(|r| r.outside == 0 && r.as_alone);
    let verdict = |met: bool| if met { "met" } else { "**missed**" };
    let targets = [
        (
            "voice+sms market: pool within 1.5× of the lower bound".to_owned(),
            format!(
                "{}: {:.2}×",
                verdict(vs_lower(&s_both) <= 1.5),
                vs_lower(&s_both)
            ),
        ),
        (
            "≥ 1,000× fewer numbers than exclusive leasing at 100 k concurrent orders".to_owned(),
            format!(
                "{}: {vs_exclusive:.0}× (voice+sms market) at a peak of {} concurrent orders (grace included)",
                verdict(vs_exclusive >= 1000.0 && need.peak_exclusive >= 100_000),
                need.peak_exclusive
            ),
        ),
        (
            "voice+sms market: no number above 3× the mean share of calls".to_owned(),
            format!(
                "{}: busiest {:.2}× the mean",
                verdict(busiest(&s_both) <= 3.0),
                busiest(&s_both)
            ),
        ),
        (
            "voice-only market: pool within 1.5× of the lower bound".to_owned(),
            format!(
                "{}: {:.2}×",
                verdict(vs_lower(&s_voice) <= 1.5),
                vs_lower(&s_voice)
            ),
        ),
        (
            "voice-only market needs no more numbers than voice+sms".to_owned(),
            format!(
                "{}: {} voice-only numbers against {} voice+SMS",
                verdict(s_voice.smallest <= s_both.smallest),
                s_voice.smallest,
                s_both.smallest
            ),
        ),
        (
            "voice-only market: no number above 3× the mean share of calls".to_owned(),
            format!(
                "{}: busiest {:.2}× the mean",
                verdict(busiest(&s_voice) <= 3.0),
                busiest(&s_voice)
            ),
        ),
        (
            "a mixed pool serves each market only from numbers with its channels".to_owned(),
            format!(
                "{}: {} runs; {} numbers of another market or without its channels carried calls; \
                 {} runs differ from the market's own numbers alone",
                verdict(mixed_ok),
                m_both.len() + m_voice.len(),
                m_both.iter().chain(&m_voice).map(|r| r.outside).sum::<usize>(),
                m_both.iter().chain(&m_voice).filter(|r| !r.as_alone).count()
            ),
        ),
    ];
    writeln!(md, "\nTargets:\n").unwrap();
    for (what, result) in &targets {
        writeln!(md, "- {what}: {result}").unwrap();
        target("Pool efficiency", what, result);
    }
    publish("pool-efficiency", &md);
}
