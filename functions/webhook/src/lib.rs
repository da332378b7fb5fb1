//! The webhook function: telecom providers ask where a call or message to a virtual number goes.
//!
//! One `axum` router serves every provider (API Gateway HTTP API, payload 2.0):
//!
//! | route | provider |
//! | --- | --- |
//! | `POST /v1/providers/twilio/voice` | Twilio incoming call → TwiML `<Dial>` |
//! | `POST /v1/providers/twilio/sms` | Twilio incoming message → TwiML `<Message>` |
//! | `GET /v1/providers/exotel/connect[/{token}]` | Exotel Connect applet → JSON |
//! | `POST /v1/providers/generic/route` | carriers, in-house IVRs → JSON |
//! | `POST /v1/providers/twilio/dial-end` | Twilio `<Dial action>`: how a connected call ended |
//! | `GET /v1/providers/exotel/call-end[/{token}]` | Exotel Passthru after Connect: the same |
//! | `POST /v1/providers/generic/call-end` | carriers, in-house IVRs: the same |
//! | `POST /v1/providers/twilio/recording` | Twilio: where a recorded call's recording is |
//! | `POST /v1/providers/twilio/pin` | Twilio `<Gather>`: the PIN a caller without a route keyed in |
//! | `POST /v1/providers/generic/pin` | carriers, in-house IVRs: the same, after `collect_pin` |
//! | `POST /v1/providers/plivo/voice` | Plivo answer URL → Plivo XML `<Dial>` |
//! | `POST /v1/providers/plivo/sms` | Plivo message URL → Plivo XML `<Message>` |
//! | `POST /v1/providers/vonage/answer` | Vonage `answer_url` (POST) → NCCO `connect` |
//! | `POST /v1/providers/telnyx/voice` | Telnyx TeXML application → TeXML `<Dial>` |
//! | `POST /v1/providers/telnyx/sms` | Telnyx messaging webhook → relayed through Telnyx's API |
//!
//! Each request is authenticated first (403, nothing looked up), read (400 when malformed),
//! then decided with one strongly consistent read of the route while its call id is recorded
//! (a replay, seen after the providers' retry window, is refused). Whatever goes wrong after
//! authentication refuses the call (fail closed), and the provider gets its normal answer
//! format so that the caller hears our message rather than a provider error. Before the
//! credentials and keys are loaded ([`readiness`]), every request gets that refusal.

pub mod config;
pub mod interactions;
pub mod outbox;
pub mod readiness;
pub mod relay;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, State};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http::request::Parts;
use http::{header, HeaderMap, StatusCode, Uri};
use lambda_http::request::RequestContext;
use lambda_http::RequestExt;
use vnmask::domain::{self, CallEnd, CallId, Channel, ConnectedCall, RecordingReady};
use vnmask::providers::{
    exotel, generic, param, parse_form, parse_query, plivo, telnyx, twilio, vonage, AuthError,
    Params, RequestError,
};
use vnmask::routing::{decide_once, decide_pin, Decision, Refusal, RouteQuery};
use vnmask::store::{CallRouting, Sighting};
use vnmask::telemetry::{MetricSet, Unit};

pub use config::{ConfirmRoutes, Providers, WebhookConfig, WebhookSettings};
pub use interactions::{
    CallOutcome, Interaction, InteractionQueue, ProviderKind, RecordingEvent, StreamEvent,
};
pub use outbox::{Drain, Outbox, RelayedMessage, ANSWER_WAIT};
pub use readiness::{EnvironmentLoader, LoadError, Loader, Readiness, Ready};
pub use relay::{RelayError, TelnyxMessages, TextRelay};

/// Requests larger than this are refused with 413: provider webhooks are a few kilobytes.
pub const BODY_LIMIT: usize = 64 * 1024;

const TWIML: &str = "text/xml; charset=utf-8";
const TWILIO_DIAL_END: &str = twilio::DIAL_END_PATH;
const TWILIO_RECORDING: &str = twilio::RECORDING_PATH;
const TWILIO_PIN: &str = twilio::PIN_PATH;
const JSON: &str = "application/json";

/// Everything a request needs, built once per cold start.
pub struct Webhook {
    settings: WebhookSettings,
    ready: Arc<Readiness>,
    outbox: Option<Outbox>,
}

impl Webhook {
    /// A webhook whose store and providers are at hand.
    pub fn new(store: Arc<dyn CallRouting>, config: WebhookConfig, outbox: Option<Outbox>) -> Self {
        let ready = Readiness::loaded(Ready {
            store,
            providers: config.providers,
        });
        Self::with_readiness(config.settings, Arc::new(ready), outbox)
    }

    /// A webhook whose store and providers are loaded (and reloaded) by `ready`.
    pub fn with_readiness(
        settings: WebhookSettings,
        ready: Arc<Readiness>,
        outbox: Option<Outbox>,
    ) -> Self {
        Webhook {
            settings,
            ready,
            outbox,
        }
    }
}

