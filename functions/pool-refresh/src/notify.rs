//! Telling apps their new numbers after a move: `NumbersAssigned` on the notifications queue
//! the assign function uses (`VNMASK_NOTIFY_QUEUE_URL`).

use async_trait::async_trait;
use aws_sdk_sqs::error::DisplayErrorContext;
use sha2::{Digest, Sha256};
use vnmask::notification::NumbersAssigned;

/// Where `NumbersAssigned` of a move goes.
#[async_trait]
pub trait Notify: Send + Sync {
    async fn notify(&self, note: &NumbersAssigned) -> Result<(), NotifyError>;
}

#[derive(Debug, thiserror::Error)]
#[error("SQS did not accept the notification: {0}")]
pub struct NotifyError(String);

/// An SQS notifications queue.
pub struct SqsNotify {
    sqs: aws_sdk_sqs::Client,
    url: String,
}

impl SqsNotify {
    pub fn new(sqs: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        SqsNotify {
            sqs,
            url: url.into(),
        }
    }
}

#[async_trait]
impl Notify for SqsNotify {
    async fn notify(&self, note: &NumbersAssigned) -> Result<(), NotifyError> {
        let body = serde_json::to_string(note).map_err(|e| NotifyError(e.to_string()))?;
        let mut send = self
            .sqs
            .send_message()
            .queue_url(&self.url)
            .message_body(body);
        if self.url.ends_with(".fifo") {
            // One order's notifications in order; a move is sent once per revision.
            let dedup = Sha256::digest(format!("move:{}:{}", note.order_id, note.revision));
            send = send
                .message_group_id(note.order_id.as_str())
                .message_deduplication_id(hex::encode(dedup));
        }
        send.send()
            .await
            .map(drop)
            .map_err(|e| NotifyError(DisplayErrorContext(e).to_string()))
    }
}
