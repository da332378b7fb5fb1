//! The telecom providers' side of routing, as pure code: what each provider asks (request
//! parsing), how it proves it is that provider (signatures and tokens), and the answer it
//! expects (responses). The route lookup between asking and answering is the caller's business.
//!
//! - [`twilio`]: form-encoded webhooks signed with `X-Twilio-Signature`, answered with TwiML
//! - [`exotel`]: the Connect applet's dynamic URL (a secret token, optionally a source-IP list), answered with JSON
//! - [`generic`]: our own JSON contract for carriers and in-house IVRs, signed with HMAC-SHA256

pub mod exotel;
pub mod generic;
pub mod twilio;

use std::borrow::Cow;
use std::fmt;

use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::domain::{PhoneError, RealNumber, Route, UnixTime, VnNumber};

/// Why a provider request cannot be read. Messages never echo a value from the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the request is not valid UTF-8")]
    NotUtf8,
    #[error("parameter {0} is missing")]
    Missing(&'static str),
    #[error("parameter {0} is malformed")]
    Malformed(&'static str),
    #[error("the body is not the expected JSON (line {line}, column {column})")]
    Json { line: usize, column: usize },
}

/// Why a request is not believed to come from the provider. Nothing is looked up for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the signature is missing")]
    MissingSignature,
    #[error("the signature does not match")]
    BadSignature,
    #[error("the timestamp is missing or malformed")]
    BadTimestamp,
    #[error("the request is more than 5 minutes old or ahead")]
    Stale,
    #[error("the token is missing or wrong")]
    BadToken,
    #[error("the source address is not allowed")]
    SourceNotAllowed,
}

impl AuthError {
    /// A short label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthError::MissingSignature => "missing_signature",
            AuthError::BadSignature => "bad_signature",
            AuthError::BadTimestamp => "bad_timestamp",
            AuthError::Stale => "stale",
            AuthError::BadToken => "bad_token",
            AuthError::SourceNotAllowed => "source_not_allowed",
        }
    }
}

/// A secret shared with a provider: an auth token, a URL token, an HMAC key. `Debug` redacts it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(bytes.into())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Equality whose time does not depend on where the inputs differ.
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

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
    pub fn parse(s: &str, parameter: &'static str) -> Result<Self, RequestError> {
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if ok {
            Ok(CallId(s.to_owned()))
        } else {
            Err(RequestError::Malformed(parameter))
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

/// What a provider asks: where does this call (or text) from `caller` to the dialled number go?
#[derive(Debug, Clone)]
pub struct RouteQuery {
    pub channel: Channel,
    pub call_id: CallId,
    /// `Err` when the caller id is withheld or not E.164: such calls are refused, never guessed at.
    /// Only the form is checked: routes exist only for numbers that passed the strict check at
    /// assignment, so a number the numbering plan refuses finds no route.
    pub caller: Result<RealNumber, PhoneError>,
    /// `Err` when the dialled number is not E.164 (so it cannot be one of ours). Form only, too.
    pub dialled: Result<VnNumber, PhoneError>,
    /// The text of a message, to relay.
    pub text: Option<String>,
}

impl RouteQuery {
    pub fn new(
        channel: Channel,
        call_id: CallId,
        caller: &str,
        dialled: &str,
        text: Option<String>,
    ) -> Self {
        RouteQuery {
            channel,
            call_id,
            caller: RealNumber::parse_form(caller),
            dialled: VnNumber::parse_form(dialled),
            text,
        }
    }

    /// The route key to look up, or why there is nothing worth looking up.
    pub fn lookup(&self) -> Result<(&RealNumber, &VnNumber), Refusal> {
        let caller = self.caller.as_ref().map_err(|_| Refusal::CallerUnknown)?;
        let dialled = self.dialled.as_ref().map_err(|_| Refusal::NotOurNumber)?;
        Ok((caller, dialled))
    }
}

/// Why a call or message is not connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "&'static str")]
pub enum Refusal {
    /// The caller id is withheld, anonymous or not an E.164 number.
    CallerUnknown,
    /// The dialled number is not an E.164 number.
    NotOurNumber,
    /// No live route links this caller to this number: a stranger, or an ended order.
    NoRoute,
    /// The route could not be read: fail closed.
    StoreError,
    /// The route could not be read in time: fail closed.
    StoreTimeout,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::CallerUnknown => "caller_unknown",
            Refusal::NotOurNumber => "not_our_number",
            Refusal::NoRoute => "no_route",
            Refusal::StoreError => "store_error",
            Refusal::StoreTimeout => "store_timeout",
        }
    }
}

impl From<Refusal> for &'static str {
    fn from(r: Refusal) -> &'static str {
        r.as_str()
    }
}