/// The function's HTTP API.
pub fn router(webhook: Arc<Webhook>) -> Router {
    Router::new()
        .route("/v1/providers/twilio/voice", post(twilio_voice))
        .route("/v1/providers/twilio/sms", post(twilio_sms))
        .route("/v1/providers/exotel/connect", get(exotel_connect))
        .route(
            "/v1/providers/exotel/connect/{token}",
            get(exotel_connect_with_token),
        )
        .route("/v1/providers/generic/route", post(generic_route))
        .route(TWILIO_DIAL_END, post(twilio_dial_end))
        .route("/v1/providers/exotel/call-end", get(exotel_call_end))
        .route(
            "/v1/providers/exotel/call-end/{token}",
            get(exotel_call_end_with_token),
        )
        .route("/v1/providers/generic/call-end", post(generic_call_end))
        .route(TWILIO_RECORDING, post(twilio_recording))
        .route(TWILIO_PIN, post(twilio_pin))
        .route("/v1/providers/generic/pin", post(generic_pin))
        .route("/v1/providers/plivo/voice", post(plivo_voice))
        .route("/v1/providers/plivo/sms", post(plivo_sms))
        .route("/v1/providers/vonage/answer", post(vonage_answer))
        .route("/v1/providers/telnyx/voice", post(telnyx_voice))
        .route("/v1/providers/telnyx/sms", post(telnyx_sms))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(
            webhook.clone(),
            mark_answered,
        ))
        .with_state(webhook)
}

/// Every invocation, whatever its answer, tells the outbox it is answered: the interactions it
/// left are then published (see [`Drain::flush_invocation`]).
async fn mark_answered(
    State(app): State<Arc<Webhook>>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let request_id = request
        .lambda_context_ref()
        .map(|context| context.request_id.clone());
    let response = next.run(request).await;
    if let (Some(outbox), Some(id)) = (&app.outbox, request_id) {
        outbox.answered(&id);
    }
    response
}

/// The ledger endpoints of the routing requests, whose connected calls their ends are read
/// against; an end's own ledger entry is the routing endpoint's with [`CALL_END_SUFFIX`], a
/// recording report's with [`RECORDING_SUFFIX`].
const TWILIO_VOICE: &str = "twilio-voice";
const EXOTEL_CONNECT: &str = "exotel-connect";
const GENERIC_ROUTE: &str = "generic-route";
const PLIVO_VOICE: &str = "plivo-voice";
const VONAGE_ANSWER: &str = "vonage-answer";
const TELNYX_VOICE: &str = "telnyx-voice";
const TELNYX_SMS: &str = "telnyx-sms";
const CALL_END_SUFFIX: &str = "-end";
const RECORDING_SUFFIX: &str = "-recording";
const PIN_SUFFIX: &str = "-pin";

/// What became of a provider's report on a connected call (its end, or its recording).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndResult {
    /// The report is published and counted.
    Recorded,
    /// Not a call connected here, or one no longer remembered: counted, not an error.
    UnknownCall,
    /// The same report again: recorded once already.
    Repeat,
    /// The ledger could not be read in time.
    Failed,
}

impl EndResult {
    fn as_str(self) -> &'static str {
        match self {
            EndResult::Recorded => "recorded",
            EndResult::UnknownCall => "unknown_call",
            EndResult::Repeat => "repeat",
            EndResult::Failed => "failed",
        }
    }

    fn json(self) -> String {
        serde_json::json!({ "result": self.as_str() }).to_string()
    }
}

/// Whether a provider's answers can ask a caller for a PIN and take it back (Twilio's
/// `<Gather>`, Exotel's flow, the generic contract); elsewhere a caller without a route is
/// refused, as without PIN recovery.
fn collects_pins(provider: ProviderKind) -> bool {
    matches!(
        provider,
        ProviderKind::Twilio | ProviderKind::Exotel | ProviderKind::Generic
    )
}

/// Whether a provider's call-end (and recording) reports reach an endpoint here, which reads
/// them against the connected calls noted on the ledger; elsewhere nothing would read a note.
fn reports_call_ends(provider: ProviderKind) -> bool {
    matches!(
        provider,
        ProviderKind::Twilio | ProviderKind::Exotel | ProviderKind::Generic
    )
}

/// Why a request was turned away before any decision.
#[derive(Debug, thiserror::Error)]
enum Rejection {
    /// Credentials and keys are not loaded: nothing can be checked.
    #[error("not ready")]
    NotReady,
    #[error("this provider is not configured")]
    NotConfigured,
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Request(#[from] RequestError),
}

impl Rejection {
    fn status(&self) -> StatusCode {
        match self {
            Rejection::NotReady => StatusCode::OK,
            Rejection::NotConfigured => StatusCode::NOT_FOUND,
            Rejection::Auth(_) => StatusCode::FORBIDDEN,
            Rejection::Request(_) => StatusCode::BAD_REQUEST,
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Rejection::NotReady => Refusal::NotReady.as_str(),
            Rejection::NotConfigured => "not_configured",
            Rejection::Auth(e) => e.as_str(),
            Rejection::Request(_) => "bad_request",
        }
    }
}

/// API Gateway's `requestContext.http.sourceIp`, when the request came through it.
struct SourceIp(Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for SourceIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ip = match parts.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(ctx)) => ctx.http.source_ip.clone(),
            _ => None,
        };
        Ok(SourceIp(ip))
    }
}

async fn twilio_voice(
    State(app): State<Arc<Webhook>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    app.twilio(Channel::Voice, &uri, &headers, &body).await
}

