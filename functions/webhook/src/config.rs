//! The webhook's configuration, read once at cold start. Each provider is served only when its
//! secret is set; errors name the variable and never echo a secret.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use vnmask::config::{credential_url, homed_markets, parsed, ConfigError, Source};
use vnmask::domain::Market;
use vnmask::providers::exotel::{ConnectSettings, SourceAllowList};
use vnmask::providers::telnyx;
use vnmask::providers::twilio::{PinPrompts, VoiceRefusal, VoiceSettings};
use vnmask::providers::Secret;
use vnmask::routing::{PinLimits, ReplayPolicy};

use crate::relay::TelnyxMessages;

pub const DEFAULT_REFUSAL_MESSAGE: &str =
    "Sorry, this number cannot connect your call. Please use the app to reach your contact.";

/// What the webhook reads from its environment alone: how to answer, whatever else fails.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// How calls are connected and refused (Twilio; Exotel takes the same limits).
    pub voice: VoiceSettings,
    /// How long the route lookup may take before the call is refused.
    pub lookup_timeout: Duration,
    /// Where interaction events go, when set.
    pub interactions_queue_url: Option<String>,
    /// How long publishing one batch of interactions may take (after the answer).
    pub interactions_timeout: Duration,
    /// How a provider's retry is told from a replayed request.
    pub replay: ReplayPolicy,
    /// How long credentials read from the secret are used before they are read again (so that
    /// a rotation reaches running instances), and how long after a failed load to try again.
    pub reload_after: Duration,
    pub retry_load_after: Duration,
    /// How long a cold start waits for the first load before serving (refusals, until it ends).
    pub first_load_wait: Duration,
    /// Whether a caller without a route on the number they dialled is asked for a PIN
    /// (`VNMASK_PIN_RECOVERY`): set it where markets issue PINs (`VNMASK_PIN_MARKETS`).
    pub pin_recovery: bool,
    pub pin_limits: PinLimits,
    /// Which routes are confirmed by their order's session before they connect
    /// (`VNMASK_CONFIRM_ROUTES`): in two regions, a global table replicates item by item
    /// (docs/multi-region.md). One more read per confirmed call.
    pub confirm_routes: ConfirmRoutes,
}

/// Which routes the webhook confirms by their session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmRoutes {
    /// None: one region (`off`, the default).
    Off,
    /// The routes of every market but these: none excepted (`session`), or those homed here,
    /// `VNMASK_MARKETS`'s (`elsewhere`: in each region of two, the routes it did not write).
    Except(HashSet<Market>),
}

/// `VNMASK_CONFIRM_ROUTES`: `off` (the default), `session` or `elsewhere`.
fn confirm_routes(src: &dyn Source) -> Result<ConfirmRoutes, ConfigError> {
    match src.get("VNMASK_CONFIRM_ROUTES").as_deref().map(str::trim) {
        None | Some("off") => Ok(ConfirmRoutes::Off),
        Some("session") => Ok(ConfirmRoutes::Except(HashSet::new())),
        Some("elsewhere") => Ok(ConfirmRoutes::Except(homed_markets(src)?)),
        Some(_) => Err(ConfigError::Invalid {
            var: "VNMASK_CONFIRM_ROUTES",
            reason: "expected `off`, `session` or `elsewhere`".into(),
        }),
    }
}

/// The providers served, each with its credentials: a provider is served only when its
/// credential is in the function's secret.
#[derive(Debug, Clone)]
pub struct Providers {
    pub twilio: Option<TwilioConfig>,
    pub exotel: Option<ExotelConfig>,
    pub generic: Option<GenericConfig>,
    pub plivo: Option<PlivoConfig>,
    pub vonage: Option<VonageConfig>,
    pub telnyx: Option<TelnyxConfig>,
}

/// Both, from one source: what tests and tools build a webhook from.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub settings: WebhookSettings,
    pub providers: Providers,
}

#[derive(Debug, Clone)]
pub struct TwilioConfig {
    /// The public URL the API is reached at by Twilio, without a trailing slash.
    pub public_base_url: String,
    /// The account's auth tokens: one, or two during a rotation.
    pub auth_tokens: Vec<Secret>,
}

