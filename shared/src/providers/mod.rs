//! Each telecom provider's format, as pure code: what it asks (request parsing into a
//! [`RouteQuery`](crate::routing::RouteQuery)), how it proves it is that provider (signatures
//! and tokens), and the answer it expects (rendering a [`Decision`](crate::routing::Decision)).
//! Where a call goes is decided in [`crate::routing`].
//!
//! - [`twilio`]: form-encoded webhooks signed with `X-Twilio-Signature`, answered with TwiML
//! - [`exotel`]: the Connect applet's dynamic URL (a secret token, optionally a source-IP list), answered with JSON
//! - [`generic`]: our own JSON contract for carriers and in-house IVRs, signed with HMAC-SHA256

pub mod exotel;
pub mod generic;
pub mod twilio;

use std::borrow::Cow;

use percent_encoding::percent_decode_str;
use subtle::ConstantTimeEq;

/// Auth tokens and signing keys are configuration: the one `Secret` type lives in [`crate::config`].
pub use crate::config::Secret;

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

/// Equality whose time does not depend on where the inputs differ.
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
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
}
