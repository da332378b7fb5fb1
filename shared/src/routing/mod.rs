//! Where a call or text to a virtual number goes: the question every provider asks, the
//! answer, the reasons to refuse, and [`decide`], which reads one route and fails closed.
//! Liveness is decided here, once: a route connects only while `expires_at > now`.

use std::time::Duration;

use serde::Serialize;

use crate::domain::{
    CallId, Channel, PhoneError, Pin, PinError, PinKey, RealNumber, Route, UnixTime, VirtualNumber,
};
use crate::store::{CallRouting, RouteReader, Sighting, StoreError};

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
    /// The PIN the caller keyed in, when the provider asked for one (`Err`: not a PIN).
    pub pin: Option<Result<Pin, PinError>>,
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
            pin: None,
        }
    }

    /// This question, with the digits the caller keyed in.
    pub fn with_pin(self, digits: &str) -> Self {
        RouteQuery {
            pin: Some(Pin::parse(digits)),
            ..self
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
    /// The provider's call id was answered before, longer ago than a provider retries: a
    /// replayed request, which must not learn who is on the route now.
    Replayed,
    /// The service could not load its credentials or keys yet: nothing can be checked, so
    /// nothing is connected.
    NotReady,
    /// The live route's pair does not carry this channel: a text to a voice-only number.
    ChannelUnavailable,
    /// The caller keyed in no PIN of a live pair on this number, as often as a call may.
    PinWrong,
    /// Too many PINs were tried by this caller on this number this hour, or wrongly on this
    /// number by anyone: no PIN is looked at.
    PinLimited,
    /// The order ended and its end closed this direction (the other may still connect
    /// through the grace).
    ClosedAfterEnd,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::CallerUnknown => "caller_unknown",
            Refusal::NotOurNumber => "not_our_number",
            Refusal::NoRoute => "no_route",
            Refusal::StoreError => "store_error",
            Refusal::StoreTimeout => "store_timeout",
            Refusal::Replayed => "replayed",
            Refusal::NotReady => "not_ready",
            Refusal::ChannelUnavailable => "channel_unavailable",
            Refusal::PinWrong => "pin_wrong",
            Refusal::PinLimited => "pin_limited",
            Refusal::ClosedAfterEnd => "closed_after_end",
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
    /// Ask the caller, who has no route on the number, for a PIN (`again` after a wrong one).
    AskPin {
        again: bool,
    },
    Refuse(Refusal),
}

/// How far PIN guessing may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinLimits {
    /// Tries per call.
    pub per_call: u32,
    /// Tries per caller on one number per UTC hour.
    pub per_caller_hour: u32,
    /// Wrong PINs on one number per UTC hour, by anyone, after which the number's PINs are
    /// locked for the rest of the hour.
    pub number_failures_hour: u32,
}

impl Default for PinLimits {
    fn default() -> Self {
        PinLimits {
            per_call: 3,
            per_caller_hour: 6,
            number_failures_hour: 20,
        }
    }
}

