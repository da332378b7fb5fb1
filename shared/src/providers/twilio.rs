//! Twilio: programmable voice and messaging webhooks.
//!
//! Twilio POSTs form-encoded parameters (`From`, `To`, `CallSid`, …) and signs each request with
//! `X-Twilio-Signature`: Base64(HMAC-SHA1(auth token, URL + every POST parameter sorted by
//! name, each name followed by its value)); a repeated parameter's values are sorted and signed
//! once each. The answer is TwiML.

use std::borrow::Cow;
use std::io;

use base64::Engine;
use hmac::{Hmac, Mac};
use quick_xml::events::BytesText;
use quick_xml::Writer;
use sha1::Sha1;

use super::{
    document, form_query, param, same_bytes, seconds, xml_safe, AuthError, RequestError, Secret,
};
use crate::domain::{CallEnd, CallId, Channel, DialStatus, Recording, RecordingReady};
use crate::routing::{Decision, RouteQuery};

pub use super::{PinPrompts, VoiceRefusal, VoiceSettings};

pub const SIGNATURE_HEADER: &str = "x-twilio-signature";

/// Answered when a document cannot be written (it cannot happen with an in-memory buffer, but
/// if it did, the call must still be refused rather than fail open).
const FALLBACK_REFUSAL: &str =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Reject/></Response>";

/// The signature Twilio sends for a request to `url` with form `params`. The operator CLI uses it
/// to simulate Twilio; [`verify`] uses it to check requests.
pub fn sign<K: AsRef<str>, V: AsRef<str>>(
    auth_token: &[u8],
    url: &str,
    params: &[(K, V)],
) -> String {
    base64::engine::general_purpose::STANDARD.encode(mac(auth_token, url, &signed_params(params)))
}

