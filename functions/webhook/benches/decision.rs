//! The decision path of each provider, as the function runs it apart from the network:
//! read the request, verify it, decide against the in-memory store, write the answer.
//! Inputs are the test fixtures (realistic parameter sets). Figures only; nothing asserts speed.
//!
//! Each request is timed on its own (criterion's `iter_custom`), so that besides criterion's
//! estimates the run reports p50 and p99 per request, as the "routing-cpu" section of
//! BENCHMARKS.md (see `vnmask_tests::bench`).
//!
//! Absolute times on a shared machine move from day to day, so Twilio voice is also reported
//! as a ratio to a [`reference`]: the same work written straight through, timed taking turns
//! with it.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Bencher, Criterion};
use vnmask::assignment::{AssignSettings, Assigner, OrderChange, OrderUpdate};
use vnmask::domain::{RealNumber, VirtualNumber};
use vnmask::providers::exotel::{self, ConnectSettings, SourceAllowList};
use vnmask::providers::twilio::{self, VoiceRefusal, VoiceSettings};
use vnmask::providers::{generic, param, parse_form, parse_query, plivo, telnyx, vonage, Secret};
use vnmask::routing::{decide, Decision};
use vnmask::store::memory::MemoryStore;
use vnmask::store::Store;
use vnmask_tests::bench::{human, machine, publish, target, Latencies};
use vnmask_tests::people::{customer, driver};
use vnmask_tests::{market, now, pool, seed_pool};

const TWILIO_TOKEN: &str = "8f3c1a9e5b7d2046c1e9a3f5b7d90e12";
const TWILIO_NEXT_TOKEN: &str = "2b4d6f8091a3c5e7f9b1d3f5a7c9e1f3";
const GENERIC_SECRET: &str = "generic-3c5e7f9b1d3f5a7c9e1f3a5c7e9b";
const PLIVO_TOKEN: &str = "plivo-7c1e9a3f5b7d90e12b4d6f8091a3";
const VONAGE_SECRET: &str = "vonage-5e7f9b1d3f5a7c9e1f3a5c7e";
const BUDGET: Duration = Duration::from_millis(1500);
const BASE_URL: &str = "https://hooks.vnmask.test";
const DIAL_END_URL: &str = "https://hooks.vnmask.test/v1/providers/twilio/dial-end";

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
            let took = timed(&mut request);
            samples.push(took);
            total += took;
        }
        total
    })
}

/// Like [`per_request`], with as many runs of `reference`, the two taking turns in blocks of
/// [`TURN`] requests: both see the machine at the same moments, and each runs warm (taking
/// turns request by request, each would find the caches full of the other).
/// Criterion's estimate is `request`'s.
fn per_request_beside<R, S>(
    b: &mut Bencher,
    samples: &mut Recent,
    reference_samples: &mut Recent,
    mut request: impl FnMut() -> R,
    mut reference: impl FnMut() -> S,
) {
    b.iter_custom(|iters| {
        let mut total = Duration::ZERO;
        let mut done = 0;
        while done < iters {
            let turn = (iters - done).min(TURN);
            for _ in 0..turn {
                reference_samples.push(timed(&mut reference));
            }
            for _ in 0..turn {
                let took = timed(&mut request);
                samples.push(took);
                total += took;
            }
            done += turn;
        }
        total
    })
}

/// Requests in a turn of [`per_request_beside`]: about half a millisecond.
const TURN: u64 = 100;

fn timed<R>(f: &mut impl FnMut() -> R) -> Duration {
    let started = Instant::now();
    black_box(f());
    started.elapsed()
}

/// The minimal reference for a Twilio voice request: the same work as vnmask's path, written
/// straight through with the same crates, no framework and no I/O. It makes every check the
/// path makes: strict UTF-8 form decoding; the signature over the URL and the parameters sorted
/// by name then value (HMAC-SHA1, Base64, constant-time comparison); `From`, `To` and `CallSid`
/// present, both numbers in E.164 form and the call id in its safe alphabet; a route read like
/// the in-memory store's (a mutex, a hash map by caller, an ordered map by dialled number, an
/// owned copy of what it found, the live check); and the same TwiML, written with quick-xml.
mod reference {
    use std::borrow::Cow;
    use std::collections::{BTreeMap, HashMap};
    use std::sync::Mutex;

