//! Issue 16's webhook findings: replayed requests are refused for every provider, the replay
//! ledger costs no extra round trip, and until credentials and keys load (from Secrets Manager
//! and KMS, here moto) every request gets its provider's normal refusal, never a 5xx.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use vnmask::config::ConfigError;
use vnmask::domain::{CallId, RealNumber, Route, UnixTime, VirtualNumber};
use vnmask::store::{CallLedger, RouteReader, Sighting, Store, StoreError};
use vnmask_tests::people::customer;
use vnmask_tests::{kms_store_env, local_sdk, now, put_secret};
use webhook::{
    router, ConfirmRoutes, EnvironmentLoader, LoadError, Loader, Providers, Readiness, Ready,
    Webhook, WebhookSettings,
};

use crate::common;
use common::*;

/// Each endpoint, a request to it from `from` to `vn`, and the call id that request carries.
fn requests(
    from: &str,
    vn: &str,
) -> Vec<(&'static str, &'static str, http::Request<axum::body::Body>)> {
    vec![
        (
            "twilio-voice",
            "CAfedcba9876543210fedcba9876543210",
            twilio_call(from, vn),
        ),
        (
            "twilio-sms",
            "SM0123456789abcdef0123456789abcdef",
            twilio_text(from, vn, "hi"),
        ),
        (
            "exotel-connect",
            "b6cf1c5c8ec8d2bd0a1a6c4a4e3d1b7a",
            exotel_call(from, vn),
        ),
        ("generic-route", "carrier-77", generic_call(from, vn)),
    ]
}

fn is_connect(answer: &Answer, callee: &str) -> bool {
    answer.status == 200 && answer.body.contains(callee)
}

#[tokio::test]
async fn a_replayed_call_id_is_refused_by_every_provider_and_a_retry_is_answered() {
    let s = memory().await;
    let served = app(s.store.clone());
    let (from, vn, callee) = (phone(&s.c), s.vn_cd.as_str(), phone(&s.d));

    // A provider's retry, seconds after the first request, is answered as the first was.
    for (endpoint, _, req) in requests(from, vn) {
        let first = send(&served, req).await;
        assert!(is_connect(&first, callee), "{endpoint}: {first:?}");
    }
    for (endpoint, _, req) in requests(from, vn) {
        let retry = send(&served, req).await;
        assert!(is_connect(&retry, callee), "{endpoint} retry: {retry:?}");
    }

    // The same signed requests, their call ids first seen two minutes ago: replays, refused in
    // each provider's format without the callee.
    let s = memory().await;
    let replayed = app(s.store.clone());
    let (from, vn, callee) = (phone(&s.c), s.vn_cd.as_str(), phone(&s.d));
    for (endpoint, call_id, _) in requests(from, vn) {
        let id = CallId::parse(call_id).unwrap();
        s.store
            .sight(endpoint, &id, now() - 120, now() + 86_400)
            .await
            .unwrap();
    }
    let [voice, sms, exotel, generic] = send_all(&replayed, requests(from, vn)).await;
    for answer in [&voice, &sms, &exotel, &generic] {
        assert_eq!(answer.status, 200, "{answer:?}");
        assert!(!answer.body.contains(callee), "{answer:?}");
    }
    assert!(voice.is_twiml_refusal(), "{voice:?}");
    assert!(!sms.body.contains("<Message"), "{sms:?}");
    assert_eq!(
        exotel.json(),
        serde_json::json!({"fetch_after_attempt": false, "destination": {"numbers": []}})
    );
    assert_eq!(
        generic.json(),
        serde_json::json!({"action": "reject", "reason": "replayed"})
    );
}

async fn send_all(
    app: &axum::Router,
    requests: Vec<(&'static str, &'static str, http::Request<axum::body::Body>)>,
) -> [Answer; 4] {
    let mut answers = Vec::new();
    for (_, _, req) in requests {
        answers.push(send(app, req).await);
    }
    answers.try_into().unwrap()
}

/// A store whose route read and ledger write each take `delay`.
struct Slow {
    inner: Arc<dyn Store>,
    delay: Duration,
}

