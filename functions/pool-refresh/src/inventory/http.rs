//! HTTP to the providers: timeouts, retries with backoff on 429 and 5xx honouring `Retry-After`,
//! basic auth whose secret never reaches a log, and page links kept on the configured host.
//!
//! Reads are retried freely. A POST that buys something is never sent again once it may have
//! reached the provider: only a 429 (refused unprocessed) or a connection that was never made
//! is retried; a timeout, a 5xx or a connection lost after sending is [`PostError::Unconfirmed`],
//! for the caller to settle by reading what the provider holds.

use std::time::{Duration, SystemTime};

use rand::Rng;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use vnmask::config::Secret;
use vnmask::domain::Provider;

use super::ProviderError;

/// Why a POST failed: whether the provider may have acted on it all the same.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    /// Refused (4xx), or never sent: nothing happened.
    #[error(transparent)]
    Refused(ProviderError),
    /// It may have gone through: a timeout, a 5xx, or the connection lost after sending.
    #[error("{0}; it may have gone through")]
    Unconfirmed(ProviderError),
}

/// When a request may be sent again after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resend {
    /// Reads: on 429, 5xx, timeouts and connections not made.
    Freely,
    /// A purchase: only when the provider surely did not act (429, or no connection made).
    OnlyUnsent,
}

/// A failed request, and whether the provider may have acted on it.
struct Failure {
    error: ProviderError,
    maybe_done: bool,
}

/// How patiently a provider is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpPolicy {
    /// Per attempt, from connecting to the last byte.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Tries per request, the first included.
    pub max_attempts: u32,
    /// The first retry waits up to this long (full jitter); each further retry up to twice as long.
    pub backoff: Duration,
    /// The longest `Retry-After` honoured; a provider asking for longer fails this run instead.
    pub max_retry_after: Duration,
}

impl Default for HttpPolicy {
    fn default() -> Self {
        HttpPolicy {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            max_attempts: 4,
            backoff: Duration::from_millis(250),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

impl HttpPolicy {
    /// The one HTTP client every provider shares (connection pools, TLS set up once).
    pub fn client(&self) -> Result<reqwest::Client, reqwest::Error> {
        reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .user_agent(concat!("vnmask-pool-refresh/", env!("CARGO_PKG_VERSION")))
            .build()
    }

    /// Full-jitter exponential backoff before retry number `attempt` (1-based).
    fn backoff(&self, attempt: u32) -> Duration {
        let cap = self
            .backoff
            .saturating_mul(1 << attempt.saturating_sub(1).min(6));
        let millis = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::thread_rng().gen_range(0..=millis))
    }
}

/// How an account's API requests are authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiAuth {
    /// HTTP Basic (Twilio, Exotel, Plivo, Vonage's REST APIs).
    Basic { user: String, password: Secret },
    /// `Authorization: Bearer` (Telnyx's API keys).
    Bearer(Secret),
}

/// One provider account's API: its base URL, credentials and retry policy.
pub struct ApiClient {
    http: reqwest::Client,
    provider: Provider,
    base: Url,
    auth: ApiAuth,
    policy: HttpPolicy,
}

impl ApiClient {
    /// A client signing its requests with HTTP Basic `user` and `password`.
    pub fn new(
        http: reqwest::Client,
        provider: Provider,
        base: Url,
        user: impl Into<String>,
        password: Secret,
        policy: HttpPolicy,
    ) -> Self {
        Self::with_auth(
            http,
            provider,
            base,
            ApiAuth::Basic {
                user: user.into(),
                password,
            },
            policy,
        )
    }

    pub fn with_auth(
        http: reqwest::Client,
        provider: Provider,
        base: Url,
        auth: ApiAuth,
        policy: HttpPolicy,
    ) -> Self {
        ApiClient {
            http,
            provider,
            base,
            auth,
            policy,
        }
    }

    pub fn provider(&self) -> &Provider {
        &self.provider
    }

    /// `path` (absolute, with its query) on the configured host.
    pub fn url(&self, operation: &'static str, path: &str) -> Result<Url, ProviderError> {
        self.base
            .join(path)
            .map_err(|e| self.malformed(operation, format!("bad path: {e}")))
    }

