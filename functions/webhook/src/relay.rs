//! Relaying a text through a provider whose messaging webhook answers nothing (Telnyx): the
//! webhook decides as for any text, then, after the answer, asks the provider's API to send it
//! from the virtual number to the callee.

use std::time::Duration;

use async_trait::async_trait;
use vnmask::config::Secret;
use vnmask::domain::Route;
use vnmask::providers::telnyx;

/// How long one relay may take, after the answer: with the answer's 2 s, within the
/// function's 5 s timeout.
pub const RELAY_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a text was not relayed. Never carries a number or the text.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("the provider answered HTTP {0}")]
    Status(u16),
    #[error("the provider could not be reached: {0}")]
    Transport(String),
}

/// Sends a text over a route: from its virtual number to its callee.
#[async_trait]
pub trait TextRelay: Send + Sync {
    async fn relay(&self, route: &Route, text: &str) -> Result<(), RelayError>;
}

/// Telnyx's `POST /v2/messages`, with the account's API key.
#[derive(Debug)]
pub struct TelnyxMessages {
    http: reqwest::Client,
    url: String,
    api_key: Secret,
}

impl TelnyxMessages {
    /// `api_base` without a trailing slash (`https://api.telnyx.com`, a fake in tests).
    pub fn new(http: reqwest::Client, api_base: &str, api_key: Secret) -> Self {
        TelnyxMessages {
            http,
            url: format!("{}/v2/messages", api_base.trim_end_matches('/')),
            api_key,
        }
    }
}

#[async_trait]
impl TextRelay for TelnyxMessages {
    async fn relay(&self, route: &Route, text: &str) -> Result<(), RelayError> {
        let response = self
            .http
            .post(&self.url)
            .bearer_auth(String::from_utf8_lossy(self.api_key.expose()))
            .json(&telnyx::relay_message(route, text))
            .timeout(RELAY_TIMEOUT)
            .send()
            .await
            // reqwest's errors name the URL, never the body: no number leaves here.
            .map_err(|e| RelayError::Transport(e.without_url().to_string()))?;
        match response.status() {
            s if s.is_success() => Ok(()),
            s => Err(RelayError::Status(s.as_u16())),
        }
    }
}
