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
//!
//! Knobs (environment): `SIM_ORDERS_PER_DAY` (default 1 100 000: the evening peak then passes
//! 100 k concurrent orders, grace included, the scale the targets name), `SIM_SEED` (default 1),
//! `SIM_QUARANTINES` (numbers quarantined over the day, default 2: the first at the peak of live
//! orders, the worst moment, the others spread evenly over the day from it) and
//! `SIM_COOLING_HOURS` (the cooling-off periods played, default `0,1,6,24`; 0 h is always
//! played, as it is the quarantine's own cost).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::fmt::Write;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vnmask::assignment::{plan_contacts, AssignSettings, PlanRequest};
use vnmask::config::assign_settings;
use vnmask::domain::{
    Capabilities, ContactPolicy, Market, NumberState, OrderId, Participant, PoolNumber, RealNumber,
    VirtualNumber,
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
        let planned = plan_contacts(&PlanRequest {
            order_id: &order_id,
            market: &served.market,
            participants: &people,
            previous: None,
            busy: &busy,
            pool: &pool,
            contact_policy: &policy,
            needs: served.needs,
        });
        let Ok(contacts) = planned else {
            out.failures += 1;
            continue;
        };
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
    let settings = assign_settings(&BTreeMap::from([(
        "VNMASK_MARKETS".to_owned(),
        MARKETS.to_owned(),
    )]))
    .expect("MARKETS is a valid VNMASK_MARKETS");
    let both = Served::new(&settings, "US");
    let voice = Served::new(&settings, "IN");
    assert!(both.needs.sms && voice.needs.voice && !voice.needs.sms);

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
