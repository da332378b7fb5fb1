//! Vonage: the voice `answer_url`, signed with an HS256 JWT, answered with an NCCO.
//!
//! When a call to one of our numbers comes in, Vonage asks the `answer_url` of the application
//! the number is linked to where the call goes. vnmask serves it with `POST` only (the
//! application's `answer_method`): the call (`to`, `from`, `uuid`, `conversation_uuid`, and
//! more) is then a JSON body that the token's `payload_hash` binds. With `GET`, Vonage's default,
//! the call is in a query that no signature covers, so any fresh Vonage token could ask about
//! any caller: GET is not served. Numbers are E.164 digits without the `+`
//! (`447700900000`); a call from a Client SDK user carries `from_user` and no `from`.
//!
//! Signed webhooks put `Authorization: Bearer <JWT>` on the request: HS256 with the account's
//! signature secret, `iat` in seconds, and `payload_hash` (hex SHA-256 of the payload).
//!
//! The answer is an NCCO, a JSON array of actions; the call ends when the last one does. Vonage
//! waits 5 s for it, asks once more on a timeout, a reset or a 429/503/504, then tries the
//! application's `fallback_answer_url`: the webhook's own budget is under 2 s, well inside.

use std::borrow::Cow;
use std::sync::LazyLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{
    digits_to_e164, e164_to_digits, json, same_bytes, AuthError, RequestError, Secret, MAX_SKEW,
};
use crate::domain::{CallId, Channel, UnixTime};
use crate::routing::{Decision, RouteQuery};

pub use super::{VoiceRefusal, VoiceSettings};

/// Where signed webhooks carry their JWT, as `Bearer <JWT>`.
pub const AUTHORIZATION_HEADER: &str = "authorization";

/// The longest `limit` a `connect` action takes, in seconds (Vonage's maximum, and default).
pub const MAX_CALL_SECONDS: u32 = 7200;

/// The header of every token [`sign`] makes.
const JWT_HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// HS256 only, whatever the token's header says; `iat` and `payload_hash` are checked here
/// rather than by the crate, against the caller's clock. Vonage's tokens carry no `exp` or `aud`.
static VALIDATION: LazyLock<Validation> = LazyLock::new(|| {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation
});

/// The claims a signed webhook is judged by. Others (`jti`, `iss`, `api_key`,
/// `application_id`) are not: the signature with our secret is what proves the sender.
#[derive(Deserialize)]
struct Claims {
    /// Any JSON, so that a signed token with a malformed `iat` is a bad timestamp, not a bad
    /// signature.
    #[serde(default)]
    iat: Option<Value>,
    #[serde(default)]
    payload_hash: Option<String>,
}

