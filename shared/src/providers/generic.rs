//! Our own contract for carriers and in-house IVRs (the Airtel/Jio-style integrations):
//! a JSON question, a JSON answer, and an HMAC-SHA256 signature over a timestamp and the body.
//!
//! ```text
//! POST /v1/providers/generic/route
//! X-Vnmask-Timestamp: 1767225600
//! X-Vnmask-Signature: hex(HMAC-SHA256(secret, "1767225600" + "." + body))
//! {"caller": "+919810000001", "dialled": "+911140001000", "call_id": "c-1", "channel": "voice"}
//! ```

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;

use super::{json, same_bytes, AuthError, RequestError, Secret, MAX_SKEW};
use crate::domain::UnixTime;
use crate::domain::{CallEnd, CallId, Channel, DialStatus, Recording, RecordingError};
use crate::routing::{Decision, RouteQuery};

pub const TIMESTAMP_HEADER: &str = "x-vnmask-timestamp";
pub const SIGNATURE_HEADER: &str = "x-vnmask-signature";

/// The hex signature of `body` sent at `timestamp` (the header's exact text).
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    hex::encode(mac(secret, timestamp, body))
}

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// Checks the signature against every configured secret and refuses requests more than
/// [`MAX_SKEW`] seconds from `now`, so that a captured request cannot be replayed later.
pub fn verify(
    secrets: &[Secret],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: UnixTime,
) -> Result<(), AuthError> {
    let signature = signature.ok_or(AuthError::MissingSignature)?;
    let timestamp = timestamp.ok_or(AuthError::BadTimestamp)?;
    let sent: i64 = timestamp.parse().map_err(|_| AuthError::BadTimestamp)?;
    let presented = hex::decode(signature.trim()).map_err(|_| AuthError::BadSignature)?;
    let mut matched = false;
    for secret in secrets {
        matched |= same_bytes(&mac(secret.expose(), timestamp, body), &presented);
    }
    if !matched {
        return Err(AuthError::BadSignature);
    }
    // Checked after the signature, so an unsigned request learns nothing about our clock. The
    // distance between any two i64s fits a u64: no timestamp, however far off, overflows it.
    if now.abs_diff(sent) > MAX_SKEW {
        return Err(AuthError::Stale);
    }
    Ok(())
}

#[derive(Deserialize)]
struct RouteRequest<'a> {
    #[serde(borrow)]
    caller: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    dialled: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    call_id: std::borrow::Cow<'a, str>,
    channel: Channel,
}

