//! Orders' masking sessions: who takes part, who may reach whom, through which number.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::call::Channel;
use super::number::Capabilities;
use super::phone::{Market, RealNumber, VirtualNumber};
use super::pin::{ContactPins, Pin, PinRoute};

/// Seconds since the Unix epoch.
pub type UnixTime = i64;

/// The current time as a [`UnixTime`], from the system clock: the one place that reads it.
/// A clock set before 1970 reads as 0.
pub fn now() -> UnixTime {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| {
        UnixTime::try_from(d.as_secs()).unwrap_or(UnixTime::MAX)
    })
}

/// At most this many participants per order: every contact pair needs two route items and one
/// DynamoDB transaction holds at most 100 items (6 parties: 15 pairs, 30 routes, plus as many removed).
pub const MAX_PARTICIPANTS: usize = 6;

/// At most this many alternate phones per participant (a second SIM, a work phone).
pub const MAX_ALTERNATES: usize = 3;

/// At most this many phones in one order, main and alternate: each phone dials each of its
/// owner's contacts on a route of its own, and a change writes and removes them in one
/// transaction (8 phones, each with at most 5 contacts: 40 routes, plus as many removed).
pub const MAX_ORDER_PHONES: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("{what} must be 1-{max} characters of A-Z, a-z, 0-9, '.', '_', ':', '-'")]
    BadIdentifier { what: &'static str, max: usize },
    #[error("{what} must not be '.' or '..'")]
    DotSegment { what: &'static str },
    #[error("role must be 1-32 characters of a-z, 0-9 and '_'")]
    BadRole,
    #[error("an order needs at least one participant")]
    NoParticipants,
    #[error("an order has at most {MAX_PARTICIPANTS} participants, got {0}")]
    TooManyParticipants(usize),
    #[error(
        "participant {index} is the same person as an earlier participant (same user id or phone)"
    )]
    PersonTwice { index: usize },
    #[error("participant {index} has more than {MAX_ALTERNATES} alternate phones")]
    TooManyAlternates { index: usize },
    #[error("an order has at most {MAX_ORDER_PHONES} phones, main and alternate, got {0}")]
    TooManyPhones(usize),
    #[error("this change needs {0} items in one transaction, more than DynamoDB's 100: fewer participants, alternate phones or contacts")]
    TooLarge(usize),
    #[error("contact rule `{0}` must look like `role:role`")]
    BadContactRule(String),
    #[error("field `closed_after_end[{index}].{side}` is no role of this order")]
    NoSuchRole { index: usize, side: &'static str },
}

fn check_identifier(s: &str, what: &'static str, max: usize) -> Result<(), SessionError> {
    let ok = !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(SessionError::BadIdentifier { what, max })
    }
}

/// An order id is also one segment of the Orders service's URL (`/orders/{order_id}`), where
/// `.` and `..` would name the collection or its parent instead of an order.
fn check_order_id(s: &str) -> Result<(), SessionError> {
    check_identifier(s, "order id", 128)?;
    if matches!(s, "." | "..") {
        return Err(SessionError::DotSegment { what: "order id" });
    }
    Ok(())
}

fn check_role(s: &str) -> Result<(), SessionError> {
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(SessionError::BadRole)
    }
}

