//! Each telecom provider's format, as pure code: what it asks (request parsing into a
//! [`RouteQuery`]), how it proves it is that provider (signatures and tokens), and the answer
//! it expects (rendering a [`Decision`](crate::routing::Decision)).
//! Where a call goes is decided in [`crate::routing`].
//!
//! - [`twilio`]: form-encoded webhooks signed with `X-Twilio-Signature`, answered with TwiML
//! - [`exotel`]: the Connect applet's dynamic URL (a secret token, optionally a source-IP list), answered with JSON
//! - [`generic`]: our own JSON contract for carriers and in-house IVRs, signed with HMAC-SHA256

pub mod exotel;
pub mod generic;
pub mod plivo;
pub mod telnyx;
pub mod twilio;
pub mod vonage;

use std::borrow::Cow;
use std::io;

use percent_encoding::percent_decode_str;
use quick_xml::events::{BytesDecl, Event};
use quick_xml::Writer;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::domain::{CallId, Channel};
use crate::routing::RouteQuery;

/// Auth tokens and signing keys are configuration: the one `Secret` type lives in [`crate::config`].
pub use crate::config::Secret;

/// How far a signed request's timestamp may be from our clock, either way, in seconds (as
/// Telnyx's own SDKs allow).
pub const MAX_SKEW: u64 = 300;

/// How calls are connected and refused, whatever the provider: each renders it in its own
/// format (`<Dial>` timeouts, the refusal message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoiceSettings {
    /// Seconds the callee's phone rings (`<Dial timeout>`).
    pub dial_timeout: u32,
    /// Longest call in seconds (`<Dial timeLimit>`).
    pub time_limit: u32,
    pub refusal: VoiceRefusal,
    /// What a caller without a route hears when asked for a PIN, and after a wrong one.
    pub pin_prompts: PinPrompts,
}

/// What a caller is told when asked for a PIN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinPrompts {
    pub ask: String,
    pub again: String,
}

impl Default for PinPrompts {
    fn default() -> Self {
        PinPrompts {
            ask: "This number connects you to your contact for an order. If you are calling from \
                  another phone, enter the six-digit PIN shown next to this number in the app."
                .into(),
            again: "That PIN did not work. Please enter it again.".into(),
        }
    }
}

/// What a refused caller hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoiceRefusal {
    /// This message, then the call ends.
    Say(String),
    /// A busy signal; the call is not answered (and not billed).
    Reject,
}

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

/// An optional count of seconds: absent or empty is 0, anything but digits is malformed.
pub(crate) fn seconds(value: Option<&str>, name: &'static str) -> Result<u32, RequestError> {
    match value.map(str::trim) {
        None | Some("") => Ok(0),
        Some(v) => v.parse().map_err(|_| RequestError::Malformed(name)),
    }
}

/// Equality whose time does not depend on where the inputs differ.
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// A request's parameters in order, decoded. A name or value borrows from the request unless
/// decoding changed it.
pub type Params<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

/// Decodes `application/x-www-form-urlencoded` pairs in order, strictly: the input and every
/// decoded name and value must be UTF-8 (a lossy decoding would change what was signed).
pub fn parse_form(input: &[u8]) -> Result<Params<'_>, RequestError> {
    let text = std::str::from_utf8(input).map_err(|_| RequestError::NotUtf8)?;
    decode_pairs(text, true)
}

/// Decodes a URL's query string like [`parse_form`], except that `+` stays a plus sign: a
/// provider that leaves the `+` of `+91…` unencoded in a URL must not turn it into a space.
pub fn parse_query(query: &str) -> Result<Params<'_>, RequestError> {
    decode_pairs(query, false)
}

fn decode_pairs(text: &str, plus_is_space: bool) -> Result<Params<'_>, RequestError> {
    // At most one pair per `&`, and one more: sized once rather than grown pair by pair.
    let mut params = Vec::with_capacity(text.bytes().filter(|&b| b == b'&').count() + 1);
    for pair in text.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        params.push((
            decode_component(name, plus_is_space)?,
            decode_component(value, plus_is_space)?,
        ));
    }
    Ok(params)
}

/// Percent-decodes one name or value, each `+` a space first when `plus_is_space`. Borrows
/// `s` when there is nothing to decode (it is UTF-8 already).
fn decode_component(s: &str, plus_is_space: bool) -> Result<Cow<'_, str>, RequestError> {
    let spaced = plus_is_space && s.contains('+');
    if !spaced && !s.contains('%') {
        return Ok(Cow::Borrowed(s));
    }
    let mut bytes = Vec::with_capacity(s.len());
    if spaced {
        // A `+` is never part of an escape (`%` and two hex digits), so decoding the runs
        // between them is the same as replacing every `+` first.
        for (i, run) in s.split('+').enumerate() {
            if i > 0 {
                bytes.push(b' ');
            }
            bytes.extend(percent_decode_str(run));
        }
    } else {
        bytes.extend(percent_decode_str(s));
    }
    String::from_utf8(bytes)
        .map(Cow::Owned)
        .map_err(|_| RequestError::NotUtf8)
}

