//! Plivo: answer and message URLs, form-encoded, signed with `X-Plivo-Signature-V3`, answered with Plivo XML.
//!
//! Plivo requests an application's answer URL for an incoming call (`CallUUID`, `From`, `To`, …)
//! and its message URL for an incoming SMS (`MessageUUID`, `From`, `To`, `Text`), by POST with a
//! form body unless the application asks for GET (the parameters are then the URL's query).
//! Plivo writes numbers as their digits with the country code and no `+` (`14155551234`).
//!
//! Each request carries `X-Plivo-Signature-V3-Nonce`, a random string (not a timestamp: nothing
//! tells a request's age), and `X-Plivo-Signature-V3`: Base64(HMAC-SHA256(auth token, the
//! request as signed, `.`, the nonce)), one signature per auth token the account holds,
//! comma-separated. The request as signed is, as Plivo's SDKs build it (plivo-python
//! `plivo/utils/signature_v3.py`, plivo-node `lib/utils/v3Security.js`):
//! - GET: the URL without its query, then `?` and every query parameter as `name=value`,
//!   decoded, sorted by name then value, joined by `&` (no `?` when there is none);
//! - POST: the URL without its query, `?`, the query's parameters as for GET followed by a `.`
//!   when it has any, then every form parameter sorted the same way, each name followed by its
//!   value. A POST without form parameters is signed as a GET of its URL.

use std::borrow::Cow;

use base64::Engine;
use hmac::{Hmac, Mac};
use quick_xml::events::BytesText;
use sha2::Sha256;

use super::{
    decode_pairs, digits_to_e164, document, e164_to_digits, form_query, param, same_bytes,
    xml_safe, AuthError, RequestError, Secret,
};
use crate::domain::Channel;
use crate::routing::{Decision, RouteQuery};

pub use super::{VoiceRefusal, VoiceSettings};

pub const SIGNATURE_HEADER: &str = "x-plivo-signature-v3";
/// The same signature made with the main account's auth token: the one to check when the
/// numbers belong to a subaccount but only the main account's token is configured.
pub const MAIN_ACCOUNT_SIGNATURE_HEADER: &str = "x-plivo-signature-ma-v3";
pub const NONCE_HEADER: &str = "x-plivo-signature-v3-nonce";

/// Answered when a call's document cannot be written (it cannot happen with an in-memory
/// buffer, but if it did, the call must still be refused rather than fail open).
const FALLBACK_REFUSAL: &str =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Hangup reason=\"rejected\"/></Response>";
/// The answer that sends nothing.
const NOTHING: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>";

/// The `X-Plivo-Signature-V3` Plivo sends with auth token `auth_token` for a `method` request
/// to `url` (with its query) carrying form `params` and nonce `nonce`. The operator CLI and the
/// end-to-end tests use it to simulate Plivo; [`verify`] uses it to check requests. Empty when
/// the query does not decode to UTF-8: [`verify`] refuses such a request whatever it carries.
pub fn sign<K: AsRef<str>, V: AsRef<str>>(
    auth_token: &[u8],
    method: &str,
    url: &str,
    params: &[(K, V)],
    nonce: &str,
) -> String {
    signed_request(method, url, params)
        .map(|request| {
            base64::engine::general_purpose::STANDARD.encode(mac(auth_token, &request, nonce))
        })
        .unwrap_or_default()
}

fn mac(key: &[u8], signed_request: &str, nonce: &str) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(signed_request.as_bytes());
    mac.update(b".");
    mac.update(nonce.as_bytes());
    mac.finalize().into_bytes().into()
}

