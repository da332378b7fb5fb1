//! Where a call or text to a virtual number goes: the question every provider asks, the
//! answer, the reasons to refuse, and [`decide`], which reads one route and fails closed.
//! Liveness is decided here, once: a route connects only while `expires_at > now`.

use std::time::Duration;

use serde::Serialize;

use crate::domain::{CallId, Channel, PhoneError, RealNumber, Route, UnixTime, VirtualNumber};
use crate::store::{RouteReader, StoreError};

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
    pub dialled: Result<VirtualNumber, PhoneError>,
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
            dialled: VirtualNumber::parse_form(dialled),
            text,
        }
    }

    /// The route key to look up, or why there is nothing worth looking up.
    pub fn lookup(&self) -> Result<(&RealNumber, &VirtualNumber), Refusal> {
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

/// The route for a call from `caller` to `dialled` if it is live at `now`: one read.
pub async fn live_route(
    store: &dyn RouteReader,
    caller: &RealNumber,
    dialled: &VirtualNumber,
    now: UnixTime,
) -> Result<Option<Route>, StoreError> {
    Ok(store
        .route(caller, dialled)
        .await?
        .filter(|r| r.is_live(now)))
}

/// Looks the route up and decides. At most one store read, bounded by `budget`; any error or
/// timeout refuses.
pub async fn decide(
    store: &dyn RouteReader,
    query: &RouteQuery,
    now: UnixTime,
    budget: Duration,
) -> Decision {
    let (caller, dialled) = match query.lookup() {
        Ok(key) => key,
        Err(refusal) => return Decision::Refuse(refusal),
    };
    match tokio::time::timeout(budget, live_route(store, caller, dialled, now)).await {
        Ok(Ok(Some(route))) => Decision::Connect(route),
        Ok(Ok(None)) => Decision::Refuse(Refusal::NoRoute),
        Ok(Err(StoreError::Timeout)) | Err(_) => {
            tracing::warn!(call_id = %query.call_id, number = %dialled, "route lookup timed out; refusing");
            Decision::Refuse(Refusal::StoreTimeout)
        }
        Ok(Err(error)) => {
            tracing::warn!(call_id = %query.call_id, number = %dialled, %error, "route lookup failed; refusing");
            Decision::Refuse(Refusal::StoreError)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn withheld_or_national_callers_have_nothing_to_look_up() {
        let id = CallId::parse("c1").unwrap();
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
        let id = CallId::parse("c1").unwrap();
        let q = RouteQuery::new(Channel::Voice, id, "+266696687", "+911140001000", None);
        assert!(q.lookup().is_ok());
        assert!(RealNumber::parse("+266696687").is_err());
    }
}