/// A string newtype whose every value passed `$check` (a `fn(&str) -> Result<(), SessionError>`):
/// parsed from text and from JSON alike, written back as the same text.
macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = SessionError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $check(s)?;
                Ok($name(s.to_owned()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = SessionError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                $check(&s)?;
                Ok($name(s))
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

identifier!(
    /// The order service's id of an order: 1-128 of `A-Z a-z 0-9 . _ : -`, but not `.` or `..`.
    OrderId,
    check_order_id
);
identifier!(
    /// The platform's id of a person (not their phone number).
    UserId,
    |s: &str| check_identifier(s, "user id", 128)
);
identifier!(
    /// A participant's part in an order: `customer`, `driver`, `merchant`, …
    Role,
    check_role
);

/// A person taking part in an order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Participant {
    pub role: Role,
    pub user_id: UserId,
    /// The number calls to this person ring.
    pub phone: RealNumber,
    /// Other phones this person may call from (a second SIM, a work phone): each dials this
    /// person's contacts as `phone` does, and calls to the person still ring `phone`.
    #[serde(default)]
    pub alternate_phones: Vec<RealNumber>,
}

impl Participant {
    /// Every phone this person may call from: `phone`, then the alternates.
    pub fn phones(&self) -> impl Iterator<Item = &RealNumber> {
        std::iter::once(&self.phone).chain(&self.alternate_phones)
    }
}

/// Checks a participant list: non-empty, bounded, and nobody twice (by user id or by any of
/// their phones, since routing tells people apart by the phone they call from).
pub fn validate_participants(participants: &[Participant]) -> Result<(), SessionError> {
    if participants.is_empty() {
        return Err(SessionError::NoParticipants);
    }
    if participants.len() > MAX_PARTICIPANTS {
        return Err(SessionError::TooManyParticipants(participants.len()));
    }
    let mut users = HashSet::new();
    let mut phones = HashSet::new();
    for (index, p) in participants.iter().enumerate() {
        if p.alternate_phones.len() > MAX_ALTERNATES {
            return Err(SessionError::TooManyAlternates { index });
        }
        if !users.insert(&p.user_id) || !p.phones().all(|phone| phones.insert(phone)) {
            return Err(SessionError::PersonTwice { index });
        }
    }
    if phones.len() > MAX_ORDER_PHONES {
        return Err(SessionError::TooManyPhones(phones.len()));
    }
    Ok(())
}

/// Which pairs of roles may reach each other. By default every pair except customer↔customer
/// (two riders of a shared ride must not get each other's line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactPolicy {
    denied: HashSet<(Role, Role)>,
}

impl Default for ContactPolicy {
    fn default() -> Self {
        ContactPolicy::parse("customer:customer").expect("the default rule is well-formed")
    }
}

impl ContactPolicy {
    /// Parses a comma-separated list of denied role pairs, e.g. `customer:customer,merchant:merchant`.
    /// An empty string allows every pair.
    pub fn parse(denied: &str) -> Result<Self, SessionError> {
        let mut set = HashSet::new();
        for rule in denied.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let (a, b) = rule
                .split_once(':')
                .ok_or_else(|| SessionError::BadContactRule(rule.chars().take(40).collect()))?;
            let bad = || SessionError::BadContactRule(rule.chars().take(40).collect());
            let (a, b): (Role, Role) =
                (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
            set.insert(ordered(a, b));
        }
        Ok(ContactPolicy { denied: set })
    }

    pub fn allows(&self, a: &Role, b: &Role) -> bool {
        !self.denied.contains(&ordered(a.clone(), b.clone()))
    }

    /// The contact pairs among `participants`, as index pairs (i < j) in a stable order.
    pub fn pairs(&self, participants: &[Participant]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for i in 0..participants.len() {
            for j in i + 1..participants.len() {
                if self.allows(&participants[i].role, &participants[j].role) {
                    out.push((i, j));
                }
            }
        }
        out
    }
}

fn ordered(a: Role, b: Role) -> (Role, Role) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

/// Two participants (by user id) who reach each other through one virtual number, both ways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub a: UserId,
    pub b: UserId,
    pub number: VirtualNumber,
    pub capabilities: Capabilities,
    /// Where the market recovers callers by PIN: each side's PIN on `number`.
    pub pins: Option<ContactPins>,
}

impl Contact {
    /// The PIN given to `user` on this contact (it stands for them), if the market has PINs.
    pub fn pin_of(&self, user: &UserId) -> Option<&Pin> {
        let pins = self.pins.as_ref()?;
        if &self.a == user {
            Some(&pins.a)
        } else if &self.b == user {
            Some(&pins.b)
        } else {
            None
        }
    }

    pub fn involves(&self, user: &UserId) -> bool {
        &self.a == user || &self.b == user
    }