    use base64::Engine;
    use hmac::{Hmac, Mac};
    use percent_encoding::percent_decode_str;
    use quick_xml::events::{BytesDecl, BytesText, Event};
    use quick_xml::Writer;
    use sha1::Sha1;
    use subtle::ConstantTimeEq;

    /// Routes by caller, then by dialled number.
    #[derive(Default)]
    pub struct Routes(Mutex<HashMap<String, BTreeMap<String, Stored>>>);

    /// What a route says: whom to call, and until when.
    #[derive(Clone)]
    struct Stored {
        callee: String,
        expires_at: i64,
    }

    impl Routes {
        pub fn insert(&self, caller: &str, dialled: &str, callee: &str, expires_at: i64) {
            self.0
                .lock()
                .unwrap()
                .entry(caller.to_owned())
                .or_default()
                .insert(
                    dialled.to_owned(),
                    Stored {
                        callee: callee.to_owned(),
                        expires_at,
                    },
                );
        }
    }

    pub struct Settings {
        pub dial_timeout: u32,
        pub time_limit: u32,
        pub dial_end_url: &'static str,
    }

    /// The TwiML that connects the call, or `None` for any reason to refuse it.
    pub fn twilio_voice(
        routes: &Routes,
        token: &[u8],
        url: &str,
        signature: &str,
        body: &[u8],
        now: i64,
        settings: &Settings,
    ) -> Option<String> {
        let form = std::str::from_utf8(body).ok()?;
        let mut params = Vec::with_capacity(32);
        for pair in form.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            params.push((decode(name)?, decode(value)?));
        }

        let presented = base64::engine::general_purpose::STANDARD
            .decode(signature.trim())
            .ok()?;
        let mut sorted: Vec<(&str, &str)> = params.iter().map(|(k, v)| (&**k, &**v)).collect();
        sorted.sort_unstable();
        let mut mac = Hmac::<Sha1>::new_from_slice(token).ok()?;
        mac.update(url.as_bytes());
        for (name, value) in sorted {
            mac.update(name.as_bytes());
            mac.update(value.as_bytes());
        }
        let expected = mac.finalize().into_bytes();
        if !bool::from(expected.as_slice().ct_eq(&presented)) {
            return None;
        }

