//! Telnyx: TeXML calls and messaging webhooks, signed with Ed25519.
//!
//! Calls: when one of a TeXML application's numbers is called, Telnyx asks the application's
//! voice URL what to do, with `AccountSid`, `CallSid`, `From`, `To`, `ConnectionId`,
//! `CallStatus`, … and expects TeXML (Twilio's markup, Telnyx's dialect) back. The application's
//! voice method must be POST: the parameters then travel form-encoded in the body, which is what
//! is signed; with GET (Telnyx's default) they ride in the query, outside the signature.
//!
//! Texts: the messaging profile's webhook URL receives JSON events (`message.received` for an
//! inbound text, `message.sent`/`message.finalized` for delivery reports). The answer carries
//! nothing back: a text is relayed by sending a new one, `POST /v2/messages` with the account's
//! API key, from the virtual number (which must be on a messaging profile; the send needs no
//! profile id then).
//!
//! Both are signed alike: `telnyx-signature-ed25519` is the base64 Ed25519 signature of
//! `"{telnyx-timestamp}|{raw body}"` by Telnyx's key for the account, checked with the account's
//! public key (Mission Control: Keys & Credentials, Public Key: the base64 of 32 bytes), and
//! `telnyx-timestamp` is in Unix seconds.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use base64::Engine;
use quick_xml::events::BytesText;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::Deserialize;
use serde_json::json;

use super::{document, json, xml_safe, AuthError, RequestError, MAX_SKEW};
use crate::domain::{CallId, Channel, Route, UnixTime};
use crate::routing::{Decision, RouteQuery};

pub use super::{VoiceRefusal, VoiceSettings};

pub const SIGNATURE_HEADER: &str = "telnyx-signature-ed25519";
pub const TIMESTAMP_HEADER: &str = "telnyx-timestamp";

/// `<Dial timeout>` and `<Dial timeLimit>` bounds, in seconds, as TeXML documents them: a value
/// outside them is brought to the nearest bound rather than sent for Telnyx to refuse.
const DIAL_TIMEOUT: (u32, u32) = (5, 120);
const TIME_LIMIT: (u32, u32) = (60, 14_400);

/// Answered when a document cannot be written (it cannot happen with an in-memory buffer, but
/// if it did, the call must still be refused rather than fail open).
const FALLBACK_REFUSAL: &str =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Reject reason=\"busy\"/></Response>";

const ED25519_PUBLIC_KEY_LEN: usize = 32;
const ED25519_SIGNATURE_LEN: usize = 64;

/// The account's Ed25519 public key, which checks Telnyx's signatures. Written as base64
/// (Mission Control shows it so); [`fmt::Display`] writes it back the same way.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey([u8; ED25519_PUBLIC_KEY_LEN]);

/// Why a configured public key cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PublicKeyError {
    #[error("the Telnyx public key is not base64 (copy it from Mission Control: Keys & Credentials, Public Key)")]
    NotBase64,
    #[error("the Telnyx public key is {0} bytes; an Ed25519 public key is 32 (the base64 of Mission Control's Public Key)")]
    WrongLength(usize),
}

impl FromStr for PublicKey {
    type Err = PublicKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|_| PublicKeyError::NotBase64)?;
        let key: [u8; ED25519_PUBLIC_KEY_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| PublicKeyError::WrongLength(bytes.len()))?;
        Ok(PublicKey(key))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base64::engine::general_purpose::STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// What Telnyx signs: the timestamp header's exact text, a pipe, the raw body.
fn signed_message(timestamp: &str, payload: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(timestamp.len() + 1 + payload.len());
    message.extend_from_slice(timestamp.as_bytes());
    message.push(b'|');
    message.extend_from_slice(payload);
    message
}

fn key_pair(seed: &[u8; 32]) -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(seed).expect("any 32 bytes are an Ed25519 seed")
}

/// The signature Telnyx would send for `payload` at `timestamp`, made with the key whose seed
/// is `seed`: for tests and the operator CLI to play Telnyx.
pub fn sign(seed: &[u8; 32], timestamp: &str, payload: &[u8]) -> String {
    let signature = key_pair(seed).sign(&signed_message(timestamp, payload));
    base64::engine::general_purpose::STANDARD.encode(signature.as_ref())
}