async fn twilio_sms(
    State(app): State<Arc<Webhook>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    app.twilio(Channel::Sms, &uri, &headers, &body).await
}

async fn exotel_connect(State(app): State<Arc<Webhook>>, uri: Uri, source: SourceIp) -> Response {
    app.exotel(None, &uri, source).await
}

async fn exotel_connect_with_token(
    State(app): State<Arc<Webhook>>,
    Path(token): Path<String>,
    uri: Uri,
    source: SourceIp,
) -> Response {
    app.exotel(Some(token), &uri, source).await
}

async fn generic_route(
    State(app): State<Arc<Webhook>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    app.generic(&headers, &body, generic::route_query).await
}

async fn twilio_dial_end(
    State(app): State<Arc<Webhook>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    app.twilio_call_end(&uri, &headers, &body).await
}

async fn twilio_pin(
    State(app): State<Arc<Webhook>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    app.twilio_pin(&uri, &headers, &body).await
}

async fn generic_pin(State(app): State<Arc<Webhook>>, headers: HeaderMap, body: Bytes) -> Response {
    app.generic(&headers, &body, generic::pin_query).await
}

async fn plivo_voice(
    State(app): State<Arc<Webhook>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    app.plivo(Channel::Voice, &uri, &headers, &body).await
}

async fn plivo_sms(
    State(app): State<Arc<Webhook>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    app.plivo(Channel::Sms, &uri, &headers, &body).await
}

async fn vonage_answer(
    State(app): State<Arc<Webhook>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    app.vonage(&headers, &body).await
}

async fn telnyx_voice(
    State(app): State<Arc<Webhook>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    app.telnyx_voice(&headers, &body).await
}

async fn telnyx_sms(State(app): State<Arc<Webhook>>, headers: HeaderMap, body: Bytes) -> Response {
    app.telnyx_sms(&headers, &body).await
}

async fn twilio_recording(
    State(app): State<Arc<Webhook>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    app.twilio_recording(&uri, &headers, &body).await
}

async fn exotel_call_end(State(app): State<Arc<Webhook>>, uri: Uri, source: SourceIp) -> Response {
    app.exotel_call_end(None, &uri, source).await
}

async fn exotel_call_end_with_token(
    State(app): State<Arc<Webhook>>,
    Path(token): Path<String>,
    uri: Uri,
    source: SourceIp,
) -> Response {
    app.exotel_call_end(Some(token), &uri, source).await
}

async fn generic_call_end(
    State(app): State<Arc<Webhook>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    app.generic_call_end(&headers, &body).await
}

impl Webhook {
    async fn twilio(
        &self,
        channel: Channel,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Response {
        let started = Instant::now();
        let render = |decision: &Decision,
                      query: Option<&RouteQuery>,
                      callbacks: Option<&twilio::CallbackUrls>| {
            let twiml = match channel {
                Channel::Voice => twilio::voice_response(decision, &self.settings.voice, callbacks),
                Channel::Sms => twilio::message_response(
                    decision,
                    query.and_then(|q| q.text.as_deref()).unwrap_or_default(),
                ),
            };
            (TWIML, twiml)
        };
        let Some(ready) = self.ready.get() else {
            return self.not_ready(ProviderKind::Twilio, |d, q| render(d, q, None));
        };
        let endpoint = match channel {
            Channel::Voice => TWILIO_VOICE,
            Channel::Sms => "twilio-sms",
        };
        // Where Twilio reports a connected call's end and, if recorded, its recording.
        let callbacks = ready
            .providers
            .twilio
            .as_ref()
            .map(|c| twilio::CallbackUrls::under(&c.public_base_url));
        let admitted = Self::twilio_params(&ready.providers, uri, headers, body).and_then(|p| {
            Ok(match channel {
                Channel::Voice => twilio::voice_query(&p)?,
                Channel::Sms => twilio::message_query(&p)?,
            })
        });
        self.answer(
            &ready,
            ProviderKind::Twilio,
            endpoint,
            started,
            admitted,
            |d, q| render(d, q, callbacks.as_ref()),
        )
        .await
    }

    /// A PIN keyed in at Twilio's `<Gather>`: decided as the call it belongs to (whose ledger
    /// entry its outcome is read against), answered so that a refusal hangs up.
    async fn twilio_pin(&self, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Response {
        let started = Instant::now();
        let render = |decision: &Decision, callbacks: Option<&twilio::CallbackUrls>| {
            (
                TWIML,
                twilio::pin_response(decision, &self.settings.voice, callbacks),
            )
        };
        let Some(ready) = self.ready.get() else {
            return self.not_ready(ProviderKind::Twilio, |d, _| render(d, None));
        };
        let callbacks = ready
            .providers
            .twilio
            .as_ref()
            .map(|c| twilio::CallbackUrls::under(&c.public_base_url));
        let admitted = Self::twilio_params(&ready.providers, uri, headers, body)
            .and_then(|p| Ok(twilio::pin_query(&p)?));
        self.answer(
            &ready,
            ProviderKind::Twilio,
            TWILIO_VOICE,
            started,
            admitted,
            |d, _| render(d, callbacks.as_ref()),
        )
        .await
    }

    /// A Twilio request's parameters, once its signature is checked.
    fn twilio_params<'a>(
        providers: &Providers,
        uri: &Uri,
        headers: &HeaderMap,
        body: &'a [u8],
    ) -> Result<Params<'a>, Rejection> {
        let config = providers.twilio.as_ref().ok_or(Rejection::NotConfigured)?;
        let signature =
            header_str(headers, twilio::SIGNATURE_HEADER).ok_or(AuthError::MissingSignature)?;
        let params = parse_form(body)?;
        // Twilio signs the URL it was given: our public base URL, then the path and query as sent.
        let base = config.public_base_url.as_str();
        let url = match uri.query() {
            Some(q) => [base, uri.path(), "?", q].concat(),
            None => [base, uri.path()].concat(),
        };
        twilio::verify(&config.auth_tokens, &url, &params, Some(signature))?;
        Ok(params)
    }

