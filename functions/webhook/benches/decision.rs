//! The decision path of each provider, as the function runs it apart from the network:
//! read the request, verify it, decide against the in-memory store, write the answer.
//! Inputs are the test fixtures (realistic parameter sets). Figures only; nothing asserts speed.
//!
//! Each request is timed on its own (criterion's `iter_custom`), so that besides criterion's
//! estimates the run reports p50 and p99 per request, as the "routing-cpu" section of
//! BENCHMARKS.md (see `vnmask_tests::bench`).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Bencher, Criterion};
use vnmask::assignment::{AssignSettings, Assigner, OrderChange, OrderUpdate};
use vnmask::domain::{RealNumber, VnNumber};
use vnmask::providers::exotel::{self, ConnectSettings, SourceAllowList};
use vnmask::providers::twilio::{self, VoiceRefusal, VoiceSettings};
use vnmask::providers::{generic, parse_form, parse_query, Secret};
use vnmask::routing::decide;
use vnmask::store::memory::MemoryStore;
use vnmask::store::Store;
use vnmask_tests::bench::{human, machine, publish, Latencies};
use vnmask_tests::people::{customer, driver};
use vnmask_tests::{market, now, pool, seed_pool};

const TWILIO_TOKEN: &str = "8f3c1a9e5b7d2046c1e9a3f5b7d90e12";
const TWILIO_NEXT_TOKEN: &str = "2b4d6f8091a3c5e7f9b1d3f5a7c9e1f3";
const GENERIC_SECRET: &str = "generic-3c5e7f9b1d3f5a7c9e1f3a5c7e9b";
const BUDGET: Duration = Duration::from_millis(1500);

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// The most recent per-request timings of one benchmark: a ring of at most `KEPT`, so that
/// warm-up iterations drop out and memory stays bounded.
#[derive(Default)]
struct Recent {
    timings: Vec<Duration>,
    seen: usize,
}

const KEPT: usize = 1_000_000;

impl Recent {
    fn push(&mut self, d: Duration) {
        if self.timings.len() < KEPT {
            self.timings.push(d);
        } else {
            self.timings[self.seen % KEPT] = d;
        }
        self.seen += 1;
    }
}

/// Per-request timings of each benchmark, by name.
type Samples = BTreeMap<&'static str, Recent>;

/// Runs `request` the number of times criterion asks, timing each call on its own.
fn per_request<R>(b: &mut Bencher, samples: &mut Recent, mut request: impl FnMut() -> R) {
    b.iter_custom(|iters| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let started = Instant::now();
            black_box(request());
            let took = started.elapsed();
            samples.push(took);
            total += took;
        }
        total
    })
}

