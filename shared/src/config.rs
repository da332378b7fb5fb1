//! Configuration read once from the environment into typed values that validate themselves.
//! Every error names the variable at fault and never echoes a secret.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use base64::Engine;

use crate::assignment::AssignSettings;
use crate::crypto::{CryptoError, Vault};
use crate::domain::{Capabilities, Capability, ContactPolicy, Market, PhoneError};
use crate::store::dynamodb::DynamoStore;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is required")]
    Missing(&'static str),
    #[error("environment variable {var} is invalid: {reason}")]
    Invalid { var: &'static str, reason: String },
}

/// Where configuration values come from: the process environment, or a map in tests.
pub trait Source {
    fn get(&self, var: &str) -> Option<String>;
}

/// The process environment.
pub struct Env;

impl Source for Env {
    fn get(&self, var: &str) -> Option<String> {
        std::env::var(var).ok().filter(|v| !v.trim().is_empty())
    }
}

impl Source for BTreeMap<String, String> {
    fn get(&self, var: &str) -> Option<String> {
        BTreeMap::get(self, var).cloned()
    }
}

pub fn required(src: &dyn Source, var: &'static str) -> Result<String, ConfigError> {
    src.get(var).ok_or(ConfigError::Missing(var))
}

/// A URL we send credentials to or give out as a webhook: https, or http on the loopback
/// interface (local stack and tests).
pub fn credential_url(
    src: &dyn Source,
    var: &'static str,
    default: Option<&str>,
) -> Result<url::Url, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid { var, reason };
    let text = match (src.get(var), default) {
        (Some(v), _) => v,
        (None, Some(d)) => d.to_owned(),
        (None, None) => return Err(ConfigError::Missing(var)),
    };
    let url = url::Url::parse(text.trim()).map_err(|e| invalid(e.to_string()))?;
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    if url.scheme() == "https" || (url.scheme() == "http" && loopback) {
        Ok(url)
    } else {
        Err(invalid("must be https (or http on 127.0.0.1)".into()))
    }
}

/// Parses an optional variable, falling back to `default`.
pub fn parsed<T: FromStr>(src: &dyn Source, var: &'static str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match src.get(var) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|e: T::Err| ConfigError::Invalid {
            var,
            reason: e.to_string(),
        }),
    }
}

pub fn seconds(src: &dyn Source, var: &'static str, default: u64) -> Result<Duration, ConfigError> {
    parsed(src, var, default).map(Duration::from_secs)
}

/// A credential from configuration: a provider's auth token, URL token or signing key, or the
/// secret of an API we call. `Debug` redacts it; only [`Secret::expose`] gives it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(bytes.into())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The table, and the KMS-wrapped keys that protect real numbers when the store needs them.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `VNMASK_TABLE`
    pub table: String,
    /// `None`: a store without keys ([`StoreConfig::without_keys`]).
    pub keys: Option<WrappedKeys>,
}

/// The keys that turn real numbers into person keys and seal them, as KMS ciphertexts.
#[derive(Debug, Clone)]
pub struct WrappedKeys {
    /// `VNMASK_HMAC_KEY`: base64 KMS ciphertext of the 32-byte HMAC key for person keys.
    pub hmac_key: Vec<u8>,
    /// `VNMASK_DATA_KEYS`: `name=base64,name=base64`, KMS ciphertexts of 32-byte AES keys.
    pub data_keys: BTreeMap<String, Vec<u8>>,
    /// `VNMASK_DATA_KEY_CURRENT`: the data key new values are sealed with (default: the only one).
    pub current_data_key: String,
}

impl StoreConfig {
    /// The table and its keys, all required: for functions that read or write real numbers.
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        Ok(StoreConfig {
            table: required(src, "VNMASK_TABLE")?,
            keys: Some(WrappedKeys::from_source(src)?),
        })
    }

    /// The table only (`VNMASK_TABLE`), for a store without keys: pool upkeep reads and writes
    /// nothing that needs one, so it neither reads the key variables nor calls KMS.
    pub fn without_keys(src: &dyn Source) -> Result<Self, ConfigError> {
        Ok(StoreConfig {
            table: required(src, "VNMASK_TABLE")?,
            keys: None,
        })
    }

    /// Builds the DynamoDB store, unwrapping its keys with KMS first (once, at cold start), if
    /// it has any. A store without keys makes no KMS call.
    pub async fn connect(&self, sdk: &aws_config::SdkConfig) -> Result<DynamoStore, CryptoError> {
        self.connect_with(sdk, sdk).await
    }

    /// [`StoreConfig::connect`], with KMS called through `startup` (patient: cold start is off
    /// any request's path) and DynamoDB through `requests` (the timeouts requests live with).
    pub async fn connect_with(
        &self,
        startup: &aws_config::SdkConfig,
        requests: &aws_config::SdkConfig,
    ) -> Result<DynamoStore, CryptoError> {
        let client = aws_sdk_dynamodb::Client::new(requests);
        let Some(keys) = &self.keys else {
            return Ok(DynamoStore::without_keys(client, self.table.clone()));
        };
        let kms = aws_sdk_kms::Client::new(startup);
        let vault = Vault::unwrap_with_kms(
            &kms,
            &keys.hmac_key,
            &keys.data_keys,
            &keys.current_data_key,
        )
        .await?;
        Ok(DynamoStore::new(
            client,
            self.table.clone(),
            std::sync::Arc::new(vault),
        ))
    }
}

