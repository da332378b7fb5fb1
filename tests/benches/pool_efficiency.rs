//! Pool efficiency: a day of a realistic order stream through the real assignment policy.
//!
//! Publishes the "pool-efficiency" section (see `vnmask_tests::bench`): numbers needed per
//! market by vnmask vs the lower bound, exclusive leasing and the "2 × max sessions per person
//! − 1" sizing, the smallest pool that never runs out over the day, and the busiest number's
//! share of calls.
//!
//! Knobs (environment): `SIM_ORDERS_PER_DAY` (default 1 100 000: the evening peak then passes
//! 100 k concurrent orders, grace included, the scale the targets name), `SIM_SEED` (default 1).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt::Write;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vnmask::assignment::{plan_contacts, PlanRequest};
use vnmask::domain::{
    Capabilities, ContactPolicy, Market, OrderId, Participant, RealNumber, VirtualNumber,
};
use vnmask_tests::bench::{publish, target};
use vnmask_tests::pool;

const DAY: i64 = 86_400;
const GRACE: i64 = 30 * 60;
const SHARED_RIDE_SHARE: f64 = 0.05;
const CALLS_PER_ORDER: u64 = 3;

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
        d.peak_exclusive = d.peak_exclusive.max(in_grace.len());
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
    }
}

struct Outcome {
    failures: usize,
    busiest_share: f64,
    mean_share: f64,
    numbers_used: usize,
}

/// Plays the day through `plan_contacts` with a pool of `pool_size` numbers.
fn simulate(orders: &[Order], pool_size: usize) -> Outcome {
    let market: Market = "IN".parse().unwrap();
    let numbers = pool("IN", pool_size);
    let policy = ContactPolicy::default();
    let phone = RealNumber::parse("+919810000001").unwrap();
    // Each person's live contacts: (number, live until), pruned as time passes.
    let mut live: HashMap<Person, Vec<(VirtualNumber, i64)>> = HashMap::new();
    let mut calls: HashMap<VirtualNumber, u64> = HashMap::new();
    let mut failures = 0;
    for (i, order) in orders.iter().enumerate() {
        let (now, until) = (order.start, order.end + GRACE);
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
                entry.retain(|(_, e)| *e > now);
                entry.iter().map(|(n, _)| n.clone()).collect()
            })
            .collect();
        let order_id: OrderId = format!("o{i}").parse().unwrap();
        let planned = plan_contacts(&PlanRequest {
            order_id: &order_id,
            market: &market,
            participants: &people,
            previous: None,
            busy: &busy,
            pool: &numbers,
            contact_policy: &policy,
            needs: Capabilities::VOICE_AND_SMS,
        });
        let Ok(contacts) = planned else {
            failures += 1;
            continue;
        };
        for (k, c) in contacts.iter().enumerate() {
            let share = CALLS_PER_ORDER / contacts.len() as u64
                + u64::from((k as u64) < CALLS_PER_ORDER % contacts.len() as u64);
            *calls.entry(c.number.clone()).or_default() += share;
        }
        for (p, id) in people.iter().zip(&order.people) {
            let entry = live.entry(*id).or_default();
            for c in contacts.iter().filter(|c| c.involves(&p.user_id)) {
                entry.push((c.number.clone(), until));
            }
        }
    }
    let total: u64 = calls.values().sum();
    let busiest = calls.values().copied().max().unwrap_or(0);
    Outcome {
        failures,
        busiest_share: busiest as f64 / total.max(1) as f64,
        mean_share: 1.0 / calls.len().max(1) as f64,
        numbers_used: calls.len(),
    }
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
    let started = Instant::now();
    let (orders, drivers) = order_stream(orders_per_day, seed);

    let need = demand(&orders);
    let lower = need.lower_bound;
    // The smallest pool that never runs out: from a little below the lower bound, grow until a
    // whole day passes with no order left unserved.
    let mut runs = Vec::new();
    let mut size = lower.saturating_sub(3).max(1);
    let smallest = loop {
        let out = simulate(&orders, size);
        let done = out.failures == 0;
        runs.push((size, out));
        if done {
            break size;
        }
        size += 1;
    };
    let (_, best) = runs.last().expect("at least one run");
    let two_x = 2 * need.max_sessions_per_person - 1;
    let mut md = String::new();
    writeln!(md, "## Pool efficiency\n").unwrap();
    writeln!(
        md,
        "Method: `cargo bench --workspace --bench pool_efficiency` (`SIM_ORDERS_PER_DAY`, `SIM_SEED` \
         change the day). A simulated day: {} orders in one market ({} drivers holding 1–3 orders at once, {:.0} % shared rides, \
         orders of 20–60 min, {} min grace, arrivals on a daily curve peaking at 2× the mean rate), each planned by \
         the real policy (`vnmask::assignment::plan_contacts`). Seed {seed}; simulated in {:.1} s.\n",
        orders.len(),
        drivers,
        SHARED_RIDE_SHARE * 100.0,
        GRACE / 60,
        started.elapsed().as_secs_f64()
    ).unwrap();
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
    writeln!(md, "| **smallest vnmask pool that never runs out over the day** | **{smallest}** ({:.2}× the lower bound) |", smallest as f64 / lower as f64).unwrap();
    writeln!(
        md,
        "| \"2 × max sessions per person − 1\" sizing (max sessions per person: {}) | {two_x} |",
        need.max_sessions_per_person
    )
    .unwrap();
    writeln!(md, "| exclusive leasing (one number per order until the end of grace), peak | {} ({:.0}× vnmask) |", need.peak_exclusive, need.peak_exclusive as f64 / smallest as f64).unwrap();
    writeln!(
        md,
        "| busiest number's share of calls at the smallest pool | {:.2} % (mean {:.2} %, {:.2}× the mean; {} numbers carried calls) |",
        best.busiest_share * 100.0,
        best.mean_share * 100.0,
        best.busiest_share / best.mean_share,
        best.numbers_used
    ).unwrap();
    writeln!(md, "\nOrders the policy could not serve, by pool size:\n").unwrap();
    writeln!(md, "| pool | unserved orders |\n| --- | --- |").unwrap();
    for (size, out) in &runs {
        writeln!(md, "| {size} | {} |", out.failures).unwrap();
    }
    let vs_lower = smallest as f64 / lower as f64;
    let vs_exclusive = need.peak_exclusive as f64 / smallest as f64;
    let busiest = best.busiest_share / best.mean_share;
    let verdict = |met: bool| if met { "met" } else { "**missed**" };
    let targets = [
        (
            "pool within 1.5× of the lower bound",
            format!("{}: {vs_lower:.2}×", verdict(vs_lower <= 1.5)),
        ),
        (
            "≥ 1,000× fewer numbers than exclusive leasing at 100 k concurrent orders",
            format!(
                "{}: {vs_exclusive:.0}× at a peak of {} concurrent orders (grace included)",
                verdict(vs_exclusive >= 1000.0 && need.peak_exclusive >= 100_000),
                need.peak_exclusive
            ),
        ),
        (
            "no number above 3× the mean share of calls",
            format!(
                "{}: busiest {busiest:.2}× the mean",
                verdict(busiest <= 3.0)
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