fn bench(c: &mut Criterion) {
    let mut samples = Samples::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    rt.block_on(async {
        seed_pool(store.as_ref(), &pool("IN", 1)).await;
        Assigner::new(store.clone(), AssignSettings::for_markets([market("IN")]))
            .apply(
                &OrderUpdate {
                    order_id: "ord-c".parse().unwrap(),
                    market: market("IN"),
                    version: 1,
                    change: OrderChange::Participants(vec![customer(1), driver(1)]),
                },
                now(),
            )
            .await
            .unwrap();
    });
    let store = store.as_ref();
    // During a rotation, with the request signed by the second token: the most work.
    let tokens = [Secret::new(TWILIO_TOKEN), Secret::new(TWILIO_NEXT_TOKEN)];
    let voice = VoiceSettings {
        dial_timeout: 30,
        time_limit: 3600,
        refusal: VoiceRefusal::Reject,
    };

    let mut group = c.benchmark_group("decision");
    // Rotation (two tokens) is the most work; one token is the usual configuration.
    for (name, form, path, tokens) in [
        (
            "twilio_voice",
            "twilio-voice.form",
            "/v1/providers/twilio/voice",
            &tokens[..],
        ),
        (
            "twilio_voice_one_token",
            "twilio-voice.form",
            "/v1/providers/twilio/voice",
            &tokens[1..],
        ),
        (
            "twilio_sms",
            "twilio-sms.form",
            "/v1/providers/twilio/sms",
            &tokens[..],
        ),
    ] {
        let body = fixture(form);
        let url = format!("https://hooks.vnmask.test{path}");
        let signature = twilio::sign(
            TWILIO_NEXT_TOKEN.as_bytes(),
            &url,
            &parse_form(body.as_bytes()).unwrap(),
        );
        let sms = name == "twilio_sms";
        let taken = samples.entry(name).or_default();
        group.bench_function(name, |b| {
            per_request(b, taken, || {
                let params = parse_form(black_box(body.as_bytes())).unwrap();
                twilio::verify(
                    tokens,
                    black_box(&url),
                    &params,
                    Some(black_box(&signature)),
                )
                .unwrap();
                let query = if sms {
                    twilio::message_query(&params)
                } else {
                    twilio::voice_query(&params)
                }
                .unwrap();
                let decision = rt.block_on(decide(store, &query, now(), BUDGET));
                let answer = if sms {
                    twilio::message_response(&decision, query.text.as_deref().unwrap_or_default())
                } else {
                    twilio::voice_response(&decision, &voice)
                };
                assert!(answer.contains("+919710000001"));
                answer
            })
        });
    }

    let event: serde_json::Value =
        serde_json::from_str(&fixture("apigw-v2-exotel-connect.json")).unwrap();
    let query_string = event["rawQueryString"].as_str().unwrap().to_owned();
    let exotel_tokens = [Secret::new("exotel-3c5e7f9b1d3f5a7c9e1f")];
    let allowed: SourceAllowList = "203.0.113.0/24".parse().unwrap();
    let limits = ConnectSettings {
        max_ringing_duration: 30,
        max_conversation_duration: 3600,
    };
    let taken = samples.entry("exotel").or_default();
    group.bench_function("exotel", |b| {
        per_request(b, taken, || {
            allowed.check(Some(black_box("203.0.113.10"))).unwrap();
            let params = parse_query(black_box(&query_string)).unwrap();
            let token = params
                .iter()
                .find(|(k, _)| k == exotel::TOKEN_PARAM)
                .map(|(_, v)| v.as_str());
            exotel::verify_token(&exotel_tokens, token).unwrap();
            let query = exotel::connect_query(&params).unwrap();
            let decision = rt.block_on(decide(store, &query, now(), BUDGET));
            exotel::connect_response(&decision, &limits)
        })
    });

    let event: serde_json::Value =
        serde_json::from_str(&fixture("apigw-v2-generic-route.json")).unwrap();
    let body = event["body"].as_str().unwrap().to_owned();
    let secrets = [Secret::new(GENERIC_SECRET)];
    let taken = samples.entry("generic").or_default();
    group.bench_function("generic", |b| {
        per_request(b, taken, || {
            let ts = now().to_string();
            let signature = generic::sign(GENERIC_SECRET.as_bytes(), &ts, body.as_bytes());
            generic::verify(
                &secrets,
                Some(&ts),
                Some(&signature),
                black_box(body.as_bytes()),
                now(),
            )
            .unwrap();
            let query = generic::route_query(black_box(body.as_bytes())).unwrap();
            let decision = rt.block_on(decide(store, &query, now(), BUDGET));
            generic::route_response(&decision)
        })
    });
    group.finish();

    // Where the time goes: the strict E.164 parse of each number.
    let mut parts = c.benchmark_group("parts");
    parts.bench_function("real_number_parse", |b| {
        b.iter(|| RealNumber::parse(black_box("+919810000001")))
    });
    parts.bench_function("vn_number_parse", |b| {
        b.iter(|| VnNumber::parse(black_box("+911140001000")))
    });
    let body = fixture("twilio-voice.form");
    let url = "https://hooks.vnmask.test/v1/providers/twilio/voice";
    let params = parse_form(body.as_bytes()).unwrap();
    let signature = twilio::sign(TWILIO_NEXT_TOKEN.as_bytes(), url, &params);
    parts.bench_function("twilio_parse_form", |b| {
        b.iter(|| parse_form(black_box(body.as_bytes())))
    });
    parts.bench_function("twilio_verify_rotation", |b| {
        b.iter(|| twilio::verify(&tokens, url, black_box(&params), Some(&signature)))
    });
    // Routing checks only the numbers' form; assignment parses them strictly.
    let form = samples.entry("form_two_numbers").or_default();
    parts.bench_function("form_two_numbers", |b| {
        per_request(b, form, || {
            (
                RealNumber::parse_form(black_box("+919810000001")),
                VnNumber::parse_form(black_box("+911140001000")),
            )
        })
    });
    let strict = samples.entry("strict_two_numbers").or_default();
    parts.bench_function("strict_two_numbers", |b| {
        per_request(b, strict, || {
            (
                RealNumber::parse(black_box("+919810000001")),
                VnNumber::parse(black_box("+911140001000")),
            )
        })
    });
    parts.finish();
    report(&samples);
}

fn report(samples: &Samples) {
    let mut md = format!(
        "## Call routing: CPU time of the decision path\n\n\
         Method: `cargo bench --workspace --bench decision` (criterion, bench profile: release \
         without LTO) on {}. One request is the webhook's whole work apart from the network: read \
         the provider's request, verify its signature, look the route up in the in-memory store, \
         decide, and write the provider's answer. Every request is timed on its own (a clock read \
         costs tens of nanoseconds, which the smallest figures include); the figures are over \
         each benchmark's last million requests at most.\n\n\
         | request | requests timed | p50 | p99 | mean |\n| --- | --- | --- | --- | --- |\n",
        machine()
    );
    let label = |name: &str| match name {
        "twilio_voice" => "Twilio voice (token rotation: two tokens tried)",
        "twilio_voice_one_token" => "Twilio voice (one token)",
        "twilio_sms" => "Twilio SMS (two tokens)",
        "exotel" => "Exotel connect (allow-list + token)",
        "generic" => "generic JSON (HMAC signed)",
        "form_two_numbers" => "of which: the E.164 form check of caller and dialled number",
        "strict_two_numbers" => {
            "for comparison, not in routing: both numbers parsed strictly (numbering plan)"
        }
        _ => unreachable!("every benchmark has a label"),
    };
    let order = [
        "twilio_voice",
        "twilio_voice_one_token",
        "twilio_sms",
        "exotel",
        "generic",
        "form_two_numbers",
        "strict_two_numbers",
    ];
    for name in order {
        let Some(taken) = samples.get(name).filter(|t| !t.timings.is_empty()) else {
            continue;
        };
        let l = Latencies::new(taken.timings.clone());
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            label(name),
            taken.seen,
            human(l.percentile(50.0)),
            human(l.percentile(99.0)),
            human(l.mean()),
        ));
    }
    publish("routing-cpu", &md);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
