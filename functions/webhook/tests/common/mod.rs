//! Shared by the webhook's tests: a configured router, signed requests for each provider,
//! the seeds' two orders, and a store that counts lookups.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Request, StatusCode};
use tower::ServiceExt;
use vnmask::assignment::{AssignSettings, Assigner, OrderChange, OrderUpdate};
use vnmask::domain::{Participant, UnixTime, VirtualNumber};
use vnmask::providers::{exotel, generic, plivo, telnyx, twilio, vonage};
use vnmask::store::memory::MemoryStore;
use vnmask::store::Store;
use vnmask_tests::people::{customer, driver};
use vnmask_tests::{local_dynamo, now, pool, seed_pool, CallCounter};
use webhook::{router, InteractionQueue, Outbox, Webhook, WebhookConfig};

pub const BASE_URL: &str = "https://hooks.vnmask.test";
pub const TWILIO_TOKEN: &str = "8f3c1a9e5b7d2046c1e9a3f5b7d90e12";
pub const TWILIO_NEXT_TOKEN: &str = "2b4d6f8091a3c5e7f9b1d3f5a7c9e1f3";
pub const EXOTEL_TOKEN: &str = "exotel-3c5e7f9b1d3f5a7c9e1f";
pub const GENERIC_SECRET: &str = "generic-3c5e7f9b1d3f5a7c9e1f3a5c7e9b";
pub const REFUSAL: &str = "This number cannot connect you.";
pub const PLIVO_TOKEN: &str = "plivo-7c1e9a3f5b7d90e12b4d6f8091a3";
pub const VONAGE_SECRET: &str = "vonage-5e7f9b1d3f5a7c9e1f3a5c7e";
pub const VONAGE_NEXT_SECRET: &str = "vonage-next-9b1d3f5a7c9e1f3a5c";
/// The seed of the Ed25519 key Telnyx would sign with: tests sign as Telnyx does.
pub const TELNYX_SEED: [u8; 32] = [7; 32];

pub const VOICE: &str = "/v1/providers/twilio/voice";
pub const SMS: &str = "/v1/providers/twilio/sms";
pub const EXOTEL: &str = "/v1/providers/exotel/connect";
pub const GENERIC: &str = "/v1/providers/generic/route";