/// Decides a call whose caller keyed in a PIN: a caller with a live route of their own on the
/// number is connected by it, as always; otherwise, within the limits, the PIN's live route
/// stands in for its participant, and the caller reaches that participant's counterpart showing
/// the number. A wrong PIN asks again while the call has tries left. Every attempt is counted
/// first; any store error or timeout refuses. Reads and counts at once: one round trip, and one
/// more write after a wrong PIN.
pub async fn decide_pin(
    store: &dyn CallRouting,
    endpoint: &str,
    query: &RouteQuery,
    now: UnixTime,
    budget: Duration,
    limits: PinLimits,
) -> Decision {
    let (caller, dialled) = match query.lookup() {
        Ok(key) => key,
        Err(refusal) => return Decision::Refuse(refusal),
    };
    let pin_key = match &query.pin {
        Some(Ok(pin)) => Some(PinKey {
            number: dialled.clone(),
            pin: pin.clone(),
        }),
        _ => None,
    };
    let (own, attempts, by_pin) = tokio::join!(
        tokio::time::timeout(budget, live_route(store, caller, dialled, now)),
        tokio::time::timeout(
            budget,
            store.count_pin_attempt(endpoint, &query.call_id, caller, dialled, now)
        ),
        async {
            match &pin_key {
                Some(key) => tokio::time::timeout(budget, store.pin_route(key)).await,
                None => Ok(Ok(None)),
            }
        },
    );
    let failed = |e: &StoreError| match e {
        StoreError::Timeout => Refusal::StoreTimeout,
        _ => Refusal::StoreError,
    };
    let (own, attempts, by_pin) = match (own, attempts, by_pin) {
        (Ok(Ok(own)), Ok(Ok(attempts)), Ok(Ok(by_pin))) => (own, attempts, by_pin),
        (Ok(Err(e)), _, _) | (_, Ok(Err(e)), _) | (_, _, Ok(Err(e))) => {
            tracing::warn!(call_id = %query.call_id, number = %dialled, error = %e, "PIN check failed; refusing");
            return Decision::Refuse(failed(&e));
        }
        _ => return Decision::Refuse(Refusal::StoreTimeout),
    };
    if let Some(route) = own {
        // Their own route decides, PIN or not.
        return over(route, query.channel);
    }
    if attempts.this_call > limits.per_call
        || attempts.caller_this_hour > limits.per_caller_hour
        || attempts.number_failures_this_hour >= limits.number_failures_hour
    {
        return Decision::Refuse(Refusal::PinLimited);
    }
    match by_pin.filter(|r| r.is_live(now)) {
        Some(route) => over(route, query.channel),
        None => {
            let counted = tokio::time::timeout(budget, store.count_pin_failure(dialled, now)).await;
            if let Err(e) = counted.unwrap_or(Err(StoreError::Timeout)) {
                tracing::warn!(call_id = %query.call_id, number = %dialled, error = %e, "a wrong PIN was not counted");
            }
            if attempts.this_call < limits.per_call {
                Decision::AskPin { again: true }
            } else {
                Decision::Refuse(Refusal::PinWrong)
            }
        }
    }
}

/// What a live route says to a call or text on `channel`: connect, unless its direction
/// closed at the order's end or its pair does not carry the channel.
fn over(route: Route, channel: Channel) -> Decision {
    if route.closed {
        Decision::Refuse(Refusal::ClosedAfterEnd)
    } else if !route.carries(channel) {
        Decision::Refuse(Refusal::ChannelUnavailable)
    } else {
        Decision::Connect(route)
    }
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
/// timeout refuses, and so does a live route whose pair does not carry the query's channel or
/// whose direction closed at its order's end.
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
        Ok(Ok(Some(route))) => over(route, query.channel),
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

/// How a provider's retry of a request is told from a replay of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayPolicy {
    /// A repeat of a call id within this long of its first sighting is a provider's retry (say,
    /// after a timeout) and is answered as the first was.
    pub retry_window: Duration,
    /// How long call ids are remembered: longer than any request stays valid.
    pub memory: Duration,
}

impl Default for ReplayPolicy {
    fn default() -> Self {
        ReplayPolicy {
            retry_window: Duration::from_secs(60),
            memory: Duration::from_secs(24 * 3600),
        }
    }
}

impl ReplayPolicy {
    pub fn keep_until(&self, now: UnixTime) -> UnixTime {
        now.saturating_add(UnixTime::try_from(self.memory.as_secs()).unwrap_or(UnixTime::MAX))
    }

    /// `Err(Replayed)` for a repeat seen after the retry window.
    pub fn judge(&self, sighting: Sighting, now: UnixTime) -> Result<(), Refusal> {
        match sighting {
            Sighting::First => Ok(()),
            Sighting::Repeat { first_seen } => {
                let age = now.saturating_sub(first_seen).max(0).unsigned_abs();
                if age <= self.retry_window.as_secs() {
                    Ok(())
                } else {
                    Err(Refusal::Replayed)
                }
            }
        }
    }
}