    /// The other side of this contact, seen from `user`.
    pub fn other(&self, user: &UserId) -> Option<&UserId> {
        if &self.a == user {
            Some(&self.b)
        } else if &self.b == user {
            Some(&self.a)
        } else {
            None
        }
    }

    pub fn joins(&self, x: &UserId, y: &UserId) -> bool {
        (&self.a == x && &self.b == y) || (&self.a == y && &self.b == x)
    }
}

/// One way between two roles of an order: calls and texts from a `from` participant to a `to`
/// participant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Direction {
    pub from: Role,
    pub to: Role,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{}", self.from, self.to)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    Active,
    /// The order ended; its routes keep working until the session's `routes_until` (the end of
    /// the grace period, or earlier if they had already lapsed).
    Ended,
}

/// The masking state of one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub order_id: OrderId,
    pub market: Market,
    /// Version of the last order event applied (the producer's).
    pub version: u64,
    /// Raised by every write of the session, an order event's or a move of its pairs off a
    /// number leaving service (which keeps `version`): a commit is written only over the
    /// revision it was planned from, so that no write is planned from a state another replaced.
    pub revision: u64,
    pub state: SessionState,
    pub participants: Vec<Participant>,
    /// Every contact whose routes this session holds until `routes_until`, and only those.
    pub contacts: Vec<Contact>,
    /// Contacts moved off a number that left service, still routed on the old number until
    /// their handover ends (never after `routes_until`), without PINs.
    pub handovers: Vec<Handover>,
    pub updated_at: UnixTime,
    /// When this session's routes end: every route it holds expires at this instant, so that
    /// the session and its routes are live together (docs/data-model.md, the pair invariant).
    pub routes_until: UnixTime,
    /// Whether the order's connected calls are recorded: opt-in per order, off unless its newest
    /// participants event says `"record": true`.
    pub record: bool,
    /// The directions that stop connecting when the order ends (a sessions API end's choice,
    /// e.g. the driver may no longer call the customer while the customer may still call the
    /// driver through the grace). Their route items live on with the pair's other direction, so
    /// that both directions of a pair still live and end together; only the decision refuses
    /// them ([`Route::closed`]). Empty while the order is active.
    pub closed_after_end: Vec<Direction>,
}

impl Session {
    pub fn participant(&self, user: &UserId) -> Option<&Participant> {
        self.participants.iter().find(|p| &p.user_id == user)
    }

    /// Whether the session's routes still connect at `now`.
    pub fn is_live(&self, now: UnixTime) -> bool {
        self.routes_until > now
    }

    /// Whether a participant in role `from` may reach one in role `to` while the routes live:
    /// always while the order is active; after its end, unless that direction was closed.
    pub fn admits(&self, from: &Role, to: &Role) -> bool {
        self.state == SessionState::Active
            || !self
                .closed_after_end
                .iter()
                .any(|d| &d.from == from && &d.to == to)
    }

    /// Both directions of every handover, each expiring at the end of its handover.
    pub fn handover_pairs(&self) -> Vec<RoutePair> {
        self.handovers
            .iter()
            .filter_map(|h| self.route_pair(&h.contact, h.until.min(self.routes_until)))
            .collect()
    }

    /// Both directions of every contact, expiring at `expires_at`, in contact order.
    pub fn route_pairs(&self, expires_at: UnixTime) -> Vec<RoutePair> {
        self.contacts
            .iter()
            .filter_map(|c| self.route_pair(c, expires_at))
            .collect()
    }