    async fn exotel(&self, path_token: Option<String>, uri: &Uri, source: SourceIp) -> Response {
        let started = Instant::now();
        let settings = self.settings.exotel_connect();
        let render = |decision: &Decision, _: Option<&RouteQuery>| {
            (JSON, exotel::connect_response(decision, &settings))
        };
        let Some(ready) = self.ready.get() else {
            return self.not_ready(ProviderKind::Exotel, render);
        };
        let admitted = Self::exotel_params(&ready.providers, path_token.as_deref(), uri, source)
            .and_then(|(params, market)| Ok(exotel::connect_query(&params, market)?));
        self.answer(
            &ready,
            ProviderKind::Exotel,
            EXOTEL_CONNECT,
            started,
            admitted,
            render,
        )
        .await
    }

    /// An Exotel request's parameters and the market of its national forms, once its source and
    /// token are checked.
    fn exotel_params<'a, 'p>(
        providers: &'p Providers,
        path_token: Option<&str>,
        uri: &'a Uri,
        source: SourceIp,
    ) -> Result<(Params<'a>, &'p domain::Market), Rejection> {
        let config = providers.exotel.as_ref().ok_or(Rejection::NotConfigured)?;
        if let Some(allowed) = &config.allowed_sources {
            allowed.check(source.0.as_deref())?;
        }
        let params = parse_query(uri.query().unwrap_or_default())?;
        let query_token = param(&params, exotel::TOKEN_PARAM);
        exotel::verify_token(&config.tokens, path_token.or(query_token))?;
        Ok((params, &config.market))
    }

    /// A generic question, read by `read`: the route question, or the PIN keyed in after
    /// `collect_pin`.
    async fn generic(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        read: fn(&[u8]) -> Result<RouteQuery, RequestError>,
    ) -> Response {
        let started = Instant::now();
        let render =
            |decision: &Decision, _: Option<&RouteQuery>| (JSON, generic::route_response(decision));
        let Some(ready) = self.ready.get() else {
            return self.not_ready(ProviderKind::Generic, render);
        };
        let admitted =
            Self::generic_verified(&ready.providers, headers, body).and_then(|()| Ok(read(body)?));
        self.answer(
            &ready,
            ProviderKind::Generic,
            GENERIC_ROUTE,
            started,
            admitted,
            render,
        )
        .await
    }

    /// Checks a generic request's signature.
    fn generic_verified(
        providers: &Providers,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), Rejection> {
        let config = providers.generic.as_ref().ok_or(Rejection::NotConfigured)?;
        generic::verify(
            &config.secrets,
            header_str(headers, generic::TIMESTAMP_HEADER),
            header_str(headers, generic::SIGNATURE_HEADER),
            body,
            domain::now(),
        )?;
        Ok(())
    }

