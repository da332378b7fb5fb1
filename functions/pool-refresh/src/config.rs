//! pool-refresh's configuration, read once at cold start from the environment. Every error
//! names its variable; no error echoes a credential.

use std::collections::{BTreeSet, HashSet};

use vnmask::assignment::AssignSettings;
use vnmask::config::{
    assign_settings, credential_url, parsed, required, seconds, ConfigError, Secret, Source,
    StoreConfig,
};
use vnmask::domain::{Market, VirtualNumber};
use vnmask::pool::{parse_capacities, HealthRules};
use vnmask::store::MAX_TALLY_DAYS;

use crate::inventory::{
    ExotelAccount, HttpPolicy, PlivoAccount, StaticList, TelnyxAccount, TwilioAccount, TwilioAuth,
    TwilioNumberType, VonageAccount, Webhooks,
};
use crate::{Buying, CapacityRules, RefreshSettings};

pub const TWILIO_API: &str = "https://api.twilio.com";
pub const EXOTEL_API: &str = "https://api.exotel.com";
pub const PLIVO_API: &str = "https://api.plivo.com";
pub const VONAGE_API: &str = "https://rest.nexmo.com";
pub const TELNYX_API: &str = "https://api.telnyx.com";

/// Which provider buys each market's numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuyFrom {
    /// For markets not named in `by_market`.
    pub default: Option<String>,
    pub by_market: std::collections::BTreeMap<vnmask::domain::Market, String>,
}

impl BuyFrom {
    /// The provider buying `market`'s numbers, if any.
    pub fn for_market(&self, market: &vnmask::domain::Market) -> Option<&str> {
        self.by_market
            .get(market)
            .or(self.default.as_ref())
            .map(String::as_str)
    }

    fn providers(&self) -> impl Iterator<Item = &String> {
        self.default.iter().chain(self.by_market.values())
    }
}

/// The providers numbers can be bought from.
const VENDORS: [&str; 4] = ["twilio", "plivo", "vonage", "telnyx"];

/// Everything `main` needs to build the refresher.
pub struct Config {
    pub store: StoreConfig,
    pub refresh: RefreshSettings,
    pub plivo: Option<PlivoAccount>,
    pub vonage: Option<VonageAccount>,
    pub telnyx: Option<TelnyxAccount>,
    /// `VNMASK_POOL_BUY_FROM`: which provider buys each market's numbers (`market:provider`),
    /// and the one for markets not named (a bare provider); with buying on.
    pub buy_from: BuyFrom,
    /// How moves off numbers leaving service plan pairs: the assign function's settings.
    pub assign: AssignSettings,
    /// `VNMASK_NOTIFY_QUEUE_URL`: where moves' `NumbersAssigned` go, if anywhere.
    pub notify_url: Option<String>,
    pub http: HttpPolicy,
    pub twilio: Option<TwilioAccount>,
    pub exotel: Option<ExotelAccount>,
    pub static_list: Option<StaticList>,
}

fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4)
}

/// Number health's rules from `VNMASK_HEALTH_MIN_CALLS`, `VNMASK_HEALTH_ANSWER_RATIO`,
/// `VNMASK_HEALTH_ANSWER_DAYS`, `VNMASK_HEALTH_MAX_SHARE`, `VNMASK_QUARANTINE_SECONDS` and
/// `VNMASK_COOLING_OFF_SECONDS`.
fn health_rules(src: &dyn Source) -> Result<HealthRules, ConfigError> {
    let d = HealthRules::default();
    let ratio: f64 = parsed(src, "VNMASK_HEALTH_ANSWER_RATIO", d.answer_ratio)?;
    if !(0.0..=1.0).contains(&ratio) {
        return Err(invalid("VNMASK_HEALTH_ANSWER_RATIO", "must be within 0..1"));
    }
    let share: f64 = parsed(src, "VNMASK_HEALTH_MAX_SHARE", d.max_quarantined_share)?;
    if !(0.0..=1.0).contains(&share) {
        return Err(invalid("VNMASK_HEALTH_MAX_SHARE", "must be within 0..1"));
    }
    let days: u32 = parsed(src, "VNMASK_HEALTH_ANSWER_DAYS", d.answer_days)?;
    if !(1..=MAX_TALLY_DAYS).contains(&days) {
        return Err(invalid(
            "VNMASK_HEALTH_ANSWER_DAYS",
            format!("must be 1-{MAX_TALLY_DAYS}"),
        ));
    }
    Ok(HealthRules {
        min_calls: parsed(src, "VNMASK_HEALTH_MIN_CALLS", d.min_calls)?,
        answer_ratio: ratio,
        answer_days: days,
        quarantine_for: secs(seconds(
            src,
            "VNMASK_QUARANTINE_SECONDS",
            d.quarantine_for as u64,
        )?),
        cooling_off: secs(seconds(
            src,
            "VNMASK_COOLING_OFF_SECONDS",
            d.cooling_off as u64,
        )?),
        max_quarantined_share: share,
    })
}