    /// A next-page link, absolute or relative, resolved to its path and query on the configured
    /// host: credentials never follow a link elsewhere.
    fn next_page(&self, operation: &'static str, link: &str) -> Result<Url, ProviderError> {
        match Url::parse(link) {
            Ok(absolute) => {
                let mut url = self.url(operation, absolute.path())?;
                url.set_query(absolute.query());
                Ok(url)
            }
            Err(_) => self.url(operation, link),
        }
    }

    /// Reads the page at `first` (a path and query) and every page it links to, in order:
    /// `read` takes what each page holds and returns its link to the next (`None` or empty on
    /// the last). Links are followed on the configured host only; a page linking to itself, or
    /// more than `max_pages` pages, is a malformed answer.
    pub async fn follow_pages<P: DeserializeOwned>(
        &self,
        operation: &'static str,
        first: &str,
        max_pages: usize,
        mut read: impl FnMut(P) -> Option<String> + Send,
    ) -> Result<(), ProviderError> {
        let mut url = self.url(operation, first)?;
        for _ in 0..max_pages {
            let page: P = self.get_json(operation, &url).await?;
            match read(page).filter(|link| !link.is_empty()) {
                None => return Ok(()),
                Some(link) => {
                    let next = self.next_page(operation, &link)?;
                    if next == url {
                        return Err(self.malformed(operation, "next_page_uri links to itself"));
                    }
                    url = next;
                }
            }
        }
        Err(self.malformed(operation, format!("more than {max_pages} pages")))
    }

    pub async fn get_json<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        url: &Url,
    ) -> Result<T, ProviderError> {
        let body = self
            .send(operation, Resend::Freely, || self.http.get(url.clone()))
            .await
            .map_err(|f| f.error)?;
        self.decode(operation, &body)
    }

    /// Posts `form` and returns the body of the success undecoded: after a purchase, an
    /// unreadable answer must not hide that the purchase happened. Sent again only when the
    /// provider surely did not act on it; otherwise a failure says whether it may have.
    pub async fn post_form<F: Serialize + ?Sized>(
        &self,
        operation: &'static str,
        url: &Url,
        form: &F,
    ) -> Result<Vec<u8>, PostError> {
        self.send(operation, Resend::OnlyUnsent, || {
            self.http.post(url.clone()).form(form)
        })
        .await
        .map_err(|f| {
            if f.maybe_done {
                PostError::Unconfirmed(f.error)
            } else {
                PostError::Refused(f.error)
            }
        })
    }

    /// Sends `body` as JSON with `method` (POST, PATCH, PUT), like [`ApiClient::post_form`]:
    /// sent again only when the provider surely did not act on it.
    pub async fn send_json<B: Serialize + ?Sized>(
        &self,
        operation: &'static str,
        method: reqwest::Method,
        url: &Url,
        body: &B,
    ) -> Result<Vec<u8>, PostError> {
        self.send(operation, Resend::OnlyUnsent, || {
            self.http.request(method.clone(), url.clone()).json(body)
        })
        .await
        .map_err(|f| {
            if f.maybe_done {
                PostError::Unconfirmed(f.error)
            } else {
                PostError::Refused(f.error)
            }
        })
    }

    pub fn malformed(&self, operation: &'static str, reason: impl Into<String>) -> ProviderError {
        ProviderError::Malformed {
            provider: self.provider.clone(),
            operation,
            reason: reason.into(),
        }
    }