        let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| &**v);
        let (from, to, call_sid) = (param("From")?, param("To")?, param("CallSid")?);
        if !(e164(from) && e164(to) && call_id(call_sid)) {
            return None;
        }

        let Stored { callee, expires_at } = routes.0.lock().ok()?.get(from)?.get(to)?.clone();
        if expires_at <= now {
            return None;
        }

        let timeout = settings.dial_timeout.to_string();
        let limit = settings.time_limit.to_string();
        let mut w = Writer::new(Vec::with_capacity(256));
        w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))
            .ok()?;
        w.create_element("Response")
            .write_inner_content(|w| {
                w.create_element("Dial")
                    .with_attribute(("callerId", to))
                    .with_attribute(("answerOnBridge", "true"))
                    .with_attribute(("timeout", timeout.as_str()))
                    .with_attribute(("timeLimit", limit.as_str()))
                    .with_attribute(("action", settings.dial_end_url))
                    .write_inner_content(|w| {
                        w.create_element("Number")
                            .write_text_content(BytesText::new(&callee))?;
                        Ok(())
                    })?;
                Ok(())
            })
            .ok()?;
        String::from_utf8(w.into_inner()).ok()
    }

    /// One name or value of the form: `+` is a space, then percent-decoding, strictly UTF-8.
    fn decode(s: &str) -> Option<Cow<'_, str>> {
        if !s.contains(['%', '+']) {
            // The whole form is UTF-8 already.
            Some(Cow::Borrowed(s))
        } else if s.contains('+') {
            let spaced = s.replace('+', " ");
            let decoded = percent_decode_str(&spaced).decode_utf8().ok()?;
            Some(Cow::Owned(decoded.into_owned()))
        } else {
            percent_decode_str(s).decode_utf8().ok()
        }
    }

    fn e164(s: &str) -> bool {
        s.strip_prefix('+').is_some_and(|digits| {
            (8..=15).contains(&digits.len())
                && digits.bytes().all(|b| b.is_ascii_digit())
                && !digits.starts_with('0')
        })
    }

    fn call_id(s: &str) -> bool {
        (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    }
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
                    record: false,
                    change: OrderChange::Participants(vec![customer(1), driver(1)]),
                },
                now(),
            )
            .await
            .unwrap();
    });
    let store = store.as_ref();
    // The reference reads the same route, from a table of its own.
    let routes = reference::Routes::default();
    let body = fixture("twilio-voice.form");
    let query = twilio::voice_query(&parse_form(body.as_bytes()).unwrap()).unwrap();
    let Decision::Connect(route) = rt.block_on(decide(store, &query, now(), BUDGET)) else {
        panic!("the bench's order has a route");
    };
    routes.insert(
        route.caller.expose(),
        route.number.as_str(),
        route.callee.expose(),
        route.expires_at,
    );
    let reference_settings = reference::Settings {
        dial_timeout: 30,
        time_limit: 3600,
        dial_end_url: DIAL_END_URL,
    };
    let mut reference_taken = Recent::default();
    let callbacks = twilio::CallbackUrls::under(BASE_URL);
    // During a rotation, with the request signed by the second token: the most work.
    let tokens = [Secret::new(TWILIO_TOKEN), Secret::new(TWILIO_NEXT_TOKEN)];
    let voice = VoiceSettings {
        dial_timeout: 30,
        time_limit: 3600,
        refusal: VoiceRefusal::Reject,
        pin_prompts: twilio::PinPrompts::default(),
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
        let request = || {
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
                // As the webhook answers: with where to report the call's end.
                twilio::voice_response(&decision, &voice, Some(&callbacks))
            };
            assert!(answer.contains("+919710000001"));
            answer
        };
        let taken = samples.entry(name).or_default();
        if name == "twilio_voice_one_token" {
            let reference = || {
                let answer = reference::twilio_voice(
                    &routes,
                    TWILIO_NEXT_TOKEN.as_bytes(),
                    black_box(&url),
                    black_box(&signature),
                    black_box(body.as_bytes()),
                    now(),
                    &reference_settings,
                )
                .unwrap();
                assert!(answer.contains("+919710000001"));
                answer
            };
            assert_eq!(
                request(),
                reference(),
                "the reference writes the same TwiML"
            );
            group.bench_function(name, |b| {
                per_request_beside(b, taken, &mut reference_taken, &request, &reference)
            });
        } else {
            group.bench_function(name, |b| per_request(b, taken, &request));
        }
    }
    samples.insert("reference", reference_taken);

    let event: serde_json::Value =
        serde_json::from_str(&fixture("apigw-v2-exotel-connect.json")).unwrap();
    let query_string = event["rawQueryString"].as_str().unwrap().to_owned();
    let exotel_tokens = [Secret::new("exotel-3c5e7f9b1d3f5a7c9e1f")];
    let allowed: SourceAllowList = "203.0.113.0/24".parse().unwrap();
    let limits = ConnectSettings {
        max_ringing_duration: 30,
        max_conversation_duration: 3600,
    };
    let market = "IN".parse().unwrap();
    let taken = samples.entry("exotel").or_default();
    group.bench_function("exotel", |b| {
        per_request(b, taken, || {
            allowed.check(Some(black_box("203.0.113.10"))).unwrap();
            let params = parse_query(black_box(&query_string)).unwrap();
            let token = param(&params, exotel::TOKEN_PARAM);
            exotel::verify_token(&exotel_tokens, token).unwrap();
            let query = exotel::connect_query(&params, &market).unwrap();
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
    // Plivo, Vonage and Telnyx: the same route, each provider's whole request.
    let (caller, vn) = (
        route.caller.expose().to_owned(),
        route.number.as_str().to_owned(),
    );
    let digits = |e164: &str| e164.trim_start_matches('+').to_owned();
    let plivo_url = "https://hooks.vnmask.test/v1/providers/plivo/voice";
    let plivo_body = serde_urlencoded::to_string([
        ("CallUUID", "a8a1a5f6-6c8e-4e4c-9c33-5f0f4e4b1c2d"),
        ("From", &digits(&caller)),
        ("To", &digits(&vn)),
        ("Direction", "inbound"),
        ("CallStatus", "ringing"),
    ])
    .unwrap();
    let plivo_nonce = "05429567804466091622";
    let plivo_signature = plivo::sign(
        PLIVO_TOKEN.as_bytes(),
        "POST",
        plivo_url,
        &parse_form(plivo_body.as_bytes()).unwrap(),
        plivo_nonce,
    );
    let plivo_tokens = [Secret::new(PLIVO_TOKEN)];
    let taken = samples.entry("plivo").or_default();
    group.bench_function("plivo", |b| {
        per_request(b, taken, || {
            let params = parse_form(black_box(plivo_body.as_bytes())).unwrap();
            plivo::verify(
                &plivo_tokens,
                "POST",
                black_box(plivo_url),
                &params,
                Some(plivo_nonce),
                Some(black_box(&plivo_signature)),
            )
            .unwrap();
            let query = plivo::voice_query(&params).unwrap();
            let decision = rt.block_on(decide(store, &query, now(), BUDGET));
            let answer = plivo::voice_response(&decision, &voice);
            assert!(answer.contains("919710000001"));
            answer
        })
    });

    let vonage_body = serde_json::json!({
        "from": digits(&caller),
        "to": digits(&vn),
        "uuid": "63f61863-4a51-4f6b-86e1-46edebcf9356",
        "conversation_uuid": "CON-f972836a-550f-45fa-956c-12a2ab5b7d22",
    })
    .to_string();
    // Signed once: fresh for the 5 minutes the run takes at most.
    let vonage_token = vonage::sign(
        VONAGE_SECRET.as_bytes(),
        Some(vonage_body.as_bytes()),
        now(),
    );
    let vonage_secrets = [Secret::new(VONAGE_SECRET)];
    let taken = samples.entry("vonage").or_default();
    group.bench_function("vonage", |b| {
        per_request(b, taken, || {
            let body = black_box(vonage_body.as_bytes());
            vonage::verify(&vonage_secrets, Some(black_box(&vonage_token)), body, now()).unwrap();
            let query = vonage::answer_query_json(body).unwrap();
            let decision = rt.block_on(decide(store, &query, now(), BUDGET));
            let answer = vonage::answer_response(&decision, &voice);
            assert!(answer.contains("919710000001"));
            answer
        })
    });

    let telnyx_seed = [7u8; 32];
    let telnyx_keys = [telnyx::public_key_of(&telnyx_seed)];
    let telnyx_body = serde_urlencoded::to_string([
        (
            "CallSid",
            "v3:dLmSbRCUCT4wD4Nb1x8Js5HmnR_RUp3AaW3YBLX0ZTo2Qx0L2h3qOA",
        ),
        ("From", &caller),
        ("To", &vn),
        ("Direction", "inbound"),
    ])
    .unwrap();
    let telnyx_timestamp = now().to_string();
    let telnyx_signature = telnyx::sign(&telnyx_seed, &telnyx_timestamp, telnyx_body.as_bytes());
    let taken = samples.entry("telnyx").or_default();
    group.bench_function("telnyx", |b| {
        per_request(b, taken, || {
            telnyx::verify(
                &telnyx_keys,
                Some(&telnyx_timestamp),
                Some(black_box(&telnyx_signature)),
                black_box(telnyx_body.as_bytes()),
                now(),
            )
            .unwrap();
            let params = parse_form(telnyx_body.as_bytes()).unwrap();
            let query = telnyx::voice_query(&params).unwrap();
            let decision = rt.block_on(decide(store, &query, now(), BUDGET));
            let answer = telnyx::voice_response(&decision, &voice);
            assert!(answer.contains("+919710000001"));
            answer
        })
    });
    group.finish();

    // Where the time goes: the strict E.164 parse of each number.
    let mut parts = c.benchmark_group("parts");
    parts.bench_function("real_number_parse", |b| {
        b.iter(|| RealNumber::parse(black_box("+919810000001")))
    });
    parts.bench_function("vn_number_parse", |b| {
        b.iter(|| VirtualNumber::parse(black_box("+911140001000")))
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
                VirtualNumber::parse_form(black_box("+911140001000")),
            )
        })
    });
    let strict = samples.entry("strict_two_numbers").or_default();
    parts.bench_function("strict_two_numbers", |b| {
        per_request(b, strict, || {
            (
                RealNumber::parse(black_box("+919810000001")),
                VirtualNumber::parse(black_box("+911140001000")),
            )
        })
    });
    parts.finish();
    report(&samples);
}