/// The request as Plivo signs it (see the module's documentation). For a GET, `params` are
/// added to the URL's query, a name the query holds keeping only the query's values, as
/// plivo-python merges them: passing the query's own parameters again changes nothing. The
/// query is decoded as plivo-python's `parse_qs` does (`+` is a space), but strictly: where it
/// would put U+FFFD for bytes that are not UTF-8, this is an error.
fn signed_request<K: AsRef<str>, V: AsRef<str>>(
    method: &str,
    url: &str,
    params: &[(K, V)],
) -> Result<String, RequestError> {
    let url = url.split_once('#').map_or(url, |(before, _)| before);
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut query = decode_pairs(query, true)?;
    let form = params.iter().map(|(k, v)| (k.as_ref(), v.as_ref()));
    let mut out = String::with_capacity(url.len() + 256);
    out.push_str(base);
    if method.eq_ignore_ascii_case("GET") {
        let extra: Vec<_> = form
            .filter(|(k, _)| !query.iter().any(|(q, _)| q == k))
            .map(|(k, v)| (Cow::Borrowed(k), Cow::Borrowed(v)))
            .collect();
        query.extend(extra);
        push_query(&mut out, &mut query);
        return Ok(out);
    }
    let mut form: Vec<_> = form.collect();
    if form.is_empty() {
        push_query(&mut out, &mut query);
        return Ok(out);
    }
    out.push('?');
    if !query.is_empty() {
        push_query_pairs(&mut out, &mut query);
        out.push('.');
    }
    form.sort_unstable();
    for (name, value) in form {
        out.push_str(name);
        out.push_str(value);
    }
    Ok(out)
}

/// `?` and the sorted `name=value` pairs, or nothing when there are none.
fn push_query(out: &mut String, pairs: &mut [(Cow<'_, str>, Cow<'_, str>)]) {
    if !pairs.is_empty() {
        out.push('?');
        push_query_pairs(out, pairs);
    }
}

fn push_query_pairs(out: &mut String, pairs: &mut [(Cow<'_, str>, Cow<'_, str>)]) {
    pairs.sort_unstable();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
}

/// Checks the signatures Plivo sent (one per auth token the account holds) against every
/// configured auth token (two during a rotation). `url` is the URL Plivo requested, with its
/// query, exactly as configured on the application; `params` the form body's parameters
/// (none for a GET: its parameters are in `url`). A missing nonce is a missing signature.
pub fn verify<K: AsRef<str>, V: AsRef<str>>(
    auth_tokens: &[Secret],
    method: &str,
    url: &str,
    params: &[(K, V)],
    nonce: Option<&str>,
    signature: Option<&str>,
) -> Result<(), AuthError> {
    let signature = signature.ok_or(AuthError::MissingSignature)?;
    let nonce = nonce.ok_or(AuthError::MissingSignature)?;
    // A query we cannot decode as Plivo did is refused, not guessed at.
    let request = signed_request(method, url, params).map_err(|_| AuthError::BadSignature)?;
    let expected: Vec<[u8; 32]> = auth_tokens
        .iter()
        .map(|token| mac(token.expose(), &request, nonce))
        .collect();
    // Every comparison is made, each in constant time: timing tells a forger nothing.
    let mut matched = false;
    for presented in signature.split(',') {
        // A signature is 32 bytes; anything longer than this cannot match anyway.
        let mut decoded = [0u8; 64];
        let Ok(len) =
            base64::engine::general_purpose::STANDARD.decode_slice(presented.trim(), &mut decoded)
        else {
            continue;
        };
        for mac in &expected {
            matched |= same_bytes(mac, &decoded[..len]);
        }
    }
    if matched {
        Ok(())
    } else {
        Err(AuthError::BadSignature)
    }
}

/// Reads an answer URL request (an incoming call).
pub fn voice_query(params: &[(Cow<'_, str>, Cow<'_, str>)]) -> Result<RouteQuery, RequestError> {
    form_query(params, Channel::Voice, "CallUUID", None, e164)
}

/// Reads a message URL request (an incoming SMS).
pub fn message_query(params: &[(Cow<'_, str>, Cow<'_, str>)]) -> Result<RouteQuery, RequestError> {
    // An MMS with only media has no text.
    let text = param(params, "Text").unwrap_or_default().to_owned();
    form_query(params, Channel::Sms, "MessageUUID", Some(text), e164)
}

/// Plivo writes a number as its digits; one that already carries its `+` is taken too.
fn e164(number: &str) -> Cow<'_, str> {
    Cow::Owned(digits_to_e164(number.strip_prefix('+').unwrap_or(number)))
}

