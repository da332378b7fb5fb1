//! One way to build the AWS SDK configuration, shared by every function and tool.
//!
//! Endpoints come from the SDK's own environment variables (`AWS_ENDPOINT_URL`,
//! `AWS_ENDPOINT_URL_DYNAMODB`, …), which is how the local stack points clients at 127.0.0.1.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, SdkConfig};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

/// How long SDK calls may take. The webhook's budget is the tightest: a DynamoDB outage must
/// still let it refuse a call within 2 s.
#[derive(Debug, Clone, Copy)]
pub struct SdkTimeouts {
    pub connect: Duration,
    pub attempt: Duration,
    pub operation: Duration,
    pub max_attempts: u32,
}

impl SdkTimeouts {
    /// For request paths that answer a person or a provider.
    pub const INTERACTIVE: SdkTimeouts = SdkTimeouts {
        connect: Duration::from_millis(300),
        attempt: Duration::from_millis(600),
        operation: Duration::from_millis(1500),
        max_attempts: 2,
    };
    /// For what a function loads at cold start (secrets, keys), off any request's path: patient
    /// enough for a slow first connection, within Lambda's 10 s initialisation.
    pub const STARTUP: SdkTimeouts = SdkTimeouts {
        connect: Duration::from_secs(1),
        attempt: Duration::from_secs(3),
        operation: Duration::from_secs(7),
        max_attempts: 3,
    };
    /// For queue consumers and scheduled jobs, where patience is cheaper than a retry.
    pub const BACKGROUND: SdkTimeouts = SdkTimeouts {
        connect: Duration::from_secs(2),
        attempt: Duration::from_secs(5),
        operation: Duration::from_secs(20),
        max_attempts: 4,
    };
}

pub async fn sdk_config(timeouts: SdkTimeouts) -> SdkConfig {
    loader(timeouts).load().await
}

/// The loader behind [`sdk_config`], for tools that add a profile, a region or an endpoint.
pub fn loader(timeouts: SdkTimeouts) -> ConfigLoader {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(timeouts.connect)
                .operation_attempt_timeout(timeouts.attempt)
                .operation_timeout(timeouts.operation)
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(timeouts.max_attempts))
}
