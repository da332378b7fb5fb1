//! The order-event contract (docs/events.md, docs/events.schema.json): what the order service
//! publishes, parsed into typed values, and what each event asks of the order's session.
//!
//! Events carry **snapshots**: every event that names participants names all of them, so the
//! newest event wins whole and a participant missing from it (a replaced driver) loses their
//! routes at once.

use std::fmt;

use serde::{Deserialize, Deserializer};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::assignment::{EndTerms, OrderChange, OrderUpdate};
use crate::domain::{validate_participants, Market, OrderId, Participant, SessionError};

/// The largest accepted version: 2^53 − 1, the largest integer every JSON producer writes exactly.
pub const MAX_VERSION: u64 = (1 << 53) - 1;

/// The fields every event carries, whatever its type.
const ENVELOPE: [&str; 6] = [
    "event_id",
    "type",
    "order_id",
    "version",
    "occurred_at",
    "market",
];
const PARTICIPANT_FIELDS: [&str; 3] = ["role", "user_id", "phone"];

/// What an event's `type` says happened to the order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventType {
    /// A driver took the order: create (or extend) the session and assign numbers.
    DriverAssigned,
    /// Another driver replaces the previous one, whose routes end at once.
    DriverReassigned,
    /// Another participant joins: a second customer of a shared ride, a merchant.
    ParticipantAdded,
    OrderCompleted,
    OrderCancelled,
    /// A type this contract does not know yet: acknowledged and counted, never failed.
    Other(String),
}

impl EventType {
    pub fn as_str(&self) -> &str {
        match self {
            EventType::DriverAssigned => "DriverAssigned",
            EventType::DriverReassigned => "DriverReassigned",
            EventType::ParticipantAdded => "ParticipantAdded",
            EventType::OrderCompleted => "OrderCompleted",
            EventType::OrderCancelled => "OrderCancelled",
            EventType::Other(name) => name,
        }
    }

    /// The name as a metric dimension: every unknown type is `Other`, so that producers cannot
    /// grow the number of metric series.
    pub fn metric_name(&self) -> &'static str {
        match self {
            EventType::DriverAssigned => "DriverAssigned",
            EventType::DriverReassigned => "DriverReassigned",
            EventType::ParticipantAdded => "ParticipantAdded",
            EventType::OrderCompleted => "OrderCompleted",
            EventType::OrderCancelled => "OrderCancelled",
            EventType::Other(_) => "Other",
        }
    }

    /// Whether events of this type carry the order's participant list.
    pub fn names_participants(&self) -> bool {
        matches!(
            self,
            EventType::DriverAssigned | EventType::DriverReassigned | EventType::ParticipantAdded
        )
    }

    fn parse(name: &str) -> Result<Self, &'static str> {
        Ok(match name {
            "DriverAssigned" => EventType::DriverAssigned,
            "DriverReassigned" => EventType::DriverReassigned,
            "ParticipantAdded" => EventType::ParticipantAdded,
            "OrderCompleted" => EventType::OrderCompleted,
            "OrderCancelled" => EventType::OrderCancelled,
            other => {
                let mut bytes = other.bytes();
                let well_formed = other.len() <= 64
                    && bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
                    && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.'));
                if !well_formed {
                    return Err("type must be a letter then up to 63 of A-Z, a-z, 0-9, '_', '.'");
                }
                EventType::Other(other.to_owned())
            }
        })
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        EventType::parse(&name).map_err(serde::de::Error::custom)
    }
}

/// The producer's id of one event, for tracing it through logs and the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId(String);

impl EventId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let id = String::deserialize(d)?;
        let ok = !id.is_empty()
            && id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if ok {
            Ok(EventId(id))
        } else {
            Err(serde::de::Error::custom(
                "event id must be 1-128 characters of A-Z, a-z, 0-9, '.', '_', ':', '-'",
            ))
        }
    }
}

fn rfc3339<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
    let s = String::deserialize(d)?;
    OffsetDateTime::parse(&s, &Rfc3339)
        .map_err(|_| serde::de::Error::custom("occurred_at must be an RFC 3339 date-time"))
}