#[async_trait]
impl RouteReader for Slow {
    async fn route(
        &self,
        caller: &RealNumber,
        dialled: &VirtualNumber,
    ) -> Result<Option<Route>, StoreError> {
        tokio::time::sleep(self.delay).await;
        self.inner.route(caller, dialled).await
    }

    async fn pin_route(&self, key: &vnmask::domain::PinKey) -> Result<Option<Route>, StoreError> {
        tokio::time::sleep(self.delay).await;
        self.inner.pin_route(key).await
    }
}

#[async_trait]
impl CallLedger for Slow {
    async fn sight(
        &self,
        endpoint: &str,
        call_id: &CallId,
        now: UnixTime,
        keep_until: UnixTime,
    ) -> Result<Sighting, StoreError> {
        tokio::time::sleep(self.delay).await;
        self.inner.sight(endpoint, call_id, now, keep_until).await
    }

    async fn remember_connected(
        &self,
        endpoint: &str,
        call: &vnmask::domain::ConnectedCall,
    ) -> Result<(), StoreError> {
        self.inner.remember_connected(endpoint, call).await
    }

    async fn connected(
        &self,
        endpoint: &str,
        call_id: &CallId,
        now: UnixTime,
    ) -> Result<Option<vnmask::domain::ConnectedCall>, StoreError> {
        self.inner.connected(endpoint, call_id, now).await
    }
}

#[async_trait]
impl vnmask::store::PinGuard for Slow {
    async fn count_pin_attempt(
        &self,
        endpoint: &str,
        call_id: &CallId,
        caller: &RealNumber,
        number: &VirtualNumber,
        now: UnixTime,
    ) -> Result<vnmask::store::PinAttempts, StoreError> {
        tokio::time::sleep(self.delay).await;
        self.inner
            .count_pin_attempt(endpoint, call_id, caller, number, now)
            .await
    }

    async fn count_pin_failure(
        &self,
        number: &VirtualNumber,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        self.inner.count_pin_failure(number, now).await
    }
}

#[async_trait]
impl vnmask::store::AnswerStats for Slow {
    async fn count_answer(
        &self,
        number: &VirtualNumber,
        call_id: &CallId,
        answered: bool,
        now: UnixTime,
        keep_until: UnixTime,
    ) -> Result<(), StoreError> {
        self.inner
            .count_answer(number, call_id, answered, now, keep_until)
            .await
    }

    async fn answer_tally(
        &self,
        number: &VirtualNumber,
        now: UnixTime,
        days: u32,
    ) -> Result<vnmask::domain::AnswerTally, StoreError> {
        self.inner.answer_tally(number, now, days).await
    }
}

#[tokio::test]
async fn the_ledger_write_runs_beside_the_route_read() {
    let s = memory().await;
    let delay = Duration::from_millis(300);
    let slow = Arc::new(Slow {
        inner: s.store.clone(),
        delay,
    });
    let app = router(Arc::new(Webhook::new(slow, config(), None)));
    let started = Instant::now();
    let answer = send(&app, twilio_call(phone(&s.c), s.vn_cd.as_str())).await;
    let took = started.elapsed();
    assert!(answer.dial().is_some(), "{answer:?}");
    assert!(
        took >= delay && took < delay * 3 / 2,
        "one round trip, not two: {took:?}"
    );
}

/// Fails its first `failures` loads, then loads `ready`'s parts.
struct Flaky {
    failures: u32,
    loads: AtomicU32,
    store: Arc<dyn Store>,
}

#[async_trait]
impl Loader for Flaky {
    async fn load(&self) -> Result<Ready, LoadError> {
        if self.loads.fetch_add(1, Ordering::SeqCst) < self.failures {
            return Err(LoadError::Config(ConfigError::Missing("VNMASK_SECRETS_ID")));
        }
        Ok(Ready {
            store: self.store.clone(),
            providers: Providers::from_source(&env()).unwrap(),
        })
    }
}

fn settings_retrying_at_once() -> WebhookSettings {
    WebhookSettings {
        retry_load_after: Duration::ZERO,
        ..config().settings
    }
}