/// The environment of a webhook serving every provider (two Twilio tokens: a rotation).
pub fn env() -> BTreeMap<String, String> {
    [
        ("VNMASK_PUBLIC_BASE_URL", BASE_URL.to_owned()),
        (
            "VNMASK_TWILIO_AUTH_TOKENS",
            format!("{TWILIO_TOKEN},{TWILIO_NEXT_TOKEN}"),
        ),
        ("VNMASK_EXOTEL_TOKENS", EXOTEL_TOKEN.to_owned()),
        // Requests in these tests come from no address: the allow-list has its own tests.
        ("VNMASK_LOCAL_DEVELOPMENT", "true".to_owned()),
        ("VNMASK_GENERIC_SECRETS", GENERIC_SECRET.to_owned()),
        ("VNMASK_PLIVO_AUTH_TOKENS", PLIVO_TOKEN.to_owned()),
        (
            "VNMASK_VONAGE_SIGNATURE_SECRETS",
            format!("{VONAGE_SECRET},{VONAGE_NEXT_SECRET}"),
        ),
        (
            "VNMASK_TELNYX_PUBLIC_KEYS",
            telnyx::public_key_of(&TELNYX_SEED).to_string(),
        ),
        ("VNMASK_REFUSAL_MESSAGE", REFUSAL.to_owned()),
        ("VNMASK_DIAL_TIMEOUT_SECONDS", "25".to_owned()),
        ("VNMASK_CALL_TIME_LIMIT_SECONDS", "3600".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

pub fn config() -> WebhookConfig {
    WebhookConfig::from_source(&env()).unwrap()
}

pub fn app(store: Arc<dyn Store>) -> axum::Router {
    app_with(store, config(), None)
}

/// The webhook doing its after-the-answer work (interactions to `queue`, if given; connected
/// calls noted) as it comes, as outside Lambda.
pub fn app_with(
    store: Arc<dyn Store>,
    config: WebhookConfig,
    queue: Option<InteractionQueue>,
) -> axum::Router {
    let (outbox, drain) = Outbox::new(queue);
    tokio::spawn(drain.run());
    router(Arc::new(Webhook::new(store, config, Some(outbox))))
}

/// `req` as Lambda hands it over: with its invocation's context.
pub fn in_invocation<B>(mut req: Request<B>, request_id: &str) -> Request<B> {
    let mut context = lambda_http::Context::default();
    context.request_id = request_id.to_owned();
    req.extensions_mut().insert(context);
    req
}

/// What came back.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The TwiML of a connected call: `(callerId, number dialled)`.
    pub fn dial(&self) -> Option<(String, String)> {
        let caller_id = between(&self.body, "<Dial callerId=\"", "\"")?;
        let number = between(&self.body, "<Number>", "</Number>")?;
        Some((caller_id.to_owned(), number.to_owned()))
    }

    pub fn is_twiml_refusal(&self) -> bool {
        self.status == StatusCode::OK
            && self.content_type.starts_with("text/xml")
            && self
                .body
                .contains(&format!("<Say>{REFUSAL}</Say><Hangup/>"))
            && !self.body.contains("<Dial")
    }
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = s.find(start)? + start.len();
    let len = s[from..].find(end)?;
    Some(&s[from..from + len])
}

pub async fn send<B>(app: &axum::Router, req: Request<B>) -> Answer
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let res = app
        .clone()
        .oneshot(req)
        .await
        .expect("the router is infallible");
    let status = res.status();
    let content_type = res
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    Answer {
        status,
        content_type,
        body: String::from_utf8(bytes.to_vec()).expect("answers are UTF-8"),
    }
}

pub fn form(params: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(params).unwrap()
}

pub fn owned(params: &[(&str, &str)]) -> Vec<(String, String)> {
    params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A Twilio POST to `path`, signed with `token` for the URL `signed_url`.
pub fn twilio_signed_for(
    path: &str,
    params: &[(&str, &str)],
    token: &str,
    signed_url: &str,
) -> Request<Body> {
    let signature = twilio::sign(token.as_bytes(), signed_url, &owned(params));
    Request::post(path)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(Body::from(form(params)))
        .unwrap()
}

/// A Twilio POST signed as Twilio would for our public URL.
pub fn twilio_request(path: &str, params: &[(&str, &str)]) -> Request<Body> {
    twilio_signed_for(path, params, TWILIO_TOKEN, &format!("{BASE_URL}{path}"))
}

pub const PLIVO_VOICE: &str = "/v1/providers/plivo/voice";
pub const PLIVO_SMS: &str = "/v1/providers/plivo/sms";
pub const VONAGE: &str = "/v1/providers/vonage/answer";
pub const TELNYX_VOICE: &str = "/v1/providers/telnyx/voice";

/// A Plivo request to `path` signed as Plivo signs it (V3, with a nonce).
pub fn plivo_request(path: &str, params: &[(&str, &str)]) -> Request<Body> {
    let nonce = "12345678901234567890";
    let signature = plivo::sign(
        PLIVO_TOKEN.as_bytes(),
        "POST",
        &format!("{BASE_URL}{path}"),
        params,
        nonce,
    );
    Request::post(path)
        .header("content-type", "application/x-www-form-urlencoded")
        .header(plivo::SIGNATURE_HEADER, signature)
        .header(plivo::NONCE_HEADER, nonce)
        .body(Body::from(form(params)))
        .unwrap()
}

/// A Plivo call from `from` to `to` (E.164; Plivo sends the digits without the `+`).
pub fn plivo_call_as(call_uuid: &str, from: &str, to: &str) -> Request<Body> {
    let (from, to) = (from.trim_start_matches('+'), to.trim_start_matches('+'));
    plivo_request(
        PLIVO_VOICE,
        &[
            ("CallUUID", call_uuid),
            ("From", from),
            ("To", to),
            ("Direction", "inbound"),
            ("CallStatus", "ringing"),
        ],
    )
}

pub fn plivo_call(from: &str, to: &str) -> Request<Body> {
    plivo_call_as(&unique_id("pl"), from, to)
}

/// A Vonage `answer_url` POST for a call from `from` to `to`, signed with `secret`.
pub fn vonage_call_signed(
    uuid: &str,
    from: &str,
    to: &str,
    secret: &str,
    iat: i64,
) -> Request<Body> {
    let body = serde_json::json!({
        "from": from.trim_start_matches('+'),
        "to": to.trim_start_matches('+'),
        "uuid": uuid,
        "conversation_uuid": "CON-aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
    })
    .to_string();
    Request::post(VONAGE)
        .header("content-type", "application/json")
        .header(
            vonage::AUTHORIZATION_HEADER,
            vonage::sign(secret.as_bytes(), Some(body.as_bytes()), iat),
        )
        .body(Body::from(body))
        .unwrap()
}

pub fn vonage_call(from: &str, to: &str) -> Request<Body> {
    vonage_call_signed(&unique_id("vg"), from, to, VONAGE_SECRET, now())
}

/// A Telnyx TeXML request signed as Telnyx signs it (Ed25519 over `timestamp|body`).
pub fn telnyx_signed(path: &str, body: String, timestamp: i64) -> Request<Body> {
    let ts = timestamp.to_string();
    Request::post(path)
        .header("content-type", "application/x-www-form-urlencoded")
        .header(telnyx::TIMESTAMP_HEADER, &ts)
        .header(
            telnyx::SIGNATURE_HEADER,
            telnyx::sign(&TELNYX_SEED, &ts, body.as_bytes()),
        )
        .body(Body::from(body))
        .unwrap()
}

pub fn telnyx_call_as(call_sid: &str, from: &str, to: &str) -> Request<Body> {
    let body = form(&[
        ("CallSid", call_sid),
        ("From", from),
        ("To", to),
        ("Direction", "inbound"),
    ]);
    telnyx_signed(TELNYX_VOICE, body, now())
}

pub fn telnyx_call(from: &str, to: &str) -> Request<Body> {
    telnyx_call_as(&unique_id("v3:tx"), from, to)
}

/// A call id no other request of the run has.
pub fn unique_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn voice_params<'a>(from: &'a str, to: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", "CAfedcba9876543210fedcba9876543210"),
        ("CallStatus", "ringing"),
        ("Called", to),
        ("Caller", from),
        ("Direction", "inbound"),
        ("From", from),
        ("To", to),
    ]
}