/// One order event as the order service publishes it.
#[derive(Debug, Clone, Deserialize)]
pub struct OrderEvent {
    pub event_id: EventId,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub order_id: OrderId,
    /// Grows with every change of the order; an event not newer than the applied one is stale.
    pub version: u64,
    /// When the order changed; informational (ordering is by `version`).
    #[serde(deserialize_with = "rfc3339")]
    pub occurred_at: OffsetDateTime,
    pub market: Market,
    /// The order's full current participant list (required when the type names participants).
    #[serde(default)]
    pub participants: Option<Vec<Participant>>,
    /// Whether the order's connected calls are recorded (opt-in, where consent and the law allow;
    /// docs/events.md). Read with a participants snapshot, like the participants themselves.
    #[serde(default)]
    pub record: bool,
}

/// Why a message is not a valid order event. Never carries a phone number or any other value
/// from the message, only the path of the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("body is not JSON: {0}")]
    Malformed(String),
    #[error("body must be a JSON object")]
    NotAnObject,
    #[error("field `{0}` is required")]
    Missing(String),
    #[error("field `{0}` has the wrong type or an invalid value")]
    Invalid(String),
    #[error("field `{0}` is not a valid phone number (E.164, valid for its country)")]
    InvalidPhone(String),
    #[error("field `market` is not an ISO 3166-1 alpha-2 country code")]
    InvalidMarket,
    #[error("field `version` must be at most 2^53-1")]
    VersionTooLarge,
    #[error(transparent)]
    Participants(#[from] SessionError),
}

/// Why an event can never be applied: the reason a dead-lettered message carries
/// (`vnmask_reason`; docs/events.md lists the codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The body is not a JSON object.
    MalformedJson,
    /// A required field is missing, or a value has the wrong type or form.
    SchemaViolation,
    /// A `phone` is not E.164 or not a valid number for its country.
    InvalidPhone,
    /// `market` is not a country code, or not a served market.
    UnknownMarket,
    /// The same person (`user_id` or `phone`) appears twice.
    PersonTwice,
    /// More participants than an order may have.
    TooManyParticipants,
    /// The store refused the change for good (e.g. an unreadable stored session).
    StoreRejected,
}

impl RejectReason {
    pub const ALL: [RejectReason; 7] = [
        RejectReason::MalformedJson,
        RejectReason::SchemaViolation,
        RejectReason::InvalidPhone,
        RejectReason::UnknownMarket,
        RejectReason::PersonTwice,
        RejectReason::TooManyParticipants,
        RejectReason::StoreRejected,
    ];