fn invalid(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var,
        reason: reason.into(),
    }
}

/// `VNMASK_CALL_CAPACITY` (per market, what one number may carry, e.g. `IN:4/120`: 4 calls at
/// once, 120 an hour; markets not served here are left out), `VNMASK_PEAK_HOUR_SHARE` (0-1, default 0.1) and
/// `VNMASK_MEAN_CALL_SECONDS` (1-14400, default 90).
fn capacity_rules(
    src: &dyn Source,
    served: &std::collections::HashMap<Market, vnmask::domain::Capabilities>,
) -> Result<CapacityRules, ConfigError> {
    const VAR: &str = "VNMASK_CALL_CAPACITY";
    let d = CapacityRules::default();
    let per_market = parse_capacities(&src.get(VAR).unwrap_or_default())
        .map_err(|e| invalid(VAR, e.to_string()))?;
    // Markets homed in another region's stack are left out, not refused: two stacks may share
    // one parameter set, and re-homing a market then needs no edit here.
    let per_market = per_market
        .into_iter()
        .filter(|(m, _)| served.contains_key(m))
        .collect();
    let share: f64 = parsed(src, "VNMASK_PEAK_HOUR_SHARE", d.peak_hour_share)?;
    if !(share > 0.0 && share <= 1.0) {
        return Err(invalid(
            "VNMASK_PEAK_HOUR_SHARE",
            "must be above 0 and at most 1 (a flat day: 0.042)",
        ));
    }
    let seconds: f64 = parsed(src, "VNMASK_MEAN_CALL_SECONDS", d.mean_call_seconds)?;
    if !(1.0..=14_400.0).contains(&seconds) {
        return Err(invalid(
            "VNMASK_MEAN_CALL_SECONDS",
            "must be 1-14400 seconds",
        ));
    }
    Ok(CapacityRules {
        per_market,
        peak_hour_share: share,
        mean_call_seconds: seconds,
    })
}

impl Config {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let assign = assign_settings(src)?;
        let providers = providers(src)?;
        let twilio = providers
            .contains("twilio")
            .then(|| twilio(src))
            .transpose()?;
        let exotel = providers
            .contains("exotel")
            .then(|| exotel(src))
            .transpose()?;
        let plivo = providers
            .contains("plivo")
            .then(|| plivo(src))
            .transpose()?;
        let vonage = providers
            .contains("vonage")
            .then(|| vonage(src))
            .transpose()?;
        let telnyx = providers
            .contains("telnyx")
            .then(|| telnyx(src))
            .transpose()?;
        let static_list = providers
            .contains("static")
            .then(|| {
                StaticList::from_json(&required(src, "VNMASK_STATIC_NUMBERS")?)
                    .map_err(|e| invalid("VNMASK_STATIC_NUMBERS", e))
            })
            .transpose()?;

        let buy_from = buy_from(src)?;
        let buying = if parsed(src, "VNMASK_POOL_BUY", false)? {
            if let Some(missing) = buy_from.providers().find(|p| !providers.contains(*p)) {
                return Err(invalid(
                    "VNMASK_POOL_BUY_FROM",
                    format!("buying from {missing} needs it in VNMASK_PROVIDERS"),
                ));
            }
            Some(Buying {
                per_run: parsed(src, "VNMASK_POOL_BUY_PER_RUN", 2)?,
                per_month: parsed(src, "VNMASK_POOL_BUY_PER_MONTH", 20)?,
                webhooks: Webhooks {
                    voice_url: credential_url(src, "VNMASK_VOICE_URL", None)?,
                    sms_url: credential_url(src, "VNMASK_SMS_URL", None)?,
                },
                lease: seconds(src, "VNMASK_POOL_BUY_LEASE_SECONDS", 900)?,
            })
        } else {
            None
        };

