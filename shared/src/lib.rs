//! vnmask: phone-number masking for orders. The shared library of every Lambda function.
//!
//! - [`domain`]: numbers, sessions, routes (pure)
//! - [`assignment`]: the assignment policy (pure) and the service that applies order changes
//! - [`routing`]: where a call or text to a virtual number goes, decided from one route read
//! - [`events`]: the order-event contract: what producers publish, parsed and validated
//! - [`pool`]: keeping the pool in step with the providers, and its headroom (pure)
//! - [`store`]: role traits (one per kind of user) with DynamoDB and in-memory implementations
//! - [`crypto`]: HMAC person keys and AES-GCM sealing of real numbers
//! - [`providers`]: each telecom provider's request format, signature and answer (pure)
//! - [`aws`]: SDK configuration shared by the functions
//! - [`config`]: typed configuration from the environment, and the redacting `Secret`
//! - [`secrets`]: credentials from AWS Secrets Manager, layered over the environment
//! - [`telemetry`]: CloudWatch embedded-metric-format (EMF) metrics and the panic hook

pub mod assignment;
pub mod aws;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod events;
pub mod notification;
pub mod pool;
pub mod providers;
pub mod routing;
pub mod secrets;
pub mod store;
pub mod telemetry;