/// Every parameter's name then value, sorted by name, then by value, and each exact pair once:
/// Twilio's SDKs sign a repeated parameter's values as a sorted set (twilio-node
/// `toFormUrlEncodedParam`, twilio-python `compute_signature`), so a form that repeats
/// `Digits=1234` is signed with it once.
fn signed_params<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> Vec<u8> {
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = Vec::with_capacity(sorted.iter().map(|(k, v)| k.len() + v.len()).sum());
    for (name, value) in sorted {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

fn mac(key: &[u8], url: &str, signed_params: &[u8]) -> [u8; 20] {
    let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(url.as_bytes());
    mac.update(signed_params);
    mac.finalize().into_bytes().into()
}

/// Checks `signature` against every auth token (two during a rotation) and both forms of `url`,
/// with and without the scheme's default port, as Twilio's own validators do.
pub fn verify<K: AsRef<str>, V: AsRef<str>>(
    auth_tokens: &[Secret],
    url: &str,
    params: &[(K, V)],
    signature: Option<&str>,
) -> Result<(), AuthError> {
    let signature = signature.ok_or(AuthError::MissingSignature)?;
    // A signature is 20 bytes; anything longer than this cannot match anyway.
    let mut presented = [0u8; 64];
    let presented = base64::engine::general_purpose::STANDARD
        .decode_slice(signature.trim(), &mut presented)
        .map(|len| &presented[..len])
        .map_err(|_| AuthError::BadSignature)?;
    let payload = signed_params(params);
    // Each comparison is constant-time and a forgery tries every combination, so timing tells
    // a forger nothing; only a genuine signature stops early.
    let signed_for = |candidate: &str| {
        auth_tokens
            .iter()
            .any(|token| same_bytes(&mac(token.expose(), candidate, &payload), presented))
    };
    // The URL as received is usually already its form without a port: it is tried before the
    // forms are made.
    let received = without_port_as_received(url);
    if received.is_some_and(signed_for) {
        return Ok(());
    }
    let others = port_variants(url);
    if others
        .iter()
        .any(|candidate| Some(candidate.as_ref()) != received && signed_for(candidate))
    {
        Ok(())
    } else {
        Err(AuthError::BadSignature)
    }
}

/// `url` itself when it is its own form without a port, which [`port_variants`] would make:
/// http or https with an authority that names neither a port nor a user.
fn without_port_as_received(url: &str) -> Option<&str> {
    let after = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let authority = after.split(['/', '?', '#']).next().unwrap_or_default();
    (!authority.contains([':', '@'])).then_some(url)
}

/// `url` without its port, and with the scheme's default port when it has none. Credentials in
/// the URL (`user:pass@`) stay: they are part of what Twilio signs.
fn port_variants(url: &str) -> Vec<Cow<'_, str>> {
    let unchanged = || vec![Cow::Borrowed(url)];
    let Some((scheme, after)) = url.split_once("://") else {
        return unchanged();
    };
    let default_port: u16 = match scheme {
        "https" => 443,
        "http" => 80,
        _ => return unchanged(),
    };
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    let Ok(authority) = authority.parse::<http::uri::Authority>() else {
        return unchanged();
    };
    let credentials = authority
        .as_str()
        .rfind('@')
        .map_or("", |at| &authority.as_str()[..=at]);
    let host = authority.host();
    let port = authority.port_u16().unwrap_or(default_port);
    vec![
        Cow::Owned(format!("{scheme}://{credentials}{host}{rest}")),
        Cow::Owned(format!("{scheme}://{credentials}{host}:{port}{rest}")),
    ]
}

/// Reads an incoming-call webhook.
pub fn voice_query(params: &[(Cow<'_, str>, Cow<'_, str>)]) -> Result<RouteQuery, RequestError> {
    form_query(params, Channel::Voice, "CallSid", None, Cow::Borrowed)
}

/// Reads an incoming-message webhook.
pub fn message_query(params: &[(Cow<'_, str>, Cow<'_, str>)]) -> Result<RouteQuery, RequestError> {
    // A message with only media has an empty body.
    let text = param(params, "Body").unwrap_or_default().to_owned();
    form_query(
        params,
        Channel::Sms,
        "MessageSid",
        Some(text),
        Cow::Borrowed,
    )
}

/// Reads the request Twilio sends to `<Dial action>` when the callee's leg is over: the call's
/// `CallSid` (the one the voice webhook routed), `DialCallStatus` and, when the callee answered,
/// `DialCallDuration` in seconds.
pub fn call_end(params: &[(Cow<'_, str>, Cow<'_, str>)]) -> Result<CallEnd, RequestError> {
    let sid = param(params, "CallSid").ok_or(RequestError::Missing("CallSid"))?;
    let call_id = CallId::parse(sid).map_err(|_| RequestError::Malformed("CallSid"))?;
    let status = param(params, "DialCallStatus").ok_or(RequestError::Missing("DialCallStatus"))?;
    let status =
        DialStatus::parse(status).map_err(|_| RequestError::Malformed("DialCallStatus"))?;
    let talk = seconds(param(params, "DialCallDuration"), "DialCallDuration")?;
    Ok(CallEnd::new(call_id, status, talk))
}

/// Reads Twilio's recording-status callback for a recorded `<Dial>`: `CallSid` is the call
/// that was routed (the caller's leg, whose `<Dial>` recorded), `RecordingSid` and
/// `RecordingUrl` where the audio is, `RecordingDuration` its length. Only `completed`
/// recordings are asked for, so any other `RecordingStatus` is refused.
pub fn recording_ready(
    params: &[(Cow<'_, str>, Cow<'_, str>)],
) -> Result<RecordingReady, RequestError> {
    let sid = param(params, "CallSid").ok_or(RequestError::Missing("CallSid"))?;
    let call_id = CallId::parse(sid).map_err(|_| RequestError::Malformed("CallSid"))?;
    let status =
        param(params, "RecordingStatus").ok_or(RequestError::Missing("RecordingStatus"))?;
    if status != "completed" {
        return Err(RequestError::Malformed("RecordingStatus"));
    }
    let id = param(params, "RecordingSid").ok_or(RequestError::Missing("RecordingSid"))?;
    let url = param(params, "RecordingUrl").ok_or(RequestError::Missing("RecordingUrl"))?;
    let seconds = param(params, "RecordingDuration")
        .map(|d| seconds(Some(d), "RecordingDuration"))
        .transpose()?;
    let recording = Recording::parse(Some(id), url, seconds).map_err(|e| match e {
        crate::domain::RecordingError::Id => RequestError::Malformed("RecordingSid"),
        crate::domain::RecordingError::Url => RequestError::Malformed("RecordingUrl"),
    })?;
    Ok(RecordingReady { call_id, recording })
}

/// The path of the `<Dial action>` endpoint, under the webhook's public base URL.
pub const DIAL_END_PATH: &str = "/v1/providers/twilio/dial-end";
/// The path of the recording-status callback, under the webhook's public base URL.
pub const RECORDING_PATH: &str = "/v1/providers/twilio/recording";
/// The path `<Gather>` posts a keyed-in PIN to, under the webhook's public base URL.
pub const PIN_PATH: &str = "/v1/providers/twilio/pin";

/// Where Twilio reports on a connected call, under the webhook's public base URL: the end of
/// the callee's leg (`<Dial action>`, read by [`call_end`]) and, for a recorded call, its
/// recording (`recordingStatusCallback`, read by [`recording_ready`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackUrls {
    pub dial_end: String,
    pub recording: String,
    /// Where `<Gather>` posts a PIN ([`pin_query`] reads it).
    pub pin: String,
}