/// The `Authorization` value Vonage sends with a webhook issued at `iat` carrying `body`
/// (`None` for a token bound to no body, as Vonage signs a GET, which [`verify`] refuses):
/// `Bearer` and an HS256 JWT with `iat`, `iss` and, for a body, `payload_hash`. The operator
/// CLI and the end-to-end tests use it to stand in for Vonage.
pub fn sign(secret: &[u8], body: Option<&[u8]>, iat: i64) -> String {
    let mut claims = json!({ "iat": iat, "iss": "Vonage" });
    if let Some(body) = body {
        claims["payload_hash"] = json!(hex::encode(Sha256::digest(body)));
    }
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(JWT_HEADER),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(message.as_bytes());
    format!(
        "Bearer {message}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

/// Checks the `Authorization` header of a webhook against every signature secret (two during
/// a rotation): an HS256 JWT signed with one of them, whose `payload_hash` is the SHA-256 of
/// `body`, and whose `iat` is within [`MAX_SKEW`] of `now`, so that a captured token cannot be
/// replayed later. Other algorithms (`none`, RS256, …) are refused. The body is not optional:
/// a token without a `payload_hash` would vouch for any call.
pub fn verify(
    secrets: &[Secret],
    authorization: Option<&str>,
    body: &[u8],
    now: UnixTime,
) -> Result<(), AuthError> {
    let claims = signed_claims(secrets, authorization)?;
    let signed = claims
        .payload_hash
        .as_deref()
        .and_then(|h| hex::decode(h.trim()).ok())
        .ok_or(AuthError::BadSignature)?;
    if !same_bytes(&Sha256::digest(body), &signed) {
        return Err(AuthError::BadSignature);
    }
    // Checked after the signature, so an unsigned request learns nothing about our clock.
    let issued = claims
        .iat
        .as_ref()
        .and_then(Value::as_i64)
        .ok_or(AuthError::BadTimestamp)?;
    if now.abs_diff(issued) > MAX_SKEW {
        return Err(AuthError::Stale);
    }
    Ok(())
}

/// The claims of the `Bearer` token, once it is known to be signed with one of `secrets`.
fn signed_claims(secrets: &[Secret], authorization: Option<&str>) -> Result<Claims, AuthError> {
    let authorization = authorization.ok_or(AuthError::MissingSignature)?;
    let token = bearer_token(authorization).ok_or(AuthError::BadSignature)?;
    // The crate compares signatures in constant time; a forgery is tried against every secret.
    secrets
        .iter()
        .find_map(|secret| {
            jsonwebtoken::decode::<Claims>(
                token,
                &DecodingKey::from_secret(secret.expose()),
                &VALIDATION,
            )
            .ok()
        })
        .map(|data| data.claims)
        .ok_or(AuthError::BadSignature)
}

/// The token of `Bearer <token>` (the scheme in any case).
fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The fields of a POSTed answer webhook that routing reads; the others are ignored.
#[derive(Deserialize)]
struct AnswerRequest<'a> {
    #[serde(borrow, default)]
    from: Option<Cow<'a, str>>,
    #[serde(default)]
    from_user: Option<IgnoredAny>,
    #[serde(borrow, default)]
    to: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    uuid: Option<Cow<'a, str>>,
}

/// Reads an answer webhook sent with POST (`answer_method: POST`): its JSON body. An error
/// names a position, never a value.
pub fn answer_query_json(body: &[u8]) -> Result<RouteQuery, RequestError> {
    let req: AnswerRequest = json(body)?;
    call_query(
        req.from.as_deref(),
        req.from_user.is_some(),
        req.to.as_deref(),
        req.uuid.as_deref(),
    )
}

/// The call `uuid` from `from` to `to`. A caller without a number (a withheld `Unknown`, an
/// empty `from`, a SIP or app user) is read as no number, so the call is refused, never routed.
fn call_query(
    from: Option<&str>,
    from_app_user: bool,
    to: Option<&str>,
    uuid: Option<&str>,
) -> Result<RouteQuery, RequestError> {
    let to = to.ok_or(RequestError::Missing("to"))?;
    let uuid = uuid.ok_or(RequestError::Missing("uuid"))?;
    let call_id = CallId::parse(uuid).map_err(|_| RequestError::Malformed("uuid"))?;
    let from = match from {
        Some(from) => from,
        // A Client SDK user has a name, not a number: never one of our callers.
        None if from_app_user => "",
        None => return Err(RequestError::Missing("from")),
    };
    Ok(RouteQuery::new(
        Channel::Voice,
        call_id,
        &digits_to_e164(from),
        &digits_to_e164(to),
        None,
    ))
}

/// The NCCO answering a call.
///
/// - Connect: one `connect` action ringing the callee's real number for `dial_timeout`
///   seconds, the virtual number as caller id, the call ended after `time_limit` seconds (at
///   most [`MAX_CALL_SECONDS`], Vonage's limit). A route of an order that records its calls is
///   connected all the same, unrecorded: recording with Vonage needs a `record` action and an
///   endpoint for its events, which do not exist.
/// - Refused ([`Decision::AskPin`] too: no PIN is collected from Vonage callers), per
///   [`VoiceSettings::refusal`]: `Say` is one `talk` action, after which the call ends;
///   `Reject` is the empty NCCO, which ends the call at once with nothing played. Vonage has no
///   action that rejects or plays busy: it asks the `answer_url` of a call it has taken.
pub fn answer_response(decision: &Decision, settings: &VoiceSettings) -> String {
    let ncco = match decision {
        Decision::Connect(route) => json!([{
            "action": "connect",
            "from": e164_to_digits(route.caller_id().as_str()),
            "timeout": settings.dial_timeout,
            "limit": settings.time_limit.min(MAX_CALL_SECONDS),
            "endpoint": [{
                "type": "phone",
                "number": e164_to_digits(route.callee.expose()),
            }],
        }]),
        Decision::AskPin { .. } | Decision::Refuse(_) => match &settings.refusal {
            VoiceRefusal::Say(message) => json!([{ "action": "talk", "text": message }]),
            VoiceRefusal::Reject => json!([]),
        },
    };
    ncco.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Capabilities, RealNumber, Route, VirtualNumber};
    use crate::providers::PinPrompts;
    use crate::routing::Refusal;

    /// vonage-python-sdk, `jwt/tests/test_verify_jwt.py`: a token its `verify_signature` accepts
    /// with this signature secret and refuses with `asdf`. Its claims: `iss` "Online JWT
    /// Builder", `iat` 1697634680, `exp` 33254540828, and empty `aud` and `sub`.
    const SDK_TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJPbmxpbmUgSldUIEJ1aWxkZXIiLCJpYXQiOjE2OTc2MzQ2ODAsImV4cCI6MzMyNTQ1NDA4MjgsImF1ZCI6IiIsInN1YiI6IiJ9.88vJc3I2HhuqEDixHXVhc9R30tA6U_HQHZTC29y6CGM";
    const SDK_SECRET: &str = "qwertyuiopasdfghjklzxcvbnm123456";
    const SDK_IAT: i64 = 1_697_634_680;

    /// A POSTed answer webhook as Vonage's webhook reference shows it, and a token for it made
    /// independently of this module (Vonage publishes no signed example with its secret):
    /// python3 hashlib/hmac/base64, header `{"alg":"HS256","typ":"JWT"}`, claims `{"iat":
    /// 1767225600,"jti":"c5ba8f24-1a14-4c10-bfdf-3fbe8ce511b5","iss":"Vonage","payload_hash":
    /// sha256(BODY),"api_key":"a1b2c3d","application_id":"aaaaaaaa-bbbb-cccc-dddd-0123456789ab"}`
    /// (the claims of the docs' "Sample Signed JWT"), secret `POST_SECRET`.
    const POST_BODY: &[u8] = br#"{"from":"447700900000","to":"447700900001","uuid":"aaaaaaaa-bbbb-cccc-dddd-0123456789ab","conversation_uuid":"CON-aaaaaaaa-bbbb-cccc-dddd-0123456789ab","region_url":"https://api-eu-1.vonage.com","endpoint_type":"phone"}"#;
    const POST_SECRET: &str = "signature-secret-0123456789abcdef";
    const POST_IAT: i64 = 1_767_225_600;
    const POST_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpYXQiOjE3NjcyMjU2MDAsImp0aSI6ImM1YmE4ZjI0LTFhMTQtNGMxMC1iZmRmLTNmYmU4Y2U1MTFiNSIsImlzcyI6IlZvbmFnZSIsInBheWxvYWRfaGFzaCI6IjA2MTkxNzI5YTMwZDAyZjY1Nzg1OGQxNmQwMDA0Mzc1ZTYyZGIzMjU5NjE5ZTcwODBkNDg5NGNlOGRjYWY3MTIiLCJhcGlfa2V5IjoiYTFiMmMzZCIsImFwcGxpY2F0aW9uX2lkIjoiYWFhYWFhYWEtYmJiYi1jY2NjLWRkZGQtMDEyMzQ1Njc4OWFiIn0.G46eDhpOBStK4E9WVHtEDxKfX-Xagv8-wdFYRcjBHN4";

    fn secrets(list: &[&str]) -> Vec<Secret> {
        list.iter().map(|s| Secret::new(*s)).collect()
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    /// The hex SHA-256 of `POST_BODY`, as a token bound to it carries it.
    fn post_body_hash() -> String {
        hex::encode(Sha256::digest(POST_BODY))
    }

    /// The SDK's token has no `payload_hash`: signed with its secret only, it vouches for no
    /// body, so no webhook is let in with it.
    #[test]
    fn vonages_sdk_vector_is_signed_with_its_secret_only_and_bound_to_no_body() {
        let auth = bearer(SDK_TOKEN);
        let Ok(claims) = signed_claims(&secrets(&[SDK_SECRET]), Some(&auth)) else {
            panic!("not signed with the SDK's secret");
        };
        assert_eq!(claims.iat, Some(json!(SDK_IAT)));
        assert_eq!(claims.payload_hash, None);
        assert_eq!(
            signed_claims(&secrets(&["asdf"]), Some(&auth)).err(),
            Some(AuthError::BadSignature)
        );
        assert_eq!(
            verify(&secrets(&[SDK_SECRET]), Some(&auth), POST_BODY, SDK_IAT),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn an_independently_made_post_token_verifies_its_body() {
        let auth = bearer(POST_TOKEN);
        assert_eq!(
            verify(&secrets(&[POST_SECRET]), Some(&auth), POST_BODY, POST_IAT),
            Ok(())
        );
        // One byte changed in transit: the body is not the one signed.
        let tampered = String::from_utf8(POST_BODY.to_vec())
            .unwrap()
            .replace("447700900001", "447700900002");
        assert_eq!(
            verify(
                &secrets(&[POST_SECRET]),
                Some(&auth),
                tampered.as_bytes(),
                POST_IAT
            ),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn signed_tokens_verify_with_either_secret_during_a_rotation() {
        let rotation = secrets(&[
            "old-signature-secret-0123456789",
            "new-signature-secret-0123456789",
        ]);
        for secret in &rotation {
            let auth = sign(secret.expose(), Some(POST_BODY), POST_IAT);
            assert_eq!(verify(&rotation, Some(&auth), POST_BODY, POST_IAT), Ok(()));
            // Signed with the right secret but bound to no body: it vouches for none.
            let unbound = sign(secret.expose(), None, POST_IAT);
            assert_eq!(
                verify(&rotation, Some(&unbound), POST_BODY, POST_IAT),
                Err(AuthError::BadSignature)
            );
        }
        let forged = sign(
            b"someone-elses-secret-0123456789",
            Some(POST_BODY),
            POST_IAT,
        );
        assert_eq!(
            verify(&rotation, Some(&forged), POST_BODY, POST_IAT),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify(
                &[],
                Some(&sign(rotation[0].expose(), Some(POST_BODY), POST_IAT)),
                POST_BODY,
                POST_IAT
            ),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn tokens_issued_more_than_five_minutes_away_are_stale() {
        let secret = secrets(&[POST_SECRET]);
        let skew = MAX_SKEW as i64;
        for (iat, ok) in [
            (POST_IAT - skew, true),
            (POST_IAT - skew - 1, false),
            (POST_IAT + skew, true),
            (POST_IAT + skew + 1, false),
            (i64::MIN, false),
            (i64::MAX, false),
        ] {
            let auth = sign(POST_SECRET.as_bytes(), Some(POST_BODY), iat);
            let want = if ok { Ok(()) } else { Err(AuthError::Stale) };
            assert_eq!(
                verify(&secret, Some(&auth), POST_BODY, POST_IAT),
                want,
                "iat {iat}"
            );
        }
    }

    /// A token signed with our secret for the body whose `iat` is missing or not an integer.
    #[test]
    fn a_signed_token_without_a_readable_iat_is_a_bad_timestamp() {
        let hash = post_body_hash();
        for claims in [
            json!({ "iss": "Vonage", "payload_hash": hash }),
            json!({ "iat": "1767225600", "payload_hash": hash }),
            json!({ "iat": 1_767_225_600.5, "payload_hash": hash }),
            json!({ "iat": u64::MAX, "payload_hash": hash }),
        ] {
            let token = hs256(POST_SECRET.as_bytes(), JWT_HEADER, &claims.to_string());
            assert_eq!(
                verify(
                    &secrets(&[POST_SECRET]),
                    Some(&bearer(&token)),
                    POST_BODY,
                    POST_IAT
                ),
                Err(AuthError::BadTimestamp),
                "{claims}"
            );
        }
    }

    #[test]
    fn a_body_needs_the_payload_hash_it_was_signed_with() {
        let secret = secrets(&[POST_SECRET]);
        // Signed as a GET, presented with a body.
        let auth = sign(POST_SECRET.as_bytes(), None, POST_IAT);
        assert_eq!(
            verify(&secret, Some(&auth), POST_BODY, POST_IAT),
            Err(AuthError::BadSignature)
        );
        for hash in ["", "not hex", "00"] {
            let claims = json!({ "iat": POST_IAT, "payload_hash": hash });
            let token = hs256(POST_SECRET.as_bytes(), JWT_HEADER, &claims.to_string());
            assert_eq!(
                verify(&secret, Some(&bearer(&token)), POST_BODY, POST_IAT),
                Err(AuthError::BadSignature),
                "{hash:?}"
            );
        }
        // The hash in capitals is the same hash.
        let claims = json!({
            "iat": POST_IAT,
            "payload_hash": hex::encode_upper(Sha256::digest(POST_BODY)),
        });
        let token = hs256(POST_SECRET.as_bytes(), JWT_HEADER, &claims.to_string());
        assert_eq!(
            verify(&secret, Some(&bearer(&token)), POST_BODY, POST_IAT),
            Ok(())
        );
    }

    #[test]
    fn only_hs256_is_accepted() {
        let secret = secrets(&[POST_SECRET]);
        // Bound to the body: only the algorithm is wrong.
        let claims = json!({ "iat": POST_IAT, "payload_hash": post_body_hash() }).to_string();
        // `none`: no signature at all.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(&claims)
        );
        // RS256 and HS512 in the header, over an HMAC a confused verifier might accept.
        let rs256 = hs256(
            POST_SECRET.as_bytes(),
            r#"{"alg":"RS256","typ":"JWT"}"#,
            &claims,
        );
        let hs512 = hs256(
            POST_SECRET.as_bytes(),
            r#"{"alg":"HS512","typ":"JWT"}"#,
            &claims,
        );
        for token in [none, rs256, hs512] {
            assert_eq!(
                verify(&secret, Some(&bearer(&token)), POST_BODY, POST_IAT),
                Err(AuthError::BadSignature),
                "{token}"
            );
        }
    }

    #[test]
    fn missing_or_garbled_authorization_is_refused() {
        let secret = secrets(&[POST_SECRET]);
        assert_eq!(
            verify(&secret, None, POST_BODY, POST_IAT),
            Err(AuthError::MissingSignature)
        );
        let token = sign(POST_SECRET.as_bytes(), Some(POST_BODY), POST_IAT);
        let bare = token.strip_prefix("Bearer ").unwrap();
        for value in [
            "",
            "Bearer",
            "Bearer ",
            bare,
            &format!("Basic {bare}"),
            "Bearer not.a.jwt",
            "Bearer a.b",
            &format!("Bearer {bare}x"),
        ] {
            assert_eq!(
                verify(&secret, Some(value), POST_BODY, POST_IAT),
                Err(AuthError::BadSignature),
                "{value:?}"
            );
        }
        // The scheme in any case, and spaces around the value, as HTTP allows.
        assert_eq!(
            verify(
                &secret,
                Some(&format!(" bearer  {bare} ")),
                POST_BODY,
                POST_IAT
            ),
            Ok(())
        );
    }

    /// A JWT with `header` and `claims` (JSON texts), its HS256 signature made with `key`
    /// whatever the header names.
    fn hs256(key: &[u8], header: &str, claims: &str) -> String {
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(message.as_bytes());
        format!(
            "{message}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    /// An answer webhook's JSON body with `pairs`, read.
    fn answer(pairs: &[(&str, &str)]) -> Result<RouteQuery, RequestError> {
        let body: serde_json::Map<String, Value> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        answer_query_json(Value::Object(body).to_string().as_bytes())
    }

    #[test]
    fn a_post_answer_webhook_reads_as_e164() {
        let q = answer_query_json(POST_BODY).unwrap();
        assert_eq!(q.call_id.as_str(), "aaaaaaaa-bbbb-cccc-dddd-0123456789ab");
        assert_eq!(q.caller.unwrap().expose(), "+447700900000");
        assert_eq!(q.dialled.unwrap().as_str(), "+447700900001");
        // Fields routing does not read, whatever their type, are ignored.
        let q = answer_query_json(
            br#"{"from":"447700900000","to":"447700900001","uuid":"u-1","custom_data":{"a":[1,2]},"SipHeader_X-UserId":"1938ND9"}"#,
        )
        .unwrap();
        assert!(q.caller.is_ok() && q.dialled.is_ok());
    }

    #[test]
    fn a_caller_without_a_number_is_unknown_not_guessed() {
        for from in [
            "Unknown",
            "",
            "+447700900000",
            "44 7700 900000",
            "sip:alice@example.com",
            "0",
        ] {
            let mut pairs = vec![("to", "447700900001"), ("uuid", "u-1")];
            pairs.push(("from", from));
            let q = answer(&pairs).unwrap();
            assert!(q.caller.is_err(), "{from:?}");
            assert!(q.dialled.is_ok());
        }
        // A Client SDK user: `from_user`, and no `from` at all.
        let q = answer(&[
            ("from_user", "JaneDoe"),
            ("to", "447700900001"),
            ("uuid", "u-1"),
        ])
        .unwrap();
        assert!(q.caller.is_err());
        let q = answer_query_json(br#"{"from_user":"JaneDoe","to":"447700900001","uuid":"u-1"}"#)
            .unwrap();
        assert!(q.caller.is_err());
        let q = answer_query_json(
            br#"{"from":null,"from_user":"JaneDoe","to":"447700900001","uuid":"u-1"}"#,
        )
        .unwrap();
        assert!(q.caller.is_err());
    }

    #[test]
    fn a_dialled_number_that_is_not_digits_is_not_ours() {
        for to in [
            "",
            "Unknown",
            "+447700900001",
            "sip:support@example.sip.vonage.com",
        ] {
            let q = answer(&[("from", "447700900000"), ("to", to), ("uuid", "u-1")]).unwrap();
            assert!(q.dialled.is_err(), "{to:?}");
        }
    }

    #[test]
    fn missing_or_malformed_fields_are_named_and_never_echoed() {
        for (pairs, want) in [
            (
                vec![("to", "447700900001"), ("uuid", "u-1")],
                RequestError::Missing("from"),
            ),
            (
                vec![("from", "447700900000"), ("uuid", "u-1")],
                RequestError::Missing("to"),
            ),
            (
                vec![("from", "447700900000"), ("to", "447700900001")],
                RequestError::Missing("uuid"),
            ),
            (
                vec![
                    ("from", "447700900000"),
                    ("to", "447700900001"),
                    ("uuid", "u 1"),
                ],
                RequestError::Malformed("uuid"),
            ),
        ] {
            let err = answer(&pairs).unwrap_err();
            assert_eq!(err, want);
            assert!(!err.to_string().contains("4477009"), "{err}");
        }
        let err = answer_query_json(br#"{"to":"447700900001","uuid":"u-1"}"#).unwrap_err();
        assert_eq!(err, RequestError::Missing("from"));
        for body in [
            &br#"{"from":447700900000,"to":"447700900001","uuid":"u-1"}"#[..],
            br#"{"from":"447700900000","to":"447700900001","uuid":"u-1""#,
            br#""447700900000""#,
        ] {
            let err = answer_query_json(body).unwrap_err();
            assert!(matches!(err, RequestError::Json { .. }), "{err:?}");
            assert!(!err.to_string().contains("4477009"), "{err}");
        }
        assert_eq!(
            answer_query_json(b"{\"from\":\"\xff\"}").unwrap_err(),
            RequestError::NotUtf8
        );
    }

    fn route() -> Route {
        Route {
            caller: RealNumber::parse("+447400123458").unwrap(),
            number: VirtualNumber::parse("+447400123456").unwrap(),
            order_id: "ord-1".parse().unwrap(),
            market: "GB".parse().unwrap(),
            caller_role: "customer".parse().unwrap(),
            callee_role: "driver".parse().unwrap(),
            callee: RealNumber::parse("+447400123457").unwrap(),
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

    fn ncco(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn connect_rings_the_callee_showing_the_virtual_number() {
        let answer = answer_response(&Decision::Connect(route()), &settings(VoiceRefusal::Reject));
        assert_eq!(
            ncco(&answer),
            json!([{
                "action": "connect",
                "from": "447400123456",
                "timeout": 25,
                "limit": 3600,
                "endpoint": [{ "type": "phone", "number": "447400123457" }],
            }])
        );
        // Recorded or not, the call is connected the same way.
        let recorded = Route {
            record: true,
            ..route()
        };
        assert_eq!(
            answer_response(
                &Decision::Connect(recorded),
                &settings(VoiceRefusal::Reject)
            ),
            answer
        );
    }

    #[test]
    fn a_time_limit_beyond_vonages_is_capped() {
        let mut long = settings(VoiceRefusal::Reject);
        long.time_limit = 14_400;
        let answer = ncco(&answer_response(&Decision::Connect(route()), &long));
        assert_eq!(answer[0]["limit"], json!(MAX_CALL_SECONDS));
    }

    #[test]
    fn a_refusal_says_its_message_or_ends_the_call_at_once() {
        let say = settings(VoiceRefusal::Say("This number is not in service.".into()));
        let reject = settings(VoiceRefusal::Reject);
        for decision in [
            Decision::Refuse(Refusal::NoRoute),
            Decision::Refuse(Refusal::CallerUnknown),
            Decision::AskPin { again: false },
            Decision::AskPin { again: true },
        ] {
            let said = answer_response(&decision, &say);
            assert_eq!(
                ncco(&said),
                json!([{ "action": "talk", "text": "This number is not in service." }])
            );
            assert_eq!(answer_response(&decision, &reject), "[]");
            for answer in [said, answer_response(&decision, &reject)] {
                assert!(!answer.contains("447400123457"), "{answer}");
            }
        }
    }

    #[test]
    fn a_refusal_message_is_escaped_as_json() {
        let say = settings(VoiceRefusal::Say("Say \"no\"\n\\ end".into()));
        let answer = answer_response(&Decision::Refuse(Refusal::NoRoute), &say);
        assert_eq!(ncco(&answer)[0]["text"], json!("Say \"no\"\n\\ end"));
    }
}