#[derive(Debug, Clone)]
pub struct ExotelConfig {
    pub tokens: Vec<Secret>,
    /// Where Exotel's requests may come from. Exotel signs nothing, so this is required unless
    /// `VNMASK_LOCAL_DEVELOPMENT=true` (never in a deployment).
    pub allowed_sources: Option<SourceAllowList>,
    /// The market whose national forms Exotel's numbers come in (`VNMASK_EXOTEL_MARKET`,
    /// default `IN`): `CallFrom=09494865411` is read as `+919494865411`.
    pub market: Market,
}

#[derive(Debug, Clone)]
pub struct GenericConfig {
    pub secrets: Vec<Secret>,
}

#[derive(Debug, Clone)]
pub struct PlivoConfig {
    /// The public URL the API is reached at by Plivo, without a trailing slash: what it signs.
    pub public_base_url: String,
    /// The account's (or subaccount's) auth tokens: one, or two during a rotation.
    pub auth_tokens: Vec<Secret>,
}

#[derive(Debug, Clone)]
pub struct VonageConfig {
    /// The account's signature secrets (signed webhooks): one, or two during a rotation.
    pub signature_secrets: Vec<Secret>,
}

#[derive(Debug, Clone)]
pub struct TelnyxConfig {
    /// The account's public keys (Mission Control, "Public Key"): one, or two during a rotation.
    pub public_keys: Vec<telnyx::PublicKey>,
    /// Where texts are relayed: Telnyx's messaging webhook answers nothing, so a text is sent
    /// on with its API (`VNMASK_TELNYX_API_KEY`, the webhook's secret, at
    /// `VNMASK_TELNYX_API_BASE`). Without an API key, texts are decided and not relayed.
    pub relay: Option<Arc<TelnyxMessages>>,
}

impl WebhookConfig {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        Ok(WebhookConfig {
            settings: WebhookSettings::from_source(src)?,
            providers: Providers::from_source(src)?,
        })
    }
}

impl Providers {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let twilio = match secrets(src, "VNMASK_TWILIO_AUTH_TOKENS", 32)? {
            None => None,
            Some(auth_tokens) => Some(TwilioConfig {
                public_base_url: public_base_url(src)?,
                auth_tokens,
            }),
        };
        let exotel = match secrets(src, "VNMASK_EXOTEL_TOKENS", 24)? {
            None => None,
            Some(tokens) => Some(ExotelConfig {
                tokens,
                allowed_sources: exotel_sources(src)?,
                market: exotel_market(src)?,
            }),
        };
        let generic =
            secrets(src, "VNMASK_GENERIC_SECRETS", 32)?.map(|secrets| GenericConfig { secrets });
        let plivo = match secrets(src, "VNMASK_PLIVO_AUTH_TOKENS", 16)? {
            None => None,
            Some(auth_tokens) => Some(PlivoConfig {
                public_base_url: public_base_url(src)?,
                auth_tokens,
            }),
        };
        let vonage = secrets(src, "VNMASK_VONAGE_SIGNATURE_SECRETS", 16)?
            .map(|signature_secrets| VonageConfig { signature_secrets });
        let telnyx = match telnyx_keys(src)? {
            None => None,
            Some(public_keys) => Some(TelnyxConfig {
                public_keys,
                relay: telnyx_relay(src)?,
            }),
        };
        let providers = Providers {
            twilio,
            exotel,
            generic,
            plivo,
            vonage,
            telnyx,
        };
        if providers.is_empty() {
            return Err(ConfigError::Invalid {
                var: "VNMASK_TWILIO_AUTH_TOKENS",
                reason: "no provider is configured: set VNMASK_TWILIO_AUTH_TOKENS, \
                         VNMASK_EXOTEL_TOKENS, VNMASK_GENERIC_SECRETS, VNMASK_PLIVO_AUTH_TOKENS, \
                         VNMASK_VONAGE_SIGNATURE_SECRETS or VNMASK_TELNYX_PUBLIC_KEYS"
                    .into(),
            });
        }
        Ok(providers)
    }
}

impl Providers {
    fn is_empty(&self) -> bool {
        self.twilio.is_none()
            && self.exotel.is_none()
            && self.generic.is_none()
            && self.plivo.is_none()
            && self.vonage.is_none()
            && self.telnyx.is_none()
    }
}

