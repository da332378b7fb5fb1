//! What the function sends to SQS: rejected events to the dead-letter queue, and
//! `NumbersAssigned` notifications for the apps.

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::MessageAttributeValue;
use serde::Serialize;
use vnmask::domain::{Capability, Market, OrderId, Role, Session, UserId, VirtualNumber};
use vnmask::events::{EventId, RejectReason};

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

/// `NumbersAssigned`: for each participant, the number to show for (and dial to reach) each
/// other participant they may contact. Carries no real number.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NumbersAssigned {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub event_id: String,
    pub order_id: OrderId,
    pub version: u64,
    pub market: Market,
    pub participants: Vec<ParticipantNumbers>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ParticipantNumbers {
    pub user_id: UserId,
    pub role: Role,
    pub contacts: Vec<ContactNumber>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ContactNumber {
    /// The other participant.
    pub user_id: UserId,
    pub role: Role,
    /// What the participant sees for them and dials to reach them.
    pub number: VirtualNumber,
    /// What that number carries (`voice`, `sms`): an app offers a text only where `sms` is listed.
    pub capabilities: Vec<Capability>,
    /// Where the market recovers callers by PIN: this participant's own PIN for the contact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
}

impl NumbersAssigned {
    pub fn new(event_id: &EventId, session: &Session) -> Self {
        let participants = session
            .participants
            .iter()
            .map(|p| ParticipantNumbers {
                user_id: p.user_id.clone(),
                role: p.role.clone(),
                contacts: session
                    .contacts
                    .iter()
                    .filter_map(|c| {
                        let other = session.participant(c.other(&p.user_id)?)?;
                        Some(ContactNumber {
                            user_id: other.user_id.clone(),
                            role: other.role.clone(),
                            number: c.number.clone(),
                            capabilities: c.capabilities.iter().collect(),
                            pin: c.pin_of(&p.user_id).map(|p| p.expose().to_owned()),
                        })
                    })
                    .collect(),
            })
            .collect();
        NumbersAssigned {
            kind: "NumbersAssigned",
            event_id: event_id.as_str().to_owned(),
            order_id: session.order_id.clone(),
            version: session.version,
            market: session.market.clone(),
            participants,
        }
    }
}

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

#[cfg(test)]
mod tests {
    use serde_json::json;
    use vnmask::domain::{Capabilities, Contact, SessionState};
    use vnmask_tests::participant as person;

    use super::*;

    #[test]
    fn each_contact_says_what_its_number_carries() {
        let contact = |b: &str, number: &str, capabilities| Contact {
            a: "u-d".parse().unwrap(),
            b: b.parse().unwrap(),
            number: VirtualNumber::parse(number).unwrap(),
            capabilities,
            pins: None,
        };
        let voice_only = Capabilities {
            voice: true,
            sms: false,
        };
        let session = Session {
            order_id: "ord-1".parse().unwrap(),
            market: "IN".parse().unwrap(),
            version: 2,
            revision: 1,
            handovers: Vec::new(),
            state: SessionState::Active,
            participants: vec![
                person("driver", "u-d", "+919898765432"),
                person("customer", "u-c", "+919812345678"),
                person("merchant", "u-m", "+919812345679"),
            ],
            contacts: vec![
                contact("u-c", "+911140001000", voice_only),
                contact("u-m", "+911140001001", Capabilities::VOICE_AND_SMS),
            ],
            updated_at: 0,
            routes_until: 100,
            record: false,
        };
        let event_id: EventId = serde_json::from_str("\"e-1\"").unwrap();
        let note = NumbersAssigned::new(&event_id, &session);
        let json = serde_json::to_value(&note).unwrap();
        let driver = &json["participants"][0]["contacts"];
        assert_eq!(driver[0]["user_id"], "u-c");
        assert_eq!(driver[0]["capabilities"], json!(["voice"]));
        assert_eq!(driver[1]["capabilities"], json!(["voice", "sms"]));
        let customer = &json["participants"][1]["contacts"];
        assert_eq!(
            customer,
            &json!([{"user_id": "u-d", "role": "driver", "number": "+911140001000",
                     "capabilities": ["voice"]}])
        );
    }
}
