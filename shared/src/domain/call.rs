//! Calls and texts: what a person is doing through a virtual number, and the provider's id of it.

use std::fmt;

use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_id_rejects_markup_and_length() {
        assert!(CallId::parse("CA0123456789abcdef0123456789abcdef").is_ok());
        for bad in ["", "CA<script>", "a b", "x\n", &"x".repeat(65)] {
            assert_eq!(CallId::parse(bad), Err(CallIdError));
        }
    }
}