impl CallbackUrls {
    pub fn under(public_base_url: &str) -> Self {
        CallbackUrls {
            dial_end: [public_base_url, DIAL_END_PATH].concat(),
            recording: [public_base_url, RECORDING_PATH].concat(),
            pin: [public_base_url, PIN_PATH].concat(),
        }
    }
}

/// The TwiML answer to an incoming call. With `callbacks`, Twilio asks `dial_end` once the
/// callee's leg is over (its answer then ends the call). A route of an order that records its
/// calls records the bridged call from the answer, each party on its own channel, and Twilio
/// reports the recording to `recording`; any other answer is as it was before recording existed.
pub fn voice_response(
    decision: &Decision,
    settings: &VoiceSettings,
    callbacks: Option<&CallbackUrls>,
) -> String {
    voice_twiml(decision, settings, callbacks, false)
}

/// The TwiML answer to a keyed-in PIN ([`pin_query`]): as [`voice_response`], but the call was
/// answered to gather the PIN, so a refusal hangs up (`<Reject>` only refuses an unanswered call).
pub fn pin_response(
    decision: &Decision,
    settings: &VoiceSettings,
    callbacks: Option<&CallbackUrls>,
) -> String {
    voice_twiml(decision, settings, callbacks, true)
}

fn voice_twiml(
    decision: &Decision,
    settings: &VoiceSettings,
    callbacks: Option<&CallbackUrls>,
    answered: bool,
) -> String {
    let refuse = |w: &mut Writer<Vec<u8>>, answered: bool| -> io::Result<()> {
        match &settings.refusal {
            VoiceRefusal::Say(message) => {
                w.create_element("Say")
                    .write_text_content(BytesText::new(&xml_safe(message)))?;
                w.create_element("Hangup").write_empty()?;
            }
            VoiceRefusal::Reject if answered => {
                w.create_element("Hangup").write_empty()?;
            }
            VoiceRefusal::Reject => {
                w.create_element("Reject").write_empty()?;
            }
        }
        Ok(())
    };
    document(FALLBACK_REFUSAL, |w| match decision {
        Decision::Connect(route) => {
            let timeout = settings.dial_timeout.to_string();
            let limit = settings.time_limit.to_string();
            let mut dial = w
                .create_element("Dial")
                .with_attribute(("callerId", route.caller_id().as_str()))
                .with_attribute(("answerOnBridge", "true"))
                .with_attribute(("timeout", timeout.as_str()))
                .with_attribute(("timeLimit", limit.as_str()));
            if let Some(urls) = callbacks {
                dial = dial.with_attribute(("action", urls.dial_end.as_str()));
            }
            if route.record {
                dial = dial.with_attribute(("record", "record-from-answer-dual"));
                if let Some(urls) = callbacks {
                    dial = dial
                        .with_attribute(("recordingStatusCallback", urls.recording.as_str()))
                        .with_attribute(("recordingStatusCallbackEvent", "completed"));
                }
            }
            dial.write_inner_content(|w| {
                w.create_element("Number")
                    .write_text_content(BytesText::new(route.callee.expose()))?;
                Ok(())
            })?;
            Ok(())
        }
        // Without a URL to post the PIN to, nothing can be gathered: refused.
        Decision::AskPin { again } => match callbacks {
            Some(urls) => {
                let prompt = if *again {
                    &settings.pin_prompts.again
                } else {
                    &settings.pin_prompts.ask
                };
                let digits = crate::domain::PIN_DIGITS.to_string();
                w.create_element("Gather")
                    .with_attribute(("input", "dtmf"))
                    .with_attribute(("numDigits", digits.as_str()))
                    .with_attribute(("timeout", "10"))
                    .with_attribute(("action", urls.pin.as_str()))
                    .write_inner_content(|w| {
                        w.create_element("Say")
                            .write_text_content(BytesText::new(&xml_safe(prompt)))?;
                        Ok(())
                    })?;
                // No digits before the timeout: the call goes on here, and ends.
                refuse(w, true)
            }
            None => refuse(w, answered),
        },
        Decision::Refuse(_) => refuse(w, answered),
    })
}