    async fn plivo(
        &self,
        channel: Channel,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Response {
        let started = Instant::now();
        let render = |decision: &Decision, query: Option<&RouteQuery>| {
            let xml = match channel {
                Channel::Voice => plivo::voice_response(decision, &self.settings.voice),
                Channel::Sms => plivo::message_response(
                    decision,
                    query.and_then(|q| q.text.as_deref()).unwrap_or_default(),
                ),
            };
            (TWIML, xml)
        };
        let Some(ready) = self.ready.get() else {
            return self.not_ready(ProviderKind::Plivo, render);
        };
        let endpoint = match channel {
            Channel::Voice => PLIVO_VOICE,
            Channel::Sms => "plivo-sms",
        };
        let admitted = Self::plivo_params(&ready.providers, uri, headers, body).and_then(|p| {
            Ok(match channel {
                Channel::Voice => plivo::voice_query(&p)?,
                Channel::Sms => plivo::message_query(&p)?,
            })
        });
        self.answer(
            &ready,
            ProviderKind::Plivo,
            endpoint,
            started,
            admitted,
            render,
        )
        .await
    }

    /// A Plivo request's parameters, once its signature is checked: Plivo signs the URL it
    /// was given (our public base URL, then the path and query as sent) and the form. Each
    /// header may carry several signatures; the main account's (`-MA-`) is checked too, for
    /// numbers of a subaccount whose main account's token is the one configured.
    fn plivo_params<'a>(
        providers: &Providers,
        uri: &Uri,
        headers: &HeaderMap,
        body: &'a [u8],
    ) -> Result<Params<'a>, Rejection> {
        let config = providers.plivo.as_ref().ok_or(Rejection::NotConfigured)?;
        let signatures: Vec<&str> = [
            plivo::SIGNATURE_HEADER,
            plivo::MAIN_ACCOUNT_SIGNATURE_HEADER,
        ]
        .iter()
        .filter_map(|h| header_str(headers, h))
        .collect();
        if signatures.is_empty() {
            return Err(AuthError::MissingSignature.into());
        }
        let params = parse_form(body)?;
        let base = config.public_base_url.as_str();
        let url = match uri.query() {
            Some(q) => [base, uri.path(), "?", q].concat(),
            None => [base, uri.path()].concat(),
        };
        plivo::verify(
            &config.auth_tokens,
            "POST",
            &url,
            &params,
            header_str(headers, plivo::NONCE_HEADER),
            Some(&signatures.join(",")),
        )?;
        Ok(params)
    }

    /// Vonage's `answer_url`, POST only: the call in a JSON body, which the JWT's
    /// `payload_hash` binds (a GET's query is covered by no signature). Vonage waits 5 s for
    /// the NCCO; the answer is due within the 2 s every provider gets.
    async fn vonage(&self, headers: &HeaderMap, body: &[u8]) -> Response {
        let started = Instant::now();
        let render = |decision: &Decision, _: Option<&RouteQuery>| {
            (
                JSON,
                vonage::answer_response(decision, &self.settings.voice),
            )
        };
        let Some(ready) = self.ready.get() else {
            return self.not_ready(ProviderKind::Vonage, render);
        };
        let admitted = (|| {
            let config = ready
                .providers
                .vonage
                .as_ref()
                .ok_or(Rejection::NotConfigured)?;
            vonage::verify(
                &config.signature_secrets,
                header_str(headers, vonage::AUTHORIZATION_HEADER),
                body,
                domain::now(),
            )?;
            Ok(vonage::answer_query_json(body)?)
        })();
        self.answer(
            &ready,
            ProviderKind::Vonage,
            VONAGE_ANSWER,
            started,
            admitted,
            render,
        )
        .await
    }

    /// A call to a Telnyx TeXML application: the form, signed with Ed25519 over the timestamp
    /// and the body as received.
    async fn telnyx_voice(&self, headers: &HeaderMap, body: &[u8]) -> Response {
        let started = Instant::now();
        let render = |decision: &Decision, _: Option<&RouteQuery>| {
            (
                TWIML,
                telnyx::voice_response(decision, &self.settings.voice),
            )
        };
        let Some(ready) = self.ready.get() else {
            return self.not_ready(ProviderKind::Telnyx, render);
        };
        let admitted = Self::telnyx_verified(&ready.providers, headers, body)
            .and_then(|()| Ok(telnyx::voice_query(&parse_form(body)?)?));
        self.answer(
            &ready,
            ProviderKind::Telnyx,
            TELNYX_VOICE,
            started,
            admitted,
            render,
        )
        .await
    }

    /// A Telnyx messaging webhook: an inbound text is decided as any text and, when it
    /// connects, relayed after the answer through Telnyx's API (the answer itself carries
    /// nothing back); delivery reports and other events are acknowledged and ignored.
    async fn telnyx_sms(&self, headers: &HeaderMap, body: &[u8]) -> Response {
        let started = Instant::now();
        let Some(ready) = self.ready.get() else {
            let render = |_: &Decision, _: Option<&RouteQuery>| {
                (JSON, serde_json::json!({ "result": "refused" }).to_string())
            };
            return self.not_ready(ProviderKind::Telnyx, render);
        };
        let relays = ready
            .providers
            .telnyx
            .as_ref()
            .is_some_and(|c| c.relay.is_some());
        let render = |decision: &Decision, _: Option<&RouteQuery>| {
            let result = match decision {
                Decision::Connect(_) if relays => "relayed",
                Decision::Connect(_) => "not_relayed",
                Decision::AskPin { .. } | Decision::Refuse(_) => "refused",
            };
            (JSON, serde_json::json!({ "result": result }).to_string())
        };
        let admitted = Self::telnyx_verified(&ready.providers, headers, body)
            .and_then(|()| Ok(telnyx::message_query(body)?));
        let admitted = match admitted {
            Ok(None) => {
                return ([(header::CONTENT_TYPE, JSON)], r#"{"result":"ignored"}"#).into_response()
            }
            Ok(Some(query)) => Ok(query),
            Err(rejection) => Err(rejection),
        };
        let relay_after = |decision: &Decision, query: &RouteQuery| {
            let (Decision::Connect(route), Some(outbox)) = (decision, &self.outbox) else {
                return;
            };
            let Some(relay) = ready
                .providers
                .telnyx
                .as_ref()
                .and_then(|c| c.relay.clone())
            else {
                return;
            };
            let text = query.text.clone().unwrap_or_default();
            // Telnyx refuses an empty text (a picture alone): nothing to relay.
            if text.is_empty() {
                return;
            }
            let now = domain::now();
            let message = RelayedMessage {
                ledger: ready.store.clone(),
                id: query.call_id.clone(),
                keep_until: self.settings.replay.keep_until(now),
            };
            outbox.relay(relay, message, route.clone(), text);
        };
        self.answer_then(
            &ready,
            ProviderKind::Telnyx,
            TELNYX_SMS,
            started,
            admitted,
            render,
            relay_after,
        )
        .await
    }

    /// Checks a Telnyx request's signature.
    fn telnyx_verified(
        providers: &Providers,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), Rejection> {
        let config = providers.telnyx.as_ref().ok_or(Rejection::NotConfigured)?;
        telnyx::verify(
            &config.public_keys,
            header_str(headers, telnyx::TIMESTAMP_HEADER),
            header_str(headers, telnyx::SIGNATURE_HEADER),
            body,
            domain::now(),
        )?;
        Ok(())
    }

    /// Decides an admitted request and answers in the provider's format, recording the
    /// interaction; or turns a rejected one away.
    async fn answer(
        &self,
        ready: &Ready,
        provider: ProviderKind,
        endpoint: &'static str,
        started: Instant,
        admitted: Result<RouteQuery, Rejection>,
        render: impl FnOnce(&Decision, Option<&RouteQuery>) -> (&'static str, String),
    ) -> Response {
        self.answer_then(
            ready,
            provider,
            endpoint,
            started,
            admitted,
            render,
            |_, _| {},
        )
        .await
    }

    /// As [`Webhook::answer`], and `after` is given the decision to leave more work in the
    /// outbox (a text to relay).
    #[allow(clippy::too_many_arguments)]
    async fn answer_then(
        &self,
        ready: &Ready,
        provider: ProviderKind,
        endpoint: &'static str,
        started: Instant,
        admitted: Result<RouteQuery, Rejection>,
        render: impl FnOnce(&Decision, Option<&RouteQuery>) -> (&'static str, String),
        after: impl FnOnce(&Decision, &RouteQuery),
    ) -> Response {
        let query = match admitted {
            Ok(query) => query,
            Err(rejection) => return self.turn_away(provider, rejection),
        };
        let now = domain::now();
        let decision = self.decide(ready, provider, endpoint, &query, now).await;
        let (content_type, body) = render(&decision, Some(&query));
        if let (Decision::Connect(route), Channel::Voice, Some(outbox), true) = (
            &decision,
            query.channel,
            &self.outbox,
            reports_call_ends(provider),
        ) {
            // For the provider's report of the call's end, noted after the answer.
            let call = ConnectedCall::new(query.call_id.clone(), route);
            outbox.remember(ready.store.clone(), endpoint, call);
        }
        after(&decision, &query);
        let interaction = Interaction::new(provider, &query, &decision, now, started.elapsed());
        self.record(interaction);
        ([(header::CONTENT_TYPE, content_type)], body).into_response()
    }

    /// The decision, PIN recovery included: a keyed-in PIN is decided by [`decide_pin`] (its
    /// attempts counted under `<endpoint>-pin`, and no replay ledger: the per-call count bounds
    /// a replay), and a voice caller without a route is asked for one. Without PIN recovery,
    /// digits are ignored and strangers refused, as ever.
    async fn decide(
        &self,
        ready: &Ready,
        provider: ProviderKind,
        endpoint: &'static str,
        query: &RouteQuery,
        now: domain::UnixTime,
    ) -> Decision {
        let store = ready.store.as_ref();
        let budget = self.settings.lookup_timeout;
        if !self.settings.pin_recovery || !collects_pins(provider) {
            return decide_once(store, endpoint, query, now, budget, self.settings.replay).await;
        }
        if query.pin.is_some() {
            let pins = [endpoint, PIN_SUFFIX].concat();
            let decision =
                decide_pin(store, &pins, query, now, budget, self.settings.pin_limits).await;
            let result = match &decision {
                Decision::Connect(_) => "connected",
                Decision::AskPin { .. } | Decision::Refuse(Refusal::PinWrong) => "wrong",
                Decision::Refuse(Refusal::PinLimited) => "limited",
                Decision::Refuse(_) => "refused",
            };
            MetricSet::new("webhook")
                .dimension("Provider", provider.as_str())
                .dimension("Result", result)
                .count("PinAttempts", 1)
                .emit();
            return decision;
        }
        match decide_once(store, endpoint, query, now, budget, self.settings.replay).await {
            Decision::Refuse(Refusal::NoRoute) if query.channel == Channel::Voice => {
                Decision::AskPin { again: false }
            }
            decision => decision,
        }
    }

    async fn twilio_call_end(&self, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Response {
        // Whatever happens here, the call is over: the answer only ends it.
        let answer = ([(header::CONTENT_TYPE, TWIML)], twilio::call_end_response());
        let Some(ready) = self.ready.get() else {
            self.count_turned_away(ProviderKind::Twilio, &Rejection::NotReady);
            return answer.into_response();
        };
        let end = Self::twilio_params(&ready.providers, uri, headers, body)
            .and_then(|p| Ok(twilio::call_end(&p)?));
        match end {
            Ok(end) => {
                self.note_end(&ready, ProviderKind::Twilio, TWILIO_VOICE, end)
                    .await;
                answer.into_response()
            }
            Err(rejection) => self.turn_away(ProviderKind::Twilio, rejection),
        }
    }

    async fn twilio_recording(&self, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Response {
        let Some(ready) = self.ready.get() else {
            return self.turn_away(ProviderKind::Twilio, Rejection::NotReady);
        };
        let report = Self::twilio_params(&ready.providers, uri, headers, body)
            .and_then(|p| Ok(twilio::recording_ready(&p)?));
        match report {
            Ok(report) => {
                let result = self
                    .note_recording(&ready, ProviderKind::Twilio, TWILIO_VOICE, report)
                    .await;
                ([(header::CONTENT_TYPE, JSON)], result.json()).into_response()
            }
            Err(rejection) => self.turn_away(ProviderKind::Twilio, rejection),
        }
    }

    async fn exotel_call_end(
        &self,
        path_token: Option<String>,
        uri: &Uri,
        source: SourceIp,
    ) -> Response {
        let Some(ready) = self.ready.get() else {
            return self.turn_away(ProviderKind::Exotel, Rejection::NotReady);
        };
        let end = Self::exotel_params(&ready.providers, path_token.as_deref(), uri, source)
            .and_then(|(params, _)| Ok(exotel::call_end(&params)?));
        match end {
            Ok(end) => {
                let result = self
                    .note_end(&ready, ProviderKind::Exotel, EXOTEL_CONNECT, end)
                    .await;
                // A 200 takes the flow down the Passthru applet's success branch.
                ([(header::CONTENT_TYPE, JSON)], result.json()).into_response()
            }
            Err(rejection) => self.turn_away(ProviderKind::Exotel, rejection),
        }
    }

    async fn generic_call_end(&self, headers: &HeaderMap, body: &[u8]) -> Response {
        let Some(ready) = self.ready.get() else {
            return self.turn_away(ProviderKind::Generic, Rejection::NotReady);
        };
        let end = Self::generic_verified(&ready.providers, headers, body)
            .and_then(|()| Ok(generic::call_end(body)?));
        match end {
            Ok(end) => {
                let result = self
                    .note_end(&ready, ProviderKind::Generic, GENERIC_ROUTE, end)
                    .await;
                ([(header::CONTENT_TYPE, JSON)], result.json()).into_response()
            }
            Err(rejection) => self.turn_away(ProviderKind::Generic, rejection),
        }
    }

    /// Reads a connected call's end against what `routed_at` noted of it, by call id alone, and
    /// records the outcome once: a provider's repeat of the same report is not counted again,
    /// and a report of a call not connected here (or no longer remembered) is counted as such.
    async fn note_end(
        &self,
        ready: &Ready,
        provider: ProviderKind,
        routed_at: &'static str,
        end: CallEnd,
    ) -> EndResult {
        let now = domain::now();
        let result = match self
            .connected_call(
                ready,
                provider,
                routed_at,
                CALL_END_SUFFIX,
                &end.call_id,
                now,
            )
            .await
        {
            Ok(call) => {
                let outcome = CallOutcome::new(provider, &end, &call, now);
                outcome.log();
                outcome_metrics(&outcome).emit();
                if let Some(outbox) = &self.outbox {
                    outbox.count_answer(
                        ready.store.clone(),
                        call.number.clone(),
                        end.call_id.clone(),
                        end.status.answered(),
                        now,
                    );
                    outbox.publish(StreamEvent::Outcome(outcome));
                }
                EndResult::Recorded
            }
            Err(result) => result,
        };
        count_report("CallEnds", provider, result);
        result
    }

    /// Reads a recording report like a call's end, and publishes where the recording is once.
    async fn note_recording(
        &self,
        ready: &Ready,
        provider: ProviderKind,
        routed_at: &'static str,
        report: RecordingReady,
    ) -> EndResult {
        let now = domain::now();
        let result = match self
            .connected_call(
                ready,
                provider,
                routed_at,
                RECORDING_SUFFIX,
                &report.call_id,
                now,
            )
            .await
        {
            Ok(call) => {
                let event = RecordingEvent::new(provider, report, &call, now);
                event.log();
                if let Some(outbox) = &self.outbox {
                    outbox.publish(StreamEvent::Recording(event));
                }
                EndResult::Recorded
            }
            Err(result) => result,
        };
        count_report("RecordingReports", provider, result);
        result
    }

    /// The call a report is about, as the webhook noted it when `routed_at` connected it, if
    /// this is the first such report (`suffix` names the report's kind in the ledger);
    /// otherwise what to count instead.
    async fn connected_call(
        &self,
        ready: &Ready,
        provider: ProviderKind,
        routed_at: &'static str,
        suffix: &str,
        call_id: &CallId,
        now: domain::UnixTime,
    ) -> Result<ConnectedCall, EndResult> {
        let limit = self.settings.lookup_timeout;
        let ledger = ready.store.as_ref();
        let report_endpoint = [routed_at, suffix].concat();
        let (seen, call) = tokio::join!(
            tokio::time::timeout(
                limit,
                ledger.sight(
                    &report_endpoint,
                    call_id,
                    now,
                    self.settings.replay.keep_until(now),
                ),
            ),
            tokio::time::timeout(limit, ledger.connected(routed_at, call_id, now)),
        );
        match (seen, call) {
            (Ok(Ok(Sighting::Repeat { .. })), _) => Err(EndResult::Repeat),
            (Ok(Ok(Sighting::First)), Ok(Ok(Some(call)))) => Ok(call),
            (Ok(Ok(Sighting::First)), Ok(Ok(None))) => {
                tracing::info!(provider = provider.as_str(), call_id = %call_id, report = suffix, "a report on a call not connected here");
                Err(EndResult::UnknownCall)
            }
            _ => {
                tracing::warn!(provider = provider.as_str(), call_id = %call_id, report = suffix, "a report on a call could not be read against the ledger");
                Err(EndResult::Failed)
            }
        }
    }

    /// Before credentials and keys are loaded nothing can be checked: the provider's normal
    /// refusal, so that the caller hears our message, and a count that an alarm watches.
    fn not_ready(
        &self,
        provider: ProviderKind,
        render: impl FnOnce(&Decision, Option<&RouteQuery>) -> (&'static str, String),
    ) -> Response {
        let rejection = Rejection::NotReady;
        tracing::warn!(
            provider = provider.as_str(),
            reason = rejection.label(),
            "refused: credentials and keys are not loaded"
        );
        MetricSet::new("webhook")
            .dimension("Reason", rejection.label())
            .count("Refused", 1)
            .emit();
        let (content_type, body) = render(&Decision::Refuse(Refusal::NotReady), None);
        (
            rejection.status(),
            [(header::CONTENT_TYPE, content_type)],
            body,
        )
            .into_response()
    }

    fn turn_away(&self, provider: ProviderKind, rejection: Rejection) -> Response {
        self.count_turned_away(provider, &rejection);
        (rejection.status(), rejection.to_string()).into_response()
    }

    fn count_turned_away(&self, provider: ProviderKind, rejection: &Rejection) {
        tracing::warn!(provider = provider.as_str(), reason = rejection.label(), error = %rejection, "request turned away");
        MetricSet::new("webhook")
            .dimension("Provider", provider.as_str())
            .dimension("Rejection", rejection.label())
            .count("Rejected", 1)
            .emit();
    }

    /// Logs the interaction, emits its metrics and, when configured, leaves it in the outbox to
    /// be published after the answer.
    fn record(&self, interaction: Interaction) {
        interaction.log();
        let counted = |o| u64::from(interaction.outcome == o);
        MetricSet::new("webhook")
            .dimension("Provider", interaction.provider.as_str())
            .count("Connected", counted(interactions::Outcome::Connected))
            .count("Refused", counted(interactions::Outcome::Refused))
            .count("PinAsked", counted(interactions::Outcome::AskedPin))
            .value("Latency", interaction.latency_ms, Unit::Milliseconds)
            .emit();
        if let Some(reason) = interaction.reason {
            MetricSet::new("webhook")
                .dimension("Reason", reason.as_str())
                .count("Refused", 1)
                .emit();
            if reason == Refusal::Replayed {
                MetricSet::new("webhook")
                    .dimension("Provider", interaction.provider.as_str())
                    .count("Replayed", 1)
                    .emit();
            }
        }
        if let Some(outbox) = &self.outbox {
            outbox.publish(StreamEvent::Decision(interaction));
        }
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// One report on a connected call (`metric`: `CallEnds` or `RecordingReports`), by provider and
/// what became of it.
fn count_report(metric: &str, provider: ProviderKind, result: EndResult) {
    MetricSet::new("webhook")
        .dimension("Provider", provider.as_str())
        .dimension("Result", result.as_str())
        .count(metric, 1)
        .emit();
}

/// A call's outcome as metrics: answered or not, and the talk time, by provider and market.
fn outcome_metrics(outcome: &CallOutcome) -> MetricSet {
    let answered = u64::from(outcome.status.answered());
    MetricSet::new("webhook")
        .dimension("Provider", outcome.call.provider.as_str())
        .dimension("Market", outcome.call.market.as_str())
        .count("CallsAnswered", answered)
        .count("CallsUnanswered", 1 - answered)
        .value(
            "TalkSeconds",
            f64::from(outcome.talk_seconds),
            Unit::Seconds,
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use vnmask::domain::{CallId, DialStatus};

    fn outcome(status: DialStatus, talk_seconds: u32) -> CallOutcome {
        CallOutcome {
            call: interactions::ReportedCall {
                at: 1_796_285_533,
                provider: ProviderKind::Exotel,
                call_id: CallId::parse("b6cf").unwrap(),
                number: vnmask::domain::VirtualNumber::parse("+911140000010").unwrap(),
                market: "IN".parse().unwrap(),
                order_id: "ord-1".parse().unwrap(),
                direction: "customer->driver".into(),
            },
            status,
            talk_seconds,
            recording: None,
        }
    }

    #[test]
    fn an_outcome_counts_as_answered_or_not_with_its_talk_time_by_provider_and_market() {
        let answered = outcome_metrics(&outcome(DialStatus::Answered, 65)).to_json();
        assert_eq!(answered["CallsAnswered"], 1.0);
        assert_eq!(answered["CallsUnanswered"], 0.0);
        assert_eq!(answered["TalkSeconds"], 65.0);
        assert_eq!(answered["Provider"], "exotel");
        assert_eq!(answered["Market"], "IN");
        let metrics = &answered["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(
            metrics["Dimensions"],
            serde_json::json!([["Function", "Provider", "Market"]])
        );
        assert!(metrics["Metrics"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({"Name": "TalkSeconds", "Unit": "Seconds"})));
        let busy = outcome_metrics(&outcome(DialStatus::Busy, 0)).to_json();
        assert_eq!(busy["CallsAnswered"], 0.0);
        assert_eq!(busy["CallsUnanswered"], 1.0);
    }
}
