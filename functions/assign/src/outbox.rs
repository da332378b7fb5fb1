//! What the function sends to SQS: rejected events to the dead-letter queue, and
//! `NumbersAssigned` notifications for the apps.

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::MessageAttributeValue;
use vnmask::events::RejectReason;
use vnmask::notification::NumbersAssigned;

use crate::config::{is_fifo, QueueConfig};

/// Message attribute names on dead-lettered messages (docs/events.md).
pub mod attribute {
    /// A reason code such as `invalid_phone`.
    pub const REASON: &str = "vnmask_reason";
    /// A sentence saying what is wrong, naming the field at fault but never a value.
    pub const DETAIL: &str = "vnmask_detail";
    /// The message id the event had on the order-events queue.
    pub const SOURCE_MESSAGE_ID: &str = "vnmask_source_message_id";
    /// The ARN of the order-events queue.
    pub const SOURCE_QUEUE: &str = "vnmask_source_queue";
}

/// Why an event can never be applied, as the dead-letter queue records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    /// Safe to show and log: names fields, never values.
    pub detail: String,
}

/// A record sent to the dead-letter queue.
pub struct DeadLetter<'a> {
    /// The original body, unchanged, so that the event can be redriven once fixed.
    pub body: &'a str,
    pub rejection: &'a Rejection,
    pub source_message_id: &'a str,
    pub source_queue: Option<&'a str>,
    /// The message group on a FIFO queue (the record's own group, else its order).
    pub group: &'a str,
}

#[derive(Debug, thiserror::Error)]
#[error("SQS did not accept the message: {0}")]
pub struct SendError(String);

/// The SQS side of the function.
#[derive(Clone)]
pub struct Outbox {
    sqs: aws_sdk_sqs::Client,
    dead_letter_url: String,
    notify_url: Option<String>,
}

impl Outbox {
    pub fn new(sqs: aws_sdk_sqs::Client, config: &QueueConfig) -> Self {
        Outbox {
            sqs,
            dead_letter_url: config.dead_letter_url.clone(),
            notify_url: config.notify_url.clone(),
        }
    }

    pub fn notifies(&self) -> bool {
        self.notify_url.is_some()
    }

    pub async fn dead_letter(&self, letter: &DeadLetter<'_>) -> Result<(), SendError> {
        let text = |v: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .map_err(|e| SendError(e.to_string()))
        };
        // SQS refuses empty bodies; an empty one is kept recognisable rather than dropped.
        let body = if letter.body.is_empty() {
            "(empty body)"
        } else {
            letter.body
        };
        let mut send = self
            .sqs
            .send_message()
            .queue_url(&self.dead_letter_url)
            .message_body(body)
            .message_attributes(attribute::REASON, text(letter.rejection.reason.as_str())?)
            .message_attributes(attribute::DETAIL, text(&letter.rejection.detail)?)
            .message_attributes(
                attribute::SOURCE_MESSAGE_ID,
                text(letter.source_message_id)?,
            );
        if let Some(queue) = letter.source_queue {
            send = send.message_attributes(attribute::SOURCE_QUEUE, text(queue)?);
        }
        if is_fifo(&self.dead_letter_url) {
            send = send
                .message_group_id(letter.group)
                .message_deduplication_id(letter.source_message_id);
        }
        send.send()
            .await
            .map(drop)
            .map_err(|e| SendError(DisplayErrorContext(e).to_string()))
    }

    /// Sends the notification if a notifications queue is configured.
    pub async fn notify(
        &self,
        note: &NumbersAssigned,
        source_message_id: &str,
    ) -> Result<(), SendError> {
        let Some(url) = &self.notify_url else {
            return Ok(());
        };
        let body = serde_json::to_string(note).map_err(|e| SendError(e.to_string()))?;
        let mut send = self.sqs.send_message().queue_url(url).message_body(body);
        if is_fifo(url) {
            // One order's notifications in order; a repeated send for one source message is dropped.
            send = send
                .message_group_id(note.order_id.as_str())
                .message_deduplication_id(source_message_id);
        }
        send.send()
            .await
            .map(drop)
            .map_err(|e| SendError(DisplayErrorContext(e).to_string()))
    }
}