/// The public key that checks what [`sign`] makes with `seed`.
pub fn public_key_of(seed: &[u8; 32]) -> PublicKey {
    let mut key = [0u8; ED25519_PUBLIC_KEY_LEN];
    key.copy_from_slice(key_pair(seed).public_key().as_ref());
    PublicKey(key)
}

/// Checks the signature against every configured public key (two while Telnyx rotates the
/// account's key) and refuses requests more than [`MAX_SKEW`] seconds from `now`, so that a
/// captured request cannot be replayed later. `payload` is the body exactly as received.
pub fn verify(
    keys: &[PublicKey],
    timestamp: Option<&str>,
    signature: Option<&str>,
    payload: &[u8],
    now: UnixTime,
) -> Result<(), AuthError> {
    let signature = signature.ok_or(AuthError::MissingSignature)?;
    let timestamp = timestamp.ok_or(AuthError::BadTimestamp)?;
    let sent: i64 = timestamp.parse().map_err(|_| AuthError::BadTimestamp)?;
    // Room for a signature as base64 decodes it (three bytes per four characters, padding
    // included); a longer one does not fit and is refused.
    let mut presented = [0u8; ED25519_SIGNATURE_LEN + 3];
    let presented = base64::engine::general_purpose::STANDARD
        .decode_slice(signature.trim(), &mut presented)
        .ok()
        .filter(|&len| len == ED25519_SIGNATURE_LEN)
        .map(|len| &presented[..len])
        .ok_or(AuthError::BadSignature)?;
    let message = signed_message(timestamp, payload);
    // Public keys hold no secret: stopping at the first that verifies tells a forger nothing.
    let signed = keys.iter().any(|key| {
        UnparsedPublicKey::new(&ED25519, &key.0)
            .verify(&message, presented)
            .is_ok()
    });
    if !signed {
        return Err(AuthError::BadSignature);
    }
    // Checked after the signature, so an unsigned request learns nothing about our clock. The
    // distance between any two i64s fits a u64: no timestamp, however far off, overflows it.
    if now.abs_diff(sent) > MAX_SKEW {
        return Err(AuthError::Stale);
    }
    Ok(())
}

/// Reads a TeXML application's request for an incoming call's instructions (its form body,
/// decoded by [`super::parse_form`]): TeXML asks with Twilio's `From`, `To` and `CallSid`.
pub use super::twilio::voice_query;

/// The TeXML answer to an incoming call: dial the callee showing the virtual number, or refuse.
/// TeXML gathers no PIN here, so [`Decision::AskPin`] is refused like any refusal.
pub fn voice_response(decision: &Decision, settings: &VoiceSettings) -> String {
    document(FALLBACK_REFUSAL, |w| match decision {
        Decision::Connect(route) => {
            let timeout = settings
                .dial_timeout
                .clamp(DIAL_TIMEOUT.0, DIAL_TIMEOUT.1)
                .to_string();
            let limit = settings
                .time_limit
                .clamp(TIME_LIMIT.0, TIME_LIMIT.1)
                .to_string();
            w.create_element("Dial")
                .with_attribute(("callerId", route.caller_id().as_str()))
                .with_attribute(("timeout", timeout.as_str()))
                .with_attribute(("timeLimit", limit.as_str()))
                .write_inner_content(|w| {
                    w.create_element("Number")
                        .write_text_content(BytesText::new(route.callee.expose()))?;
                    Ok(())
                })?;
            Ok(())
        }
        Decision::AskPin { .. } | Decision::Refuse(_) => match &settings.refusal {
            VoiceRefusal::Say(message) => {
                w.create_element("Say")
                    .write_text_content(BytesText::new(&xml_safe(message)))?;
                w.create_element("Hangup").write_empty()?;
                Ok(())
            }
            // As the first verb, `<Reject>` leaves the call unanswered (and unbilled).
            VoiceRefusal::Reject => {
                w.create_element("Reject")
                    .with_attribute(("reason", "busy"))
                    .write_empty()?;
                Ok(())
            }
        },
    })
}

/// The event type of an inbound text.
const MESSAGE_RECEIVED: &str = "message.received";