/// The most Twilio voice (one token) may take, as a multiple of the reference's p50.
const TARGET_RATIO: f64 = 1.5;

fn report(samples: &Samples) {
    let mut md = format!(
        "## Call routing: CPU time of the decision path\n\n\
         Method: `cargo bench --workspace --bench decision` (criterion, bench profile: release \
         without LTO; the deployed build has LTO) on {}. One request is the webhook's whole work \
         apart from the network: read the provider's request, verify its signature, look the \
         route up in the in-memory store, decide, and write the provider's answer. Every request \
         is timed on its own (a clock read costs tens of nanoseconds, which the smallest figures \
         include); the figures are over each benchmark's last million requests at most.\n\n\
         The reference is a Twilio voice request handled straight through, with the same checks \
         and crates but none of vnmask's types or layers: strict UTF-8 form decoding, the \
         signature (HMAC-SHA1 over the URL and the sorted parameters, compared in constant time), \
         the E.164 form of both numbers and the call id's alphabet, a route read like the \
         in-memory store's, and the same TwiML (quick-xml). It takes turns with Twilio voice \
         (one token), {TURN} requests each, so that both see the machine at the same moments: \
         absolute times on this shared machine move by up to 1.5× from one day to the next, \
         their ratio much less.\n\n\
         | request | requests timed | p50 | p99 | mean | p50 ÷ reference's |\n\
         | --- | --- | --- | --- | --- | --- |\n",
        machine()
    );
    let label = |name: &str| match name {
        "twilio_voice" => "Twilio voice (token rotation: two tokens tried)",
        "twilio_voice_one_token" => "Twilio voice (one token)",
        "reference" => "reference: Twilio voice (one token) straight through",
        "twilio_sms" => "Twilio SMS (two tokens)",
        "exotel" => "Exotel connect (allow-list + token)",
        "generic" => "generic JSON (HMAC signed)",
        "plivo" => "Plivo voice (V3 signature, HMAC-SHA256)",
        "vonage" => "Vonage answer_url, POST (HS256 JWT with the body's hash)",
        "telnyx" => "Telnyx TeXML voice (Ed25519 signature)",
        "form_two_numbers" => "of which: the E.164 form check of caller and dialled number",
        "strict_two_numbers" => {
            "for comparison, not in routing: both numbers parsed strictly (numbering plan)"
        }
        _ => unreachable!("every benchmark has a label"),
    };
    let order = [
        "twilio_voice",
        "twilio_voice_one_token",
        "reference",
        "twilio_sms",
        "exotel",
        "generic",
        "plivo",
        "vonage",
        "telnyx",
        "form_two_numbers",
        "strict_two_numbers",
    ];
    let p50 = |name: &str| {
        samples
            .get(name)
            .filter(|t| !t.timings.is_empty())
            .map(|t| Latencies::new(t.timings.clone()).percentile(50.0))
    };
    let reference = p50("reference");
    let ratio = |name: &str| Some(p50(name)?.as_secs_f64() / reference?.as_secs_f64());
    for name in order {
        let Some(taken) = samples.get(name).filter(|t| !t.timings.is_empty()) else {
            continue;
        };
        let l = Latencies::new(taken.timings.clone());
        let against_reference = match name {
            // Only the run that takes turns with the reference shares its moments.
            "twilio_voice_one_token" | "reference" => ratio(name),
            _ => None,
        };
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            label(name),
            taken.seen,
            human(l.percentile(50.0)),
            human(l.percentile(99.0)),
            human(l.mean()),
            against_reference.map_or("".to_owned(), |r| format!("{r:.2}×")),
        ));
    }
    if let (Some(ratio), Some(taken), Some(reference)) = (
        ratio("twilio_voice_one_token"),
        p50("twilio_voice_one_token"),
        reference,
    ) {
        // Judged as shown, to two decimals.
        let ratio = (ratio * 100.0).round() / 100.0;
        let verdict = format!(
            "{}: {ratio:.2}× ({} against {})",
            if ratio <= TARGET_RATIO {
                "met"
            } else {
                "not met"
            },
            human(taken),
            human(reference),
        );
        md.push_str(&format!(
            "\nTarget: Twilio voice (one token) within {TARGET_RATIO}× the reference, p50, in \
             the same run: {verdict}.\n"
        ));
        target(
            "Call routing: CPU time of the decision path",
            &format!(
                "Twilio voice (one token) ≤ {TARGET_RATIO}× the minimal reference, p50, same run"
            ),
            &verdict,
        );
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