/// The text relay, when `VNMASK_TELNYX_API_KEY` is set (an empty one is as unset); its HTTP
/// client is built here, as credentials load, not at every cold start.
fn telnyx_relay(src: &dyn Source) -> Result<Option<Arc<TelnyxMessages>>, ConfigError> {
    let Some(key) = src
        .get("VNMASK_TELNYX_API_KEY")
        .filter(|k| !k.trim().is_empty())
    else {
        tracing::warn!(
            "texts through Telnyx are decided but not relayed: VNMASK_TELNYX_API_KEY is not set"
        );
        return Ok(None);
    };
    let base = credential_url(src, "VNMASK_TELNYX_API_BASE", Some(TELNYX_API))?;
    Ok(Some(Arc::new(TelnyxMessages::new(
        reqwest::Client::new(),
        base.as_str(),
        Secret::new(key.trim()),
    ))))
}

const TELNYX_API: &str = "https://api.telnyx.com";

/// `VNMASK_TELNYX_PUBLIC_KEYS`: one base64 Ed25519 public key, or two separated by a comma
/// during a rotation. Public: configuration, not a secret.
fn telnyx_keys(src: &dyn Source) -> Result<Option<Vec<telnyx::PublicKey>>, ConfigError> {
    const VAR: &str = "VNMASK_TELNYX_PUBLIC_KEYS";
    let Some(value) = src.get(VAR) else {
        return Ok(None);
    };
    let keys = value
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| {
            k.parse()
                .map_err(|e: telnyx::PublicKeyError| ConfigError::Invalid {
                    var: VAR,
                    reason: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() || keys.len() > 2 {
        return Err(ConfigError::Invalid {
            var: VAR,
            reason: "expected one public key, or two separated by a comma during a rotation".into(),
        });
    }
    Ok(Some(keys))
}

impl WebhookSettings {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let refusal = match src.get("VNMASK_REFUSAL_ACTION").as_deref().map(str::trim) {
            None | Some("say") => VoiceRefusal::Say(
                src.get("VNMASK_REFUSAL_MESSAGE")
                    .unwrap_or_else(|| DEFAULT_REFUSAL_MESSAGE.to_owned()),
            ),
            Some("reject") => VoiceRefusal::Reject,
            Some(_) => {
                return Err(ConfigError::Invalid {
                    var: "VNMASK_REFUSAL_ACTION",
                    reason: "expected `say` or `reject`".into(),
                })
            }
        };
        let lookup_ms = bounded(src, "VNMASK_LOOKUP_TIMEOUT_MS", 1500, 50, 1800)?;
        let pin_recovery = match src.get("VNMASK_PIN_RECOVERY").as_deref().map(str::trim) {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                return Err(ConfigError::Invalid {
                    var: "VNMASK_PIN_RECOVERY",
                    reason: "expected `true` or `false`".into(),
                })
            }
        };
        let pin_defaults = PinLimits::default();
        let mut pin_prompts = PinPrompts::default();
        if let Some(ask) = src.get("VNMASK_PIN_PROMPT") {
            pin_prompts.ask = ask;
        }
        if let Some(again) = src.get("VNMASK_PIN_RETRY_PROMPT") {
            pin_prompts.again = again;
        }
        let defaults = ReplayPolicy::default();
        Ok(WebhookSettings {
            voice: VoiceSettings {
                // Twilio accepts 5-600 s of ringing; Exotel's calls last at most 4 hours.
                dial_timeout: bounded(src, "VNMASK_DIAL_TIMEOUT_SECONDS", 30, 5, 600)?,
                time_limit: bounded(src, "VNMASK_CALL_TIME_LIMIT_SECONDS", 3600, 60, 14_400)?,
                refusal,
                pin_prompts,
            },
            lookup_timeout: Duration::from_millis(lookup_ms.into()),
            interactions_queue_url: src.get("VNMASK_INTERACTIONS_QUEUE_URL"),
            interactions_timeout: Duration::from_millis(
                bounded(src, "VNMASK_INTERACTIONS_TIMEOUT_MS", 1000, 10, 5000)?.into(),
            ),
            // Providers retry within seconds; a day outlasts any request's validity.
            replay: ReplayPolicy {
                retry_window: Duration::from_secs(
                    bounded(src, "VNMASK_RETRY_WINDOW_SECONDS", 60, 1, 600)?.into(),
                ),
                memory: defaults.memory,
            },
            reload_after: Duration::from_secs(
                bounded(src, "VNMASK_SECRETS_MAX_AGE_SECONDS", 300, 10, 86_400)?.into(),
            ),
            retry_load_after: Duration::from_secs(5),
            first_load_wait: Duration::from_secs(1),
            pin_recovery,
            confirm_routes: confirm_routes(src)?,
            pin_limits: PinLimits {
                per_call: bounded(
                    src,
                    "VNMASK_PIN_TRIES_PER_CALL",
                    pin_defaults.per_call,
                    1,
                    5,
                )?,
                per_caller_hour: bounded(
                    src,
                    "VNMASK_PIN_TRIES_PER_HOUR",
                    pin_defaults.per_caller_hour,
                    1,
                    30,
                )?,
                number_failures_hour: bounded(
                    src,
                    "VNMASK_PIN_NUMBER_FAILURES_PER_HOUR",
                    pin_defaults.number_failures_hour,
                    1,
                    1000,
                )?,
            },
        })
    }

    /// Exotel's limits, the same as Twilio's.
    pub fn exotel_connect(&self) -> ConnectSettings {
        ConnectSettings {
            max_ringing_duration: self.voice.dial_timeout,
            max_conversation_duration: self.voice.time_limit,
        }
    }
}

/// Exotel's allow-list: required, unless local development says otherwise.
fn exotel_sources(src: &dyn Source) -> Result<Option<SourceAllowList>, ConfigError> {
    const VAR: &str = "VNMASK_EXOTEL_ALLOWED_SOURCES";
    match src.get(VAR) {
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|reason| ConfigError::Invalid { var: VAR, reason }),
        None if parsed(src, "VNMASK_LOCAL_DEVELOPMENT", false)? => Ok(None),
        None => Err(ConfigError::Invalid {
            var: VAR,
            reason: "required with VNMASK_EXOTEL_TOKENS: Exotel signs nothing, so only its \
                     published addresses may ask (set VNMASK_LOCAL_DEVELOPMENT=true to go \
                     without, locally only)"
                .into(),
        }),
    }
}

