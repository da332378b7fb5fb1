//! Exotel: the Connect applet's dynamic URL ("Programmable Connect"), and Passthru.
//!
//! Exotel GETs the configured URL with the call's details as query parameters (`CallSid`,
//! `CallFrom`, `CallTo`, …) and expects JSON naming the number to dial. Exotel signs nothing,
//! so the URL carries a secret token and, optionally, only Exotel's addresses are let in.
//!
//! Exotel writes numbers the way its account's market does, not in E.164: `CallFrom=09494865411`
//! (trunk prefix `0`), `CallTo=08047113155` (a landline ExoPhone with its STD code). The two
//! numbers are read in the market configured for Exotel ([`E164::parse_national`]).
//!
//! [`E164::parse_national`]: crate::domain::E164::parse_national

use std::borrow::Cow;
use std::net::IpAddr;
use std::str::FromStr;

use serde_json::json;

use super::{same_bytes, seconds, AuthError, RequestError, Secret};
use crate::domain::{
    CallEnd, CallId, Channel, DialStatus, Market, Pin, RealNumber, Recording, VirtualNumber,
};
use crate::routing::{Decision, RouteQuery};

/// The query parameter that may carry the token (the other place is the last path segment).
pub const TOKEN_PARAM: &str = "vnmask_token";

/// Reads a Connect applet or Passthru request, its two numbers in `market`'s national forms or
/// in E.164. Exotel's own pages spell `CallFrom` both ways, so names are matched without regard
/// to case.
///
/// The caller is `CallFrom` and the dialled ExoPhone `CallTo`; Passthru's older parameter set
/// names them only `From` and `To`, read when the `Call…` name is absent. Nothing else is a
/// number to route on: `DialWhomNumber` is whom the applet last dialled (our answer, not the
/// question). `digits` is what the caller keyed in a Gather applet before this one, which
/// Exotel wraps in double quotes (`"048213"`): when they have a PIN's form, they are the
/// caller's PIN (an IVR menu's `"1"` is not one, and is not counted as a guess).
pub fn connect_query(
    params: &[(Cow<'_, str>, Cow<'_, str>)],
    market: &Market,
) -> Result<RouteQuery, RequestError> {
    let find = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    };
    let get = |name: &'static str, older: &'static str| {
        find(name)
            .or_else(|| find(older))
            .ok_or(RequestError::Missing(name))
    };
    let sid = find("CallSid").ok_or(RequestError::Missing("CallSid"))?;
    let call_id = CallId::parse(sid).map_err(|_| RequestError::Malformed("CallSid"))?;
    let caller = get("CallFrom", "From")?;
    let dialled = get("CallTo", "To")?;
    let query = RouteQuery {
        channel: Channel::Voice,
        call_id,
        caller: RealNumber::parse_national(caller, market),
        dialled: VirtualNumber::parse_national(dialled, market),
        text: None,
        pin: None,
    };
    Ok(match find("digits").map(|d| d.trim().trim_matches('"')) {
        Some(digits) if Pin::parse(digits).is_ok() => query.with_pin(digits),
        _ => query,
    })
}

/// Reads the Passthru applet placed after the Connect applet in the flow: Exotel's report of
/// how the connected call ended. `DialCallStatus` says it; an older flow may send only
/// `CallType` (`completed`, `client-hangup`, `incomplete`). `DialCallDuration` counts from the
/// callee's leg being dialled, so for Exotel talk time includes the callee's ringing. A recorded
/// call's Passthru also carries `RecordingUrl` (Exotel has no recording id apart from it).
pub fn call_end(params: &[(Cow<'_, str>, Cow<'_, str>)]) -> Result<CallEnd, RequestError> {
    let find = |name: &str| {
        params
            .iter()
            .find(|(k, v)| k.eq_ignore_ascii_case(name) && !v.trim().is_empty())
            .map(|(_, v)| v.as_ref())
    };
    let sid = find("CallSid").ok_or(RequestError::Missing("CallSid"))?;
    let call_id = CallId::parse(sid).map_err(|_| RequestError::Malformed("CallSid"))?;
    let status = match (find("DialCallStatus"), find("CallType")) {
        (Some(status), _) => {
            DialStatus::parse(status).map_err(|_| RequestError::Malformed("DialCallStatus"))?
        }
        (None, Some(kind)) => match kind.trim().to_ascii_lowercase().as_str() {
            "completed" => DialStatus::Answered,
            "client-hangup" => DialStatus::Canceled,
            "incomplete" => DialStatus::NoAnswer,
            _ => return Err(RequestError::Malformed("CallType")),
        },
        (None, None) => return Err(RequestError::Missing("DialCallStatus")),
    };
    let talk = seconds(find("DialCallDuration"), "DialCallDuration")?;
    // Exotel writes `null` where a call has no recording.
    let recording = match find("RecordingUrl").filter(|u| !u.trim().eq_ignore_ascii_case("null")) {
        Some(url) => Some(
            Recording::parse(None, url.trim(), None)
                .map_err(|_| RequestError::Malformed("RecordingUrl"))?,
        ),
        None => None,
    };
    Ok(CallEnd::new(call_id, status, talk).with_recording(recording))
}