pub fn twilio_call(from: &str, to: &str) -> Request<Body> {
    twilio_request(VOICE, &voice_params(from, to))
}

pub fn twilio_text(from: &str, to: &str, body: &str) -> Request<Body> {
    twilio_request(
        SMS,
        &[
            ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
            ("ApiVersion", "2010-04-01"),
            ("Body", body),
            ("From", from),
            ("MessageSid", "SM0123456789abcdef0123456789abcdef"),
            ("NumMedia", "0"),
            ("NumSegments", "1"),
            ("SmsStatus", "received"),
            ("To", to),
        ],
    )
}

pub fn exotel_call(from: &str, to: &str) -> Request<Body> {
    exotel_call_as("b6cf1c5c8ec8d2bd0a1a6c4a4e3d1b7a", from, to)
}

/// An Exotel Connect request with its own call id: several in one test are not replays.
pub fn exotel_call_as(call_sid: &str, from: &str, to: &str) -> Request<Body> {
    let query = form(&[
        ("CallSid", call_sid),
        ("CallFrom", from),
        ("CallTo", to),
        ("Direction", "incoming"),
        (exotel::TOKEN_PARAM, EXOTEL_TOKEN),
    ]);
    Request::get(format!("{EXOTEL}?{query}"))
        .body(Body::empty())
        .unwrap()
}

pub fn generic_body(caller: &str, dialled: &str, channel: &str) -> String {
    serde_json::json!({"caller": caller, "dialled": dialled, "call_id": "carrier-77", "channel": channel}).to_string()
}

pub fn generic_signed(body: &str, timestamp: i64, secret: &str) -> Request<Body> {
    generic_signed_to(GENERIC, body, timestamp, secret)
}

/// A generic POST to `path`, signed with `secret` at `timestamp`.
pub fn generic_signed_to(path: &str, body: &str, timestamp: i64, secret: &str) -> Request<Body> {
    let ts = timestamp.to_string();
    Request::post(path)
        .header("content-type", "application/json")
        .header(generic::TIMESTAMP_HEADER, &ts)
        .header(
            generic::SIGNATURE_HEADER,
            generic::sign(secret.as_bytes(), &ts, body.as_bytes()),
        )
        .body(Body::from(body.to_owned()))
        .unwrap()
}

pub fn generic_call(caller: &str, dialled: &str) -> Request<Body> {
    generic_signed(
        &generic_body(caller, dialled, "voice"),
        vnmask_tests::now(),
        GENERIC_SECRET,
    )
}

pub fn assign(order: &str, people: &[Participant]) -> OrderUpdate {
    OrderUpdate {
        order_id: order.parse().unwrap(),
        market: vnmask_tests::market("IN"),
        version: 1,
        record: false,
        change: OrderChange::Participants(people.to_vec()),
    }
}

pub fn settings() -> AssignSettings {
    AssignSettings::for_markets([vnmask_tests::market("IN")])
}

/// The number `from` dials to reach `to` in `order`.
pub async fn number_between(
    store: &Arc<dyn Store>,
    order: &str,
    from: &Participant,
    to: &Participant,
) -> VirtualNumber {
    let session = store
        .session(&order.parse().unwrap())
        .await
        .unwrap()
        .expect("session");
    session
        .contacts
        .iter()
        .find(|c| c.joins(&from.user_id, &to.user_id))
        .expect("a contact joins them")
        .number
        .clone()
}

pub async fn apply(store: &Arc<dyn Store>, order: &str, people: &[Participant], at: UnixTime) {
    Assigner::new(store.clone(), settings())
        .apply(&assign(order, people), at)
        .await
        .expect("assignment applies");
}