/// The Plivo XML answer to an incoming call: dial the callee showing the virtual number, or
/// refuse as `settings.refusal` says. Plivo XML here cannot collect a PIN, so
/// [`Decision::AskPin`] is refused too.
pub fn voice_response(decision: &Decision, settings: &VoiceSettings) -> String {
    document(FALLBACK_REFUSAL, |w| match decision {
        Decision::Connect(route) => {
            let timeout = settings.dial_timeout.to_string();
            let limit = settings.time_limit.to_string();
            w.create_element("Dial")
                .with_attribute(("callerId", e164_to_digits(route.caller_id().as_str())))
                .with_attribute(("timeout", timeout.as_str()))
                .with_attribute(("timeLimit", limit.as_str()))
                .write_inner_content(|w| {
                    w.create_element("Number")
                        .write_text_content(BytesText::new(e164_to_digits(
                            route.callee.expose(),
                        )))?;
                    Ok(())
                })?;
            Ok(())
        }
        Decision::AskPin { .. } | Decision::Refuse(_) => match &settings.refusal {
            VoiceRefusal::Say(message) => {
                w.create_element("Speak")
                    .write_text_content(BytesText::new(&xml_safe(message)))?;
                w.create_element("Hangup").write_empty()?;
                Ok(())
            }
            // First in the document, it refuses the call unanswered.
            VoiceRefusal::Reject => {
                w.create_element("Hangup")
                    .with_attribute(("reason", "rejected"))
                    .write_empty()?;
                Ok(())
            }
        },
    })
}