/// Reads `<Gather>`'s post of a keyed-in PIN: the call's `CallSid`, `From`, `To` and `Digits`
/// (what the caller keyed, which may not be a PIN). Nothing else is read.
pub fn pin_query(params: &[(Cow<'_, str>, Cow<'_, str>)]) -> Result<RouteQuery, RequestError> {
    let digits = param(params, "Digits").unwrap_or_default();
    Ok(voice_query(params)?.with_pin(digits))
}

/// The TwiML answer to an incoming message: relay `text` to the callee from the virtual number,
/// or, when refused, send nothing at all (a reply would cost money and confirm the number).
pub fn message_response(decision: &Decision, text: &str) -> String {
    document(FALLBACK_REFUSAL, |w| match decision {
        Decision::Connect(route) => {
            w.create_element("Message")
                .with_attribute(("to", route.callee.expose()))
                .with_attribute(("from", route.caller_id().as_str()))
                .write_text_content(BytesText::new(&xml_safe(text)))?;
            Ok(())
        }
        Decision::AskPin { .. } | Decision::Refuse(_) => Ok(()),
    })
}

/// The answer to a [`call_end`] request: nothing more to do, the call ends.
pub fn call_end_response() -> String {
    document(FALLBACK_REFUSAL, |_| Ok(()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use crate::domain::Route;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The example of Twilio's security documentation, reproduced by its SDKs' test suites.
    #[test]
    fn signature_matches_twilios_published_example() {
        let params = pairs(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]);
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(sign(b"12345", url, &params), "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
        let token = [Secret::new("12345")];
        assert!(verify(&token, url, &params, Some("RSOYDt4T1cUTdK1PDd93/VVr8B8=")).is_ok());
    }

    /// The auth token, URL and parameters of Twilio's published vectors, as in twilio-node's
    /// `spec/validation.spec.js` and twilio-python's `tests/unit/test_request_validator.py`.
    const SDK_TOKEN: &str = "12345";
    const SDK_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    fn sdk_params() -> Vec<(String, String)> {
        pairs(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ])
    }

    fn sdk_verify(
        url: &str,
        params: &[(String, String)],
        signature: &str,
    ) -> Result<(), AuthError> {
        verify(&[Secret::new(SDK_TOKEN)], url, params, Some(signature))
    }

    /// Both SDKs' duplicate-values vector: `Digits` three times, once repeated, out of order.
    #[test]
    fn repeated_values_are_signed_sorted_and_once_each_as_twilios_sdks_do() {
        let params = pairs(&[
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ]);
        assert_eq!(
            sign(SDK_TOKEN.as_bytes(), SDK_URL, &params),
            "IK+Dwps556ElfBT0I3Rgjkr1wJU="
        );
        assert_eq!(
            sdk_verify(SDK_URL, &params, "IK+Dwps556ElfBT0I3Rgjkr1wJU="),
            Ok(())
        );
    }

    /// twilio-node's array-parameter vector, with the values in either order.
    #[test]
    fn a_repeated_parameter_verifies_whatever_the_order_of_its_values() {
        for (first, second) in [
            ("+1325xxxxxxx", "+1415xxxxxxx"),
            ("+1415xxxxxxx", "+1325xxxxxxx"),
        ] {
            let params = pairs(&[
                ("MessagingBinding.Address", first),
                ("MessagingBinding.Address", second),
            ]);
            assert_eq!(
                sdk_verify(SDK_URL, &params, "83O6e2vORAoJHUNzJjDWN1jz+BA="),
                Ok(()),
                "{first} then {second}"
            );
        }
    }

    /// twilio-node's and twilio-python's port vectors: a signature made without the port, or
    /// with the scheme's default port, verifies against the URL with a port, or without one.
    #[test]
    fn twilios_port_vectors_verify() {
        let params = sdk_params();
        for (received, signature, signed_over) in [
            (
                "https://mycompany.com:1234/myapp.php?foo=1&bar=2",
                "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
                "the URL without its port",
            ),
            (
                "http://mycompany.com:1234/myapp.php?foo=1&bar=2",
                "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=",
                "the URL with port 1234",
            ),
            (
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                "kvajT1Ptam85bY51eRf/AJRuM3w=",
                "the URL with port 443",
            ),
            (
                "http://mycompany.com/myapp.php?foo=1&bar=2",
                "0ZXoZLH/DfblKGATFgpif+LLRf4=",
                "the URL with port 80",
            ),
            (
                "https://mycompany.com:443/myapp.php?foo=1&bar=2",
                "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
                "the URL without its port",
            ),
        ] {
            assert_eq!(
                sdk_verify(received, &params, signature),
                Ok(()),
                "{received}, signed over {signed_over}"
            );
        }
    }

    /// twilio-node's vectors for URLs that carry credentials: they are part of what is signed,
    /// with or without the default port.
    #[test]
    fn credentials_in_the_url_are_signed_as_twilios_vectors_show() {
        let params = sdk_params();
        for (received, signature) in [
            (
                "https://user:pass@mycompany.com/myapp.php?foo=1&bar=2",
                "CukzLTc1tT5dXEDIHm/tKBanW10=",
            ),
            (
                "https://user@mycompany.com/myapp.php?foo=1&bar=2",
                "2YRLlVAflCqxaNicjMpJcSTgzSs=",
            ),
            (
                "https://user:pass@mycompany.com/myapp.php?foo=1&bar=2",
                "ZQFR1PTIZXF2MXB8ZnKCvnnA+rI=",
            ),
        ] {
            assert_eq!(
                sdk_verify(received, &params, signature),
                Ok(()),
                "{received}"
            );
        }
        // Without the credentials it is another URL.
        assert_eq!(
            sdk_verify(SDK_URL, &params, "CukzLTc1tT5dXEDIHm/tKBanW10="),
            Err(AuthError::BadSignature)
        );
    }

    /// twilio-node's special-characters vector: the query is signed exactly as it was sent.
    #[test]
    fn the_query_is_signed_as_sent() {
        let params = sdk_params();
        let url = format!("{SDK_URL}&Body=It's+amazing");
        assert_eq!(
            sdk_verify(&url, &params, "dsq4Ehbj6cs+KdTkpF5sSSplOWw="),
            Ok(())
        );
        assert_eq!(
            sdk_verify(&format!("{url}2"), &params, "dsq4Ehbj6cs+KdTkpF5sSSplOWw="),
            Err(AuthError::BadSignature)
        );
    }

    proptest! {
        /// What is signed is the set of name-value pairs: the sorted, distinct pairs, whatever
        /// their order in the form and however often each is repeated.
        #[test]
        fn the_set_of_pairs_is_signed(
            form in proptest::collection::vec(("[AB]{1,2}", "[xy1]{0,2}"), 0..8),
        ) {
            let distinct: BTreeSet<(String, String)> = form.iter().cloned().collect();
            let textbook: String = distinct.iter().map(|(k, v)| format!("{k}{v}")).collect();
            prop_assert_eq!(signed_params(&form), textbook.into_bytes());
            let repeated: Vec<_> = form.iter().rev().chain(&form).cloned().collect();
            prop_assert_eq!(sign(b"k", "https://h/", &repeated), sign(b"k", "https://h/", &form));
        }
    }

    #[test]
    fn either_port_form_of_the_url_verifies() {
        let params = pairs(&[("From", "+14158675309")]);
        let token = [Secret::new("12345")];
        for (signed, received) in [
            ("https://h.example/p?x=1", "https://h.example:443/p?x=1"),
            ("https://h.example:443/p?x=1", "https://h.example/p?x=1"),
            ("http://h.example/p", "http://h.example:80/p"),
            ("https://h.example:8443/p", "https://h.example:8443/p"),
        ] {
            let sig = sign(b"12345", signed, &params);
            assert!(
                verify(&token, received, &params, Some(&sig)).is_ok(),
                "{signed} vs {received}"
            );
        }
        let sig = sign(b"12345", "https://h.example:8443/p", &params);
        assert_eq!(
            verify(&token, "https://h.example:9443/p", &params, Some(&sig)),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn garbage_signatures_are_rejected() {
        let token = [Secret::new("12345")];
        let params = pairs(&[("From", "+14158675309")]);
        assert_eq!(
            verify(&token, "https://h/", &params, None),
            Err(AuthError::MissingSignature)
        );
        for sig in ["", "not base64!", "AAAA"] {
            assert_eq!(
                verify(&token, "https://h/", &params, Some(sig)),
                Err(AuthError::BadSignature)
            );
        }
    }

    fn route() -> Route {
        Route {
            caller: crate::domain::RealNumber::parse("+919810000001").unwrap(),
            number: crate::domain::VirtualNumber::parse("+911140001000").unwrap(),
            order_id: "ord-1".parse().unwrap(),
            market: "IN".parse().unwrap(),
            caller_role: "customer".parse().unwrap(),
            callee_role: "driver".parse().unwrap(),
            callee: crate::domain::RealNumber::parse("+919710000001").unwrap(),
            capabilities: crate::domain::Capabilities::VOICE_AND_SMS,
            record: false,
            stands_for: None,
            expires_at: i64::MAX,
            closed: false,
        }
    }

    #[test]
    fn connect_dials_the_callee_showing_the_virtual_number() {
        let settings = VoiceSettings {
            dial_timeout: 25,
            time_limit: 3600,
            refusal: VoiceRefusal::Reject,
            pin_prompts: PinPrompts::default(),
        };
        assert_eq!(
            voice_response(&Decision::Connect(route()), &settings, None),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Dial callerId=\"+911140001000\" \
             answerOnBridge=\"true\" timeout=\"25\" timeLimit=\"3600\"><Number>+919710000001</Number></Dial></Response>"
        );
        let urls = CallbackUrls::under("https://hooks.example.com");
        let with_end = voice_response(&Decision::Connect(route()), &settings, Some(&urls));
        assert_eq!(
            with_end,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Dial callerId=\"+911140001000\" \
             answerOnBridge=\"true\" timeout=\"25\" timeLimit=\"3600\" \
             action=\"https://hooks.example.com/v1/providers/twilio/dial-end\">\
             <Number>+919710000001</Number></Dial></Response>"
        );
    }

    #[test]
    fn a_recorded_orders_call_is_recorded_from_answer_on_two_channels() {
        let settings = VoiceSettings {
            dial_timeout: 25,
            time_limit: 3600,
            refusal: VoiceRefusal::Reject,
            pin_prompts: PinPrompts::default(),
        };
        let recorded = Route {
            record: true,
            ..route()
        };
        let urls = CallbackUrls::under("https://hooks.example.com");
        assert_eq!(
            voice_response(&Decision::Connect(recorded.clone()), &settings, Some(&urls)),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Dial callerId=\"+911140001000\" \
             answerOnBridge=\"true\" timeout=\"25\" timeLimit=\"3600\" \
             action=\"https://hooks.example.com/v1/providers/twilio/dial-end\" \
             record=\"record-from-answer-dual\" \
             recordingStatusCallback=\"https://hooks.example.com/v1/providers/twilio/recording\" \
             recordingStatusCallbackEvent=\"completed\">\
             <Number>+919710000001</Number></Dial></Response>"
        );
        // A refusal is a refusal, whatever the order would have recorded.
        assert_eq!(
            voice_response(
                &Decision::Refuse(crate::routing::Refusal::NoRoute),
                &settings,
                Some(&urls)
            ),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Reject/></Response>"
        );
    }

    #[test]
    fn a_recording_callback_names_the_call_and_where_its_audio_is() {
        let params = |pairs: &[(&'static str, &'static str)]| -> Vec<(Cow<'static, str>, Cow<'static, str>)> {
            pairs
                .iter()
                .map(|(k, v)| (Cow::Borrowed(*k), Cow::Borrowed(*v)))
                .collect()
        };
        // Twilio's documented RecordingStatusCallback parameters for a <Dial> recording.
        let full = [
            ("AccountSid", "AC00000000000000000000000000000000"),
            ("CallSid", "CAfedcba9876543210fedcba9876543210"),
            ("RecordingSid", "RE0123456789abcdef0123456789abcdef"),
            ("RecordingUrl", "https://api.twilio.com/2010-04-01/Accounts/AC00000000000000000000000000000000/Recordings/RE0123456789abcdef0123456789abcdef"),
            ("RecordingStatus", "completed"),
            ("RecordingDuration", "61"),
            ("RecordingChannels", "2"),
            ("RecordingSource", "DialVerb"),
            ("RecordingStartTime", "Thu, 03 Dec 2026 12:00:05 +0000"),
        ];
        let ready = recording_ready(&params(&full)).unwrap();
        assert_eq!(ready.call_id.as_str(), "CAfedcba9876543210fedcba9876543210");
        assert_eq!(
            ready.recording.recording_id.as_deref(),
            Some("RE0123456789abcdef0123456789abcdef")
        );
        assert!(ready
            .recording
            .recording_url
            .ends_with("/Recordings/RE0123456789abcdef0123456789abcdef"));
        assert_eq!(ready.recording.recording_seconds, Some(61));
        let with = |name: &'static str, value: &'static str| {
            let mut p = full.to_vec();
            p.retain(|(k, _)| *k != name);
            p.push((name, value));
            recording_ready(&params(&p))
        };
        assert_eq!(
            with("RecordingStatus", "absent"),
            Err(RequestError::Malformed("RecordingStatus"))
        );
        assert_eq!(
            with("RecordingUrl", "http://api.twilio.com/r"),
            Err(RequestError::Malformed("RecordingUrl"))
        );
        assert_eq!(
            with("RecordingSid", "RE 1"),
            Err(RequestError::Malformed("RecordingSid"))
        );
        assert_eq!(
            with("RecordingDuration", "x"),
            Err(RequestError::Malformed("RecordingDuration"))
        );
        let mut no_url = full.to_vec();
        no_url.retain(|(k, _)| *k != "RecordingUrl");
        assert_eq!(
            recording_ready(&params(&no_url)),
            Err(RequestError::Missing("RecordingUrl"))
        );
    }

    #[test]
    fn a_call_end_reads_the_calls_status_and_talk_time() {
        let params = |pairs: &[(&'static str, &'static str)]| -> Vec<(Cow<'static, str>, Cow<'static, str>)> {
            pairs
                .iter()
                .map(|(k, v)| (Cow::Borrowed(*k), Cow::Borrowed(*v)))
                .collect()
        };
        // As Twilio sends it after an answered call (its documented Dial action parameters).
        let end = call_end(&params(&[
            ("AccountSid", "AC00000000000000000000000000000000"),
            ("CallSid", "CAfedcba9876543210fedcba9876543210"),
            ("CallStatus", "in-progress"),
            ("DialCallSid", "CA0123456789abcdef0123456789abcdef"),
            ("DialCallStatus", "completed"),
            ("DialCallDuration", "42"),
            ("Direction", "inbound"),
        ]))
        .unwrap();
        assert_eq!(end.call_id.as_str(), "CAfedcba9876543210fedcba9876543210");
        assert_eq!((end.status, end.talk_seconds), (DialStatus::Answered, 42));
        let busy = call_end(&params(&[("CallSid", "CA1"), ("DialCallStatus", "busy")])).unwrap();
        assert_eq!((busy.status, busy.talk_seconds), (DialStatus::Busy, 0));
        for (bad, err) in [
            (
                vec![("DialCallStatus", "busy")],
                RequestError::Missing("CallSid"),
            ),
            (
                vec![("CallSid", "CA1")],
                RequestError::Missing("DialCallStatus"),
            ),
            (
                vec![("CallSid", "CA1"), ("DialCallStatus", "ringing")],
                RequestError::Malformed("DialCallStatus"),
            ),
            (
                vec![
                    ("CallSid", "CA1"),
                    ("DialCallStatus", "completed"),
                    ("DialCallDuration", "-3"),
                ],
                RequestError::Malformed("DialCallDuration"),
            ),
        ] {
            assert_eq!(call_end(&params(&bad)), Err(err));
        }
    }

    #[test]
    fn message_text_is_escaped_and_stripped_of_forbidden_characters() {
        let xml = message_response(&Decision::Connect(route()), "a<b & \"c\" ]]> \u{1}d");
        assert!(
            xml.contains(">a&lt;b &amp; &quot;c&quot; ]]&gt; \u{fffd}d</Message>"),
            "{xml}"
        );
    }
}