/// Only the event's type: every event is read this far, whatever its payload.
#[derive(Deserialize)]
struct EventKind<'a> {
    #[serde(borrow)]
    data: Option<KindData<'a>>,
}

#[derive(Deserialize)]
struct KindData<'a> {
    #[serde(borrow)]
    event_type: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct MessageEvent<'a> {
    #[serde(borrow)]
    data: MessageData<'a>,
}

#[derive(Deserialize)]
struct MessageData<'a> {
    #[serde(borrow)]
    payload: Option<Message<'a>>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    from: Option<Address<'a>>,
    #[serde(borrow, default)]
    to: Vec<Address<'a>>,
    /// Absent or null for a message with only media.
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Address<'a> {
    #[serde(borrow)]
    phone_number: Option<Cow<'a, str>>,
}

/// Reads a messaging webhook: the inbound text of a `message.received` event, its
/// `data.payload.id` as the call id (a retried delivery carries the same one). Any other event
/// (`message.sent`, `message.finalized`: delivery reports of what we sent) is `None`, to be
/// acknowledged and left alone. Of several recipients (a group text), the first is the one
/// asked about.
pub fn message_query(body: &[u8]) -> Result<Option<RouteQuery>, RequestError> {
    let kind: EventKind = json(body)?;
    let event_type = kind
        .data
        .ok_or(RequestError::Missing("data"))?
        .event_type
        .ok_or(RequestError::Missing("data.event_type"))?;
    if event_type != MESSAGE_RECEIVED {
        return Ok(None);
    }
    let event: MessageEvent = json(body)?;
    let message = event
        .data
        .payload
        .ok_or(RequestError::Missing("data.payload"))?;
    let id = message.id.ok_or(RequestError::Missing("data.payload.id"))?;
    let from = message
        .from
        .and_then(|a| a.phone_number)
        .ok_or(RequestError::Missing("data.payload.from.phone_number"))?;
    let to = message
        .to
        .into_iter()
        .next()
        .and_then(|a| a.phone_number)
        .ok_or(RequestError::Missing("data.payload.to.phone_number"))?;
    Ok(Some(RouteQuery::new(
        Channel::Sms,
        CallId::parse(&id).map_err(|_| RequestError::Malformed("data.payload.id"))?,
        &from,
        &to,
        Some(message.text.map(Cow::into_owned).unwrap_or_default()),
    )))
}