    /// The stable, machine-readable code, for message attributes, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::MalformedJson => "malformed_json",
            RejectReason::SchemaViolation => "schema_violation",
            RejectReason::InvalidPhone => "invalid_phone",
            RejectReason::UnknownMarket => "unknown_market",
            RejectReason::PersonTwice => "person_twice",
            RejectReason::TooManyParticipants => "too_many_participants",
            RejectReason::StoreRejected => "store_rejected",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EventError {
    /// Why the event is dead-lettered.
    pub fn reason(&self) -> RejectReason {
        match self {
            EventError::Malformed(_) | EventError::NotAnObject => RejectReason::MalformedJson,
            EventError::Missing(_) | EventError::Invalid(_) | EventError::VersionTooLarge => {
                RejectReason::SchemaViolation
            }
            EventError::InvalidPhone(_) => RejectReason::InvalidPhone,
            EventError::InvalidMarket => RejectReason::UnknownMarket,
            EventError::Participants(e) => participants_reason(e),
        }
    }
}

/// Why an invalid participant list is dead-lettered.
pub fn participants_reason(e: &SessionError) -> RejectReason {
    match e {
        SessionError::PersonTwice { .. } => RejectReason::PersonTwice,
        SessionError::TooManyParticipants(_) => RejectReason::TooManyParticipants,
        _ => RejectReason::SchemaViolation,
    }
}

impl OrderEvent {
    /// Parses and validates a message body: the envelope, the participant list when the type
    /// names one (every phone number valid, nobody twice, at most six).
    pub fn parse(body: &str) -> Result<OrderEvent, EventError> {
        let value: Value = serde_json::from_str(body).map_err(|e| {
            if e.is_data() {
                EventError::NotAnObject
            } else {
                // Syntax and end-of-input errors name a position, never a value.
                EventError::Malformed(e.to_string())
            }
        })?;
        let object = value.as_object().ok_or(EventError::NotAnObject)?;
        // Checked before typing so that the error can name the missing field.
        for field in ENVELOPE {
            if object.get(field).is_none_or(Value::is_null) {
                return Err(EventError::Missing(field.to_owned()));
            }
        }
        if let Some(Value::Array(people)) = object.get("participants") {
            for (i, person) in people.iter().enumerate() {
                let Some(person) = person.as_object() else {
                    return Err(EventError::Invalid(format!("participants[{i}]")));
                };
                for field in PARTICIPANT_FIELDS {
                    if person.get(field).is_none_or(Value::is_null) {
                        return Err(EventError::Missing(format!("participants[{i}].{field}")));
                    }
                }
            }
        }
        let event: OrderEvent = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let in_alternates = e.path().iter().any(
                |s| matches!(s, serde_path_to_error::Segment::Map { key } if key == "alternate_phones"),
            );
            match e.path().iter().next_back() {
                Some(serde_path_to_error::Segment::Map { key }) if key == "phone" => {
                    EventError::InvalidPhone(path)
                }
                Some(serde_path_to_error::Segment::Seq { .. }) if in_alternates => {
                    EventError::InvalidPhone(path)
                }
                Some(serde_path_to_error::Segment::Map { key }) if key == "market" => {
                    EventError::InvalidMarket
                }
                _ => EventError::Invalid(path),
            }
        })?;
        if event.version > MAX_VERSION {
            return Err(EventError::VersionTooLarge);
        }
        match &event.participants {
            Some(people) => validate_participants(people)?,
            None if event.event_type.names_participants() => {
                return Err(EventError::Missing("participants".into()))
            }
            None => {}
        }
        Ok(event)
    }

    /// What the event asks of the order's session; `None` for types this contract does not know.
    pub fn update(&self) -> Option<OrderUpdate> {
        let change = match &self.event_type {
            EventType::DriverAssigned
            | EventType::DriverReassigned
            | EventType::ParticipantAdded => {
                OrderChange::Participants(self.participants.clone().unwrap_or_default())
            }
            EventType::OrderCompleted | EventType::OrderCancelled => {
                OrderChange::End(EndTerms::default())
            }
            EventType::Other(_) => return None,
        };
        Some(OrderUpdate {
            order_id: self.order_id.clone(),
            market: self.market.clone(),
            version: self.version,
            change,
            record: self.record,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ASSIGNED: &str = r#"{"event_id": "e-81f2", "type": "DriverAssigned", "order_id": "ord-1001", "version": 3,
        "occurred_at": "2026-11-24T10:15:00Z", "market": "IN",
        "participants": [{"role": "customer", "user_id": "u-c", "phone": "+919812345678"},
                         {"role": "driver",   "user_id": "u-d", "phone": "+919898765432"}]}"#;

    fn with(field: &str, value: Value) -> String {
        let mut v: Value = serde_json::from_str(ASSIGNED).unwrap();
        v[field] = value;
        v.to_string()
    }

    #[test]
    fn issue_example_becomes_a_participants_snapshot() {
        let event = OrderEvent::parse(ASSIGNED).unwrap();
        assert_eq!(event.event_type, EventType::DriverAssigned);
        assert_eq!(event.event_id.as_str(), "e-81f2");
        let update = event.update().unwrap();
        assert_eq!(update.order_id.as_str(), "ord-1001");
        assert_eq!(update.version, 3);
        let OrderChange::Participants(people) = update.change else {
            panic!("expected participants");
        };
        assert_eq!(people.len(), 2);
        assert_eq!(people[1].role.as_str(), "driver");
        assert_eq!(people[1].phone.expose(), "+919898765432");
    }

    #[test]
    fn completion_needs_no_participants() {
        let mut v: Value = serde_json::from_str(ASSIGNED).unwrap();
        v["type"] = "OrderCompleted".into();
        v.as_object_mut().unwrap().remove("participants");
        let update = OrderEvent::parse(&v.to_string()).unwrap().update().unwrap();
        assert!(matches!(update.change, OrderChange::End(ref t) if *t == EndTerms::default()));
    }

    #[test]
    fn unknown_type_parses_but_asks_nothing() {
        let event = OrderEvent::parse(&with("type", "DriverArrived".into())).unwrap();
        assert_eq!(event.event_type.metric_name(), "Other");
        assert!(event.update().is_none());
    }

    #[test]
    fn each_defect_has_its_reason() {
        let cases = [
            ("{\"type\": ", "malformed_json"),
            ("[1, 2]", "malformed_json"),
            (&with("order_id", Value::Null), "schema_violation"),
            (&with("version", "3".into()), "schema_violation"),
            (
                &with("version", (MAX_VERSION + 1).into()),
                "schema_violation",
            ),
            (&with("occurred_at", "yesterday".into()), "schema_violation"),
            (&with("type", "+919812345678".into()), "schema_violation"),
            (&with("market", "XX".into()), "unknown_market"),
            (&with("participants", Value::Null), "schema_violation"),
        ];
        for (body, reason) in cases {
            let err = OrderEvent::parse(body).unwrap_err();
            assert_eq!(err.reason().as_str(), reason, "{body}: {err}");
        }
    }

    #[test]
    fn bad_phone_is_named_by_its_path_without_its_digits() {
        for bad in [
            serde_json::json!("+91 98987 65432"),
            serde_json::json!(919898765432u64),
        ] {
            let mut v: Value = serde_json::from_str(ASSIGNED).unwrap();
            v["participants"][1]["phone"] = bad;
            let err = OrderEvent::parse(&v.to_string()).unwrap_err();
            assert_eq!(
                err,
                EventError::InvalidPhone("participants[1].phone".into())
            );
            assert!(!err.to_string().contains("98987"));
        }
    }

    #[test]
    fn wrongly_typed_value_is_not_echoed() {
        let err = OrderEvent::parse(&with("version", "+919812345678".into())).unwrap_err();
        assert!(!err.to_string().contains("9812345678"), "{err}");
        assert_eq!(err, EventError::Invalid("version".into()));
    }

    #[test]
    fn person_twice_and_crowds_are_refused() {
        let mut v: Value = serde_json::from_str(ASSIGNED).unwrap();
        v["participants"][1]["phone"] = "+919812345678".into();
        assert_eq!(
            OrderEvent::parse(&v.to_string())
                .unwrap_err()
                .reason()
                .as_str(),
            "person_twice"
        );
        let crowd: Vec<Value> = (0..7)
            .map(|i| serde_json::json!({"role": "customer", "user_id": format!("u{i}"), "phone": format!("+91981234567{i}")}))
            .collect();
        assert_eq!(
            OrderEvent::parse(&with("participants", crowd.into()))
                .unwrap_err()
                .reason()
                .as_str(),
            "too_many_participants"
        );
    }

    #[test]
    fn missing_participant_field_is_named() {
        let mut v: Value = serde_json::from_str(ASSIGNED).unwrap();
        v["participants"][0]
            .as_object_mut()
            .unwrap()
            .remove("user_id");
        assert_eq!(
            OrderEvent::parse(&v.to_string()).unwrap_err(),
            EventError::Missing("participants[0].user_id".into())
        );
    }

    #[test]
    fn recording_is_off_unless_the_event_asks_for_it_with_a_boolean() {
        assert!(
            !OrderEvent::parse(ASSIGNED)
                .unwrap()
                .update()
                .unwrap()
                .record
        );
        let on = OrderEvent::parse(&with("record", true.into())).unwrap();
        assert!(on.update().unwrap().record);
        for bad in [Value::from("yes"), Value::from(1)] {
            assert_eq!(
                OrderEvent::parse(&with("record", bad)).unwrap_err(),
                EventError::Invalid("record".into())
            );
        }
    }

    #[test]
    fn alternate_phones_are_read_strictly_and_count_as_the_person() {
        let mut v: Value = serde_json::from_str(ASSIGNED).unwrap();
        v["participants"][1]["alternate_phones"] = serde_json::json!(["+919898765433"]);
        let event = OrderEvent::parse(&v.to_string()).unwrap();
        let people = event.participants.unwrap();
        assert_eq!(people[1].alternate_phones[0].expose(), "+919898765433");
        assert!(people[0].alternate_phones.is_empty());

        v["participants"][1]["alternate_phones"] = serde_json::json!(["+919898765433", "0989"]);
        let err = OrderEvent::parse(&v.to_string()).unwrap_err();
        assert_eq!(
            err,
            EventError::InvalidPhone("participants[1].alternate_phones[1]".into())
        );
        assert_eq!(err.reason().as_str(), "invalid_phone");
        assert!(!err.to_string().contains("0989"));

        // Someone else's main phone, or four alternates, is refused.
        v["participants"][1]["alternate_phones"] = serde_json::json!(["+919812345678"]);
        assert_eq!(
            OrderEvent::parse(&v.to_string())
                .unwrap_err()
                .reason()
                .as_str(),
            "person_twice"
        );
        v["participants"][1]["alternate_phones"] = serde_json::json!([
            "+919898765433",
            "+919898765434",
            "+919898765435",
            "+919898765436"
        ]);
        assert_eq!(
            OrderEvent::parse(&v.to_string())
                .unwrap_err()
                .reason()
                .as_str(),
            "schema_violation"
        );
    }
}