/// Reads the JSON question.
pub fn route_query(body: &[u8]) -> Result<RouteQuery, RequestError> {
    let req: RouteRequest = json(body)?;
    Ok(RouteQuery::new(
        req.channel,
        CallId::parse(&req.call_id).map_err(|_| RequestError::Malformed("call_id"))?,
        &req.caller,
        &req.dialled,
        None,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PinRequest<'a> {
    #[serde(borrow)]
    caller: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    dialled: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    call_id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    digits: std::borrow::Cow<'a, str>,
}

/// Reads the second question of a call answered `collect_pin`: `{"caller", "dialled",
/// "call_id", "digits"}`, the same call id, and what the caller keyed in (which may not be a
/// PIN). Only calls ask for PINs.
pub fn pin_query(body: &[u8]) -> Result<RouteQuery, RequestError> {
    let req: PinRequest = json(body)?;
    Ok(RouteQuery::new(
        Channel::Voice,
        CallId::parse(&req.call_id).map_err(|_| RequestError::Malformed("call_id"))?,
        &req.caller,
        &req.dialled,
        None,
    )
    .with_pin(req.digits.trim()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallEndRequest<'a> {
    #[serde(borrow)]
    call_id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    status: std::borrow::Cow<'a, str>,
    #[serde(default)]
    talk_seconds: u32,
    #[serde(borrow, default)]
    recording_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    recording_url: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    recording_seconds: Option<u32>,
}

/// Reads the end of a connected call, `{"call_id", "status", "talk_seconds"}`, signed like a
/// route question. `status` is `answered`, `no-answer`, `busy`, `failed` or `canceled`. A
/// recorded call may add `recording_url` (https), `recording_id` and `recording_seconds`.
pub fn call_end(body: &[u8]) -> Result<CallEnd, RequestError> {
    let req: CallEndRequest = json(body)?;
    let recording = match (&req.recording_url, &req.recording_id) {
        (Some(url), id) => Some(
            Recording::parse(id.as_deref(), url, req.recording_seconds).map_err(|e| match e {
                RecordingError::Id => RequestError::Malformed("recording_id"),
                RecordingError::Url => RequestError::Malformed("recording_url"),
            })?,
        ),
        (None, Some(_)) => return Err(RequestError::Missing("recording_url")),
        (None, None) => None,
    };
    Ok(CallEnd::new(
        CallId::parse(&req.call_id).map_err(|_| RequestError::Malformed("call_id"))?,
        DialStatus::parse(&req.status).map_err(|_| RequestError::Malformed("status"))?,
        req.talk_seconds,
    )
    .with_recording(recording))
}

/// The JSON answer: `connect` with the callee and the caller id to present (and `record: true`
/// when the order records its calls), or `reject` with why.
pub fn route_response(decision: &Decision) -> String {
    let doc = match decision {
        Decision::Connect(route) if route.record => json!({
            "action": "connect",
            "callee": route.callee.expose(),
            "caller_id": route.caller_id().as_str(),
            "record": true,
        }),
        Decision::Connect(route) => json!({
            "action": "connect",
            "callee": route.callee.expose(),
            "caller_id": route.caller_id().as_str(),
        }),
        Decision::AskPin { again } => json!({ "action": "collect_pin", "again": again }),
        Decision::Refuse(reason) => json!({ "action": "reject", "reason": reason.as_str() }),
    };
    doc.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_end_reads_its_status_and_talk_time_strictly() {
        let end =
            call_end(br#"{"call_id": "c-1", "status": "answered", "talk_seconds": 30}"#).unwrap();
        assert_eq!((end.status, end.talk_seconds), (DialStatus::Answered, 30));
        let end = call_end(br#"{"call_id": "c-1", "status": "no-answer"}"#).unwrap();
        assert_eq!((end.status, end.talk_seconds), (DialStatus::NoAnswer, 0));
        assert_eq!(
            call_end(br#"{"call_id": "c-1", "status": "ringing"}"#),
            Err(RequestError::Malformed("status"))
        );
        assert_eq!(
            call_end(br#"{"call_id": "c 1", "status": "busy"}"#),
            Err(RequestError::Malformed("call_id"))
        );
        for bad in [
            &br#"{"status": "busy"}"#[..],
            br#"{"call_id": "c-1", "status": "busy", "caller": "+919810000001"}"#,
            br#"{"call_id": "c-1", "status": "busy", "talk_seconds": -1}"#,
        ] {
            assert!(matches!(call_end(bad), Err(RequestError::Json { .. })));
        }
    }

    #[test]
    fn a_recorded_calls_end_may_say_where_its_recording_is() {
        let end = call_end(
            br#"{"call_id": "c-1", "status": "answered", "talk_seconds": 30,
                 "recording_id": "rec-9", "recording_url": "https://media.example.com/rec-9.wav",
                 "recording_seconds": 31}"#,
        )
        .unwrap();
        let recording = end.recording.unwrap();
        assert_eq!(recording.recording_id.as_deref(), Some("rec-9"));
        assert_eq!(recording.recording_seconds, Some(31));
        assert_eq!(
            call_end(br#"{"call_id": "c-1", "status": "answered", "recording_id": "rec-9"}"#),
            Err(RequestError::Missing("recording_url"))
        );
        assert_eq!(
            call_end(
                br#"{"call_id": "c-1", "status": "answered", "recording_url": "http://media.example.com/r"}"#
            ),
            Err(RequestError::Malformed("recording_url"))
        );
    }

    const NOW: i64 = 1_767_225_600;

    #[test]
    fn signed_request_verifies_with_either_secret() {
        let secrets = [
            Secret::new("first-secret-0123456789"),
            Secret::new("second-secret-0123456789"),
        ];
        let body = br#"{"caller":"+919810000001"}"#;
        for s in &secrets {
            let sig = sign(s.expose(), "1767225600", body);
            assert!(verify(&secrets, Some("1767225600"), Some(&sig), body, NOW).is_ok());
        }
        let sig = sign(b"someone-else", "1767225600", body);
        assert_eq!(
            verify(&secrets, Some("1767225600"), Some(&sig), body, NOW),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn old_or_future_requests_are_stale() {
        let secrets = [Secret::new("first-secret-0123456789")];
        for (ts, ok) in [
            (NOW - 300, true),
            (NOW - 301, false),
            (NOW + 300, true),
            (NOW + 301, false),
        ] {
            let ts = ts.to_string();
            let sig = sign(secrets[0].expose(), &ts, b"{}");
            let got = verify(&secrets, Some(&ts), Some(&sig), b"{}", NOW);
            assert_eq!(got.is_ok(), ok, "{ts}: {got:?}");
        }
    }

    /// The skew is a distance between two i64s, which the difference overflows at the extremes:
    /// a signed timestamp anywhere in i64, with our clock anywhere in i64, is judged, not wrapped.
    #[test]
    fn timestamps_at_the_ends_of_i64_are_judged_without_overflow() {
        let secrets = [Secret::new("first-secret-0123456789")];
        let skew = MAX_SKEW as i64;
        for (sent, now, ok) in [
            (i64::MAX, NOW, false),
            (i64::MIN, NOW, false),
            (i64::MIN + 1, NOW, false),
            (-1, NOW, false),
            (i64::MIN, i64::MAX, false),
            (i64::MAX, i64::MIN, false),
            (i64::MAX, i64::MAX - skew, true),
            (i64::MAX, i64::MAX - skew - 1, false),
            (i64::MIN, i64::MIN + skew, true),
            (i64::MIN, i64::MIN + skew + 1, false),
            (i64::MIN + skew, i64::MIN, true),
        ] {
            let ts = sent.to_string();
            let sig = sign(secrets[0].expose(), &ts, b"{}");
            let got = verify(&secrets, Some(&ts), Some(&sig), b"{}", now);
            let want = if ok { Ok(()) } else { Err(AuthError::Stale) };
            assert_eq!(got, want, "sent {sent}, now {now}");
        }
    }

    /// A timestamp that is no i64 (past either end, or not a number) is refused as malformed,
    /// even when it is signed.
    #[test]
    fn timestamps_beyond_i64_are_malformed() {
        let secrets = [Secret::new("first-secret-0123456789")];
        for ts in [
            u64::MAX.to_string(),
            (i64::MAX as u64 + 1).to_string(),
            format!("-{}", i64::MAX as u64 + 2),
            i128::MIN.to_string(),
            "1767225600.5".to_owned(),
            "".to_owned(),
        ] {
            let sig = sign(secrets[0].expose(), &ts, b"{}");
            assert_eq!(
                verify(&secrets, Some(&ts), Some(&sig), b"{}", NOW),
                Err(AuthError::BadTimestamp),
                "{ts}"
            );
        }
    }

    #[test]
    fn json_errors_do_not_echo_values() {
        let err = route_query(br#"{"caller": "+919810000001", "dialled": 5}"#).unwrap_err();
        assert!(!err.to_string().contains("9810"), "{err}");
    }
}