/// Checks the presented token against the configured ones (two during a rotation).
pub fn verify_token(tokens: &[Secret], presented: Option<&str>) -> Result<(), AuthError> {
    let presented = presented.ok_or(AuthError::BadToken)?;
    let mut matched = false;
    for token in tokens {
        matched |= same_bytes(token.expose(), presented.as_bytes());
    }
    if matched {
        Ok(())
    } else {
        Err(AuthError::BadToken)
    }
}

/// The addresses requests may come from: IPs or CIDR blocks, IPv4 or IPv6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceAllowList(Vec<IpNet>);

impl SourceAllowList {
    /// Lets `source` (API Gateway's `requestContext.http.sourceIp`) in, or not. No address, no entry.
    pub fn check(&self, source: Option<&str>) -> Result<(), AuthError> {
        let ip: IpAddr = source
            .and_then(|s| s.trim().parse().ok())
            .ok_or(AuthError::SourceNotAllowed)?;
        if self.0.iter().any(|net| net.contains(ip)) {
            Ok(())
        } else {
            Err(AuthError::SourceNotAllowed)
        }
    }
}

impl FromStr for SourceAllowList {
    type Err = String;

    /// A comma-separated list such as `203.0.113.0/24, 198.51.100.7, 2001:db8::/32`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let nets = s
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(IpNet::from_str)
            .collect::<Result<Vec<_>, _>>()?;
        if nets.is_empty() {
            return Err("expected at least one address or CIDR block".into());
        }
        if nets.iter().any(|net| net.prefix == 0) {
            return Err("a /0 block lets every address in: list Exotel's own addresses".into());
        }
        Ok(SourceAllowList(nets))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IpNet {
    network: IpAddr,
    prefix: u8,
}

impl IpNet {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                same_prefix(u32::from(net).into(), u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                same_prefix(u128::from(net), u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

fn same_prefix(a: u128, b: u128, prefix: u8, bits: u8) -> bool {
    let ignored = u32::from(bits - prefix);
    a.checked_shr(ignored).unwrap_or(0) == b.checked_shr(ignored).unwrap_or(0)
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "`{}` is not an IP address or CIDR block",
                s.chars().take(48).collect::<String>()
            )
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
        };
        Ok(IpNet { network, prefix })
    }
}

/// Ringing and conversation limits of a connected call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectSettings {
    pub max_ringing_duration: u32,
    pub max_conversation_duration: u32,
}