        let drain = match src.get("VNMASK_POOL_DRAIN") {
            None => HashSet::new(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(|n| {
                    VirtualNumber::parse(n).map_err(|e| invalid("VNMASK_POOL_DRAIN", e.to_string()))
                })
                .collect::<Result<_, _>>()?,
        };

        let max_attempts: u32 = parsed(src, "VNMASK_PROVIDER_MAX_ATTEMPTS", 4)?;
        if max_attempts == 0 {
            return Err(invalid(
                "VNMASK_PROVIDER_MAX_ATTEMPTS",
                "must be at least 1",
            ));
        }
        let http = HttpPolicy {
            timeout: seconds(src, "VNMASK_PROVIDER_TIMEOUT_SECONDS", 10)?,
            max_attempts,
            ..HttpPolicy::default()
        };

        let health = health_rules(src)?;
        if health.cooling_off < secs(assign.handover) {
            return Err(invalid(
                "VNMASK_COOLING_OFF_SECONDS",
                "must be at least VNMASK_HANDOVER_SECONDS: a number cools off after its handovers end",
            ));
        }
        let moves_per_run: usize = parsed(src, "VNMASK_MOVES_PER_RUN", 500)?;
        let retired_lookback = secs(assign.session_ttl) + secs(assign.grace) + 3600;
        Ok(Config {
            // Moving pairs off numbers leaving service reads and writes sessions and routes,
            // which hold sealed numbers: the keys are unwrapped at cold start.
            store: StoreConfig::from_source(src)?,
            refresh: RefreshSettings {
                markets: assign.markets.clone().into_iter().collect(),
                drain,
                min_headroom: parsed(src, "VNMASK_POOL_MIN_HEADROOM", 4)?,
                buying,
                route_sample: parsed(src, "VNMASK_ROUTE_SAMPLE_ITEMS", 5000)?,
                health,
                moves_per_run,
                retired_lookback,
                capacity: capacity_rules(src, &assign.markets)?,
            },
            notify_url: src.get("VNMASK_NOTIFY_QUEUE_URL"),
            assign,
            http,
            twilio,
            exotel,
            static_list,
            plivo,
            vonage,
            telnyx,
            buy_from,
        })
    }
}

fn providers(src: &dyn Source) -> Result<BTreeSet<String>, ConfigError> {
    let names: BTreeSet<String> = required(src, "VNMASK_PROVIDERS")?
        .split(',')
        .map(|p| p.trim().to_ascii_lowercase())
        .filter(|p| !p.is_empty())
        .collect();
    if let Some(unknown) = names.iter().find(|p| {
        !matches!(
            p.as_str(),
            "twilio" | "exotel" | "static" | "plivo" | "vonage" | "telnyx"
        )
    }) {
        return Err(invalid(
            "VNMASK_PROVIDERS",
            format!(
                "unknown provider `{}`: expected twilio, exotel, plivo, vonage, telnyx, static",
                unknown.chars().take(16).collect::<String>()
            ),
        ));
    }
    if names.is_empty() {
        return Err(ConfigError::Missing("VNMASK_PROVIDERS"));
    }
    Ok(names)
}

fn secret(src: &dyn Source, var: &'static str) -> Result<Secret, ConfigError> {
    required(src, var).map(Secret::new)
}

/// An identifier that goes into URL paths: letters, digits, `_` and `-` only.
fn identifier(src: &dyn Source, var: &'static str) -> Result<String, ConfigError> {
    let v = required(src, var)?;
    if v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Ok(v)
    } else {
        Err(invalid(var, "expected 1-64 letters, digits, '_' or '-'"))
    }
}

fn twilio(src: &dyn Source) -> Result<TwilioAccount, ConfigError> {
    let account_sid = required(src, "VNMASK_TWILIO_ACCOUNT_SID")?;
    let well_formed = |sid: &str, prefix: &str| {
        sid.len() == 34
            && sid.starts_with(prefix)
            && sid[2..].bytes().all(|b| b.is_ascii_hexdigit())
    };
    if !well_formed(&account_sid, "AC") {
        return Err(invalid(
            "VNMASK_TWILIO_ACCOUNT_SID",
            "expected AC followed by 32 hex digits",
        ));
    }
    // An API key is preferred; the account's auth token is still accepted.
    let auth = match src.get("VNMASK_TWILIO_API_KEY_SID") {
        Some(sid) if well_formed(&sid, "SK") => TwilioAuth::ApiKey {
            sid,
            secret: secret(src, "VNMASK_TWILIO_API_KEY_SECRET")?,
        },
        Some(_) => {
            return Err(invalid(
                "VNMASK_TWILIO_API_KEY_SID",
                "expected SK followed by 32 hex digits",
            ))
        }
        None if src.get("VNMASK_TWILIO_API_KEY_SECRET").is_some() => {
            return Err(ConfigError::Missing("VNMASK_TWILIO_API_KEY_SID"))
        }
        None => TwilioAuth::AuthToken(secret(src, "VNMASK_TWILIO_AUTH_TOKEN")?),
    };
    let subaccount_sid = match src.get("VNMASK_TWILIO_SUBACCOUNT_SID") {
        Some(sid) if well_formed(&sid, "AC") => Some(sid),
        Some(_) => {
            return Err(invalid(
                "VNMASK_TWILIO_SUBACCOUNT_SID",
                "expected AC followed by 32 hex digits",
            ))
        }
        None => None,
    };
    // Which numbers are ours: those Twilio sends to our voice URL, or a reserved sub-account's.
    let voice_url = match (src.get("VNMASK_VOICE_URL"), &subaccount_sid) {
        (None, Some(_)) => None,
        _ => Some(credential_url(src, "VNMASK_VOICE_URL", None)?),
    };
    let optional_sid = |var: &'static str| src.get(var).map(|_| identifier(src, var)).transpose();
    Ok(TwilioAccount {
        account_sid,
        auth,
        subaccount_sid,
        voice_url,
        base: credential_url(src, "VNMASK_TWILIO_API_BASE", Some(TWILIO_API))?,
        number_type: parsed(src, "VNMASK_TWILIO_NUMBER_TYPE", TwilioNumberType::Local)?,
        address_sid: optional_sid("VNMASK_TWILIO_ADDRESS_SID")?,
        bundle_sid: optional_sid("VNMASK_TWILIO_BUNDLE_SID")?,
    })
}

