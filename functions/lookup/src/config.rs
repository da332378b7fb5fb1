//! The lookup function's own configuration: who the caller is, how long apps may cache an
//! answer, and where the Orders service is. The store and assignment settings are the shared ones.

use std::time::Duration;

use http::{HeaderName, HeaderValue};
use reqwest::Url;
use vnmask::config::{parsed, seconds, ConfigError, Source};

/// How the caller is identified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityConfig {
    /// `VNMASK_USER_CLAIM`: the JWT claim that holds the platform's user id.
    pub user_claim: String,
    /// `VNMASK_LOCAL_CLAIMS_HEADER`: a request header whose JSON object stands in for the JWT
    /// authorizer's claims, for local runs only. `None` unless the variable is set **and** the
    /// process is not in a real Lambda execution environment (see [`running_outside_aws`]).
    pub local_claims_header: Option<HeaderName>,
}

/// Where the fallback fetches an order the assignment event has not brought yet.
#[derive(Clone)]
pub struct OrdersConfig {
    /// `ORDERS_API_URL`: the Orders service's base URL; orders are at `{base}/orders/{order_id}`.
    pub base_url: Url,
    /// `ORDERS_API_AUTH_HEADER` (default `authorization`) and `ORDERS_API_AUTH_VALUE`: the
    /// credential sent with every request, if any. The value is marked sensitive and never logged.
    pub auth: Option<(HeaderName, HeaderValue)>,
    /// `ORDERS_API_TIMEOUT_MS`: the whole request, connect to last byte.
    pub timeout: Duration,
}

impl std::fmt::Debug for OrdersConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrdersConfig")
            .field("base_url", &self.base_url.as_str())
            .field("auth_header", &self.auth.as_ref().map(|(name, _)| name))
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct LookupConfig {
    pub identity: IdentityConfig,
    /// `VNMASK_LOOKUP_MAX_AGE_SECONDS`: `Cache-Control: private, max-age=` of a successful answer.
    pub max_age: Duration,
    /// `None` when `ORDERS_API_URL` is not set: lookups of orders without a session then answer 404, like any order the caller may not see.
    pub orders: Option<OrdersConfig>,
}

impl LookupConfig {
    pub const DEFAULT_USER_CLAIM: &'static str = "sub";
    pub const DEFAULT_MAX_AGE_SECONDS: u64 = 30;
    pub const DEFAULT_ORDERS_TIMEOUT_MS: u64 = 1000;
    pub const DEFAULT_ORDERS_AUTH_HEADER: &'static str = "authorization";

    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let user_claim = src
            .get("VNMASK_USER_CLAIM")
            .map(|c| c.trim().to_owned())
            .unwrap_or_else(|| Self::DEFAULT_USER_CLAIM.to_owned());
        let local_claims_header = match src.get("VNMASK_LOCAL_CLAIMS_HEADER") {
            None => None,
            Some(name) => {
                let header = header_name("VNMASK_LOCAL_CLAIMS_HEADER", &name)?;
                if running_outside_aws(src) {
                    Some(header)
                } else {
                    // Set in a real Lambda environment: a deployment mistake, never honoured.
                    tracing::warn!(
                        variable = "VNMASK_LOCAL_CLAIMS_HEADER",
                        runtime_api = src.get("AWS_LAMBDA_RUNTIME_API").unwrap_or_default(),
                        task_root = src.get("LAMBDA_TASK_ROOT").is_some(),
                        log_group = src.get("AWS_LAMBDA_LOG_GROUP_NAME").is_some(),
                        "ignored: local claims are only honoured outside AWS Lambda"
                    );
                    None
                }
            }
        };
        Ok(LookupConfig {
            identity: IdentityConfig {
                user_claim,
                local_claims_header,
            },
            max_age: seconds(
                src,
                "VNMASK_LOOKUP_MAX_AGE_SECONDS",
                Self::DEFAULT_MAX_AGE_SECONDS,
            )?,
            orders: orders_config(src)?,
        })
    }
}