/// The answer to a [`RouteQuery`]. One is made per request and moved, never stored in bulk,
/// so the size difference of its variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Connect to `route.callee`, presenting `route.caller_id()`.
    Connect(Route),
    Refuse(Refusal),
}

impl Decision {
    /// Decides from the lookup's result: only a route live at `now` connects.
    pub fn from_lookup(route: Option<Route>, now: UnixTime) -> Self {
        match route {
            Some(route) if route.is_live(now) => Decision::Connect(route),
            _ => Decision::Refuse(Refusal::NoRoute),
        }
    }
}

/// Decodes `application/x-www-form-urlencoded` pairs in order, strictly: the input and every
/// decoded name and value must be UTF-8 (a lossy decoding would change what was signed).
pub fn parse_form(input: &[u8]) -> Result<Vec<(String, String)>, RequestError> {
    decode_pairs(input, true)
}

/// Decodes a URL's query string like [`parse_form`], except that `+` stays a plus sign: a
/// provider that leaves the `+` of `+91…` unencoded in a URL must not turn it into a space.
pub fn parse_query(query: &str) -> Result<Vec<(String, String)>, RequestError> {
    decode_pairs(query.as_bytes(), false)
}

fn decode_pairs(input: &[u8], plus_is_space: bool) -> Result<Vec<(String, String)>, RequestError> {
    let text = std::str::from_utf8(input).map_err(|_| RequestError::NotUtf8)?;
    let decode = |s: &str| -> Result<String, RequestError> {
        let spaced = if plus_is_space && s.contains('+') {
            Cow::Owned(s.replace('+', " "))
        } else {
            Cow::Borrowed(s)
        };
        percent_decode_str(&spaced)
            .decode_utf8()
            .map(Cow::into_owned)
            .map_err(|_| RequestError::NotUtf8)
    };
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(name)?, decode(value)?))
        })
        .collect()
}

/// The first value of parameter `name`.
pub(crate) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding_keeps_order_and_plus_signs() {
        let form = parse_form(b"From=%2B919810000001&To=%2B911140001000&Body=a+b%2Bc&Empty=&Bare")
            .unwrap();
        assert_eq!(
            form,
            vec![
                ("From".into(), "+919810000001".into()),
                ("To".into(), "+911140001000".into()),
                ("Body".into(), "a b+c".into()),
                ("Empty".into(), "".into()),
                ("Bare".into(), "".into()),
            ]
        );
    }

    #[test]
    fn query_keeps_a_raw_plus() {
        assert_eq!(
            parse_query("CallFrom=+919810000001&CallTo=%2B911140001000").unwrap(),
            vec![
                ("CallFrom".into(), "+919810000001".into()),
                ("CallTo".into(), "+911140001000".into()),
            ]
        );
    }

    #[test]
    fn form_with_invalid_utf8_is_an_error() {
        assert_eq!(parse_form(b"Body=%FF%FE"), Err(RequestError::NotUtf8));
        assert_eq!(parse_form(b"Body=\xff"), Err(RequestError::NotUtf8));
    }

    #[test]
    fn call_id_rejects_markup_and_length() {
        assert!(CallId::parse("CA0123456789abcdef0123456789abcdef", "CallSid").is_ok());
        for bad in ["", "CA<script>", "a b", "x\n", &"x".repeat(65)] {
            assert_eq!(
                CallId::parse(bad, "CallSid"),
                Err(RequestError::Malformed("CallSid"))
            );
        }
    }

    #[test]
    fn withheld_or_national_callers_have_nothing_to_look_up() {
        let id = CallId::parse("c1", "id").unwrap();
        for caller in [
            "anonymous",
            "",
            "09810000001",
            "Restricted",
            "+0919810000001",
        ] {
            let q = RouteQuery::new(Channel::Voice, id.clone(), caller, "+911140001000", None);
            assert_eq!(
                q.lookup().unwrap_err(),
                Refusal::CallerUnknown,
                "{caller:?}"
            );
        }
        let q = RouteQuery::new(Channel::Voice, id, "+919810000001", "01140001000", None);
        assert_eq!(q.lookup().unwrap_err(), Refusal::NotOurNumber);
    }

    #[test]
    fn twilio_anonymous_caller_id_is_looked_up_but_can_never_have_a_route() {
        // Twilio's "+266696687" has the E.164 form, so it is looked up; no participant can have
        // it (the numbering plan refuses it), so no route answers it.
        let id = CallId::parse("c1", "id").unwrap();
        let q = RouteQuery::new(Channel::Voice, id, "+266696687", "+911140001000", None);
        assert!(q.lookup().is_ok());
        assert!(RealNumber::parse("+266696687").is_err());
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(
            format!("{:?}", Secret::new("hunter2")),
            "Secret(<redacted>)"
        );
    }
}
