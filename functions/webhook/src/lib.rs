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
//!
//! Each request is authenticated first (403, nothing looked up), read (400 when malformed),
//! then decided with one strongly consistent read of the route while its call id is recorded
//! (a replay, seen after the providers' retry window, is refused). Whatever goes wrong after
//! authentication refuses the call (fail closed), and the provider gets its normal answer
//! format so that the caller hears our message rather than a provider error. Before the
//! credentials and keys are loaded ([`readiness`]), every request gets that refusal.

pub mod config;
pub mod interactions;
pub mod readiness;

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
use vnmask::domain::{self, Channel};
use vnmask::providers::{
    exotel, generic, param, parse_form, parse_query, twilio, AuthError, RequestError,
};
use vnmask::routing::{decide_once, Decision, Refusal, RouteQuery};
use vnmask::store::CallRouting;
use vnmask::telemetry::{MetricSet, Unit};

pub use config::{Providers, WebhookConfig, WebhookSettings};
pub use interactions::{Drain, Interaction, InteractionQueue, Outbox, ProviderKind, ANSWER_WAIT};
pub use readiness::{EnvironmentLoader, LoadError, Loader, Readiness, Ready};

/// Requests larger than this are refused with 413: provider webhooks are a few kilobytes.
pub const BODY_LIMIT: usize = 64 * 1024;

const TWIML: &str = "text/xml; charset=utf-8";
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
    app.generic(&headers, &body).await
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
        let render = |decision: &Decision, query: Option<&RouteQuery>| {
            let twiml = match channel {
                Channel::Voice => twilio::voice_response(decision, &self.settings.voice),
                Channel::Sms => twilio::message_response(
                    decision,
                    query.and_then(|q| q.text.as_deref()).unwrap_or_default(),
                ),
            };
            (TWIML, twiml)
        };
        let Some(ready) = self.ready.get() else {
            return self.not_ready(ProviderKind::Twilio, render);
        };
        let endpoint = match channel {
            Channel::Voice => "twilio-voice",
            Channel::Sms => "twilio-sms",
        };
        let admitted = Self::admit_twilio(&ready.providers, channel, uri, headers, body);
        self.answer(
            &ready,
            ProviderKind::Twilio,
            endpoint,
            started,
            admitted,
            render,
        )
        .await
    }

    fn admit_twilio(
        providers: &Providers,
        channel: Channel,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<RouteQuery, Rejection> {
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
        Ok(match channel {
            Channel::Voice => twilio::voice_query(&params)?,
            Channel::Sms => twilio::message_query(&params)?,
        })
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
        let admitted = Self::admit_exotel(&ready.providers, path_token.as_deref(), uri, source);
        self.answer(
            &ready,
            ProviderKind::Exotel,
            "exotel-connect",
            started,
            admitted,
            render,
        )
        .await
    }

    fn admit_exotel(
        providers: &Providers,
        path_token: Option<&str>,
        uri: &Uri,
        source: SourceIp,
    ) -> Result<RouteQuery, Rejection> {
        let config = providers.exotel.as_ref().ok_or(Rejection::NotConfigured)?;
        if let Some(allowed) = &config.allowed_sources {
            allowed.check(source.0.as_deref())?;
        }
        let params = parse_query(uri.query().unwrap_or_default())?;
        let query_token = param(&params, exotel::TOKEN_PARAM);
        exotel::verify_token(&config.tokens, path_token.or(query_token))?;
        Ok(exotel::connect_query(&params, &config.market)?)
    }

    async fn generic(&self, headers: &HeaderMap, body: &[u8]) -> Response {
        let started = Instant::now();
        let render =
            |decision: &Decision, _: Option<&RouteQuery>| (JSON, generic::route_response(decision));
        let Some(ready) = self.ready.get() else {
            return self.not_ready(ProviderKind::Generic, render);
        };
        let admitted = Self::admit_generic(&ready.providers, headers, body);
        self.answer(
            &ready,
            ProviderKind::Generic,
            "generic-route",
            started,
            admitted,
            render,
        )
        .await
    }

    fn admit_generic(
        providers: &Providers,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<RouteQuery, Rejection> {
        let config = providers.generic.as_ref().ok_or(Rejection::NotConfigured)?;
        generic::verify(
            &config.secrets,
            header_str(headers, generic::TIMESTAMP_HEADER),
            header_str(headers, generic::SIGNATURE_HEADER),
            body,
            domain::now(),
        )?;
        Ok(generic::route_query(body)?)
    }

    /// Decides an admitted request and answers in the provider's format, recording the
    /// interaction; or turns a rejected one away.
    async fn answer(
        &self,
        ready: &Ready,
        provider: ProviderKind,
        endpoint: &str,
        started: Instant,
        admitted: Result<RouteQuery, Rejection>,
        render: impl FnOnce(&Decision, Option<&RouteQuery>) -> (&'static str, String),
    ) -> Response {
        let query = match admitted {
            Ok(query) => query,
            Err(rejection) => return self.turn_away(provider, rejection),
        };
        let now = domain::now();
        let decision = decide_once(
            ready.store.as_ref(),
            endpoint,
            &query,
            now,
            self.settings.lookup_timeout,
            self.settings.replay,
        )
        .await;
        let (content_type, body) = render(&decision, Some(&query));
        let interaction = Interaction::new(provider, &query, &decision, now, started.elapsed());
        self.record(interaction);
        ([(header::CONTENT_TYPE, content_type)], body).into_response()
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
        tracing::warn!(provider = provider.as_str(), reason = rejection.label(), error = %rejection, "request turned away");
        MetricSet::new("webhook")
            .dimension("Provider", provider.as_str())
            .dimension("Rejection", rejection.label())
            .count("Rejected", 1)
            .emit();
        (rejection.status(), rejection.to_string()).into_response()
    }

    /// Logs the interaction, emits its metrics and, when configured, leaves it in the outbox to
    /// be published after the answer.
    fn record(&self, interaction: Interaction) {
        interaction.log();
        let connected = u64::from(interaction.outcome == interactions::Outcome::Connected);
        MetricSet::new("webhook")
            .dimension("Provider", interaction.provider.as_str())
            .count("Connected", connected)
            .count("Refused", 1 - connected)
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
            outbox.push(interaction);
        }
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