/// The JSON body of `POST /v2/messages` that relays `text` over `route`: from the virtual
/// number to the callee.
pub fn relay_message(route: &Route, text: &str) -> serde_json::Value {
    json!({
        "from": route.caller_id().as_str(),
        "to": route.callee.expose(),
        "text": text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Capabilities, RealNumber, VirtualNumber};
    use crate::providers::{parse_form, PinPrompts};
    use crate::routing::Refusal;

    /// The secret key of RFC 8032 §7.1 TEST 1. No Telnyx SDK publishes a fixed vector (their
    /// tests sign with a key generated on each run), so the signatures below were made
    /// independently of this code, with Python's `cryptography` package
    /// (`Ed25519PrivateKey.from_private_bytes(seed).sign(b"1767225600|" + body)`).
    const SEED: [u8; 32] =
        hex_32("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
    /// RFC 8032 §7.1 TEST 1's public key, base64 as Mission Control shows a key.
    const PUBLIC_KEY: &str = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
    /// RFC 8032 §7.1 TEST 2's secret key and public key: the account's other key in a rotation.
    const OTHER_SEED: [u8; 32] =
        hex_32("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb");
    const OTHER_PUBLIC_KEY: &str = "PUAXw+hDiVqStwqnTRt+vJyYLM8uxJaMwM1V8Sr0Zgw=";

    const TIMESTAMP: &str = "1767225600";
    const NOW: i64 = 1_767_225_600;

    /// A TeXML instruction request as Telnyx documents its parameters (developers.telnyx.com,
    /// "TeXML instruction fetching" and the TeXML callbacks' examples).
    const FORM: &[u8] = b"AccountSid=f5586561-8ff0-4291-a51b-c7dfe4139ff9&ApiVersion=2010-04-01&CallSid=v3%3A9X2vxPDFY2RHSJ1EdMS0RHRksMTg7ldNxdjWbVr9zBjbGjGsSe-aiQ&CallSidLegacy=v3%3A9X2vxPDFY2RHSJ1EdMS0RHRksMTg7ldNxdjWbVr9zBjbGjGsSe-aiQ&CallStatus=ringing&ConnectionId=1234567890&Direction=inbound&From=%2B35319605860&To=%2B13129457420";
    const FORM_SIGNATURE: &str =
        "MArwpT8E3T46p8XCcBZI3oxnXqhVyFYdyywZWTaqHfJhCOSP8Ym97hK/5FJopjqRg5ns2061QMl2anq6TLkxCg==";
    /// An inbound message event, trimmed from Telnyx's `InboundMessageEvent` example.
    const JSON: &[u8] = br#"{"data":{"event_type":"message.received","id":"bf6307bd-884d-4c1f-b6ea-c62b8c495d3c","payload":{"id":"7ee4241c-f127-47e5-9c34-3aac291f8058","from":{"phone_number":"+18665550001"},"to":[{"phone_number":"+18445550001"}],"text":"Hello, World!"}}}"#;
    const JSON_SIGNATURE: &str =
        "Xqi/xENPZwtSHE3+xZyjNTzo5GY6rsBn2cE6DC+vEeKiT45sDCnJritTddNH3QOrMRxA7+WMuXqvCDwni02iCg==";
    const JSON_OTHER_SIGNATURE: &str =
        "Tz5Rn4ZLtNXOueJ+m8rfd6/NsCqhTRFcib7gwiimbMZFyzachTWMl3YnCcOEOTIk0zQtgbaG7hvw3h6x8Vq/Bg==";

    const fn hex_32(hex: &str) -> [u8; 32] {
        const fn nibble(c: u8) -> u8 {
            match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                _ => panic!("not lowercase hex"),
            }
        }
        let hex = hex.as_bytes();
        let mut out = [0u8; 32];
        let mut i = 0;
        while i < 32 {
            out[i] = nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]);
            i += 1;
        }
        out
    }

    fn key(base64: &str) -> PublicKey {
        base64.parse().unwrap()
    }

    #[test]
    fn the_key_of_a_seed_is_rfc_8032s() {
        assert_eq!(public_key_of(&SEED), key(PUBLIC_KEY));
        assert_eq!(public_key_of(&OTHER_SEED), key(OTHER_PUBLIC_KEY));
    }

    #[test]
    fn signatures_match_the_independently_made_vectors() {
        assert_eq!(sign(&SEED, TIMESTAMP, FORM), FORM_SIGNATURE);
        assert_eq!(sign(&SEED, TIMESTAMP, JSON), JSON_SIGNATURE);
        assert_eq!(sign(&OTHER_SEED, TIMESTAMP, JSON), JSON_OTHER_SIGNATURE);
        let keys = [key(PUBLIC_KEY)];
        for (body, signature) in [(FORM, FORM_SIGNATURE), (JSON, JSON_SIGNATURE)] {
            assert_eq!(
                verify(&keys, Some(TIMESTAMP), Some(signature), body, NOW),
                Ok(())
            );
        }
    }

    #[test]
    fn during_a_rotation_either_key_verifies() {
        let keys = [key(PUBLIC_KEY), key(OTHER_PUBLIC_KEY)];
        for signature in [JSON_SIGNATURE, JSON_OTHER_SIGNATURE] {
            assert_eq!(
                verify(&keys, Some(TIMESTAMP), Some(signature), JSON, NOW),
                Ok(())
            );
        }
        assert_eq!(
            verify(&keys[1..], Some(TIMESTAMP), Some(JSON_SIGNATURE), JSON, NOW),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify(&[], Some(TIMESTAMP), Some(JSON_SIGNATURE), JSON, NOW),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn a_tampered_body_or_timestamp_does_not_verify() {
        let keys = [key(PUBLIC_KEY)];
        let tampered = String::from_utf8(JSON.to_vec())
            .unwrap()
            .replace("+18665550001", "+18665550002");
        assert_eq!(
            verify(
                &keys,
                Some(TIMESTAMP),
                Some(JSON_SIGNATURE),
                tampered.as_bytes(),
                NOW
            ),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify(&keys, Some("1767225601"), Some(JSON_SIGNATURE), JSON, NOW),
            Err(AuthError::BadSignature)
        );
        // The same instant written otherwise is another signed text.
        assert_eq!(
            verify(&keys, Some("01767225600"), Some(JSON_SIGNATURE), JSON, NOW),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn old_or_future_requests_are_stale() {
        let keys = [key(PUBLIC_KEY)];
        for (sent, ok) in [
            (NOW - 300, true),
            (NOW - 301, false),
            (NOW + 300, true),
            (NOW + 301, false),
            (i64::MIN, false),
            (i64::MAX, false),
        ] {
            let ts = sent.to_string();
            let signature = sign(&SEED, &ts, JSON);
            let want = if ok { Ok(()) } else { Err(AuthError::Stale) };
            assert_eq!(
                verify(&keys, Some(&ts), Some(&signature), JSON, NOW),
                want,
                "{ts}"
            );
        }
    }

    #[test]
    fn missing_or_malformed_signatures_and_timestamps_are_refused() {
        let keys = [key(PUBLIC_KEY)];
        assert_eq!(
            verify(&keys, Some(TIMESTAMP), None, JSON, NOW),
            Err(AuthError::MissingSignature)
        );
        assert_eq!(
            verify(&keys, None, Some(JSON_SIGNATURE), JSON, NOW),
            Err(AuthError::BadTimestamp)
        );
        for ts in ["", "soon", "1767225600.5", "1e9"] {
            assert_eq!(
                verify(&keys, Some(ts), Some(JSON_SIGNATURE), JSON, NOW),
                Err(AuthError::BadTimestamp),
                "{ts:?}"
            );
        }
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 63]);
        let long = base64::engine::general_purpose::STANDARD.encode([7u8; 65]);
        let zeros = base64::engine::general_purpose::STANDARD.encode([0u8; 64]);
        for signature in ["", "not base64!", "AAAA", &short, &long, &zeros] {
            assert_eq!(
                verify(&keys, Some(TIMESTAMP), Some(signature), JSON, NOW),
                Err(AuthError::BadSignature),
                "{signature:?}"
            );
        }
    }

    #[test]
    fn public_keys_are_read_strictly_and_written_back_alike() {
        let parsed = key(&format!(" {PUBLIC_KEY}\n"));
        assert_eq!(parsed.to_string(), PUBLIC_KEY);
        assert_eq!(format!("{parsed:?}"), format!("PublicKey({PUBLIC_KEY})"));
        assert_eq!(
            "not base64!".parse::<PublicKey>(),
            Err(PublicKeyError::NotBase64)
        );
        // Its SPKI DER form (44 bytes) is another thing than what Mission Control shows.
        assert_eq!(
            "MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=".parse::<PublicKey>(),
            Err(PublicKeyError::WrongLength(44))
        );
        assert_eq!("".parse::<PublicKey>(), Err(PublicKeyError::WrongLength(0)));
        let message = PublicKeyError::WrongLength(44).to_string();
        assert!(message.contains("32"), "{message}");
    }

    #[test]
    fn a_texml_request_is_read_into_a_call_question() {
        let params = parse_form(FORM).unwrap();
        let query = voice_query(&params).unwrap();
        assert_eq!(query.channel, Channel::Voice);
        assert_eq!(
            query.call_id.as_str(),
            "v3:9X2vxPDFY2RHSJ1EdMS0RHRksMTg7ldNxdjWbVr9zBjbGjGsSe-aiQ"
        );
        assert_eq!(query.caller.unwrap().expose(), "+35319605860");
        assert_eq!(query.dialled.unwrap().as_str(), "+13129457420");
        assert_eq!(query.text, None);
        // A SIP caller or a withheld number is no E.164 number: asked, and refused later.
        let sip =
            parse_form(b"CallSid=c-1&From=sip%3Aalice%40example.com&To=%2B13129457420").unwrap();
        assert!(voice_query(&sip).unwrap().caller.is_err());
    }

    #[test]
    fn a_texml_request_without_its_parameters_is_refused_without_echoing_them() {
        for (form, error) in [
            (
                &b"CallSid=c-1&To=%2B13129457420"[..],
                RequestError::Missing("From"),
            ),
            (
                b"CallSid=c-1&From=%2B35319605860",
                RequestError::Missing("To"),
            ),
            (
                b"From=%2B35319605860&To=%2B13129457420",
                RequestError::Missing("CallSid"),
            ),
            (
                b"CallSid=c+1&From=%2B35319605860&To=%2B13129457420",
                RequestError::Malformed("CallSid"),
            ),
        ] {
            let got = voice_query(&parse_form(form).unwrap()).unwrap_err();
            assert_eq!(got, error);
            let message = got.to_string();
            assert!(
                !message.contains("35319605860") && !message.contains("13129457420"),
                "{message}"
            );
        }
    }

    #[test]
    fn an_inbound_text_is_read_into_a_text_question() {
        let query = message_query(JSON).unwrap().expect("an inbound text");
        assert_eq!(query.channel, Channel::Sms);
        assert_eq!(
            query.call_id.as_str(),
            "7ee4241c-f127-47e5-9c34-3aac291f8058"
        );
        assert_eq!(query.caller.unwrap().expose(), "+18665550001");
        assert_eq!(query.dialled.unwrap().as_str(), "+18445550001");
        assert_eq!(query.text.as_deref(), Some("Hello, World!"));
    }

    /// Telnyx's `InboundMessageEvent` example, whole: every field we do not read is ignored.
    #[test]
    fn telnyxs_documented_inbound_event_is_read() {
        let body = br#"{"data":{"event_type":"message.received","id":"bf6307bd-884d-4c1f-b6ea-c62b8c495d3c","occurred_at":"2019-01-23T18:10:02.574Z","payload":{"cc":[],"completed_at":null,"cost":{"amount":0.0051,"currency":"USD"},"direction":"inbound","encoding":"GSM-7","errors":[],"from":{"carrier":"T-MOBILE USA, INC.","line_type":"Wireless","phone_number":"+18665550001"},"id":"7ee4241c-f127-47e5-9c34-3aac291f8058","media":[],"messaging_profile_id":"0f512bda-ae1e-4597-8e11-e5f5686b97d3","organization_id":"b448f9cc-a842-4784-98e9-03c1a5872950","parts":1,"received_at":"2019-01-23T18:10:02.574Z","record_type":"message","sent_at":null,"subject":"From Telnyx!","tags":["Greetings"],"text":"Hello, World!","to":[{"carrier":"TELNYX LLC","line_type":"VoIP","phone_number":"+18445550001","status":"delivered"}],"type":"SMS","valid_until":null,"webhook_failover_url":"https://backup.example.com/hooks","webhook_url":"https://www.example.com/hooks"},"record_type":"event"},"meta":{"attempt":1,"delivered_to":"https://www.example.com/hooks"}}"#;
        let query = message_query(body).unwrap().expect("an inbound text");
        assert_eq!(query.text.as_deref(), Some("Hello, World!"));
        // Media alone: no text to relay, an empty one.
        let media_only = String::from_utf8(body.to_vec())
            .unwrap()
            .replace(r#""text":"Hello, World!""#, r#""text":null"#);
        let query = message_query(media_only.as_bytes()).unwrap().unwrap();
        assert_eq!(query.text.as_deref(), Some(""));
    }

    #[test]
    fn delivery_reports_and_other_events_are_acknowledged_and_ignored() {
        for event_type in ["message.sent", "message.finalized", "call.initiated"] {
            // A report's payload is another shape: it is not read at all.
            let body = format!(
                r#"{{"data":{{"event_type":"{event_type}","id":"e-1","payload":{{"to":[{{"status":"delivered"}}],"from":7}}}}}}"#
            );
            assert!(
                message_query(body.as_bytes()).unwrap().is_none(),
                "{event_type}"
            );
        }
    }

    #[test]
    fn a_malformed_text_event_names_what_is_wrong_and_echoes_nothing() {
        let with = |payload: &str| {
            format!(r#"{{"data":{{"event_type":"message.received","payload":{payload}}}}}"#)
        };
        for (body, error) in [
            (r#"{"meta":{}}"#.to_owned(), RequestError::Missing("data")),
            (
                r#"{"data":{"payload":{}}}"#.to_owned(),
                RequestError::Missing("data.event_type"),
            ),
            (
                r#"{"data":{"event_type":"message.received"}}"#.to_owned(),
                RequestError::Missing("data.payload"),
            ),
            (
                with(
                    r#"{"from":{"phone_number":"+18665550001"},"to":[{"phone_number":"+18445550001"}]}"#,
                ),
                RequestError::Missing("data.payload.id"),
            ),
            (
                with(
                    r#"{"id":"m 1","from":{"phone_number":"+18665550001"},"to":[{"phone_number":"+18445550001"}]}"#,
                ),
                RequestError::Malformed("data.payload.id"),
            ),
            (
                with(r#"{"id":"m-1","from":{},"to":[{"phone_number":"+18445550001"}]}"#),
                RequestError::Missing("data.payload.from.phone_number"),
            ),
            (
                with(r#"{"id":"m-1","from":{"phone_number":"+18665550001"},"to":[]}"#),
                RequestError::Missing("data.payload.to.phone_number"),
            ),
        ] {
            let got = message_query(body.as_bytes()).unwrap_err();
            assert_eq!(got, error, "{body}");
            let message = got.to_string();
            assert!(
                !message.contains("18665550001") && !message.contains("18445550001"),
                "{message}"
            );
        }
        let garbled = with(r#"{"id":"m-1","from":{"phone_number":+18665550001}}"#);
        let got = message_query(garbled.as_bytes()).unwrap_err();
        assert!(matches!(got, RequestError::Json { .. }), "{got:?}");
        assert!(!got.to_string().contains("18665550001"));
        assert_eq!(
            message_query(b"{\"data\":\"\xff\"}").unwrap_err(),
            RequestError::NotUtf8
        );
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
            pin_prompts: PinPrompts::default(),
        }
    }

    #[test]
    fn connect_dials_the_callee_showing_the_virtual_number() {
        assert_eq!(
            voice_response(&Decision::Connect(route()), &settings(VoiceRefusal::Reject)),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Dial callerId=\"+911140001000\" \
             timeout=\"25\" timeLimit=\"3600\"><Number>+919710000001</Number></Dial></Response>"
        );
    }

    #[test]
    fn dial_times_are_brought_within_texmls_bounds() {
        for ((timeout, limit), (want_timeout, want_limit)) in [
            ((0, 0), ("5", "60")),
            ((1000, 100_000), ("120", "14400")),
            ((5, 60), ("5", "60")),
        ] {
            let settings = VoiceSettings {
                dial_timeout: timeout,
                time_limit: limit,
                ..settings(VoiceRefusal::Reject)
            };
            let xml = voice_response(&Decision::Connect(route()), &settings);
            assert!(
                xml.contains(&format!(
                    "timeout=\"{want_timeout}\" timeLimit=\"{want_limit}\""
                )),
                "{xml}"
            );
        }
    }

    #[test]
    fn refusals_reject_busy_or_say_the_message_and_hang_up() {
        let refused = Decision::Refuse(Refusal::NoRoute);
        assert_eq!(
            voice_response(&refused, &settings(VoiceRefusal::Reject)),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Reject reason=\"busy\"/></Response>"
        );
        let say = settings(VoiceRefusal::Say("Sorry <you> & \u{1}".into()));
        assert_eq!(
            voice_response(&refused, &say),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Say>Sorry &lt;you&gt; &amp; \u{fffd}</Say><Hangup/></Response>"
        );
    }

    #[test]
    fn asking_for_a_pin_is_refused_as_texml_gathers_none_here() {
        for again in [false, true] {
            let ask = Decision::AskPin { again };
            for refusal in [VoiceRefusal::Reject, VoiceRefusal::Say("No.".into())] {
                let settings = settings(refusal);
                assert_eq!(
                    voice_response(&ask, &settings),
                    voice_response(&Decision::Refuse(Refusal::NoRoute), &settings)
                );
            }
        }
    }

    #[test]
    fn a_relayed_text_goes_from_the_virtual_number_to_the_callee() {
        assert_eq!(
            relay_message(&route(), "On my way \"now\""),
            json!({
                "from": "+911140001000",
                "to": "+919710000001",
                "text": "On my way \"now\"",
            })
        );
    }
}