fn orders_config(src: &dyn Source) -> Result<Option<OrdersConfig>, ConfigError> {
    let Some(url) = src.get("ORDERS_API_URL") else {
        return Ok(None);
    };
    let invalid = |reason: &str| ConfigError::Invalid {
        var: "ORDERS_API_URL",
        reason: reason.into(),
    };
    // A trailing slash would double the one `/orders/{id}` adds.
    let base_url =
        Url::parse(url.trim().trim_end_matches('/')).map_err(|_| invalid("not a URL"))?;
    if !matches!(base_url.scheme(), "https" | "http") || base_url.host().is_none() {
        return Err(invalid("must be an http(s) URL with a host"));
    }
    if base_url.query().is_some() || base_url.fragment().is_some() {
        return Err(invalid("must not have a query or fragment"));
    }
    let auth = match src.get("ORDERS_API_AUTH_VALUE") {
        None => None,
        Some(value) => {
            let name = src
                .get("ORDERS_API_AUTH_HEADER")
                .unwrap_or_else(|| LookupConfig::DEFAULT_ORDERS_AUTH_HEADER.to_owned());
            let name = header_name("ORDERS_API_AUTH_HEADER", &name)?;
            let mut value =
                HeaderValue::from_str(value.trim()).map_err(|_| ConfigError::Invalid {
                    var: "ORDERS_API_AUTH_VALUE",
                    reason: "not a valid header value".into(),
                })?;
            value.set_sensitive(true);
            Some((name, value))
        }
    };
    let timeout_ms: u64 = parsed(
        src,
        "ORDERS_API_TIMEOUT_MS",
        LookupConfig::DEFAULT_ORDERS_TIMEOUT_MS,
    )?;
    if timeout_ms == 0 {
        return Err(ConfigError::Invalid {
            var: "ORDERS_API_TIMEOUT_MS",
            reason: "must be at least 1".into(),
        });
    }
    Ok(Some(OrdersConfig {
        base_url,
        auth,
        timeout: Duration::from_millis(timeout_ms),
    }))
}

fn header_name(var: &'static str, name: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| ConfigError::Invalid {
        var,
        reason: "not a valid HTTP header name".into(),
    })
}

/// Whether this process is certainly not in a real AWS Lambda execution environment.
///
/// Lambda itself sets `LAMBDA_TASK_ROOT` and `AWS_LAMBDA_LOG_GROUP_NAME` (reserved: a deployment
/// cannot unset or override them) and points `AWS_LAMBDA_RUNTIME_API` at a bare `host:port`.
/// `cargo lambda watch` sets none of the first two and points the runtime API at its emulator,
/// whose address has a path (`http://127.0.0.1:9000/.rt/lookup`). Outside any runtime none of
/// them is set.
pub fn running_outside_aws(src: &dyn Source) -> bool {
    let lambda_sets = ["LAMBDA_TASK_ROOT", "AWS_LAMBDA_LOG_GROUP_NAME"];
    if lambda_sets.iter().any(|var| src.get(var).is_some()) {
        return false;
    }
    match src.get("AWS_LAMBDA_RUNTIME_API") {
        None => true,
        Some(api) => is_cargo_lambda_emulator(&api),
    }
}