/// The market Exotel's account is in: an ISO country code.
fn exotel_market(src: &dyn Source) -> Result<Market, ConfigError> {
    const VAR: &str = "VNMASK_EXOTEL_MARKET";
    src.get(VAR)
        .as_deref()
        .unwrap_or("IN")
        .parse()
        .map_err(|e: vnmask::domain::PhoneError| ConfigError::Invalid {
            var: VAR,
            reason: e.to_string(),
        })
}

/// A comma-separated list of at most two secrets (current and next), each at least `min` bytes.
fn secrets(
    src: &dyn Source,
    var: &'static str,
    min: usize,
) -> Result<Option<Vec<Secret>>, ConfigError> {
    let Some(value) = src.get(var) else {
        return Ok(None);
    };
    let list: Vec<Secret> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Secret::new)
        .collect();
    if list.is_empty() || list.len() > 2 {
        return Err(ConfigError::Invalid {
            var,
            reason: "expected one secret, or two separated by a comma during a rotation".into(),
        });
    }
    if list.iter().any(|s| s.len() < min) {
        return Err(ConfigError::Invalid {
            var,
            reason: format!("each secret must be at least {min} characters"),
        });
    }
    Ok(Some(list))
}

fn public_base_url(src: &dyn Source) -> Result<String, ConfigError> {
    const VAR: &str = "VNMASK_PUBLIC_BASE_URL";
    let url = src.get(VAR).ok_or(ConfigError::Missing(VAR))?;
    let url = url.trim().trim_end_matches('/').to_owned();
    let invalid = |reason: &str| ConfigError::Invalid {
        var: VAR,
        reason: reason.to_owned(),
    };
    let uri: http::Uri = url.parse().map_err(|_| invalid("not a URL"))?;
    if !matches!(uri.scheme_str(), Some("https" | "http")) || uri.host().is_none() {
        return Err(invalid(
            "expected an absolute http(s) URL such as https://hooks.example.com",
        ));
    }
    if uri.query().is_some() || url.contains('@') || url.contains('#') {
        return Err(invalid("expected a scheme, a host and at most a base path"));
    }
    Ok(url)
}