/// Upper bound for "answers within 2 s" assertions.
pub const TWO_SECONDS: Duration = Duration::from_secs(2);

/// An API Gateway HTTP API (payload 2.0) event, turned into a request the way the Lambda
/// runtime does it.
pub struct ApiGatewayEvent {
    pub method: &'static str,
    pub raw_path: String,
    pub raw_query: String,
    pub headers: serde_json::Map<String, serde_json::Value>,
    pub body: Option<String>,
    pub base64: bool,
    pub source_ip: &'static str,
}

impl ApiGatewayEvent {
    pub fn get(raw_path: &str, raw_query: &str) -> Self {
        ApiGatewayEvent {
            method: "GET",
            raw_path: raw_path.to_owned(),
            raw_query: raw_query.to_owned(),
            headers: serde_json::Map::new(),
            body: None,
            base64: false,
            source_ip: "203.0.113.10",
        }
    }

    pub fn with_source_ip(mut self, ip: &'static str) -> Self {
        self.source_ip = ip;
        self
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": self.raw_path,
            "rawQueryString": self.raw_query,
            "headers": self.headers,
            "requestContext": {
                "accountId": "123456789012",
                "apiId": "a1b2c3d4e5",
                "domainName": "a1b2c3d4e5.execute-api.ap-south-1.amazonaws.com",
                "domainPrefix": "a1b2c3d4e5",
                "http": {
                    "method": self.method,
                    "path": self.raw_path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": self.source_ip,
                    "userAgent": "test"
                },
                "requestId": "Yx1AbcDEFgHIjkL=",
                "routeKey": "$default",
                "stage": "$default",
                "time": "05/Jan/2026:10:15:02 +0000",
                "timeEpoch": 1767608102000i64
            },
            "body": self.body,
            "isBase64Encoded": self.base64
        })
    }

    pub fn request(&self) -> Request<lambda_http::Body> {
        lambda_request(&self.to_json().to_string())
    }
}

/// What lambda_http does with an invocation's JSON before the router sees it.
pub fn lambda_request(event: &str) -> Request<lambda_http::Body> {
    let parsed: lambda_http::request::LambdaRequest =
        serde_json::from_str(event).expect("an API Gateway v2 event");
    Request::from(parsed)
}

/// The seeds' two orders, C–D and N–D, with the numbers each pair dials.
pub struct Seeds {
    pub store: Arc<dyn Store>,
    pub calls: Option<CallCounter>,
    pub c: Participant,
    pub n: Participant,
    pub d: Participant,
    /// What C and D dial to reach each other, and what N and D dial.
    pub vn_cd: VirtualNumber,
    pub vn_nd: VirtualNumber,
}

/// C and N order at once; D takes both. A pool of two numbers.
pub async fn seeds(store: Arc<dyn Store>, calls: Option<CallCounter>) -> Seeds {
    seed_pool(store.as_ref(), &pool("IN", 2)).await;
    let (c, n, d) = (customer(1), customer(2), driver(1));
    apply(&store, "ord-c", &[c.clone(), d.clone()], now()).await;
    apply(&store, "ord-n", &[n.clone(), d.clone()], now()).await;
    let vn_cd = number_between(&store, "ord-c", &c, &d).await;
    let vn_nd = number_between(&store, "ord-n", &n, &d).await;
    assert_ne!(vn_cd, vn_nd);
    Seeds {
        store,
        calls,
        c,
        n,
        d,
        vn_cd,
        vn_nd,
    }
}

pub async fn memory() -> Seeds {
    seeds(Arc::new(MemoryStore::new()), None).await
}

pub async fn dynamo() -> Seeds {
    let d = local_dynamo().await;
    seeds(d.store.clone(), Some(d.calls.clone())).await
}

pub fn phone(p: &Participant) -> &str {
    p.phone.expose()
}

/// One queue per test: they run at once in this process.
static QUEUES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A queue name no other test of this process uses.
pub fn queue_name() -> String {
    format!(
        "vnmask-test-events-{}-{}",
        std::process::id(),
        QUEUES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// A fresh interactions queue in moto.
pub async fn new_queue(sqs: &aws_sdk_sqs::Client) -> String {
    sqs.create_queue()
        .queue_name(queue_name())
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap()
}

/// Every event on the queue, read and decoded.
pub async fn published(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Vec<serde_json::Value> {
    let mut bodies = Vec::new();
    loop {
        let out = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        let got = out.messages.unwrap_or_default();
        if got.is_empty() {
            return bodies;
        }
        bodies.extend(
            got.into_iter()
                .filter_map(|m| m.body)
                .map(|b| serde_json::from_str(&b).unwrap()),
        );
    }
}
