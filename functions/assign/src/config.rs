//! The assign function's own configuration: where rejected events and notifications go.

use vnmask::config::{parsed, required, ConfigError, Source};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// `VNMASK_DLQ_URL`: the order-events dead-letter queue, where permanently invalid events go.
    pub dead_letter_url: String,
    /// `VNMASK_NOTIFY_QUEUE_URL`: where `NumbersAssigned` notifications go, if anywhere.
    pub notify_url: Option<String>,
    /// `VNMASK_ASSIGN_CONCURRENCY`: orders of one batch applied at the same time.
    pub concurrency: usize,
}

impl QueueConfig {
    pub const DEFAULT_CONCURRENCY: usize = 16;

    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let dead_letter_url = queue_url("VNMASK_DLQ_URL", required(src, "VNMASK_DLQ_URL")?)?;
        let notify_url = src
            .get("VNMASK_NOTIFY_QUEUE_URL")
            .map(|url| queue_url("VNMASK_NOTIFY_QUEUE_URL", url))
            .transpose()?;
        let concurrency = parsed(src, "VNMASK_ASSIGN_CONCURRENCY", Self::DEFAULT_CONCURRENCY)?;
        if concurrency == 0 {
            return Err(ConfigError::Invalid {
                var: "VNMASK_ASSIGN_CONCURRENCY",
                reason: "must be at least 1".into(),
            });
        }
        Ok(QueueConfig {
            dead_letter_url,
            notify_url,
            concurrency,
        })
    }
}

fn queue_url(var: &'static str, url: String) -> Result<String, ConfigError> {
    let url = url.trim().to_owned();
    if url.starts_with("https://") || url.starts_with("http://") {
        Ok(url)
    } else {
        Err(ConfigError::Invalid {
            var,
            reason:
                "must be an SQS queue URL (https://sqs.<region>.amazonaws.com/<account>/<name>)"
                    .into(),
        })
    }
}

/// Whether SQS needs a message group id for this queue.
pub(crate) fn is_fifo(url: &str) -> bool {
    url.ends_with(".fifo")
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
    fn dead_letter_queue_is_required() {
        let err = QueueConfig::from_source(&src(&[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable VNMASK_DLQ_URL is required"
        );
    }

    #[test]
    fn notify_queue_is_optional_and_checked_when_set() {
        let dlq = "https://sqs.ap-south-1.amazonaws.com/123456789012/order-events-dlq";
        let cfg = QueueConfig::from_source(&src(&[("VNMASK_DLQ_URL", dlq)])).unwrap();
        assert_eq!(cfg.dead_letter_url, dlq);
        assert_eq!(cfg.notify_url, None);
        assert_eq!(cfg.concurrency, QueueConfig::DEFAULT_CONCURRENCY);
        let err = QueueConfig::from_source(&src(&[
            ("VNMASK_DLQ_URL", dlq),
            ("VNMASK_NOTIFY_QUEUE_URL", "numbers-assigned"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("VNMASK_NOTIFY_QUEUE_URL"));
    }

    #[test]
    fn zero_concurrency_is_refused() {
        let err = QueueConfig::from_source(&src(&[
            ("VNMASK_DLQ_URL", "http://127.0.0.1:5000/123456789012/dlq"),
            ("VNMASK_ASSIGN_CONCURRENCY", "0"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("VNMASK_ASSIGN_CONCURRENCY"));
    }
}
