//! Pool efficiency: a day of a realistic order stream through the real assignment policy.
//!
//! Publishes the "pool-efficiency" section (see `vnmask_tests::bench`): numbers needed by
//! vnmask vs the lower bound, exclusive leasing and the "2 × max sessions per person − 1"
//! sizing, the smallest pool that never runs out over the day, and the busiest number's share
//! of calls. The day is played in a voice+SMS market on voice+SMS numbers and in a voice-only
//! market on voice-only numbers, then in both on one mixed pool, to show that a market without
//! SMS needs no more numbers and that each market gets only numbers carrying its channels.
//!
//! Knobs (environment): `SIM_ORDERS_PER_DAY` (default 1 100 000: the evening peak then passes
//! 100 k concurrent orders, grace included, the scale the targets name), `SIM_SEED` (default 1).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::fmt::Write;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vnmask::assignment::{plan_contacts, AssignSettings, PlanRequest};
use vnmask::config::assign_settings;
use vnmask::domain::{
    Capabilities, ContactPolicy, Market, OrderId, Participant, PoolNumber, RealNumber,
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
    failures: usize,
    /// Calls each number carried.
    calls: HashMap<VirtualNumber, u64>,
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

/// Plays the day through `plan_contacts` in `served`'s market, offering it `numbers`.
fn simulate(orders: &[Order], served: &Served, numbers: &[PoolNumber]) -> Outcome {
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
            market: &served.market,
            participants: &people,
            previous: None,
            busy: &busy,
            pool: numbers,
            contact_policy: &policy,
            needs: served.needs,
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
    Outcome { failures, calls }
}

/// A market's search for the smallest pool of its own numbers that never runs out.
struct Search {
    /// Every pool size tried, smallest first, and how the day went.
    runs: Vec<(usize, Outcome)>,
    smallest: usize,
}

impl Search {
    /// From a little below the lower bound, grow the pool until a whole day passes with no
    /// order left unserved.
    fn run(orders: &[Order], served: &Served, lower: usize) -> Self {
        let mut runs = Vec::new();
        let mut size = lower.saturating_sub(3).max(1);
        loop {
            let out = simulate(orders, served, &served.own(size));
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
    let out = simulate(orders, served, &offered);
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
    // The two markets share nothing but the order stream: one thread each.
    let (s_both, s_voice) = std::thread::scope(|s| {
        let b = s.spawn(|| Search::run(&orders, &both, lower));
        let v = s.spawn(|| Search::run(&orders, &voice, lower));
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
    let elapsed = started.elapsed().as_secs_f64();

    let two_x = 2 * need.max_sessions_per_person - 1;
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
         its own numbers. Seed {seed}; simulated in {elapsed:.1} s (one thread per market).\n",
        orders.len(),
        drivers,
        SHARED_RIDE_SHARE * 100.0,
        GRACE / 60,
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