/// The Plivo XML answer to an incoming SMS: relay `text` to the callee from the virtual number,
/// or, when refused, send nothing at all (a reply would cost money and confirm the number).
pub fn message_response(decision: &Decision, text: &str) -> String {
    match decision {
        Decision::Connect(route) => document(NOTHING, |w| {
            w.create_element("Message")
                .with_attribute(("src", e164_to_digits(route.caller_id().as_str())))
                .with_attribute(("dst", e164_to_digits(route.callee.expose())))
                .with_attribute(("type", "sms"))
                .write_text_content(BytesText::new(&xml_safe(text)))?;
            Ok(())
        }),
        Decision::AskPin { .. } | Decision::Refuse(_) => NOTHING.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Capabilities, RealNumber, Route, VirtualNumber};
    use crate::routing::Refusal;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn form(p: &[(&'static str, &'static str)]) -> Vec<(Cow<'static, str>, Cow<'static, str>)> {
        p.iter()
            .map(|(k, v)| (Cow::Borrowed(*k), Cow::Borrowed(*v)))
            .collect()
    }

    /// The auth token, nonce, URLs and parameters of plivo-go's V3 vectors (`utils_test.go`,
    /// `TestValidateSignatureV3Pass1` to `Pass4`), signatures Plivo's staging made.
    const GO_TOKEN: &str = "Y2Q2ZDgxZmY5YWRiOTI5YmQ1Njg0MTAxZWIyOTc4";
    const GO_NONCE: &str = "31627761595286130198";
    const GO_URL: &str = "https://plivobin.non-prod.plivops.com/api/v1/validate_signature03.xml";

    fn go_params() -> Vec<(String, String)> {
        pairs(&[
            ("Direction", "outbound"),
            ("From", "19792014278"),
            ("ALegUUID", "3e82ae9d-2c78-4d85-b1a4-6eae7dbafb36"),
            ("CallStatus", "in-progress"),
            ("BillRate", "0.002"),
            ("ParentAuthID", "MANWVLYTK4ZWU1YTY4QA"),
            (
                "To",
                "sip:PlivoSignature382029104058171078704104@phone-qa.voice.plivodev.com",
            ),
            ("ALegRequestUUID", "3e82ae9d-2c78-4d85-b1a4-6eae7dbafb36"),
            ("CallUUID", "3e82ae9d-2c78-4d85-b1a4-6eae7dbafb36"),
            ("RequestUUID", "3e82ae9d-2c78-4d85-b1a4-6eae7dbafb36"),
            (
                "SIP-H-To",
                "<sip:PlivoSignature382029104058171078704104@52.9.11.55;transport=udp>;tag=1",
            ),
            ("SessionStart", "2020-04-08 11:34:33.238707"),
            ("Event", "StartApp"),
        ])
    }

    fn go_vectors() -> [(&'static str, String, &'static str); 4] {
        let with_query = format!("{GO_URL}/?a=b&c=d");
        [
            (
                "POST",
                with_query.clone(),
                "k7Pusd4OxCIjR5IfA9iedDNu/h/gbdYqdzG/MiYtd1c=",
            ),
            (
                "GET",
                with_query,
                "UBq8jAtd32wR8EK9VgxbBn4n5rpI/l1H9iN4WfSEHFQ=",
            ),
            (
                "POST",
                GO_URL.to_owned(),
                "iAjE5QqI37mbkYe4w3jTMudqEzbDufdqi7sYwTu64e0=",
            ),
            (
                "GET",
                GO_URL.to_owned(),
                "i/MQsaQSAd6fiKhOh2qeeeLHZ9faldADSb3/7+Akfbc=",
            ),
        ]
    }

    #[test]
    fn signatures_match_plivos_sdk_vectors() {
        let params = go_params();
        let tokens = [Secret::new(GO_TOKEN)];
        for (method, url, signature) in go_vectors() {
            assert_eq!(
                sign(GO_TOKEN.as_bytes(), method, &url, &params, GO_NONCE),
                signature,
                "{method} {url}"
            );
            assert_eq!(
                verify(
                    &tokens,
                    method,
                    &url,
                    &params,
                    Some(GO_NONCE),
                    Some(signature)
                ),
                Ok(()),
                "{method} {url}"
            );
        }
    }

    /// A GET's parameters are in its URL: the URL as Plivo requested it verifies without them,
    /// and with them passed again.
    #[test]
    fn a_get_is_signed_over_its_query_however_its_parameters_are_passed() {
        let params = go_params();
        let mut url = with_query_params(&format!("{GO_URL}/?a=b&c=d"), &params);
        let tokens = [Secret::new(GO_TOKEN)];
        let signature = "UBq8jAtd32wR8EK9VgxbBn4n5rpI/l1H9iN4WfSEHFQ=";
        let none: [(&str, &str); 0] = [];
        assert_eq!(
            verify(&tokens, "GET", &url, &none, Some(GO_NONCE), Some(signature)),
            Ok(())
        );
        assert_eq!(
            verify(
                &tokens,
                "get",
                &url,
                &params,
                Some(GO_NONCE),
                Some(signature)
            ),
            Ok(())
        );
        url.push_str("&x=1");
        assert_eq!(
            verify(&tokens, "GET", &url, &none, Some(GO_NONCE), Some(signature)),
            Err(AuthError::BadSignature)
        );
    }

    /// `url` with `params` appended to its query, form-encoded.
    fn with_query_params(url: &str, params: &[(String, String)]) -> String {
        let encode = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let mut out = url.to_owned();
        for (k, v) in params {
            out.push('&');
            out.push_str(&encode(k));
            out.push('=');
            out.push_str(&encode(v));
        }
        out
    }

    /// No SDK vector decodes a query or repeats a parameter. These expected values were made
    /// with python3, following plivo-python's `signature_v3.py` (its `parse_qs` decoding and
    /// sorted values), for token `auth-token-1`.
    #[test]
    fn queries_are_signed_decoded_and_sorted_as_plivo_python_does() {
        let url = "https://hooks.example.com/v1/providers/plivo/answer?b=x+y&a=%2B1&b=w";
        let nonce = "12345678901234567890";
        let params = pairs(&[
            ("From", "14155551234"),
            ("To", "14155550000"),
            ("Digits", "2"),
            ("CallUUID", "5f6e-1"),
            ("Digits", "1"),
        ]);
        assert_eq!(
            signed_request("POST", url, &params).unwrap(),
            "https://hooks.example.com/v1/providers/plivo/answer?a=+1&b=w&b=x y.\
             CallUUID5f6e-1Digits1Digits2From14155551234To14155550000"
        );
        assert_eq!(
            sign(b"auth-token-1", "POST", url, &params, nonce),
            "gx5Z9hHrPE4L1XxpUEy5n5UFJoaNjrqK1wBgfjrJ4Mo="
        );
        let none: [(&str, &str); 0] = [];
        assert_eq!(
            sign(b"auth-token-1", "GET", url, &none, nonce),
            "Xe3isHmXawtNrpQUJh6u/2VMOB2duOF/rxwIImUv+y4="
        );
        // A fragment is never sent, so never signed.
        assert_eq!(
            sign(b"auth-token-1", "GET", &format!("{url}#top"), &none, nonce),
            "Xe3isHmXawtNrpQUJh6u/2VMOB2duOF/rxwIImUv+y4="
        );
    }

    /// plivo-python would sign `%FF` as U+FFFD: a query that is not UTF-8 once decoded is
    /// refused, not matched against that guess.
    #[test]
    fn a_query_that_is_not_utf8_once_decoded_is_refused() {
        let url = "https://hooks.example.com/v1/providers/plivo/answer?a=%FF";
        let nonce = "12345678901234567890";
        let none: [(&str, &str); 0] = [];
        let lossy = base64::engine::general_purpose::STANDARD.encode(mac(
            b"auth-token-1",
            "https://hooks.example.com/v1/providers/plivo/answer?a=\u{fffd}",
            nonce,
        ));
        let tokens = [Secret::new("auth-token-1")];
        assert_eq!(
            verify(&tokens, "GET", url, &none, Some(nonce), Some(&lossy)),
            Err(AuthError::BadSignature)
        );
        assert_eq!(sign(b"auth-token-1", "GET", url, &none, nonce), "");
    }

    #[test]
    fn any_of_several_signatures_in_the_header_may_match() {
        let params = go_params();
        let (method, url, signature) = &go_vectors()[0];
        let tokens = [Secret::new(GO_TOKEN)];
        let other = sign(b"another-token", method, url, &params, GO_NONCE);
        for header in [
            format!("{other},{signature}"),
            format!("{signature},{other}"),
            format!("not base64!, {signature}"),
        ] {
            assert_eq!(
                verify(&tokens, method, url, &params, Some(GO_NONCE), Some(&header)),
                Ok(()),
                "{header}"
            );
        }
        assert_eq!(
            verify(&tokens, method, url, &params, Some(GO_NONCE), Some(&other)),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn either_token_of_a_rotation_verifies() {
        let params = go_params();
        let (method, url, signature) = &go_vectors()[2];
        let rotation = [Secret::new("the-new-token"), Secret::new(GO_TOKEN)];
        assert_eq!(
            verify(
                &rotation,
                method,
                url,
                &params,
                Some(GO_NONCE),
                Some(signature)
            ),
            Ok(())
        );
        let wrong = [Secret::new("the-new-token"), Secret::new("an-old-token")];
        assert_eq!(
            verify(
                &wrong,
                method,
                url,
                &params,
                Some(GO_NONCE),
                Some(signature)
            ),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify(&[], method, url, &params, Some(GO_NONCE), Some(signature)),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn a_missing_signature_or_nonce_is_refused() {
        let params = go_params();
        let (method, url, signature) = &go_vectors()[2];
        let tokens = [Secret::new(GO_TOKEN)];
        assert_eq!(
            verify(&tokens, method, url, &params, Some(GO_NONCE), None),
            Err(AuthError::MissingSignature)
        );
        assert_eq!(
            verify(&tokens, method, url, &params, None, Some(signature)),
            Err(AuthError::MissingSignature)
        );
        for garbage in ["", ",", "not base64!", "AAAA"] {
            assert_eq!(
                verify(&tokens, method, url, &params, Some(GO_NONCE), Some(garbage)),
                Err(AuthError::BadSignature)
            );
        }
    }

    #[test]
    fn anything_changed_breaks_the_signature() {
        let params = go_params();
        let (method, url, signature) = &go_vectors()[0];
        let tokens = [Secret::new(GO_TOKEN)];
        let check = |method: &str, url: &str, params: &[(String, String)], nonce: &str| {
            verify(&tokens, method, url, params, Some(nonce), Some(signature))
        };
        let mut tampered = params.clone();
        tampered[1].1 = "19792014279".into();
        let mut added = params.clone();
        added.push(("Digits".into(), "1".into()));
        for (what, result) in [
            ("a parameter", check(method, url, &tampered, GO_NONCE)),
            ("an added parameter", check(method, url, &added, GO_NONCE)),
            (
                "the nonce",
                check(method, url, &params, "31627761595286130199"),
            ),
            ("the method", check("GET", url, &params, GO_NONCE)),
            (
                "the query",
                check(method, &url.replace("c=d", "c=e"), &params, GO_NONCE),
            ),
            (
                "the host",
                check(method, &url.replace("plivobin", "evil"), &params, GO_NONCE),
            ),
        ] {
            assert_eq!(result, Err(AuthError::BadSignature), "{what}");
        }
    }

    #[test]
    fn an_incoming_call_is_read_with_plivos_numbers_in_e164() {
        let q = voice_query(&form(&[
            ("CallUUID", "3e82ae9d-2c78-4d85-b1a4-6eae7dbafb36"),
            ("From", "919810000001"),
            ("To", "911140001000"),
            ("CallerName", "+919810000001"),
            ("CallStatus", "ringing"),
            ("Direction", "inbound"),
            ("Event", "StartApp"),
        ]))
        .unwrap();
        assert_eq!(q.channel, Channel::Voice);
        assert_eq!(q.call_id.as_str(), "3e82ae9d-2c78-4d85-b1a4-6eae7dbafb36");
        assert_eq!(q.caller.unwrap().expose(), "+919810000001");
        assert_eq!(q.dialled.unwrap().as_str(), "+911140001000");
        assert_eq!(q.text, None);
        // Numbers that already carry their `+` are taken as they are.
        let q = voice_query(&form(&[
            ("CallUUID", "c-1"),
            ("From", "+919810000001"),
            ("To", "+911140001000"),
        ]))
        .unwrap();
        assert_eq!(q.lookup().unwrap().0.expose(), "+919810000001");
    }

    #[test]
    fn withheld_or_unusable_caller_ids_are_refused_as_unknown_callers() {
        for caller in [
            "anonymous",
            "Anonymous",
            "",
            "sip:someone@phone.plivo.com",
            "09810000001",
            "0919810000001",
            " 919810000001",
        ] {
            let mut params = form(&[("CallUUID", "c-1"), ("To", "911140001000")]);
            params.push((Cow::Borrowed("From"), Cow::Owned(caller.to_owned())));
            let q = voice_query(&params).unwrap();
            assert_eq!(
                q.lookup().unwrap_err(),
                Refusal::CallerUnknown,
                "{caller:?}"
            );
        }
        let q = voice_query(&form(&[
            ("CallUUID", "c-1"),
            ("From", "919810000001"),
            ("To", "sip:app@phone.plivo.com"),
        ]))
        .unwrap();
        assert_eq!(q.lookup().unwrap_err(), Refusal::NotOurNumber);
    }

    #[test]
    fn missing_or_malformed_parameters_are_named_never_echoed() {
        let full = [
            ("CallUUID", "3e82ae9d-2c78-4d85-b1a4-6eae7dbafb36"),
            ("From", "919810000001"),
            ("To", "911140001000"),
        ];
        for missing in ["CallUUID", "From", "To"] {
            let params: Vec<_> = full
                .iter()
                .copied()
                .filter(|(k, _)| *k != missing)
                .collect();
            assert_eq!(
                voice_query(&form(&params)).unwrap_err(),
                RequestError::Missing(missing)
            );
        }
        for bad_id in ["", "919810000001 x", "<script>", &"a".repeat(65)] {
            let mut params = form(&[("From", "919810000001"), ("To", "911140001000")]);
            params.push((Cow::Borrowed("CallUUID"), Cow::Owned(bad_id.to_owned())));
            let err = voice_query(&params).unwrap_err();
            assert_eq!(err, RequestError::Malformed("CallUUID"));
            assert!(!format!("{err} {err:?}").contains("9810000001"));
        }
        let err =
            message_query(&form(&[("From", "919810000001"), ("To", "911140001000")])).unwrap_err();
        assert_eq!(err, RequestError::Missing("MessageUUID"));
        let err = message_query(&form(&[
            ("MessageUUID", "+919810000001"),
            ("From", "919810000001"),
            ("To", "911140001000"),
        ]))
        .unwrap_err();
        assert_eq!(err, RequestError::Malformed("MessageUUID"));
        assert!(!err.to_string().contains("9810000001"));
    }

    #[test]
    fn an_incoming_sms_is_read_with_its_text() {
        // The parameters of Plivo's "incoming message" documentation.
        let q = message_query(&form(&[
            ("From", "919810000001"),
            ("To", "911140001000"),
            ("Type", "sms"),
            ("Text", "Where are you? 5 min"),
            ("MessageUUID", "0936ec98-7c4c-11e4-9bd8-22000afa12b9"),
        ]))
        .unwrap();
        assert_eq!(q.channel, Channel::Sms);
        assert_eq!(q.call_id.as_str(), "0936ec98-7c4c-11e4-9bd8-22000afa12b9");
        assert_eq!(q.caller.unwrap().expose(), "+919810000001");
        assert_eq!(q.dialled.unwrap().as_str(), "+911140001000");
        assert_eq!(q.text.as_deref(), Some("Where are you? 5 min"));
        let media_only = message_query(&form(&[
            ("From", "919810000001"),
            ("To", "911140001000"),
            ("MessageUUID", "m-1"),
        ]))
        .unwrap();
        assert_eq!(media_only.text.as_deref(), Some(""));
    }

    fn route() -> Route {
        Route {
            caller: RealNumber::parse("+919810000001").unwrap(),
            number: VirtualNumber::parse("+911140001000").unwrap(),
            order_id: "ord-1".parse().unwrap(),
            market: "IN".parse().unwrap(),
            caller_role: "customer".parse().unwrap(),
            callee_role: "driver".parse().unwrap(),
            callee: RealNumber::parse("+919710000001").unwrap(),
            capabilities: Capabilities::VOICE_AND_SMS,
            record: false,
            stands_for: None,
            expires_at: i64::MAX,
            closed: false,
        }
    }

    fn settings(refusal: VoiceRefusal) -> VoiceSettings {
        VoiceSettings {
            dial_timeout: 25,
            time_limit: 3600,
            refusal,
            pin_prompts: super::super::PinPrompts::default(),
        }
    }

    #[test]
    fn connect_dials_the_callee_showing_the_virtual_number() {
        assert_eq!(
            voice_response(&Decision::Connect(route()), &settings(VoiceRefusal::Reject)),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Dial callerId=\"911140001000\" \
             timeout=\"25\" timeLimit=\"3600\"><Number>919710000001</Number></Dial></Response>"
        );
    }

    #[test]
    fn refusals_follow_the_settings_and_a_pin_cannot_be_asked() {
        let say = settings(VoiceRefusal::Say("Sorry & goodbye <3".into()));
        let reject = settings(VoiceRefusal::Reject);
        for decision in [
            Decision::Refuse(Refusal::NoRoute),
            Decision::Refuse(Refusal::StoreTimeout),
            Decision::AskPin { again: false },
        ] {
            assert_eq!(
                voice_response(&decision, &say),
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Speak>Sorry &amp; goodbye \
                 &lt;3</Speak><Hangup/></Response>",
                "{decision:?}"
            );
            assert_eq!(
                voice_response(&decision, &reject),
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Hangup reason=\"rejected\"/>\
                 </Response>",
                "{decision:?}"
            );
        }
    }

    #[test]
    fn a_text_is_relayed_from_the_virtual_number_escaped() {
        assert_eq!(
            message_response(&Decision::Connect(route()), "a<b & \"c\" ]]> \u{1}d"),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message src=\"911140001000\" \
             dst=\"919710000001\" type=\"sms\">a&lt;b &amp; &quot;c&quot; ]]&gt; \u{fffd}d\
             </Message></Response>"
        );
    }

    #[test]
    fn a_refused_text_is_answered_with_nothing() {
        for decision in [
            Decision::Refuse(Refusal::NoRoute),
            Decision::AskPin { again: true },
        ] {
            assert_eq!(
                message_response(&decision, "hello"),
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>"
            );
        }
    }
}