    /// Both directions of contact `c`, then the routes of each side's alternate phones to the
    /// other side; `None` if it names someone who is not a participant. All carry the contact's
    /// channels and the order's recording choice: a pair lives, ends, carries texts and is
    /// recorded together.
    pub fn route_pair(&self, c: &Contact, expires_at: UnixTime) -> Option<RoutePair> {
        let (a, b) = (self.participant(&c.a)?, self.participant(&c.b)?);
        let route = |from: &Participant, caller: &RealNumber, to: &Participant| Route {
            caller: caller.clone(),
            number: c.number.clone(),
            order_id: self.order_id.clone(),
            market: self.market.clone(),
            caller_role: from.role.clone(),
            callee_role: to.role.clone(),
            callee: to.phone.clone(),
            capabilities: c.capabilities,
            record: self.record,
            stands_for: (caller != &from.phone).then(|| from.phone.clone()),
            closed: !self.admits(&from.role, &to.role),
            expires_at,
        };
        let mut routes = vec![route(a, &a.phone, b), route(b, &b.phone, a)];
        for (from, to) in [(a, b), (b, a)] {
            routes.extend(from.alternate_phones.iter().map(|alt| route(from, alt, to)));
        }
        let pins = c.pins.as_ref().map_or_else(Vec::new, |p| {
            vec![
                PinRoute {
                    pin: p.a.clone(),
                    route: routes[0].clone(),
                },
                PinRoute {
                    pin: p.b.clone(),
                    route: routes[1].clone(),
                },
            ]
        });
        Some(RoutePair { routes, pins })
    }
}

/// A contact moved off a number leaving service, kept routed on that number until `until`, so
/// that a call placed from a screen still showing the old number connects. Its routes are
/// written, renewed and ended as a pair, like a contact's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    /// The contact as it was on the old number (no PINs: they are not moved).
    pub contact: Contact,
    pub until: UnixTime,
}

/// Both directions of one contact on its number, then the routes from either side's alternate
/// phones (see [`Route::stands_for`]), and each side's PIN where the market has them. Routes
/// and PINs are only ever written, extended or revived a pair at a time, so that nobody reaches
/// a person who cannot call them back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePair {
    routes: Vec<Route>,
    pins: Vec<PinRoute>,
}

impl RoutePair {
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub fn keys(&self) -> Vec<RouteKey> {
        self.routes.iter().map(Route::key).collect()
    }

    /// Each side's PIN and the route it stands for (none where the market has no PINs).
    pub fn pins(&self) -> &[PinRoute] {
        &self.pins
    }
}

/// Where a call from `caller` to the virtual `number` goes: to `callee`, showing `number` as caller id,
/// so that calling it back reaches the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub caller: RealNumber,
    pub number: VirtualNumber,
    pub order_id: OrderId,
    pub market: Market,
    pub caller_role: Role,
    pub callee_role: Role,
    pub callee: RealNumber,
    /// The channels of the pair's virtual number (its contact's capabilities), the same both
    /// ways: a text to a voice-only pair is refused.
    pub capabilities: Capabilities,
    /// Whether calls over this route are recorded (the order's choice, the same both ways).
    pub record: bool,
    /// When `caller` is an alternate phone: the participant's main phone, whose way in this
    /// route shares. The callee calls back that main phone, never the alternate.
    pub stands_for: Option<RealNumber>,
    /// This direction stopped connecting at the order's end ([`Session::closed_after_end`])
    /// while the pair's other direction connects through the grace: the route item lives and
    /// ends with its pair, and calls and texts over it are refused (`closed_after_end`).
    pub closed: bool,
    pub expires_at: UnixTime,
}

impl Route {
    pub fn key(&self) -> RouteKey {
        RouteKey {
            caller: self.caller.clone(),
            number: self.number.clone(),
        }
    }

    /// The caller id to present to the callee: the same virtual number.
    pub fn caller_id(&self) -> &VirtualNumber {
        &self.number
    }

    pub fn is_live(&self, now: UnixTime) -> bool {
        self.expires_at > now
    }

    /// Whether this route's pair carries `channel`.
    pub fn carries(&self, channel: Channel) -> bool {
        match channel {
            Channel::Voice => self.capabilities.voice,
            Channel::Sms => self.capabilities.sms,
        }
    }
}