/// Exotel's JSON answer: the callee's number to dial with the virtual number shown, or no
/// number at all, which sends the call down the applet's "no answer" branch. A route of an
/// order that records its calls asks Exotel to record, each party on its own channel.
pub fn connect_response(decision: &Decision, settings: &ConnectSettings) -> String {
    let doc = match decision {
        Decision::Connect(route) => {
            let mut doc = json!({
                "fetch_after_attempt": false,
                "destination": { "numbers": [route.callee.expose()] },
                "outgoing_phone_number": route.caller_id().as_str(),
                "record": route.record,
                "max_ringing_duration": settings.max_ringing_duration,
                "max_conversation_duration": settings.max_conversation_duration,
            });
            if route.record {
                doc["recording_channels"] = json!("dual");
            }
            doc
        }
        // Asking for a PIN is the flow's to do: no number takes the call down the applet's
        // "no answer" branch, to the Gather applet that collects it.
        Decision::AskPin { .. } | Decision::Refuse(_) => json!({
            "fetch_after_attempt": false,
            "destination": { "numbers": [] },
        }),
    };
    doc.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(
        pairs: &[(&'static str, &'static str)],
    ) -> Vec<(Cow<'static, str>, Cow<'static, str>)> {
        pairs
            .iter()
            .map(|(k, v)| (Cow::Borrowed(*k), Cow::Borrowed(*v)))
            .collect()
    }

    fn india() -> Market {
        "IN".parse().unwrap()
    }

    #[test]
    fn a_passthru_after_connect_reads_how_the_call_ended() {
        // As Exotel's Passthru applet sends it after a Connect applet.
        let end = call_end(&query(&[
            ("CallSid", "b6cf1c5c8ec8d2bd0a1a6c4a4e3d1b7a"),
            ("CallFrom", "09494865411"),
            ("CallTo", "08047113155"),
            ("Direction", "incoming"),
            ("Created", "Wed, 02 Dec 2026 10:15:00"),
            ("DialCallDuration", "65"),
            ("StartTime", "2026-12-02 10:15:00"),
            ("EndTime", "1970-01-01 05:30:00"),
            ("CallType", "completed"),
            ("DialWhomNumber", "09710000001"),
            ("DialCallStatus", "completed"),
            ("digits", ""),
        ]))
        .unwrap();
        assert_eq!(end.call_id.as_str(), "b6cf1c5c8ec8d2bd0a1a6c4a4e3d1b7a");
        assert_eq!((end.status, end.talk_seconds), (DialStatus::Answered, 65));
        // An older flow says only CallType.
        for (kind, status) in [
            ("client-hangup", DialStatus::Canceled),
            ("incomplete", DialStatus::NoAnswer),
        ] {
            let end = call_end(&query(&[
                ("CallSid", "b6"),
                ("CallType", kind),
                ("DialCallDuration", "12"),
            ]))
            .unwrap();
            assert_eq!((end.status, end.talk_seconds), (status, 0), "{kind}");
        }
        assert_eq!(
            call_end(&query(&[("CallSid", "b6")])),
            Err(RequestError::Missing("DialCallStatus"))
        );
        assert_eq!(
            call_end(&query(&[("CallSid", "b6"), ("CallType", "voicemail")])),
            Err(RequestError::Malformed("CallType"))
        );
        assert_eq!(
            call_end(&query(&[("DialCallStatus", "busy")])),
            Err(RequestError::Missing("CallSid"))
        );
    }

    #[test]
    fn a_recorded_calls_passthru_carries_its_recording_url() {
        let recorded = call_end(&query(&[
            ("CallSid", "b6cf1c5c8ec8d2bd0a1a6c4a4e3d1b7a"),
            ("CallFrom", "09494865411"),
            ("CallTo", "08047113155"),
            ("DialCallStatus", "completed"),
            ("DialCallDuration", "65"),
            (
                "RecordingUrl",
                "https://s3-ap-southeast-1.amazonaws.com/exotelrecordings/acme/b6cf1c5c8ec8d2bd0a1a6c4a4e3d1b7a.mp3",
            ),
        ]))
        .unwrap();
        let recording = recorded.recording.unwrap();
        assert!(recording
            .recording_url
            .ends_with("/b6cf1c5c8ec8d2bd0a1a6c4a4e3d1b7a.mp3"));
        assert_eq!(recording.recording_id, None);
        for none in ["", "null"] {
            let end = call_end(&query(&[
                ("CallSid", "b6"),
                ("DialCallStatus", "completed"),
                ("RecordingUrl", none),
            ]))
            .unwrap();
            assert_eq!(end.recording, None, "{none:?}");
        }
        assert_eq!(
            call_end(&query(&[
                ("CallSid", "b6"),
                ("DialCallStatus", "completed"),
                ("RecordingUrl", "ftp://exotel/recording.mp3"),
            ])),
            Err(RequestError::Malformed("RecordingUrl"))
        );
    }

    #[test]
    fn the_connect_answer_records_only_an_order_that_asked() {
        let route = crate::domain::Route {
            caller: RealNumber::parse("+919494865411").unwrap(),
            number: VirtualNumber::parse("+918047113155").unwrap(),
            order_id: "ord-1".parse().unwrap(),
            market: india(),
            caller_role: "customer".parse().unwrap(),
            callee_role: "driver".parse().unwrap(),
            callee: RealNumber::parse("+919710000001").unwrap(),
            capabilities: crate::domain::Capabilities::VOICE_AND_SMS,
            record: false,
            stands_for: None,
            expires_at: i64::MAX,
            closed: false,
        };
        let settings = ConnectSettings {
            max_ringing_duration: 30,
            max_conversation_duration: 3600,
        };
        assert_eq!(
            connect_response(&Decision::Connect(route.clone()), &settings),
            "{\"destination\":{\"numbers\":[\"+919710000001\"]},\"fetch_after_attempt\":false,\
             \"max_conversation_duration\":3600,\"max_ringing_duration\":30,\
             \"outgoing_phone_number\":\"+918047113155\",\"record\":false}"
        );
        let recorded = crate::domain::Route {
            record: true,
            ..route
        };
        assert_eq!(
            connect_response(&Decision::Connect(recorded), &settings),
            "{\"destination\":{\"numbers\":[\"+919710000001\"]},\"fetch_after_attempt\":false,\
             \"max_conversation_duration\":3600,\"max_ringing_duration\":30,\
             \"outgoing_phone_number\":\"+918047113155\",\"record\":true,\
             \"recording_channels\":\"dual\"}"
        );
    }

    #[test]
    fn national_numbers_are_read_in_the_market() {
        let q = connect_query(
            &query(&[
                ("CallSid", "b6cf1c5c8ec8d2bd0a1a6c4a4e3d1b7a"),
                ("CallFrom", "09494865411"),
                ("CallTo", "08047113155"),
                ("DialWhomNumber", ""),
                ("digits", "\"1\""),
            ]),
            &india(),
        )
        .unwrap();
        assert_eq!(q.caller.unwrap().expose(), "+919494865411");
        assert_eq!(q.dialled.unwrap().as_str(), "+918047113155");
        let us: Market = "US".parse().unwrap();
        let q = connect_query(
            &query(&[
                ("CallSid", "b6"),
                ("CallFrom", "09494865411"),
                ("CallTo", "08047113155"),
            ]),
            &us,
        )
        .unwrap();
        assert!(q.caller.is_err() && q.dialled.is_err());
    }

    #[test]
    fn passthru_from_and_to_stand_in_only_for_missing_call_names() {
        let older = query(&[
            ("CallSid", "b6"),
            ("From", "9494865411"),
            ("To", "918047113155"),
        ]);
        let q = connect_query(&older, &india()).unwrap();
        assert_eq!(q.caller.unwrap().expose(), "+919494865411");
        assert_eq!(q.dialled.unwrap().as_str(), "+918047113155");
        let both = query(&[
            ("CallSid", "b6"),
            ("callfrom", "09494865411"),
            ("From", "09812345678"),
            ("CallTo", "08047113155"),
            ("To", "08000000000"),
        ]);
        let q = connect_query(&both, &india()).unwrap();
        assert_eq!(q.caller.unwrap().expose(), "+919494865411");
        assert_eq!(q.dialled.unwrap().as_str(), "+918047113155");
        assert_eq!(
            connect_query(
                &query(&[("CallSid", "b6"), ("CallTo", "08047113155")]),
                &india()
            )
            .unwrap_err(),
            RequestError::Missing("CallFrom")
        );
    }

    #[test]
    fn allow_list_matches_addresses_and_blocks() {
        let list: SourceAllowList = "203.0.113.0/24, 198.51.100.7, 2001:db8::/32"
            .parse()
            .unwrap();
        for ok in [
            "203.0.113.1",
            "203.0.113.255",
            "198.51.100.7",
            "2001:db8::1",
        ] {
            assert!(list.check(Some(ok)).is_ok(), "{ok}");
        }
        for no in [
            "203.0.114.1",
            "198.51.100.8",
            "2001:db9::1",
            "not an ip",
            "",
        ] {
            assert_eq!(
                list.check(Some(no)),
                Err(AuthError::SourceNotAllowed),
                "{no}"
            );
        }
        assert_eq!(list.check(None), Err(AuthError::SourceNotAllowed));
    }

    /// A list that lets everyone in would make the required allow-list a formality.
    #[test]
    fn malformed_allow_lists_are_errors() {
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0/8",
            "::/129",
            "example.com",
            "0.0.0.0/0",
            "203.0.113.0/24, ::/0",
        ] {
            assert!(bad.parse::<SourceAllowList>().is_err(), "{bad}");
        }
    }

    #[test]
    fn token_must_match_one_of_the_configured() {
        let tokens = [
            Secret::new("old-token-0123456789"),
            Secret::new("new-token-0123456789"),
        ];
        assert!(verify_token(&tokens, Some("new-token-0123456789")).is_ok());
        assert!(verify_token(&tokens, Some("old-token-0123456789")).is_ok());
        assert_eq!(
            verify_token(&tokens, Some("new-token-012345678")),
            Err(AuthError::BadToken)
        );
        assert_eq!(verify_token(&tokens, None), Err(AuthError::BadToken));
    }
}
