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
        if safe_id(s, Self::MAX_LEN) {
            Ok(CallId(s.to_owned()))
        } else {
            Err(CallIdError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// 1 to `max` characters of `A-Z a-z 0-9 . _ : -`: a provider's id that may be logged.
fn safe_id(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
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

/// The end of a connected call, from the provider's callback: which call, how it ended, how
/// long the two talked (0 unless answered) and, for a recorded call whose provider says so in
/// the same report (Exotel), where the recording is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEnd {
    pub call_id: CallId,
    pub status: DialStatus,
    pub talk_seconds: u32,
    pub recording: Option<Recording>,
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
            recording: None,
        }
    }

    /// This end, with the recording its report named.
    pub fn with_recording(self, recording: Option<Recording>) -> Self {
        CallEnd { recording, ..self }
    }
}

/// Why a provider's recording reference is refused. Never carries the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordingError {
    #[error("a recording id must be 1-64 characters of A-Z, a-z, 0-9, '.', '_', ':', '-'")]
    Id,
    #[error(
        "a recording URL must be an https URL of at most 2048 characters, without credentials"
    )]
    Url,
}

/// Where a provider keeps a recorded call's audio: its id of the recording, when it has one apart
/// from the URL, and the URL the platform fetches the audio from with its own provider
/// credentials. vnmask passes these on and keeps no audio. The URL is never logged: whoever
/// holds it may be able to fetch the recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recording {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording_id: Option<String>,
    pub recording_url: String,
    /// Seconds of audio, when the provider says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording_seconds: Option<u32>,
}

impl Recording {
    pub const MAX_URL_LEN: usize = 2048;

    /// Checks what a provider sent: the id in the safe alphabet, the URL an absolute `https`
    /// URL with a host and no user or password.
    pub fn parse(
        id: Option<&str>,
        url: &str,
        seconds: Option<u32>,
    ) -> Result<Self, RecordingError> {
        if let Some(id) = id {
            if !safe_id(id, CallId::MAX_LEN) {
                return Err(RecordingError::Id);
            }
        }
        let parsed = url::Url::parse(url).map_err(|_| RecordingError::Url)?;
        let acceptable = url.len() <= Self::MAX_URL_LEN
            && parsed.scheme() == "https"
            && parsed.host_str().is_some_and(|h| !h.is_empty())
            && parsed.username().is_empty()
            && parsed.password().is_none();
        if !acceptable {
            return Err(RecordingError::Url);
        }
        Ok(Recording {
            recording_id: id.map(str::to_owned),
            recording_url: url.to_owned(),
            recording_seconds: seconds,
        })
    }
}

/// A provider's report that a connected call's recording is ready (Twilio's recording-status
/// callback), read by call id like the call's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingReady {
    pub call_id: CallId,
    pub recording: Recording,
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
    fn a_recording_is_an_https_url_without_credentials_and_a_safe_id() {
        let twilio = "https://api.twilio.com/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Recordings/RE0123456789abcdef0123456789abcdef";
        let ok =
            Recording::parse(Some("RE0123456789abcdef0123456789abcdef"), twilio, Some(42)).unwrap();
        assert_eq!(ok.recording_url, twilio);
        assert_eq!(ok.recording_seconds, Some(42));
        let exotel = "https://recordings.exotel.com/exotelrecordings/acme/b6cf1c5c8ec8d2bd.mp3";
        assert!(Recording::parse(None, exotel, None).is_ok());
        for bad in [
            "http://api.twilio.com/r.mp3",
            "https://user:pw@api.twilio.com/r.mp3",
            "javascript:alert(1)",
            "/relative/r.mp3",
            "",
            &format!("https://api.twilio.com/{}", "r".repeat(2048)),
        ] {
            assert_eq!(
                Recording::parse(None, bad, None),
                Err(RecordingError::Url),
                "{bad}"
            );
        }
        assert_eq!(
            Recording::parse(Some("RE<script>"), twilio, None),
            Err(RecordingError::Id)
        );
    }

    #[test]
    fn call_id_rejects_markup_and_length() {
        assert!(CallId::parse("CA0123456789abcdef0123456789abcdef").is_ok());
        for bad in ["", "CA<script>", "a b", "x\n", &"x".repeat(65)] {
            assert_eq!(CallId::parse(bad), Err(CallIdError));
        }
    }
}