/// What identifies a route: who calls and which virtual number they dial.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteKey {
    pub caller: RealNumber,
    pub number: VirtualNumber,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(role: &str, user: &str, phone: &str) -> Participant {
        Participant {
            role: role.parse().unwrap(),
            user_id: user.parse().unwrap(),
            phone: RealNumber::parse(phone).unwrap(),
            alternate_phones: Vec::new(),
        }
    }

    #[test]
    fn alternates_dial_their_persons_contacts_and_calls_ring_the_main_phone() {
        let mut driver = p("driver", "d", "+919898765432");
        driver.alternate_phones = vec![RealNumber::parse("+919898765433").unwrap()];
        let session = Session {
            order_id: "ord-1".parse().unwrap(),
            market: "IN".parse().unwrap(),
            version: 1,
            revision: 1,
            handovers: Vec::new(),
            state: SessionState::Active,
            participants: vec![p("customer", "c", "+919812345678"), driver],
            contacts: vec![Contact {
                a: "c".parse().unwrap(),
                b: "d".parse().unwrap(),
                number: VirtualNumber::parse("+911140001000").unwrap(),
                capabilities: Capabilities::VOICE_AND_SMS,
                pins: None,
            }],
            updated_at: 0,
            routes_until: 100,
            record: false,
            closed_after_end: Vec::new(),
        };
        let pair = session.route_pairs(100).remove(0);
        let shown: Vec<(&str, &str, Option<&str>)> = pair
            .routes()
            .iter()
            .map(|r| {
                (
                    r.caller.expose(),
                    r.callee.expose(),
                    r.stands_for.as_ref().map(RealNumber::expose),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                ("+919812345678", "+919898765432", None),
                ("+919898765432", "+919812345678", None),
                ("+919898765433", "+919812345678", Some("+919898765432")),
            ]
        );
        assert_eq!(pair.routes()[2].caller_role.as_str(), "driver");
        assert_eq!(pair.keys().len(), 3);
    }

    #[test]
    fn an_order_holds_a_bounded_number_of_phones() {
        let alt = |n: usize| RealNumber::parse(&format!("+9198987654{n:02}")).unwrap();
        let mut people: Vec<Participant> = (0..3)
            .map(|i| p("driver", &format!("d{i}"), &format!("+91981234567{i}")))
            .collect();
        people[0].alternate_phones = (0..3).map(alt).collect();
        people[1].alternate_phones = (3..5).map(alt).collect();
        assert_eq!(validate_participants(&people), Ok(()));
        people[2].alternate_phones = vec![alt(5)];
        assert_eq!(
            validate_participants(&people),
            Err(SessionError::TooManyPhones(9))
        );
        people[2].alternate_phones = vec![];
        people[1].alternate_phones = (3..7).map(alt).collect();
        assert_eq!(
            validate_participants(&people),
            Err(SessionError::TooManyAlternates { index: 1 })
        );
    }

    #[test]
    fn default_policy_pairs_everyone_but_two_customers() {
        let people = [
            p("customer", "c1", "+919812345678"),
            p("customer", "c2", "+919812345679"),
            p("driver", "d", "+919898765432"),
        ];
        assert_eq!(
            ContactPolicy::default().pairs(&people),
            vec![(0, 2), (1, 2)]
        );
    }

    #[test]
    fn both_directions_of_a_pair_carry_its_contacts_channels_and_the_orders_recording() {
        let voice_only = Capabilities {
            voice: true,
            sms: false,
        };
        let session = Session {
            order_id: "ord-1".parse().unwrap(),
            market: "IN".parse().unwrap(),
            version: 1,
            revision: 1,
            handovers: Vec::new(),
            state: SessionState::Active,
            participants: vec![
                p("customer", "c", "+919812345678"),
                p("driver", "d", "+919898765432"),
            ],
            contacts: vec![Contact {
                a: "c".parse().unwrap(),
                b: "d".parse().unwrap(),
                number: VirtualNumber::parse("+911140001000").unwrap(),
                capabilities: voice_only,
                pins: None,
            }],
            updated_at: 0,
            routes_until: 100,
            record: false,
            closed_after_end: Vec::new(),
        };
        let pairs = session.route_pairs(100);
        for route in pairs[0].routes() {
            assert_eq!(route.capabilities, voice_only);
            assert!(route.carries(Channel::Voice) && !route.carries(Channel::Sms));
            assert!(!route.record);
        }
        let recorded = Session {
            record: true,
            ..session
        };
        assert!(recorded.route_pairs(100)[0]
            .routes()
            .iter()
            .all(|r| r.record));
    }

    #[test]
    fn empty_policy_allows_every_pair() {
        let people = [
            p("customer", "c1", "+919812345678"),
            p("customer", "c2", "+919812345679"),
        ];
        assert_eq!(
            ContactPolicy::parse("").unwrap().pairs(&people),
            vec![(0, 1)]
        );
    }

    #[test]
    fn malformed_contact_rule_is_an_error() {
        assert!(ContactPolicy::parse("customer").is_err());
        assert!(ContactPolicy::parse("Customer:driver").is_err());
    }

    #[test]
    fn same_phone_twice_is_rejected() {
        let people = [
            p("customer", "c1", "+919812345678"),
            p("driver", "d", "+919812345678"),
        ];
        assert_eq!(
            validate_participants(&people),
            Err(SessionError::PersonTwice { index: 1 })
        );
    }

    #[test]
    fn same_user_twice_is_rejected() {
        let people = [
            p("customer", "u", "+919812345678"),
            p("driver", "u", "+919812345679"),
        ];
        assert_eq!(
            validate_participants(&people),
            Err(SessionError::PersonTwice { index: 1 })
        );
    }

    #[test]
    fn identifiers_reject_key_delimiters_and_spaces() {
        assert!("ord-1001".parse::<OrderId>().is_ok());
        assert!("ord#1".parse::<OrderId>().is_err());
        assert!("ord 1".parse::<OrderId>().is_err());
        assert!("".parse::<OrderId>().is_err());
        assert!("x".repeat(129).parse::<OrderId>().is_err());
    }

    #[test]
    fn order_ids_refuse_dot_segments_from_text_and_json_alike() {
        for dots in [".", ".."] {
            assert_eq!(
                dots.parse::<OrderId>(),
                Err(SessionError::DotSegment { what: "order id" })
            );
            let json = format!("\"{dots}\"");
            let refused = serde_json::from_str::<OrderId>(&json).unwrap_err();
            assert!(refused.to_string().contains("must not be '.' or '..'"));
        }
        for fine in ["...", ".a", "a..", "ord.1", "a:b", "x".repeat(128).as_str()] {
            assert!(fine.parse::<OrderId>().is_ok(), "{fine:?}");
        }
        for bad in ["a/b", "a%2Fb", "a b", "a?b", "a#b", "ord\u{e9}"] {
            assert!(bad.parse::<OrderId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn identifier_errors_never_echo_the_value() {
        for bad in [
            "+919812345678 x",
            "+919812345678#",
            "x".repeat(129).as_str(),
        ] {
            let text = bad.parse::<OrderId>().unwrap_err().to_string();
            assert!(
                !text.contains("9812345678") && !text.contains(bad),
                "{text}"
            );
        }
    }

    #[test]
    fn roles_are_lowercase_words_from_text_and_json_alike() {
        assert_eq!("driver_2".parse::<Role>().unwrap().as_str(), "driver_2");
        for bad in ["", "Driver", "driver-2", "ride:share"] {
            assert_eq!(bad.parse::<Role>(), Err(SessionError::BadRole), "{bad:?}");
        }
        assert!("x".repeat(32).parse::<Role>().is_ok());
        assert!("x".repeat(33).parse::<Role>().is_err());
        let role: Role = serde_json::from_str("\"merchant\"").unwrap();
        assert_eq!(serde_json::to_string(&role).unwrap(), "\"merchant\"");
        assert_eq!(role.to_string(), "merchant");
        let refused = serde_json::from_str::<Role>("\"Merchant\"").unwrap_err();
        assert!(refused.to_string().contains("role must be 1-32 characters"));
    }
}