/// The first value of parameter `name`.
pub fn param<'a>(params: &'a [(Cow<'_, str>, Cow<'_, str>)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_ref())
}

/// Reads a form-encoded call or message: `From`, `To` and the call id in `id_param`, each
/// number passed through `number` into the E.164 that [`RouteQuery::new`] checks.
pub(crate) fn form_query<'a>(
    params: &'a [(Cow<'_, str>, Cow<'_, str>)],
    channel: Channel,
    id_param: &'static str,
    text: Option<String>,
    number: impl Fn(&'a str) -> Cow<'a, str>,
) -> Result<RouteQuery, RequestError> {
    let from = param(params, "From").ok_or(RequestError::Missing("From"))?;
    let to = param(params, "To").ok_or(RequestError::Missing("To"))?;
    let id = param(params, id_param).ok_or(RequestError::Missing(id_param))?;
    Ok(RouteQuery::new(
        channel,
        CallId::parse(id).map_err(|_| RequestError::Malformed(id_param))?,
        &number(from),
        &number(to),
        text,
    ))
}

/// A number written as its digits with the country code (Plivo's and Vonage's way) as E.164,
/// `+` first. Anything but ASCII digits is no number: an empty string, which the E.164 check
/// refuses, so a withheld `anonymous` or a SIP URI is never looked up.
pub fn digits_to_e164(digits: &str) -> String {
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        format!("+{digits}")
    } else {
        String::new()
    }
}

/// E.164 as Plivo and Vonage write it: without the `+`.
pub fn e164_to_digits(e164: &str) -> &str {
    e164.strip_prefix('+').unwrap_or(e164)
}

/// A signed JSON body, strictly UTF-8; an error names a position, never a value.
pub(crate) fn json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, RequestError> {
    let text = std::str::from_utf8(body).map_err(|_| RequestError::NotUtf8)?;
    serde_json::from_str(text).map_err(|e| RequestError::Json {
        line: e.line(),
        column: e.column(),
    })
}

/// An XML `<Response>` document (TwiML, TeXML, Plivo XML) with `body` inside, or `fallback`
/// if it could not be written (it cannot happen with an in-memory buffer, but if it did, the
/// answer must still fail closed). Escaping is quick-xml's.
pub(crate) fn document(
    fallback: &str,
    body: impl FnOnce(&mut Writer<Vec<u8>>) -> io::Result<()>,
) -> String {
    let mut w = Writer::new(Vec::with_capacity(256));
    let written = w
        .write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))
        .and_then(|_| {
            w.create_element("Response")
                .write_inner_content(body)
                .map(|_| ())
        });
    written
        .ok()
        .and_then(|()| String::from_utf8(w.into_inner()).ok())
        .unwrap_or_else(|| fallback.to_owned())
}

/// Replaces the characters XML 1.0 forbids even when escaped (most C0 controls), which a
/// message may well contain; the provider would otherwise fail to parse the whole answer.
pub(crate) fn xml_safe(text: &str) -> Cow<'_, str> {
    let allowed = |c: char| !matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}');
    if text.chars().all(allowed) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(
            text.chars()
                .map(|c| if allowed(c) { c } else { '\u{fffd}' })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    proptest! {
        /// Decoding a name or value is the textbook definition: for a form, every `+` a space
        /// first; then percent-decoding, strictly UTF-8. What it borrows is the text as it came.
        #[test]
        fn components_decode_by_the_textbook(
            s in "([a-fA-F0-9%+=é ]|%[0-9a-fA-F]{2}|%[fF][fF]|%2[bB]){0,16}",
            plus_is_space: bool,
        ) {
            let spaced = if plus_is_space { s.replace('+', " ") } else { s.clone() };
            let textbook = percent_decode_str(&spaced)
                .decode_utf8()
                .map(Cow::into_owned)
                .map_err(|_| RequestError::NotUtf8);
            let decoded = decode_component(&s, plus_is_space);
            prop_assert_eq!(decoded.clone().map(Cow::into_owned), textbook);
            if let Ok(Cow::Borrowed(b)) = decoded {
                prop_assert_eq!(b, s.as_str());
            }
        }
    }
}