/// `VNMASK_POOL_BUY_FROM`: `twilio` (the default), or per market, e.g. `US:twilio,IN:plivo`,
/// with at most one bare provider for the markets not named.
fn buy_from(src: &dyn Source) -> Result<BuyFrom, ConfigError> {
    const VAR: &str = "VNMASK_POOL_BUY_FROM";
    let text = src.get(VAR).unwrap_or_else(|| "twilio".to_owned());
    let mut from = BuyFrom::default();
    let vendor = |p: &str| {
        let p = p.trim().to_ascii_lowercase();
        if VENDORS.contains(&p.as_str()) {
            Ok(p)
        } else {
            Err(invalid(
                VAR,
                format!("numbers are bought from {}", VENDORS.join(", ")),
            ))
        }
    };
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        match entry.split_once(':') {
            Some((market, provider)) => {
                let market = market
                    .trim()
                    .parse()
                    .map_err(|e: vnmask::domain::PhoneError| invalid(VAR, e.to_string()))?;
                if from.by_market.insert(market, vendor(provider)?).is_some() {
                    return Err(invalid(VAR, "a market is named twice"));
                }
            }
            None if from.default.is_none() => from.default = Some(vendor(entry)?),
            None => return Err(invalid(VAR, "at most one provider for every other market")),
        }
    }
    Ok(from)
}

/// Ids of applications (1-64 letters, digits, `-` or `_`), separated by commas.
fn ids(src: &dyn Source, var: &'static str) -> Result<BTreeSet<String>, ConfigError> {
    src.get(var)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(|id| {
            let ok = id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            ok.then(|| id.to_owned()).ok_or_else(|| {
                invalid(
                    var,
                    "expected ids of 1-64 letters, digits, - or _, separated by commas",
                )
            })
        })
        .collect()
}

/// One application id, required.
fn one_id(src: &dyn Source, var: &'static str) -> Result<String, ConfigError> {
    optional_id(src, var)?.ok_or(ConfigError::Missing(var))
}

/// At most one id: a second is refused rather than silently dropped.
fn optional_id(src: &dyn Source, var: &'static str) -> Result<Option<String>, ConfigError> {
    let found = ids(src, var)?;
    if found.len() > 1 {
        return Err(invalid(var, "expected one id"));
    }
    Ok(found.into_iter().next())
}

fn plivo(src: &dyn Source) -> Result<PlivoAccount, ConfigError> {
    Ok(PlivoAccount {
        auth_id: identifier(src, "VNMASK_PLIVO_AUTH_ID")?,
        auth_token: secret(src, "VNMASK_PLIVO_AUTH_TOKEN")?,
        base: credential_url(src, "VNMASK_PLIVO_API_BASE", Some(PLIVO_API))?,
        app_id: one_id(src, "VNMASK_PLIVO_APP_ID")?,
        other_app_ids: ids(src, "VNMASK_PLIVO_OTHER_APP_IDS")?,
        number_type: src
            .get("VNMASK_PLIVO_NUMBER_TYPE")
            .map(|t| {
                t.parse()
                    .map_err(|e: String| invalid("VNMASK_PLIVO_NUMBER_TYPE", e))
            })
            .transpose()?,
    })
}

fn vonage(src: &dyn Source) -> Result<VonageAccount, ConfigError> {
    Ok(VonageAccount {
        api_key: identifier(src, "VNMASK_VONAGE_API_KEY")?,
        api_secret: secret(src, "VNMASK_VONAGE_API_SECRET")?,
        base: credential_url(src, "VNMASK_VONAGE_API_BASE", Some(VONAGE_API))?,
        app_id: one_id(src, "VNMASK_VONAGE_APP_ID")?,
        other_app_ids: ids(src, "VNMASK_VONAGE_OTHER_APP_IDS")?,
    })
}

fn telnyx(src: &dyn Source) -> Result<TelnyxAccount, ConfigError> {
    Ok(TelnyxAccount {
        api_key: secret(src, "VNMASK_TELNYX_API_KEY")?,
        base: credential_url(src, "VNMASK_TELNYX_API_BASE", Some(TELNYX_API))?,
        connection_id: one_id(src, "VNMASK_TELNYX_CONNECTION_ID")?,
        other_connection_ids: ids(src, "VNMASK_TELNYX_OTHER_CONNECTION_IDS")?,
        messaging_profile_id: optional_id(src, "VNMASK_TELNYX_MESSAGING_PROFILE_ID")?,
    })
}