impl WrappedKeys {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let b64 = |var: &'static str, v: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .map_err(|_| ConfigError::Invalid {
                    var,
                    reason: "not base64".into(),
                })
        };
        let hmac_key = b64("VNMASK_HMAC_KEY", &required(src, "VNMASK_HMAC_KEY")?)?;
        let mut data_keys = BTreeMap::new();
        for entry in required(src, "VNMASK_DATA_KEYS")?
            .split(',')
            .filter(|e| !e.trim().is_empty())
        {
            let (name, blob) = entry.split_once('=').ok_or(ConfigError::Invalid {
                var: "VNMASK_DATA_KEYS",
                reason: "expected name=base64 entries separated by commas".into(),
            })?;
            data_keys.insert(name.trim().to_owned(), b64("VNMASK_DATA_KEYS", blob)?);
        }
        let current_data_key = match src.get("VNMASK_DATA_KEY_CURRENT") {
            Some(name) => name,
            None if data_keys.len() == 1 => data_keys.keys().next().cloned().unwrap_or_default(),
            None => return Err(ConfigError::Missing("VNMASK_DATA_KEY_CURRENT")),
        };
        if !data_keys.contains_key(&current_data_key) {
            return Err(ConfigError::Invalid {
                var: "VNMASK_DATA_KEY_CURRENT",
                reason: format!("`{current_data_key}` is not in VNMASK_DATA_KEYS"),
            });
        }
        Ok(WrappedKeys {
            hmac_key,
            data_keys,
            current_data_key,
        })
    }
}

/// The markets homed in this deployment (`VNMASK_MARKETS`; none when unset or empty), for
/// functions that only need to know which they are.
pub fn homed_markets(src: &dyn Source) -> Result<HashSet<Market>, ConfigError> {
    let value = src.get("VNMASK_MARKETS").unwrap_or_default();
    if value.trim().is_empty() {
        return Ok(HashSet::new());
    }
    Ok(markets(&value)
        .map_err(|reason| ConfigError::Invalid {
            var: "VNMASK_MARKETS",
            reason,
        })?
        .into_keys()
        .collect())
}

/// Assignment settings from `VNMASK_MARKETS`, `VNMASK_CONTACT_DENY`, `VNMASK_GRACE_SECONDS`,
/// `VNMASK_SESSION_TTL_SECONDS`, `VNMASK_RETENTION_SECONDS`, `VNMASK_MAX_ATTEMPTS`, `VNMASK_POOL_CACHE_SECONDS`,
/// `VNMASK_HANDOVER_SECONDS`, `VNMASK_MAX_GRACE_SECONDS`.
pub fn assign_settings(src: &dyn Source) -> Result<AssignSettings, ConfigError> {
    let markets =
        markets(&required(src, "VNMASK_MARKETS")?).map_err(|reason| ConfigError::Invalid {
            var: "VNMASK_MARKETS",
            reason,
        })?;
    if markets.is_empty() {
        return Err(ConfigError::Missing("VNMASK_MARKETS"));
    }
    let defaults = AssignSettings::for_markets(markets.keys().cloned());
    let contact_policy = match src.get("VNMASK_CONTACT_DENY") {
        None => ContactPolicy::default(),
        Some(v) => ContactPolicy::parse(&v).map_err(|e| ConfigError::Invalid {
            var: "VNMASK_CONTACT_DENY",
            reason: e.to_string(),
        })?,
    };
    let max_attempts: u32 = parsed(src, "VNMASK_MAX_ATTEMPTS", defaults.max_attempts)?;
    if max_attempts == 0 {
        return Err(ConfigError::Invalid {
            var: "VNMASK_MAX_ATTEMPTS",
            reason: "must be at least 1".into(),
        });
    }
    let pin_markets = match src.get("VNMASK_PIN_MARKETS") {
        None => HashSet::new(),
        Some(v) => pin_markets(&v, &markets).map_err(|reason| ConfigError::Invalid {
            var: "VNMASK_PIN_MARKETS",
            reason,
        })?,
    };
    Ok(AssignSettings {
        contact_policy,
        markets,
        pin_markets,
        grace: seconds(src, "VNMASK_GRACE_SECONDS", defaults.grace.as_secs())?,
        max_grace: seconds(
            src,
            "VNMASK_MAX_GRACE_SECONDS",
            defaults.max_grace.as_secs(),
        )?,
        session_ttl: seconds(
            src,
            "VNMASK_SESSION_TTL_SECONDS",
            defaults.session_ttl.as_secs(),
        )?,
        retention: seconds(
            src,
            "VNMASK_RETENTION_SECONDS",
            defaults.retention.as_secs(),
        )?,
        max_attempts,
        pool_cache: seconds(
            src,
            "VNMASK_POOL_CACHE_SECONDS",
            defaults.pool_cache.as_secs(),
        )?,
        handover: seconds(src, "VNMASK_HANDOVER_SECONDS", defaults.handover.as_secs())?,
    })
}

