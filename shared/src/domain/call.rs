//! Calls and texts: what a person is doing through a virtual number, and the provider's id of it.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::phone::{Market, VirtualNumber};
use super::session::{OrderId, Role, Route};

/// A call or message id outside the safe alphabet (it is logged, so it is never echoed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a call id must be 1-64 characters of A-Z, a-z, 0-9, '.', '_', ':', '-'")]
pub struct CallIdError;

/// What the person is doing: calling, or sending a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Voice,
    Sms,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Voice => "voice",
            Channel::Sms => "sms",
        }
    }
}

/// The provider's id of a call or message. It is logged, so it is held to a safe alphabet.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct CallId(String);

impl CallId {
    pub const MAX_LEN: usize = 64;

    /// Accepts 1–64 characters of `A-Z a-z 0-9 . _ : -`.
    pub fn parse(s: &str) -> Result<Self, CallIdError> {
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if ok {
            Ok(CallId(s.to_owned()))
        } else {
            Err(CallIdError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<CallId> for String {
    fn from(c: CallId) -> String {
        c.0
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a connected call joined, by role and without a number but the virtual one: enough to
/// tell the provider's report of its end, and never a way back to a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectedCall {
    pub call_id: CallId,
    pub order_id: OrderId,
    pub number: VirtualNumber,
    pub market: Market,
    pub caller_role: Role,
    pub callee_role: Role,
}

impl ConnectedCall {
    /// The call `call_id`, connected over `route`.
    pub fn new(call_id: CallId, route: &Route) -> Self {
        ConnectedCall {
            call_id,
            order_id: route.order_id.clone(),
            number: route.number.clone(),
            market: route.market.clone(),
            caller_role: route.caller_role.clone(),
            callee_role: route.callee_role.clone(),
        }
    }

    /// Who called whom: `customer->driver`.
    pub fn direction(&self) -> String {
        format!("{}->{}", self.caller_role, self.callee_role)
    }
}

/// How a connected call ended, as the provider reports it once the callee's leg is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DialStatus {
    /// The callee answered; the call has since ended.
    Answered,
    NoAnswer,
    Busy,
    Failed,
    /// The caller hung up before the callee answered.
    Canceled,
}

/// A provider's status word that is none of [`DialStatus`]'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a call status: answered, completed, no-answer, busy, failed or canceled")]
pub struct DialStatusError;

impl DialStatus {
    /// Reads the words Twilio's `DialCallStatus`, Exotel's `DialCallStatus` and the generic
    /// callback use: `completed` and `answered` both mean the callee answered.
    pub fn parse(s: &str) -> Result<Self, DialStatusError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "completed" | "answered" => Ok(DialStatus::Answered),
            "no-answer" | "no_answer" => Ok(DialStatus::NoAnswer),
            "busy" => Ok(DialStatus::Busy),
            "failed" => Ok(DialStatus::Failed),
            "canceled" | "cancelled" => Ok(DialStatus::Canceled),
            _ => Err(DialStatusError),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DialStatus::Answered => "answered",
            DialStatus::NoAnswer => "no-answer",
            DialStatus::Busy => "busy",
            DialStatus::Failed => "failed",
            DialStatus::Canceled => "canceled",
        }
    }

    pub fn answered(self) -> bool {
        self == DialStatus::Answered
    }
}

/// The end of a connected call, from the provider's callback: which call, how it ended and how
/// long the two talked (0 unless answered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEnd {
    pub call_id: CallId,
    pub status: DialStatus,
    pub talk_seconds: u32,
}

impl CallEnd {
    /// Talk time counts only for an answered call: a provider may report ringing time for the
    /// others.
    pub fn new(call_id: CallId, status: DialStatus, talk_seconds: u32) -> Self {
        let talk_seconds = if status.answered() { talk_seconds } else { 0 };
        CallEnd {
            call_id,
            status,
            talk_seconds,
        }
    }
}

/// How often a virtual number's connected calls were answered, over some days: what shows a
/// number that carriers have started to flag (its calls ring out unanswered).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnswerTally {
    /// Connected calls whose end a provider reported.
    pub attempted: u64,
    pub answered: u64,
}

impl AnswerTally {
    /// Answered over attempted; `None` before any call.
    pub fn rate(&self) -> Option<f64> {
        (self.attempted > 0).then(|| self.answered as f64 / self.attempted as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_statuses_read_every_providers_words_and_nothing_else() {
        for (word, status) in [
            ("completed", DialStatus::Answered),
            ("answered", DialStatus::Answered),
            ("no-answer", DialStatus::NoAnswer),
            ("busy", DialStatus::Busy),
            ("failed", DialStatus::Failed),
            ("canceled", DialStatus::Canceled),
            ("Cancelled", DialStatus::Canceled),
        ] {
            assert_eq!(DialStatus::parse(word), Ok(status), "{word}");
        }
        for bad in ["", "ringing", "in-progress", "null", "completed; drop"] {
            assert_eq!(DialStatus::parse(bad), Err(DialStatusError), "{bad}");
        }
        let unanswered = CallEnd::new(CallId::parse("CA1").unwrap(), DialStatus::Busy, 17);
        assert_eq!(unanswered.talk_seconds, 0);
    }

    #[test]
    fn call_id_rejects_markup_and_length() {
        assert!(CallId::parse("CA0123456789abcdef0123456789abcdef").is_ok());
        for bad in ["", "CA<script>", "a b", "x\n", &"x".repeat(65)] {
            assert_eq!(CallId::parse(bad), Err(CallIdError));
        }
    }
}