/// Every provider's normal refusal, 200, with nothing looked up.
fn assert_refused_in_every_format(answers: &[Answer; 4]) {
    let [voice, sms, exotel, generic] = answers;
    assert!(voice.is_twiml_refusal(), "{voice:?}");
    assert_eq!(sms.status, 200, "{sms:?}");
    assert!(sms.content_type.starts_with("text/xml"), "{sms:?}");
    assert!(!sms.body.contains("<Message"), "{sms:?}");
    assert_eq!(exotel.status, 200);
    assert_eq!(
        exotel.json(),
        serde_json::json!({"fetch_after_attempt": false, "destination": {"numbers": []}})
    );
    assert_eq!(generic.status, 200);
    assert_eq!(
        generic.json(),
        serde_json::json!({"action": "reject", "reason": "not_ready"})
    );
}

#[tokio::test]
async fn until_credentials_load_every_request_is_refused_then_loading_is_retried() {
    let s = memory().await;
    let loader = Arc::new(Flaky {
        failures: 1,
        loads: AtomicU32::new(0),
        store: s.store.clone(),
    });
    let settings = settings_retrying_at_once();
    let ready = Readiness::start(
        loader.clone(),
        settings.reload_after,
        Duration::ZERO,
        settings.first_load_wait,
    )
    .await;
    let app = router(Arc::new(Webhook::with_readiness(settings, ready, None)));
    let (from, vn) = (phone(&s.c), s.vn_cd.as_str());

    // The cold start's load failed: refusals, each starting a new load in the background.
    let answers = send_all(&app, requests(from, vn)).await;
    assert_refused_in_every_format(&answers);

    // A later request finds it loaded and connects.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = send(&app, twilio_call(from, vn)).await;
        if answer.dial().is_some() {
            break;
        }
        assert!(answer.is_twiml_refusal(), "{answer:?}");
        assert!(Instant::now() < deadline, "never loaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(loader.loads.load(Ordering::SeqCst) >= 2);
}

/// Secrets Manager or KMS not answering at all.
struct Hanging;

#[async_trait]
impl Loader for Hanging {
    async fn load(&self) -> Result<Ready, LoadError> {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Err(LoadError::Config(ConfigError::Missing("VNMASK_SECRETS_ID")))
    }
}

#[tokio::test]
async fn a_hanging_load_holds_neither_the_cold_start_nor_the_first_caller_past_two_seconds() {
    let settings = config().settings;
    let started = Instant::now();
    let ready = Readiness::start(
        Arc::new(Hanging),
        settings.reload_after,
        settings.retry_load_after,
        settings.first_load_wait,
    )
    .await;
    let init = started.elapsed();
    assert!(init < Duration::from_millis(1200), "init took {init:?}");
    let app = router(Arc::new(Webhook::with_readiness(settings, ready, None)));
    let answers = send_all(&app, requests(phone(&customer(1)), "+911140001000")).await;
    assert_refused_in_every_format(&answers);
    assert!(started.elapsed() < TWO_SECONDS, "{:?}", started.elapsed());
}

/// The deployed loader's environment: the store's keys wrapped by KMS (moto), the table, and
/// the webhook's settings.
async fn deployed_env(sdk: &aws_config::SdkConfig) -> std::collections::BTreeMap<String, String> {
    let mut env = kms_store_env(sdk, "vnmask-webhook-unused").await;
    env.insert("VNMASK_PUBLIC_BASE_URL".into(), BASE_URL.into());
    env.insert("VNMASK_REFUSAL_MESSAGE".into(), REFUSAL.into());
    env
}

fn loader(
    env: std::collections::BTreeMap<String, String>,
    sdk: &aws_config::SdkConfig,
) -> EnvironmentLoader {
    // One region: routes are not confirmed (two_regions.rs tests confirmation).
    EnvironmentLoader::new(Box::new(env), ConfirmRoutes::Off, sdk.clone(), sdk.clone())
}

#[tokio::test]
async fn credentials_come_from_secrets_manager_and_never_from_the_environment() {
    let sdk = local_sdk().await;
    let env = deployed_env(&sdk).await;

    // The secret holds the credentials: Twilio and the generic API are served, Exotel is not.
    let arn = put_secret(
        &sdk,
        &[
            ("VNMASK_TWILIO_AUTH_TOKENS", TWILIO_TOKEN),
            ("VNMASK_GENERIC_SECRETS", GENERIC_SECRET),
        ],
    )
    .await;
    let mut with_secret = env.clone();
    with_secret.insert("VNMASK_SECRETS_ID".into(), arn);
    let ready = loader(with_secret.clone(), &sdk).load().await.unwrap();
    assert_eq!(
        ready.providers.twilio.unwrap().auth_tokens[0].expose(),
        TWILIO_TOKEN.as_bytes()
    );
    assert!(ready.providers.generic.is_some());
    assert!(ready.providers.exotel.is_none());

    // A credential in the environment is refused by name, without its value.
    let mut leaky = with_secret.clone();
    leaky.insert("VNMASK_GENERIC_SECRETS".into(), GENERIC_SECRET.into());
    let err = loader(leaky, &sdk).load().await.err().unwrap().to_string();
    assert!(err.contains("VNMASK_GENERIC_SECRETS"), "{err}");
    assert!(!err.contains(GENERIC_SECRET), "{err}");

    // A secret that does not exist, or no secret at all, leaves nothing to serve.
    let mut missing = env.clone();
    missing.insert("VNMASK_SECRETS_ID".into(), "vnmask-no-such-secret".into());
    let err = loader(missing, &sdk)
        .load()
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("vnmask-no-such-secret"), "{err}");
    let err = loader(env.clone(), &sdk)
        .load()
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no provider is configured"), "{err}");
}

