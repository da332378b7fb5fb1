//! What vnmask tells the apps: `NumbersAssigned`, after each write of a session (docs/events.md).

use serde::Serialize;

use crate::domain::{Capability, Market, OrderId, Role, Session, UserId, VirtualNumber};

/// `NumbersAssigned`: for each participant, the number to show for (and dial to reach) each
/// other participant they may contact. Carries no real number.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NumbersAssigned {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub event_id: String,
    pub order_id: OrderId,
    /// The version of the order event last applied.
    pub version: u64,
    /// Raised by every write of the session, an event's or a move of its pairs off a number
    /// leaving service (which keeps `version`): apps keep the highest (`version`, `revision`).
    pub revision: u64,
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
    /// The notification of `session` as written, for the event `event_id` (or the move) that
    /// wrote it.
    pub fn new(event_id: &str, session: &Session) -> Self {
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
                        // After the end, a direction that closed is no contact to show.
                        if !session.admits(&p.role, &other.role) {
                            return None;
                        }
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
            event_id: event_id.to_owned(),
            order_id: session.order_id.clone(),
            version: session.version,
            revision: session.revision,
            market: session.market.clone(),
            participants,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::{Capabilities, Contact, Participant, RealNumber, SessionState};
    use serde_json::json;

    use super::*;

    fn person(role: &str, user: &str, phone: &str) -> Participant {
        Participant {
            role: role.parse().unwrap(),
            user_id: user.parse().unwrap(),
            phone: RealNumber::parse(phone).unwrap(),
            alternate_phones: Vec::new(),
        }
    }

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
            closed_after_end: Vec::new(),
        };
        let note = NumbersAssigned::new("e-1", &session);
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