fn bounded(
    src: &dyn Source,
    var: &'static str,
    default: u32,
    min: u32,
    max: u32,
) -> Result<u32, ConfigError> {
    let v: u32 = parsed(src, var, default)?;
    if (min..=max).contains(&v) {
        Ok(v)
    } else {
        Err(ConfigError::Invalid {
            var,
            reason: format!("must be between {min} and {max}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn src(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn twilio_needs_the_public_base_url() {
        let err =
            WebhookConfig::from_source(&src(&[("VNMASK_TWILIO_AUTH_TOKENS", TOKEN)])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable VNMASK_PUBLIC_BASE_URL is required"
        );
        let cfg = WebhookConfig::from_source(&src(&[
            ("VNMASK_TWILIO_AUTH_TOKENS", &format!("{TOKEN}, {TOKEN}")),
            ("VNMASK_PUBLIC_BASE_URL", "https://hooks.example.com/"),
        ]))
        .unwrap();
        let twilio = cfg.providers.twilio.unwrap();
        assert_eq!(twilio.public_base_url, "https://hooks.example.com");
        assert_eq!(twilio.auth_tokens.len(), 2);
        assert!(cfg.providers.exotel.is_none() && cfg.providers.generic.is_none());
    }

    #[test]
    fn telnyx_texts_are_relayed_with_an_api_key_sent_only_over_https() {
        // RFC 8032's first test key.
        const KEY: &str = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
        let telnyx = |pairs: &[(&str, &str)]| {
            let mut env = src(&[("VNMASK_TELNYX_PUBLIC_KEYS", KEY)]);
            env.extend(src(pairs));
            Providers::from_source(&env).map(|p| p.telnyx.unwrap())
        };
        assert!(telnyx(&[]).unwrap().relay.is_none());
        assert!(telnyx(&[("VNMASK_TELNYX_API_KEY", " ")])
            .unwrap()
            .relay
            .is_none());
        assert!(telnyx(&[("VNMASK_TELNYX_API_KEY", "KEY-s3cr3t")])
            .unwrap()
            .relay
            .is_some());
        let err = telnyx(&[
            ("VNMASK_TELNYX_API_KEY", "KEY-s3cr3t"),
            ("VNMASK_TELNYX_API_BASE", "http://api.example.com"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("VNMASK_TELNYX_API_BASE"), "{err}");
        assert!(!err.contains("s3cr3t"), "{err}");
    }

    #[test]
    fn nothing_configured_is_an_error() {
        let err = WebhookConfig::from_source(&src(&[])).unwrap_err();
        assert!(
            err.to_string().contains("no provider is configured"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_their_variable_and_hide_secrets() {
        let cases = [
            ("VNMASK_EXOTEL_TOKENS", "short-secret"),
            (
                "VNMASK_GENERIC_SECRETS",
                "a-secret-0123456789abcdef0123456789,b-secret-0123456789abcdef0123456789,c",
            ),
            ("VNMASK_EXOTEL_ALLOWED_SOURCES", "10.0.0.0/40"),
            ("VNMASK_REFUSAL_ACTION", "shout"),
            ("VNMASK_LOOKUP_TIMEOUT_MS", "5000"),
            ("VNMASK_DIAL_TIMEOUT_SECONDS", "soon"),
            ("VNMASK_PUBLIC_BASE_URL", "ftp://x"),
        ];
        for (var, value) in cases {
            let mut env = src(&[
                ("VNMASK_EXOTEL_TOKENS", "exotel-token-0123456789abcdef"),
                ("VNMASK_EXOTEL_ALLOWED_SOURCES", "203.0.113.0/24"),
                ("VNMASK_TWILIO_AUTH_TOKENS", TOKEN),
                ("VNMASK_PUBLIC_BASE_URL", "https://hooks.example.com"),
            ]);
            env.insert(var.into(), value.into());
            let err = WebhookConfig::from_source(&env).unwrap_err().to_string();
            assert!(err.contains(var), "{var}: {err}");
            assert!(!err.contains("secret-0123"), "{err}");
        }
    }

    #[test]
    fn routes_are_confirmed_by_their_session_only_when_asked() {
        let settings = |v: &[(&str, &str)]| WebhookSettings::from_source(&src(v));
        let mode = |v: &[(&str, &str)]| settings(v).unwrap().confirm_routes;
        assert_eq!(mode(&[]), ConfirmRoutes::Off);
        assert_eq!(
            mode(&[("VNMASK_CONFIRM_ROUTES", "off")]),
            ConfirmRoutes::Off
        );
        assert_eq!(
            mode(&[("VNMASK_CONFIRM_ROUTES", "session")]),
            ConfirmRoutes::Except(HashSet::new())
        );
        assert_eq!(
            mode(&[
                ("VNMASK_CONFIRM_ROUTES", "elsewhere"),
                ("VNMASK_MARKETS", "IN:voice,US")
            ]),
            ConfirmRoutes::Except(["IN".parse().unwrap(), "US".parse().unwrap()].into())
        );
        // A region homing no market confirms every route.
        assert_eq!(
            mode(&[
                ("VNMASK_CONFIRM_ROUTES", "elsewhere"),
                ("VNMASK_MARKETS", "")
            ]),
            ConfirmRoutes::Except(HashSet::new())
        );
        let err = settings(&[("VNMASK_CONFIRM_ROUTES", "yes")]).unwrap_err();
        assert!(err.to_string().contains("VNMASK_CONFIRM_ROUTES"), "{err}");
    }

    #[test]
    fn reject_action_replaces_the_message() {
        let cfg = WebhookConfig::from_source(&src(&[
            ("VNMASK_GENERIC_SECRETS", TOKEN),
            ("VNMASK_REFUSAL_ACTION", "reject"),
        ]))
        .unwrap();
        assert_eq!(cfg.settings.voice.refusal, VoiceRefusal::Reject);
        assert_eq!(cfg.settings.lookup_timeout, Duration::from_millis(1500));
        assert_eq!(cfg.settings.replay, ReplayPolicy::default());
    }

    #[test]
    fn exotel_needs_its_allow_list_except_in_local_development() {
        let tokens = ("VNMASK_EXOTEL_TOKENS", "exotel-token-0123456789abcdef");
        let err = Providers::from_source(&src(&[tokens]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("VNMASK_EXOTEL_ALLOWED_SOURCES"), "{err}");
        assert!(!err.contains("exotel-token"), "{err}");
        for flag in ["false", "no"] {
            assert!(
                Providers::from_source(&src(&[tokens, ("VNMASK_LOCAL_DEVELOPMENT", flag)]))
                    .is_err(),
                "{flag}"
            );
        }
        let local =
            Providers::from_source(&src(&[tokens, ("VNMASK_LOCAL_DEVELOPMENT", "true")])).unwrap();
        assert!(local.exotel.unwrap().allowed_sources.is_none());
        let listed = Providers::from_source(&src(&[
            tokens,
            (
                "VNMASK_EXOTEL_ALLOWED_SOURCES",
                "203.0.113.0/24, 198.51.100.7",
            ),
        ]))
        .unwrap();
        assert!(listed.exotel.unwrap().allowed_sources.is_some());
    }

    #[test]
    fn exotel_reads_numbers_in_india_unless_told_otherwise() {
        let base = [
            ("VNMASK_EXOTEL_TOKENS", "exotel-token-0123456789abcdef"),
            ("VNMASK_LOCAL_DEVELOPMENT", "true"),
        ];
        let exotel = |extra: &[(&str, &str)]| {
            let env: Vec<_> = base.iter().chain(extra).copied().collect();
            Providers::from_source(&src(&env)).map(|p| p.exotel.unwrap().market)
        };
        assert_eq!(exotel(&[]).unwrap().as_str(), "IN");
        assert_eq!(
            exotel(&[("VNMASK_EXOTEL_MARKET", "sg")]).unwrap().as_str(),
            "SG"
        );
        for bad in ["", "XX", "IND", "+91"] {
            let err = exotel(&[("VNMASK_EXOTEL_MARKET", bad)])
                .unwrap_err()
                .to_string();
            assert!(err.contains("VNMASK_EXOTEL_MARKET"), "{bad:?}: {err}");
        }
    }
}