#[tokio::test]
async fn a_webhook_whose_secret_cannot_be_read_refuses_in_each_providers_format() {
    let sdk = local_sdk().await;
    let mut env = deployed_env(&sdk).await;
    env.insert("VNMASK_SECRETS_ID".into(), "vnmask-not-filled-in".into());
    let settings = WebhookSettings::from_source(&env).unwrap();
    let started = Instant::now();
    let ready = Readiness::start(
        Arc::new(loader(env, &sdk)),
        settings.reload_after,
        settings.retry_load_after,
        settings.first_load_wait,
    )
    .await;
    let app = router(Arc::new(Webhook::with_readiness(settings, ready, None)));
    let stranger = customer(9);
    let answers = send_all(&app, requests(phone(&stranger), "+911140001000")).await;
    assert_refused_in_every_format(&answers);
    assert!(started.elapsed() < TWO_SECONDS, "{:?}", started.elapsed());
}

/// How to answer is known without the secret, so a refusal can always be rendered.
#[test]
fn settings_need_no_credentials() {
    let env: std::collections::BTreeMap<String, String> = [("VNMASK_REFUSAL_ACTION", "reject")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let settings = WebhookSettings::from_source(&env).unwrap();
    assert_eq!(settings.replay.retry_window, Duration::from_secs(60));
}

/// The ledger on DynamoDB Local: one conditional put, which also tells a repeat's first
/// sighting; per endpoint; an entry past its time (TTL deletes late) is as good as gone.
#[tokio::test]
async fn the_dynamodb_ledger_remembers_first_sightings_per_endpoint() {
    let s = dynamo().await;
    let id = CallId::parse("CA0123456789abcdef0123456789abcdef").unwrap();
    let t = now();
    let sight = |endpoint, at, until| {
        let (store, id) = (s.store.clone(), id.clone());
        async move { store.sight(endpoint, &id, at, until).await.unwrap() }
    };
    assert_eq!(sight("twilio-voice", t, t + 100).await, Sighting::First);
    assert_eq!(
        sight("twilio-voice", t + 30, t + 130).await,
        Sighting::Repeat { first_seen: t }
    );
    assert_eq!(
        sight("generic-route", t + 30, t + 130).await,
        Sighting::First
    );
    assert_eq!(
        sight("twilio-voice", t + 100, t + 200).await,
        Sighting::First
    );
    assert_eq!(
        sight("twilio-voice", t + 101, t + 201).await,
        Sighting::Repeat {
            first_seen: t + 100
        }
    );
}