/// `VNMASK_PIN_MARKETS`: the served markets whose contacts get PINs, separated by commas
/// (empty: none).
fn pin_markets(
    value: &str,
    served: &HashMap<Market, Capabilities>,
) -> Result<HashSet<Market>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(|m| {
            let market: Market = m
                .to_ascii_uppercase()
                .parse()
                .map_err(|_| format!("`{m}` is not a country code"))?;
            if served.contains_key(&market) {
                Ok(market)
            } else {
                Err(format!("{market} is not in VNMASK_MARKETS"))
            }
        })
        .collect()
}

/// `VNMASK_MARKETS`: markets separated by commas, each with the channels every pair in it needs
/// of its number, as `IN:voice,US:voice+sms`. A market without `:` needs voice and SMS (configs
/// from before channels keep their meaning). Voice is always needed: a masked pair must be able
/// to call, so `sms` alone is refused, as are unknown channels, an empty list and a market named
/// twice.
fn markets(value: &str) -> Result<HashMap<Market, Capabilities>, String> {
    let mut markets = HashMap::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, channels) = match entry.split_once(':') {
            Some((name, channels)) => (name, Some(channels)),
            None => (entry, None),
        };
        let market: Market = name.parse().map_err(|e: PhoneError| e.to_string())?;
        let needs = match channels {
            None => Capabilities::VOICE_AND_SMS,
            Some(list) => {
                let needs = list
                    .split('+')
                    .map(|c| {
                        let c = c.trim().to_ascii_lowercase();
                        c.parse::<Capability>().map_err(|_| {
                            format!(
                                "market {market}: unknown channel `{}` (voice or voice+sms)",
                                c.chars().take(16).collect::<String>()
                            )
                        })
                    })
                    .collect::<Result<Capabilities, _>>()?;
                if !needs.voice {
                    return Err(format!(
                        "market {market}: every pair needs voice (voice or voice+sms)"
                    ));
                }
                needs
            }
        };
        if markets.insert(market.clone(), needs).is_some() {
            return Err(format!("market {market} is listed twice"));
        }
    }
    Ok(markets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(
            format!("{:?}", Secret::new("hunter2")),
            "Secret(<redacted>)"
        );
    }

    #[test]
    fn store_config_names_the_missing_variable() {
        let err = StoreConfig::from_source(&src(&[("VNMASK_TABLE", "t")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable VNMASK_HMAC_KEY is required"
        );
    }

    #[tokio::test]
    async fn a_store_without_keys_needs_only_its_table_and_no_kms() {
        // Key variables are not read: not even malformed ones stop it.
        let env = src(&[("VNMASK_TABLE", "t"), ("VNMASK_HMAC_KEY", "not base64!")]);
        let cfg = StoreConfig::without_keys(&env).unwrap();
        assert!(cfg.keys.is_none());
        assert!(StoreConfig::without_keys(&src(&[]))
            .unwrap_err()
            .to_string()
            .contains("VNMASK_TABLE"));
        // An SDK that can reach nothing: any KMS call fails, so connecting proves there is none.
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:9")
            .build();
        assert!(cfg.connect(&sdk).await.is_ok());
        let keyed = StoreConfig::from_source(&src(&[
            ("VNMASK_TABLE", "t"),
            ("VNMASK_HMAC_KEY", "AAAA"),
            ("VNMASK_DATA_KEYS", "k1=AAAA"),
        ]))
        .unwrap();
        assert!(
            keyed.connect(&sdk).await.is_err(),
            "a store with keys asks KMS"
        );
    }

    #[test]
    fn single_data_key_is_current_by_default() {
        let cfg = StoreConfig::from_source(&src(&[
            ("VNMASK_TABLE", "t"),
            ("VNMASK_HMAC_KEY", "AAAA"),
            ("VNMASK_DATA_KEYS", "k1=AAAA"),
        ]))
        .unwrap();
        assert_eq!(cfg.keys.unwrap().current_data_key, "k1");
    }

    #[test]
    fn current_key_must_be_listed() {
        let err = StoreConfig::from_source(&src(&[
            ("VNMASK_TABLE", "t"),
            ("VNMASK_HMAC_KEY", "AAAA"),
            ("VNMASK_DATA_KEYS", "k1=AAAA,k2=AAAA"),
            ("VNMASK_DATA_KEY_CURRENT", "k3"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("VNMASK_DATA_KEY_CURRENT"));
    }

    #[test]
    fn bad_secret_is_reported_without_its_value() {
        let err = StoreConfig::from_source(&src(&[
            ("VNMASK_TABLE", "t"),
            ("VNMASK_HMAC_KEY", "s3cr3t!!"),
            ("VNMASK_DATA_KEYS", "k1=AAAA"),
        ]))
        .unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"));
    }

    #[test]
    fn assign_settings_validate_markets_and_numbers() {
        assert!(assign_settings(&src(&[("VNMASK_MARKETS", "IN,XX")])).is_err());
        assert!(assign_settings(&src(&[
            ("VNMASK_MARKETS", "IN"),
            ("VNMASK_GRACE_SECONDS", "soon")
        ]))
        .unwrap_err()
        .to_string()
        .contains("VNMASK_GRACE_SECONDS"));
        let s = assign_settings(&src(&[
            ("VNMASK_MARKETS", "in, us"),
            ("VNMASK_GRACE_SECONDS", "60"),
        ]))
        .unwrap();
        assert_eq!(s.markets.len(), 2);
        assert_eq!(s.grace, Duration::from_secs(60));
    }

    #[test]
    fn pin_markets_are_served_markets_and_none_by_default() {
        let with = |pins: Option<&str>| {
            let mut pairs = vec![("VNMASK_MARKETS", "IN,US")];
            pairs.extend(pins.map(|p| ("VNMASK_PIN_MARKETS", p)));
            assign_settings(&src(&pairs))
        };
        assert!(with(None).unwrap().pin_markets.is_empty());
        assert!(with(Some("")).unwrap().pin_markets.is_empty());
        let on = with(Some("in")).unwrap().pin_markets;
        assert_eq!(on, HashSet::from(["IN".parse().unwrap()]));
        let err = with(Some("IN,GB")).unwrap_err().to_string();
        assert!(
            err.contains("VNMASK_PIN_MARKETS") && err.contains("GB"),
            "{err}"
        );
        assert!(with(Some("India")).is_err());
    }

    const VOICE: Capabilities = Capabilities {
        voice: true,
        sms: false,
    };

    fn markets_of(value: &str) -> Result<AssignSettings, ConfigError> {
        assign_settings(&src(&[("VNMASK_MARKETS", value)]))
    }

    #[test]
    fn each_market_names_the_channels_its_pairs_need() {
        let s = markets_of("IN:voice, US:voice+sms").unwrap();
        assert_eq!(s.needs_for(&"IN".parse().unwrap()), Some(VOICE));
        assert_eq!(
            s.needs_for(&"US".parse().unwrap()),
            Some(Capabilities::VOICE_AND_SMS)
        );
        assert_eq!(s.needs_for(&"GB".parse().unwrap()), None);
        // Order and case do not matter.
        let s = markets_of("in:SMS+Voice").unwrap();
        assert_eq!(
            s.needs_for(&"IN".parse().unwrap()),
            Some(Capabilities::VOICE_AND_SMS)
        );
    }

    #[test]
    fn a_market_without_channels_keeps_needing_voice_and_sms() {
        let s = markets_of("IN,US:voice").unwrap();
        assert_eq!(
            s.needs_for(&"IN".parse().unwrap()),
            Some(Capabilities::VOICE_AND_SMS)
        );
        assert_eq!(s.needs_for(&"US".parse().unwrap()), Some(VOICE));
    }

    #[test]
    fn bad_channels_are_refused_naming_the_variable() {
        for (value, says) in [
            ("IN:sms", "needs voice"),
            ("IN:", "unknown channel"),
            ("IN:voice+fax", "unknown channel `fax`"),
            ("IN:voice,IN:voice+sms", "listed twice"),
            ("IN,in", "listed twice"),
            ("XX:voice", "unknown market"),
            ("IN:voice sms", "unknown channel"),
        ] {
            let err = markets_of(value).unwrap_err().to_string();
            assert!(
                err.contains("VNMASK_MARKETS") && err.contains(says),
                "{value}: {err}"
            );
        }
        assert!(markets_of(" , ")
            .unwrap_err()
            .to_string()
            .contains("VNMASK_MARKETS"));
    }
}
