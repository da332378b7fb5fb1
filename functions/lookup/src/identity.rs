//! Who is asking: the user id in the claims API Gateway's JWT authorizer verified, read from the
//! request context lambda_http attaches to each request, never from a header, query parameter or
//! body the client sets.
//!
//! For local runs (`cargo lambda watch` has no authorizer) a configured header may carry the
//! claims instead; [`crate::config::LookupConfig`] only enables it outside AWS Lambda, and claims
//! from a real authorizer always win over it.

use std::collections::HashMap;

use http::request::Parts;
use lambda_http::request::RequestContext;
use vnmask::domain::UserId;

use crate::config::IdentityConfig;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the request carries no JWT authorizer claims")]
    NoClaims,
    #[error("the local claims header is not a JSON object of strings")]
    BadLocalClaims,
    #[error("the claims have no `{0}`")]
    MissingClaim(String),
    #[error("claim `{0}` is not a valid user id")]
    BadClaim(String),
}

impl IdentityError {
    /// A short label for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            IdentityError::NoClaims => "no_claims",
            IdentityError::BadLocalClaims => "bad_local_claims",
            IdentityError::MissingClaim(_) => "missing_claim",
            IdentityError::BadClaim(_) => "bad_claim",
        }
    }
}

/// The caller's user id, from the authorizer's claims (or, locally, the claims header).
pub fn caller(parts: &Parts, config: &IdentityConfig) -> Result<UserId, IdentityError> {
    let claim = |claims: &HashMap<String, String>| {
        let value = claims
            .get(&config.user_claim)
            .ok_or_else(|| IdentityError::MissingClaim(config.user_claim.clone()))?;
        value
            .parse::<UserId>()
            .map_err(|_| IdentityError::BadClaim(config.user_claim.clone()))
    };
    if let Some(claims) = authorizer_claims(parts) {
        return claim(claims);
    }
    let Some(header) = &config.local_claims_header else {
        return Err(IdentityError::NoClaims);
    };
    let Some(raw) = parts.headers.get(header) else {
        return Err(IdentityError::NoClaims);
    };
    let claims: HashMap<String, String> =
        serde_json::from_slice(raw.as_bytes()).map_err(|_| IdentityError::BadLocalClaims)?;
    claim(&claims)
}

/// `requestContext.authorizer.jwt.claims` of an API Gateway HTTP API (payload 2.0) request.
fn authorizer_claims(parts: &Parts) -> Option<&HashMap<String, String>> {
    let RequestContext::ApiGatewayV2(context) = parts.extensions.get::<RequestContext>()? else {
        return None;
    };
    let claims = &context.authorizer.as_ref()?.jwt.as_ref()?.claims;
    (!claims.is_empty()).then_some(claims)
}