/// [`decide`], with the call id recorded in the ledger of `endpoint` at the same time, so that
/// the answer waits on no extra round trip. A replay is refused whatever the route says, and
/// so is a request whose call id could not be recorded (fail closed). A request refused before
/// any lookup (a withheld caller) touches neither: replaying it learns nothing.
pub async fn decide_once(
    store: &dyn CallRouting,
    endpoint: &str,
    query: &RouteQuery,
    now: UnixTime,
    budget: Duration,
    replay: ReplayPolicy,
) -> Decision {
    if let Err(refusal) = query.lookup() {
        return Decision::Refuse(refusal);
    }
    let sighting = tokio::time::timeout(
        budget,
        store.sight(endpoint, &query.call_id, now, replay.keep_until(now)),
    );
    let (decision, sighting) = tokio::join!(decide(store, query, now, budget), sighting);
    let refusal = match sighting {
        Ok(Ok(sighting)) => match replay.judge(sighting, now) {
            Ok(()) => return decision,
            Err(refusal) => refusal,
        },
        Ok(Err(StoreError::Timeout)) | Err(_) => Refusal::StoreTimeout,
        Ok(Err(error)) => {
            tracing::warn!(call_id = %query.call_id, %error, "call id not recorded; refusing");
            Refusal::StoreError
        }
    };
    // A replay or a ledger failure outranks whatever the route said (that there is one, too).
    match decision {
        Decision::Connect(_)
        | Decision::Refuse(
            Refusal::NoRoute | Refusal::ChannelUnavailable | Refusal::ClosedAfterEnd,
        ) => Decision::Refuse(refusal),
        refused => refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Capabilities, Role};
    use crate::store::memory::MemoryStore;
    use crate::store::CallLedger;

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

    #[test]
    fn a_repeat_within_the_retry_window_is_a_retry_and_later_a_replay() {
        let policy = ReplayPolicy::default();
        assert_eq!(policy.judge(Sighting::First, 1_000), Ok(()));
        let repeat = Sighting::Repeat { first_seen: 1_000 };
        assert_eq!(policy.judge(repeat, 1_060), Ok(()));
        assert_eq!(policy.judge(repeat, 1_061), Err(Refusal::Replayed));
        assert_eq!(
            policy.judge(repeat, 990),
            Ok(()),
            "a clock step back is no replay"
        );
        assert_eq!(policy.keep_until(1_000), 1_000 + 86_400);
        assert_eq!(policy.keep_until(UnixTime::MAX), UnixTime::MAX);
    }

    /// One live route, and the in-memory ledger.
    struct OneRoute(Route, MemoryStore);

    #[async_trait::async_trait]
    impl RouteReader for OneRoute {
        async fn route(
            &self,
            caller: &RealNumber,
            dialled: &VirtualNumber,
        ) -> Result<Option<Route>, StoreError> {
            let r = &self.0;
            Ok((&r.caller == caller && &r.number == dialled).then(|| r.clone()))
        }

        async fn pin_route(
            &self,
            key: &crate::domain::PinKey,
        ) -> Result<Option<Route>, StoreError> {
            self.1.pin_route(key).await
        }
    }

    #[async_trait::async_trait]
    impl CallLedger for OneRoute {
        async fn sight(
            &self,
            endpoint: &str,
            call_id: &CallId,
            now: UnixTime,
            keep_until: UnixTime,
        ) -> Result<Sighting, StoreError> {
            self.1.sight(endpoint, call_id, now, keep_until).await
        }

        async fn remember_connected(
            &self,
            endpoint: &str,
            call: &crate::domain::ConnectedCall,
        ) -> Result<(), StoreError> {
            self.1.remember_connected(endpoint, call).await
        }

        async fn connected(
            &self,
            endpoint: &str,
            call_id: &CallId,
            now: UnixTime,
        ) -> Result<Option<crate::domain::ConnectedCall>, StoreError> {
            self.1.connected(endpoint, call_id, now).await
        }
    }

    #[async_trait::async_trait]
    impl crate::store::PinGuard for OneRoute {
        async fn count_pin_attempt(
            &self,
            endpoint: &str,
            call_id: &CallId,
            caller: &RealNumber,
            number: &VirtualNumber,
            now: UnixTime,
        ) -> Result<crate::store::PinAttempts, StoreError> {
            self.1
                .count_pin_attempt(endpoint, call_id, caller, number, now)
                .await
        }

        async fn count_pin_failure(
            &self,
            number: &VirtualNumber,
            now: UnixTime,
        ) -> Result<(), StoreError> {
            self.1.count_pin_failure(number, now).await
        }
    }

    #[async_trait::async_trait]
    impl crate::store::AnswerStats for OneRoute {
        async fn count_answer(
            &self,
            number: &VirtualNumber,
            call_id: &CallId,
            answered: bool,
            now: UnixTime,
            keep_until: UnixTime,
        ) -> Result<(), StoreError> {
            self.1
                .count_answer(number, call_id, answered, now, keep_until)
                .await
        }

        async fn answer_tally(
            &self,
            number: &VirtualNumber,
            now: UnixTime,
            days: u32,
        ) -> Result<crate::domain::AnswerTally, StoreError> {
            self.1.answer_tally(number, now, days).await
        }
    }

    /// A live route from +919810000001 on +911140001000 whose pair carries `capabilities`.
    fn route(capabilities: Capabilities) -> Route {
        Route {
            caller: RealNumber::parse("+919810000001").unwrap(),
            number: VirtualNumber::parse("+911140001000").unwrap(),
            order_id: "ord-1".parse().unwrap(),
            market: "IN".parse().unwrap(),
            caller_role: "customer".parse::<Role>().unwrap(),
            callee_role: "driver".parse::<Role>().unwrap(),
            callee: RealNumber::parse("+919710000001").unwrap(),
            capabilities,
            record: false,
            stands_for: None,
            expires_at: 10_000,
            closed: false,
        }
    }

    const VOICE_ONLY: Capabilities = Capabilities {
        voice: true,
        sms: false,
    };

    fn query(channel: Channel, id: &str) -> RouteQuery {
        RouteQuery::new(
            channel,
            CallId::parse(id).unwrap(),
            "+919810000001",
            "+911140001000",
            None,
        )
    }

    #[tokio::test]
    async fn a_text_to_a_voice_only_pair_is_refused_and_a_call_on_it_connects() {
        let route = route(VOICE_ONLY);
        let store = OneRoute(route.clone(), MemoryStore::new());
        let budget = Duration::from_secs(1);
        assert_eq!(
            decide(&store, &query(Channel::Sms, "SM1"), 1_000, budget).await,
            Decision::Refuse(Refusal::ChannelUnavailable)
        );
        assert_eq!(
            decide(&store, &query(Channel::Voice, "CA1"), 1_000, budget).await,
            Decision::Connect(route)
        );
        assert_eq!(Refusal::ChannelUnavailable.as_str(), "channel_unavailable");
    }

    #[tokio::test]
    async fn a_voice_and_sms_pair_takes_texts_and_a_lapsed_one_is_no_route_whatever_the_channel() {
        let both = OneRoute(route(Capabilities::VOICE_AND_SMS), MemoryStore::new());
        let budget = Duration::from_secs(1);
        let text = query(Channel::Sms, "SM1");
        assert!(matches!(
            decide(&both, &text, 1_000, budget).await,
            Decision::Connect(_)
        ));
        let voice_only = OneRoute(route(VOICE_ONLY), MemoryStore::new());
        assert_eq!(
            decide(&voice_only, &text, 10_000, budget).await,
            Decision::Refuse(Refusal::NoRoute),
            "a lapsed pair says nothing of its channels"
        );
    }

    #[tokio::test]
    async fn a_replayed_text_to_a_voice_only_pair_is_refused_as_a_replay() {
        let store = OneRoute(route(VOICE_ONLY), MemoryStore::new());
        let (budget, policy) = (Duration::from_secs(1), ReplayPolicy::default());
        let text = query(Channel::Sms, "SM1");
        let at = |now| decide_once(&store, "generic", &text, now, budget, policy);
        assert_eq!(
            at(1_000).await,
            Decision::Refuse(Refusal::ChannelUnavailable)
        );
        assert_eq!(at(1_100).await, Decision::Refuse(Refusal::Replayed));
    }

    #[tokio::test]
    async fn a_replayed_call_id_is_refused_even_on_a_live_route() {
        let route = route(Capabilities::VOICE_AND_SMS);
        let store = OneRoute(route.clone(), MemoryStore::new());
        let query = |id: &str| {
            RouteQuery::new(
                Channel::Voice,
                CallId::parse(id).unwrap(),
                "+919810000001",
                "+911140001000",
                None,
            )
        };
        let budget = Duration::from_secs(1);
        let policy = ReplayPolicy::default();
        let (ca1, ca2) = (query("CA1"), query("CA2"));
        let at = |now, q| decide_once(&store, "twilio-voice", q, now, budget, policy);
        assert_eq!(at(1_000, &ca1).await, Decision::Connect(route.clone()));
        assert_eq!(
            at(1_030, &ca1).await,
            Decision::Connect(route.clone()),
            "a retry"
        );
        assert_eq!(at(1_100, &ca1).await, Decision::Refuse(Refusal::Replayed));
        assert_eq!(at(1_100, &ca2).await, Decision::Connect(route.clone()));
        // Each endpoint keeps its own ledger.
        let other = decide_once(&store, "generic", &ca1, 1_100, budget, policy).await;
        assert_eq!(other, Decision::Connect(route));
        assert_eq!(
            store
                .sight("twilio-voice", &CallId::parse("CA1").unwrap(), 1_200, 2_000)
                .await
                .unwrap(),
            Sighting::Repeat { first_seen: 1_000 }
        );
    }
}