    fn decode<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        body: &[u8],
    ) -> Result<T, ProviderError> {
        serde_json::from_slice(body).map_err(|e| self.malformed(operation, e.to_string()))
    }

    /// Sends the request `build` makes, again on what `resend` allows (a 429 always, after the
    /// time its `Retry-After` asks), up to the policy's attempts; returns the body of the first
    /// success. A failure says whether the provider may have acted on the request.
    async fn send(
        &self,
        operation: &'static str,
        resend: Resend,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Vec<u8>, Failure> {
        let failed = |error, maybe_done| Failure { error, maybe_done };
        let mut last = None;
        for attempt in 1..=self.policy.max_attempts.max(1) {
            let request = match &self.auth {
                ApiAuth::Basic { user, password } => {
                    // From configuration, so UTF-8: the lossy view borrows it unchanged.
                    build().basic_auth(user, Some(String::from_utf8_lossy(password.expose())))
                }
                ApiAuth::Bearer(token) => {
                    build().bearer_auth(String::from_utf8_lossy(token.expose()))
                }
            };
            let wait = match request.send().await {
                Ok(response) if response.status().is_success() => {
                    // The provider acted; only its answer may be lost.
                    return response
                        .bytes()
                        .await
                        .map(|b| b.to_vec())
                        .map_err(|e| failed(self.transport(operation, e), true));
                }
                Ok(response) => {
                    let status = response.status();
                    let error = ProviderError::Status {
                        provider: self.provider.clone(),
                        operation,
                        status: status.as_u16(),
                    };
                    // A 429 was refused unprocessed; a 5xx may have been processed.
                    let maybe_done = status.is_server_error();
                    let again = status == StatusCode::TOO_MANY_REQUESTS
                        || (maybe_done && resend == Resend::Freely);
                    if !again {
                        return Err(failed(error, maybe_done));
                    }
                    let wait = retry_after(response.headers(), SystemTime::now())
                        .unwrap_or_else(|| self.policy.backoff(attempt));
                    if wait > self.policy.max_retry_after {
                        tracing::warn!(provider = %self.provider, operation, retry_after_s = wait.as_secs(), "provider asks to wait longer than allowed");
                        return Err(failed(error, maybe_done));
                    }
                    last = Some(failed(error, maybe_done));
                    wait
                }
                // No connection was made: nothing was sent.
                Err(e) if e.is_connect() => {
                    last = Some(failed(self.transport(operation, e), false));
                    self.policy.backoff(attempt)
                }
                Err(e) if e.is_timeout() && resend == Resend::Freely => {
                    last = Some(failed(self.transport(operation, e), true));
                    self.policy.backoff(attempt)
                }
                // Sent, or perhaps sent: a timeout or a connection lost on the way.
                Err(e) => return Err(failed(self.transport(operation, e), true)),
            };
            if attempt < self.policy.max_attempts {
                tracing::info!(provider = %self.provider, operation, attempt, wait_ms = wait.as_millis() as u64, "retrying provider request");
                tokio::time::sleep(wait).await;
            }
        }
        Err(last.unwrap_or_else(|| {
            failed(
                ProviderError::Timeout {
                    provider: self.provider.clone(),
                    operation,
                },
                true,
            )
        }))
    }

    fn transport(&self, operation: &'static str, e: reqwest::Error) -> ProviderError {
        if e.is_timeout() {
            ProviderError::Timeout {
                provider: self.provider.clone(),
                operation,
            }
        } else {
            ProviderError::Transport {
                provider: self.provider.clone(),
                operation,
                // Without the URL: it names the account.
                reason: e.without_url().to_string(),
            }
        }
    }
}

/// `Retry-After` as seconds or as an HTTP date, measured from `now`.
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    let at = SystemTime::from(at);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_470);
        assert_eq!(
            retry_after(&headers("7"), now),
            Some(Duration::from_secs(7))
        );
        // 2015-10-21T07:28:00Z is 10 s after `now`.
        assert_eq!(
            retry_after(&headers("Wed, 21 Oct 2015 07:28:00 GMT"), now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            retry_after(&headers("Wed, 21 Oct 2015 07:27:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&headers("soon"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = HttpPolicy {
            backoff: Duration::from_millis(100),
            ..HttpPolicy::default()
        };
        for attempt in 1..20 {
            let cap = Duration::from_millis(100 << (attempt - 1).min(6));
            assert!(policy.backoff(attempt) <= cap);
        }
    }

    #[test]
    fn next_page_links_stay_on_the_configured_host() {
        let api = ApiClient::new(
            reqwest::Client::new(),
            "exotel".parse().unwrap(),
            Url::parse("http://127.0.0.1:9999").unwrap(),
            "key",
            Secret::new("token"),
            HttpPolicy::default(),
        );
        let url = api
            .next_page(
                "list",
                "http://twilix.exotel.com/v2_beta/Accounts/Exotel/IncomingPhoneNumbers?Page=1&PageSize=50",
            )
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9999/v2_beta/Accounts/Exotel/IncomingPhoneNumbers?Page=1&PageSize=50"
        );
        let url = api
            .next_page(
                "list",
                "/2010-04-01/Accounts/AC1/IncomingPhoneNumbers.json?Page=1",
            )
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9999/2010-04-01/Accounts/AC1/IncomingPhoneNumbers.json?Page=1"
        );
    }
}