fn exotel(src: &dyn Source) -> Result<ExotelAccount, ConfigError> {
    let account_sid = identifier(src, "VNMASK_EXOTEL_ACCOUNT_SID")?;
    let api_key = required(src, "VNMASK_EXOTEL_API_KEY")?;
    let api_token = secret(src, "VNMASK_EXOTEL_API_TOKEN")?;
    // Exotel does not say where a flow sends calls: which flows are ours must be configured.
    let app_ids: BTreeSet<String> = required(src, "VNMASK_EXOTEL_APP_IDS")?
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(|id| {
            if id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                Ok(id.to_owned())
            } else {
                Err(invalid(
                    "VNMASK_EXOTEL_APP_IDS",
                    "expected app ids of 1-32 letters or digits, separated by commas",
                ))
            }
        })
        .collect::<Result<_, _>>()?;
    if app_ids.is_empty() {
        return Err(ConfigError::Missing("VNMASK_EXOTEL_APP_IDS"));
    }
    Ok(ExotelAccount {
        account_sid,
        api_key,
        api_token,
        base: credential_url(src, "VNMASK_EXOTEL_API_BASE", Some(EXOTEL_API))?,
        app_ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const SID: &str = "AC0123456789abcdef0123456789abcdef";
    const SUB_SID: &str = "ACfedcba9876543210fedcba9876543210";
    const KEY_SID: &str = "SK0123456789abcdef0123456789abcdef";
    const VOICE: &str = "https://hooks.example.com/twilio/voice";

    fn src(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut m: BTreeMap<String, String> = [
            ("VNMASK_TABLE", "t"),
            ("VNMASK_MARKETS", "IN,US"),
            ("VNMASK_HMAC_KEY", "AAAA"),
            ("VNMASK_DATA_KEYS", "k1=AAAA"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in pairs {
            m.insert(k.to_string(), v.to_string());
        }
        m
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        match Config::from_source(&src(pairs)) {
            Ok(_) => panic!("config accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn number_health_thresholds_have_defaults_and_bad_ones_are_refused() {
        let static_pool = [
            ("VNMASK_PROVIDERS", "static"),
            ("VNMASK_STATIC_NUMBERS", "[]"),
        ];
        let c = Config::from_source(&src(&static_pool)).unwrap();
        assert_eq!(c.refresh.health, HealthRules::default());
        assert_eq!(c.refresh.moves_per_run, 500);
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = static_pool.to_vec();
            pairs.extend_from_slice(extra);
            pairs
        };
        let c = Config::from_source(&src(&with(&[
            ("VNMASK_HEALTH_MIN_CALLS", "20"),
            ("VNMASK_HEALTH_ANSWER_RATIO", "0.3"),
            ("VNMASK_COOLING_OFF_SECONDS", "3600"),
        ])))
        .unwrap();
        assert_eq!(
            (
                c.refresh.health.min_calls,
                c.refresh.health.answer_ratio,
                c.refresh.health.cooling_off
            ),
            (20, 0.3, 3600)
        );
        for (var, value) in [
            ("VNMASK_HEALTH_ANSWER_RATIO", "1.5"),
            ("VNMASK_HEALTH_MAX_SHARE", "-0.1"),
            ("VNMASK_HEALTH_ANSWER_DAYS", "13"),
            ("VNMASK_HEALTH_MIN_CALLS", "many"),
        ] {
            assert!(err(&with(&[(var, value)])).contains(var), "{var}");
        }
        // A number would serve again while pairs moved off it were still handed over.
        let short = err(&with(&[
            ("VNMASK_COOLING_OFF_SECONDS", "60"),
            ("VNMASK_HANDOVER_SECONDS", "600"),
        ]));
        assert!(short.contains("VNMASK_COOLING_OFF_SECONDS"), "{short}");
    }

    #[test]
    fn call_capacity_is_per_served_market_and_bad_values_are_refused() {
        let base = [
            ("VNMASK_PROVIDERS", "static"),
            ("VNMASK_STATIC_NUMBERS", "[]"),
            ("VNMASK_MARKETS", "IN:voice"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = base.to_vec();
            pairs.extend_from_slice(extra);
            pairs
        };
        let c = Config::from_source(&src(&base)).unwrap();
        assert_eq!(c.refresh.capacity, CapacityRules::default());
        let c = Config::from_source(&src(&with(&[
            ("VNMASK_CALL_CAPACITY", "IN:4/120"),
            ("VNMASK_PEAK_HOUR_SHARE", "0.08"),
            ("VNMASK_MEAN_CALL_SECONDS", "60"),
        ])))
        .unwrap();
        let cap = c.refresh.capacity;
        assert_eq!(
            cap.per_market[&"IN".parse::<Market>().unwrap()],
            vnmask::pool::CallCapacity {
                concurrent: 4,
                per_hour: 120
            }
        );
        assert_eq!((cap.peak_hour_share, cap.mean_call_seconds), (0.08, 60.0));
        // Another region's market: left out.
        let c = Config::from_source(&src(&with(&[("VNMASK_CALL_CAPACITY", "IN:4/120,US:9/9")])))
            .unwrap();
        assert_eq!(c.refresh.capacity.per_market.len(), 1);
        for (var, value) in [
            ("VNMASK_CALL_CAPACITY", "IN:0/120"),
            ("VNMASK_CALL_CAPACITY", "+919810000001"),
            ("VNMASK_PEAK_HOUR_SHARE", "0"),
            ("VNMASK_PEAK_HOUR_SHARE", "1.5"),
            ("VNMASK_MEAN_CALL_SECONDS", "0"),
        ] {
            let e = err(&with(&[(var, value)]));
            assert!(e.contains(var), "{var}={value}: {e}");
            assert!(!e.contains("9810000001"), "{e}");
        }
    }

    #[test]
    fn twilio_with_an_auth_token_and_defaults() {
        let c = Config::from_source(&src(&[
            ("VNMASK_PROVIDERS", "twilio"),
            ("VNMASK_TWILIO_ACCOUNT_SID", SID),
            ("VNMASK_TWILIO_AUTH_TOKEN", "s3cr3t-token"),
            ("VNMASK_VOICE_URL", VOICE),
        ]))
        .unwrap();
        let t = c.twilio.unwrap();
        assert_eq!(t.base.as_str(), "https://api.twilio.com/");
        assert_eq!(t.voice_url.as_ref().map(reqwest::Url::as_str), Some(VOICE));
        assert_eq!(t.subaccount_sid, None);
        assert_eq!(t.auth, TwilioAuth::AuthToken(Secret::new("s3cr3t-token")));
        assert!(!format!("{t:?}").contains("s3cr3t"));
        assert!(c.refresh.buying.is_none(), "buying is off by default");
        assert_eq!(c.refresh.min_headroom, 4);
        assert_eq!(c.refresh.markets.len(), 2);
        assert!(
            c.store.keys.is_some(),
            "moves off numbers leaving service open sessions and seal routes"
        );
    }

    #[test]
    fn each_market_refreshes_with_its_own_channels() {
        use vnmask::domain::Capabilities;
        let c = Config::from_source(&src(&[
            ("VNMASK_PROVIDERS", "static"),
            ("VNMASK_STATIC_NUMBERS", "[]"),
            ("VNMASK_MARKETS", "IN:voice,US"),
        ]))
        .unwrap();
        let needs = |m: &str| c.refresh.markets[&m.parse().unwrap()];
        assert_eq!(
            needs("IN"),
            Capabilities {
                voice: true,
                sms: false
            }
        );
        assert_eq!(needs("US"), Capabilities::VOICE_AND_SMS);
        assert!(err(&[
            ("VNMASK_PROVIDERS", "static"),
            ("VNMASK_STATIC_NUMBERS", "[]"),
            ("VNMASK_MARKETS", "IN:sms"),
        ])
        .contains("VNMASK_MARKETS"));
    }

    #[test]
    fn plivo_vonage_and_telnyx_accounts_and_where_each_market_buys() {
        let all = [
            ("VNMASK_PROVIDERS", "plivo,vonage,telnyx"),
            ("VNMASK_PLIVO_AUTH_ID", "MAXXXXXXXXXXXXXXXXXX"),
            ("VNMASK_PLIVO_AUTH_TOKEN", "plivo-token-s3cr3t"),
            ("VNMASK_PLIVO_APP_ID", "20372631212782780"),
            ("VNMASK_VONAGE_API_KEY", "abcd1234"),
            ("VNMASK_VONAGE_API_SECRET", "vonage-s3cr3t"),
            (
                "VNMASK_VONAGE_APP_ID",
                "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
            ),
            ("VNMASK_TELNYX_API_KEY", "KEY-telnyx-s3cr3t"),
            ("VNMASK_TELNYX_CONNECTION_ID", "1234567890"),
            (
                "VNMASK_TELNYX_MESSAGING_PROFILE_ID",
                "40017f8e-49bd-4f16-9e3d-ef103f916228",
            ),
            ("VNMASK_POOL_BUY", "true"),
            ("VNMASK_POOL_BUY_FROM", "IN:plivo,telnyx"),
            ("VNMASK_VOICE_URL", VOICE),
            ("VNMASK_SMS_URL", VOICE),
        ];
        let c = Config::from_source(&src(&all)).unwrap();
        let plivo = c.plivo.unwrap();
        assert_eq!(plivo.base.as_str(), "https://api.plivo.com/");
        assert_eq!(plivo.app_id, "20372631212782780");
        assert_eq!(c.vonage.unwrap().base.as_str(), "https://rest.nexmo.com/");
        let telnyx = c.telnyx.unwrap();
        assert!(telnyx.messaging_profile_id.is_some());
        assert!(!format!("{telnyx:?}").contains("s3cr3t"));
        assert_eq!(c.buy_from.for_market(&"IN".parse().unwrap()), Some("plivo"));
        assert_eq!(
            c.buy_from.for_market(&"US".parse().unwrap()),
            Some("telnyx")
        );
        // Buying from a provider that is not configured, or one that sells nothing.
        let mut from_twilio = all.to_vec();
        from_twilio.push(("VNMASK_POOL_BUY_FROM", "US:twilio"));
        assert!(err(&from_twilio).contains("VNMASK_POOL_BUY_FROM"));
        let mut from_exotel = all.to_vec();
        from_exotel.push(("VNMASK_POOL_BUY_FROM", "exotel"));
        assert!(err(&from_exotel).contains("VNMASK_POOL_BUY_FROM"));
        let mut no_app = all.to_vec();
        no_app.retain(|(k, _)| *k != "VNMASK_PLIVO_APP_ID");
        assert!(err(&no_app).contains("VNMASK_PLIVO_APP_ID"));
        // Bought numbers go onto one messaging profile: a second is refused, not dropped.
        let mut two_profiles = all.to_vec();
        two_profiles.push(("VNMASK_TELNYX_MESSAGING_PROFILE_ID", "profile-a,profile-b"));
        assert!(err(&two_profiles).contains("VNMASK_TELNYX_MESSAGING_PROFILE_ID"));
    }

    #[test]
    fn errors_name_the_variable_and_never_the_secret() {
        assert!(err(&[]).contains("VNMASK_PROVIDERS"));
        assert!(err(&[("VNMASK_PROVIDERS", "twilio,sinch")]).contains("sinch"));
        assert!(err(&[("VNMASK_PROVIDERS", "twilio")]).contains("VNMASK_TWILIO_ACCOUNT_SID"));
        let e = err(&[
            ("VNMASK_PROVIDERS", "twilio"),
            ("VNMASK_TWILIO_ACCOUNT_SID", "ACnot-a-sid-s3cr3t"),
        ]);
        assert!(e.contains("VNMASK_TWILIO_ACCOUNT_SID") && !e.contains("s3cr3t"));
        assert!(err(&[
            ("VNMASK_PROVIDERS", "twilio"),
            ("VNMASK_TWILIO_ACCOUNT_SID", SID),
        ])
        .contains("VNMASK_TWILIO_AUTH_TOKEN"));
        assert!(err(&[("VNMASK_PROVIDERS", "exotel")]).contains("VNMASK_EXOTEL_ACCOUNT_SID"));
        assert!(err(&[("VNMASK_PROVIDERS", "static")]).contains("VNMASK_STATIC_NUMBERS"));
        assert!(err(&[
            ("VNMASK_PROVIDERS", "static"),
            ("VNMASK_STATIC_NUMBERS", "[{\"number\": \"12\"}]")
        ])
        .contains("VNMASK_STATIC_NUMBERS"));
    }

    #[test]
    fn credentials_go_only_to_https_or_loopback() {
        let base = |b: &str| {
            Config::from_source(&src(&[
                ("VNMASK_PROVIDERS", "twilio"),
                ("VNMASK_TWILIO_ACCOUNT_SID", SID),
                ("VNMASK_TWILIO_AUTH_TOKEN", "t"),
                ("VNMASK_VOICE_URL", VOICE),
                ("VNMASK_TWILIO_API_BASE", b),
            ]))
            .map(|c| c.twilio.unwrap().base.to_string())
        };
        assert!(base("http://api.twilio.com").is_err());
        assert_eq!(
            base("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080/"
        );
        assert!(base("https://api.twilio.com").is_ok());
    }

    #[test]
    fn buying_needs_twilio_and_webhook_urls() {
        assert!(err(&[
            ("VNMASK_PROVIDERS", "static"),
            ("VNMASK_STATIC_NUMBERS", "[]"),
            ("VNMASK_POOL_BUY", "true"),
        ])
        .contains("VNMASK_POOL_BUY"));
        let twilio = [
            ("VNMASK_PROVIDERS", "twilio"),
            ("VNMASK_TWILIO_ACCOUNT_SID", SID),
            ("VNMASK_TWILIO_AUTH_TOKEN", "t"),
            ("VNMASK_POOL_BUY", "true"),
        ];
        assert!(err(&twilio).contains("VNMASK_VOICE_URL"));
        let mut all = twilio.to_vec();
        all.extend([
            ("VNMASK_VOICE_URL", "https://hooks.example.com/twilio/voice"),
            ("VNMASK_SMS_URL", "https://hooks.example.com/twilio/sms"),
            ("VNMASK_POOL_BUY_PER_RUN", "3"),
        ]);
        let c = Config::from_source(&src(&all)).unwrap();
        let b = c.refresh.buying.unwrap();
        assert_eq!((b.per_run, b.per_month), (3, 20));
        assert_eq!(b.webhooks.sms_url.path(), "/twilio/sms");
    }

    #[test]
    fn operators_drain_numbers_by_listing_them() {
        let c = Config::from_source(&src(&[
            ("VNMASK_PROVIDERS", "static"),
            ("VNMASK_STATIC_NUMBERS", "[]"),
            ("VNMASK_POOL_DRAIN", "+911140001000, +14155551000"),
        ]))
        .unwrap();
        assert_eq!(c.refresh.drain.len(), 2);
        assert!(err(&[
            ("VNMASK_PROVIDERS", "static"),
            ("VNMASK_STATIC_NUMBERS", "[]"),
            ("VNMASK_POOL_DRAIN", "12345"),
        ])
        .contains("VNMASK_POOL_DRAIN"));
    }

    #[test]
    fn an_api_key_is_preferred_and_the_auth_token_still_accepted() {
        let twilio = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = vec![
                ("VNMASK_PROVIDERS", "twilio"),
                ("VNMASK_TWILIO_ACCOUNT_SID", SID),
                ("VNMASK_VOICE_URL", VOICE),
            ];
            pairs.extend_from_slice(extra);
            Config::from_source(&src(&pairs)).map(|c| c.twilio.unwrap().auth)
        };
        assert_eq!(
            twilio(&[
                ("VNMASK_TWILIO_API_KEY_SID", KEY_SID),
                ("VNMASK_TWILIO_API_KEY_SECRET", "key-secret"),
                ("VNMASK_TWILIO_AUTH_TOKEN", "token"),
            ])
            .unwrap(),
            TwilioAuth::ApiKey {
                sid: KEY_SID.into(),
                secret: Secret::new("key-secret")
            }
        );
        assert_eq!(
            twilio(&[("VNMASK_TWILIO_AUTH_TOKEN", "token")]).unwrap(),
            TwilioAuth::AuthToken(Secret::new("token"))
        );
        let half = |pair| twilio(&[pair]).unwrap_err().to_string();
        assert!(
            half(("VNMASK_TWILIO_API_KEY_SID", KEY_SID)).contains("VNMASK_TWILIO_API_KEY_SECRET")
        );
        assert!(half(("VNMASK_TWILIO_API_KEY_SECRET", "s")).contains("VNMASK_TWILIO_API_KEY_SID"));
    }

    #[test]
    fn twilio_numbers_are_ours_by_our_voice_url_or_a_reserved_subaccount() {
        let base = [
            ("VNMASK_PROVIDERS", "twilio"),
            ("VNMASK_TWILIO_ACCOUNT_SID", SID),
            ("VNMASK_TWILIO_AUTH_TOKEN", "t"),
        ];
        assert!(err(&base).contains("VNMASK_VOICE_URL"));
        let mut reserved = base.to_vec();
        reserved.push(("VNMASK_TWILIO_SUBACCOUNT_SID", SUB_SID));
        let t = Config::from_source(&src(&reserved))
            .unwrap()
            .twilio
            .unwrap();
        assert_eq!(
            (t.subaccount_sid.as_deref(), t.voice_url),
            (Some(SUB_SID), None)
        );
        reserved.push(("VNMASK_TWILIO_SUBACCOUNT_SID", "AC12"));
        assert!(err(&reserved).contains("VNMASK_TWILIO_SUBACCOUNT_SID"));
        let mut plain_http = base.to_vec();
        plain_http.push(("VNMASK_VOICE_URL", "http://hooks.example.com/twilio/voice"));
        assert!(err(&plain_http).contains("VNMASK_VOICE_URL"));
    }

    #[test]
    fn exotel_needs_the_flows_that_hand_calls_to_us() {
        let exotel = [
            ("VNMASK_PROVIDERS", "exotel"),
            ("VNMASK_EXOTEL_ACCOUNT_SID", "vnmask1"),
            ("VNMASK_EXOTEL_API_KEY", "key"),
            ("VNMASK_EXOTEL_API_TOKEN", "token"),
        ];
        assert!(err(&exotel).contains("VNMASK_EXOTEL_APP_IDS"));
        let mut with_flows = exotel.to_vec();
        with_flows.push(("VNMASK_EXOTEL_APP_IDS", "271829, 300100"));
        let e = Config::from_source(&src(&with_flows))
            .unwrap()
            .exotel
            .unwrap();
        assert_eq!(
            e.app_ids.iter().map(String::as_str).collect::<Vec<_>>(),
            ["271829", "300100"]
        );
        with_flows.push(("VNMASK_EXOTEL_APP_IDS", "271829/start"));
        assert!(err(&with_flows).contains("VNMASK_EXOTEL_APP_IDS"));
    }
}