/// `cargo lambda watch`'s runtime API: a loopback address with the emulator's `/.rt` path
/// (`http://127.0.0.1:9000/.rt/<function>` in cargo-lambda 1.9).
fn is_cargo_lambda_emulator(api: &str) -> bool {
    let api = api.trim();
    let api = api.strip_prefix("http://").unwrap_or(api);
    let Some((authority, path)) = api.split_once('/') else {
        return false;
    };
    if path != ".rt" && !path.starts_with(".rt/") {
        return false;
    }
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
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

    #[test]
    fn defaults_identify_by_sub_and_have_no_fallback() {
        let cfg = LookupConfig::from_source(&src(&[])).unwrap();
        assert_eq!(cfg.identity.user_claim, "sub");
        assert_eq!(cfg.identity.local_claims_header, None);
        assert_eq!(cfg.max_age, Duration::from_secs(30));
        assert!(cfg.orders.is_none());
    }

    #[test]
    fn orders_url_is_checked_and_loses_its_trailing_slash() {
        let cfg = LookupConfig::from_source(&src(&[(
            "ORDERS_API_URL",
            "https://orders.internal.example/api/",
        )]))
        .unwrap();
        let orders = cfg.orders.unwrap();
        assert_eq!(
            orders.base_url.as_str(),
            "https://orders.internal.example/api"
        );
        assert_eq!(orders.timeout, Duration::from_secs(1));
        assert!(orders.auth.is_none());
        for bad in ["orders", "ftp://orders.example", "https://o.example/?x=1"] {
            let err = LookupConfig::from_source(&src(&[("ORDERS_API_URL", bad)])).unwrap_err();
            assert!(err.to_string().contains("ORDERS_API_URL"), "{bad}: {err}");
        }
    }

    #[test]
    fn orders_credential_is_sensitive_and_not_printed() {
        let cfg = LookupConfig::from_source(&src(&[
            ("ORDERS_API_URL", "https://orders.example"),
            ("ORDERS_API_AUTH_HEADER", "X-Api-Key"),
            ("ORDERS_API_AUTH_VALUE", "s3cr3t-key"),
        ]))
        .unwrap();
        let orders = cfg.orders.unwrap();
        let (name, value) = orders.auth.as_ref().unwrap();
        assert_eq!(name.as_str(), "x-api-key");
        assert!(value.is_sensitive());
        assert!(!format!("{orders:?}").contains("s3cr3t"));
        let err = LookupConfig::from_source(&src(&[
            ("ORDERS_API_URL", "https://orders.example"),
            ("ORDERS_API_AUTH_VALUE", "bad\nvalue s3cr3t"),
        ]))
        .unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"));
    }

    #[test]
    fn local_claims_header_is_honoured_outside_aws() {
        for env in [
            vec![],
            vec![("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9000/.rt")],
            vec![("AWS_LAMBDA_RUNTIME_API", "[::1]:9101/.rt")],
            vec![("AWS_LAMBDA_RUNTIME_API", "http://localhost:9000/.rt")],
            vec![(
                "AWS_LAMBDA_RUNTIME_API",
                "http://127.0.0.1:43965/.rt/lookup",
            )],
        ] {
            let mut pairs = env.clone();
            pairs.push(("VNMASK_LOCAL_CLAIMS_HEADER", "x-vnmask-local-claims"));
            let cfg = LookupConfig::from_source(&src(&pairs)).unwrap();
            assert_eq!(
                cfg.identity
                    .local_claims_header
                    .as_ref()
                    .map(|h| h.as_str()),
                Some("x-vnmask-local-claims"),
                "{env:?}"
            );
        }
    }

    #[test]
    fn local_claims_header_is_ignored_in_a_lambda_environment() {
        for env in [
            vec![("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")],
            vec![("AWS_LAMBDA_RUNTIME_API", "169.254.100.1:9001")],
            vec![("AWS_LAMBDA_RUNTIME_API", "10.0.0.7:9000/.rt")],
            vec![("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001/.rtx")],
            vec![("AWS_LAMBDA_RUNTIME_API", "127.0.0.1.example.com:9000/.rt")],
            vec![("LAMBDA_TASK_ROOT", "/var/task")],
            vec![
                ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9000/.rt"),
                ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/lookup"),
            ],
        ] {
            let mut pairs = env.clone();
            pairs.push(("VNMASK_LOCAL_CLAIMS_HEADER", "x-vnmask-local-claims"));
            let cfg = LookupConfig::from_source(&src(&pairs)).unwrap();
            assert_eq!(cfg.identity.local_claims_header, None, "{env:?}");
        }
    }
}
