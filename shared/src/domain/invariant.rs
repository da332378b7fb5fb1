//! The pair invariant (docs/data-model.md) and a checker for stored state.
//!
//! At every instant, for every virtual number v and every pair of people (p, q):
//! 1. the route (p, v) → q is live if and only if (q, v) → p is live, and both name one order
//!    and carry the same channels (a text one way can be answered the other);
//! 2. every live route belongs to a live session that lists the pair on that number, and every
//!    pair a live session lists has both its routes (a session lists its contacts, and the
//!    handovers of contacts moved off a number leaving service until each handover ends);
//! 3. nobody dials one number in two live orders.
//!
//! A PIN entered on v stands for one participant p of a pair (p, q): while it answers, the route
//! (p, v) → q is live, for the same order (a PIN never outlives or crosses its pair).
//!
//! A participant's alternate phone p' dials their contacts as their main phone p does: the route
//! (p', v) → q stands for p, and is live if and only if (p, v) → q is, for the same order; its
//! way back is (q, v) → p. Rule 3 holds for every alternate as for every main phone.
//!
//! [`Audit`] collects what a walk over the store saw and names every breach by order and
//! virtual number (ours, public), never by person.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use super::number::Capabilities;
use super::phone::VirtualNumber;
use super::session::{Direction, OrderId, Role, UnixTime};

/// A person as a store identifies them (the HMAC person key in DynamoDB): opaque, and never
/// shown, so that neither a number nor its key reaches an audit's output.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PersonKey(String);

impl PersonKey {
    pub fn new(key: impl Into<String>) -> Self {
        PersonKey(key.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PersonKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PersonKey(..)")
    }
}

/// A route item as stored: who dials which number, for which order, whom it reaches and over
/// which channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRoute {
    pub caller: PersonKey,
    pub number: VirtualNumber,
    pub order_id: OrderId,
    pub callee: PersonKey,
    pub capabilities: Capabilities,
    /// On a route from an alternate phone: the participant's main phone.
    pub stands_for: Option<PersonKey>,
    pub caller_role: Role,
    pub callee_role: Role,
    /// Its direction closed at its order's end.
    pub closed: bool,
    pub expires_at: UnixTime,
}

impl StoredRoute {
    /// Whose way in this is: the participant's main phone.
    fn principal(&self) -> &PersonKey {
        self.stands_for.as_ref().unwrap_or(&self.caller)
    }

    pub fn is_live(&self, now: UnixTime) -> bool {
        self.expires_at > now
    }
}

/// A PIN item as stored, reduced to what the invariant speaks of: the item's own key (opaque),
/// the number, the order, whom it stands for and whom it reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPin {
    pub at: PinAt,
    pub number: VirtualNumber,
    pub order_id: OrderId,
    pub principal: PersonKey,
    pub callee: PersonKey,
    pub expires_at: UnixTime,
}

/// Where a PIN is stored: its item's key, opaque (an HMAC in DynamoDB), never the digits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PinAt(String);

impl PinAt {
    pub fn new(key: impl Into<String>) -> Self {
        PinAt(key.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PinAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PinAt(..)")
    }
}

/// One contact of a stored session (or one of its handovers): two people, their number and
/// when the pair's routes end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPair {
    pub a: PersonKey,
    pub b: PersonKey,
    pub number: VirtualNumber,
    /// The session's `routes_until` for a contact; for a handover, the end of the handover.
    pub until: UnixTime,
}

/// A session item as stored, reduced to what the invariant speaks of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    pub order_id: OrderId,
    pub routes_until: UnixTime,
    pub pairs: Vec<StoredPair>,
    /// Each participant's alternate phones: alternate → main.
    pub alternates: HashMap<PersonKey, PersonKey>,
    /// The directions its end closed (none while the order is active).
    pub closed: Vec<Direction>,
}

impl StoredSession {
    /// The phones that dial as `main` does: `main` and its alternates.
    fn phones_of<'a>(&'a self, main: &'a PersonKey) -> impl Iterator<Item = &'a PersonKey> {
        std::iter::once(main).chain(
            self.alternates
                .iter()
                .filter(move |(_, m)| *m == main)
                .map(|(alt, _)| alt),
        )
    }

    fn closes(&self, from: &Role, to: &Role) -> bool {
        self.closed.iter().any(|d| &d.from == from && &d.to == to)
    }

    fn lists(&self, p: &PersonKey, q: &PersonKey, number: &VirtualNumber) -> bool {
        self.pairs
            .iter()
            .any(|c| &c.number == number && ((&c.a == p && &c.b == q) || (&c.a == q && &c.b == p)))
    }
}

/// One breach of the invariant. Shown by kind, order and number only.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Breach {
    /// A live route whose way back is not live: its callee cannot call back on that number.
    HalfPair {
        order_id: OrderId,
        number: VirtualNumber,
        route: RouteAt,
    },
    /// A live route whose way back is live but names another order, leads to someone else or
    /// carries other channels.
    CrossedPair {
        order_id: OrderId,
        other_order: OrderId,
        number: VirtualNumber,
        route: RouteAt,
    },
    /// A live route of an order that has no live session.
    NoLiveSession {
        order_id: OrderId,
        number: VirtualNumber,
        route: RouteAt,
    },
    /// A live route that its order's live session does not list on that number.
    NotInSession {
        order_id: OrderId,
        number: VirtualNumber,
        route: RouteAt,
    },
    /// A pair that a live session lists whose two routes are not both live and its own.
    MissingRoute {
        order_id: OrderId,
        number: VirtualNumber,
        pair: [RouteAt; 2],
    },
    /// One person dials the same number in two live orders.
    DialledTwice {
        number: VirtualNumber,
        orders: [OrderId; 2],
        route: RouteAt,
    },
    /// A live route closed though its session's end did not close its direction, or open
    /// though it did: a caller the order's end shut out could still get through.
    ClosedMismatch {
        order_id: OrderId,
        number: VirtualNumber,
        route: RouteAt,
    },
    /// A live PIN whose participant's route on its number is not live, is another order's or
    /// reaches someone else: the PIN would connect a caller outside a live pair.
    OrphanPin {
        order_id: OrderId,
        number: VirtualNumber,
        pin: PinAt,
        route: RouteAt,
    },
}

/// Where a breach was seen: a route's key (person and number), kept so that it can be read
/// again; its Debug hides the person.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteAt {
    pub caller: PersonKey,
    pub number: VirtualNumber,
}

impl Breach {
    /// A stable name for reports and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Breach::HalfPair { .. } => "half_pair",
            Breach::CrossedPair { .. } => "crossed_pair",
            Breach::NoLiveSession { .. } => "no_live_session",
            Breach::NotInSession { .. } => "not_in_session",
            Breach::MissingRoute { .. } => "missing_route",
            Breach::DialledTwice { .. } => "dialled_twice",
            Breach::OrphanPin { .. } => "orphan_pin",
            Breach::ClosedMismatch { .. } => "closed_mismatch",
        }
    }

    /// The orders the breach names.
    pub fn orders(&self) -> Vec<&OrderId> {
        match self {
            Breach::HalfPair { order_id, .. }
            | Breach::NoLiveSession { order_id, .. }
            | Breach::NotInSession { order_id, .. }
            | Breach::MissingRoute { order_id, .. }
            | Breach::OrphanPin { order_id, .. }
            | Breach::ClosedMismatch { order_id, .. } => vec![order_id],
            Breach::CrossedPair {
                order_id,
                other_order,
                ..
            } => vec![order_id, other_order],
            Breach::DialledTwice { orders, .. } => orders.iter().collect(),
        }
    }

    pub fn number(&self) -> &VirtualNumber {
        match self {
            Breach::HalfPair { number, .. }
            | Breach::CrossedPair { number, .. }
            | Breach::NoLiveSession { number, .. }
            | Breach::NotInSession { number, .. }
            | Breach::MissingRoute { number, .. }
            | Breach::DialledTwice { number, .. }
            | Breach::OrphanPin { number, .. }
            | Breach::ClosedMismatch { number, .. } => number,
        }
    }

    /// The route keys whose items decide the breach: read them (and [`Breach::orders`]' sessions)
    /// again to tell a real breach from a walk that raced a write.
    pub fn routes(&self) -> Vec<&RouteAt> {
        match self {
            Breach::MissingRoute { pair, .. } => pair.iter().collect(),
            Breach::HalfPair { route, .. }
            | Breach::CrossedPair { route, .. }
            | Breach::NoLiveSession { route, .. }
            | Breach::NotInSession { route, .. }
            | Breach::DialledTwice { route, .. }
            | Breach::OrphanPin { route, .. }
            | Breach::ClosedMismatch { route, .. } => vec![route],
        }
    }

    /// The PIN item that decides the breach, if it is about one.
    pub fn pin(&self) -> Option<&PinAt> {
        match self {
            Breach::OrphanPin { pin, .. } => Some(pin),
            _ => None,
        }
    }
}

impl fmt::Display for Breach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let orders: Vec<&str> = self.orders().iter().map(|o| o.as_str()).collect();
        write!(
            f,
            "{}: order {} on {}",
            self.kind(),
            orders.join(" and "),
            self.number()
        )
    }
}

/// What a walk over the store saw, checked against the invariant at one instant.
#[derive(Debug, Default)]
pub struct Audit {
    now: UnixTime,
    routes: HashMap<RouteAt, StoredRoute>,
    sessions: HashMap<OrderId, StoredSession>,
    pins: HashMap<PinAt, StoredPin>,
}

impl Audit {
    pub fn new(now: UnixTime) -> Self {
        Audit {
            now,
            ..Audit::default()
        }
    }

    /// Takes in a route; lapsed ones are dropped, since the invariant speaks of live ones.
    pub fn add_route(&mut self, route: StoredRoute) {
        if route.is_live(self.now) {
            let at = RouteAt {
                caller: route.caller.clone(),
                number: route.number.clone(),
            };
            self.routes.insert(at, route);
        }
    }

    /// Takes in a PIN; lapsed ones are dropped.
    pub fn add_pin(&mut self, pin: StoredPin) {
        if pin.expires_at > self.now {
            self.pins.insert(pin.at.clone(), pin);
        }
    }

    /// Takes in a session; lapsed ones are dropped, and so are the pairs of a live one that
    /// ended (handovers that ran out).
    pub fn add_session(&mut self, mut session: StoredSession) {
        if session.routes_until > self.now {
            session.pairs.retain(|p| p.until > self.now);
            self.sessions.insert(session.order_id.clone(), session);
        }
    }

    pub fn live_routes(&self) -> usize {
        self.routes.len()
    }

    pub fn live_sessions(&self) -> usize {
        self.sessions.len()
    }

    pub fn live_pins(&self) -> usize {
        self.pins.len()
    }

    fn live_route(&self, caller: &PersonKey, number: &VirtualNumber) -> Option<&StoredRoute> {
        self.routes.get(&RouteAt {
            caller: caller.clone(),
            number: number.clone(),
        })
    }

    /// Every breach, sorted, each once.
    pub fn breaches(&self) -> Vec<Breach> {
        let mut found = BTreeSet::new();
        for (at, r) in &self.routes {
            match self.live_route(&r.callee, &r.number) {
                None => {
                    found.insert(Breach::HalfPair {
                        order_id: r.order_id.clone(),
                        number: r.number.clone(),
                        route: at.clone(),
                    });
                }
                Some(back)
                    if back.order_id != r.order_id
                        || &back.callee != r.principal()
                        || back.capabilities != r.capabilities =>
                {
                    found.insert(Breach::CrossedPair {
                        order_id: r.order_id.clone(),
                        other_order: back.order_id.clone(),
                        number: r.number.clone(),
                        route: at.clone(),
                    });
                }
                Some(_) => {}
            }
            match self.sessions.get(&r.order_id) {
                None => {
                    found.insert(Breach::NoLiveSession {
                        order_id: r.order_id.clone(),
                        number: r.number.clone(),
                        route: at.clone(),
                    });
                }
                Some(s)
                    if !s.lists(r.principal(), &r.callee, &r.number)
                        || r.stands_for
                            .as_ref()
                            .is_some_and(|main| s.alternates.get(&r.caller) != Some(main)) =>
                {
                    found.insert(Breach::NotInSession {
                        order_id: r.order_id.clone(),
                        number: r.number.clone(),
                        route: at.clone(),
                    });
                }
                Some(s) if r.closed != s.closes(&r.caller_role, &r.callee_role) => {
                    found.insert(Breach::ClosedMismatch {
                        order_id: r.order_id.clone(),
                        number: r.number.clone(),
                        route: at.clone(),
                    });
                }
                Some(_) => {}
            }
        }
        for p in self.pins.values() {
            let route = RouteAt {
                caller: p.principal.clone(),
                number: p.number.clone(),
            };
            let stands = self
                .routes
                .get(&route)
                .is_some_and(|r| r.order_id == p.order_id && r.callee == p.callee);
            if !stands {
                found.insert(Breach::OrphanPin {
                    order_id: p.order_id.clone(),
                    number: p.number.clone(),
                    pin: p.at.clone(),
                    route,
                });
            }
        }
        let mut dialled: HashMap<RouteAt, &OrderId> = HashMap::new();
        for s in self.sessions.values() {
            for c in &s.pairs {
                let holds = |from: &PersonKey, main: &PersonKey, to: &PersonKey| {
                    self.live_route(from, &c.number).is_some_and(|r| {
                        r.order_id == s.order_id && &r.callee == to && r.principal() == main
                    })
                };
                let at = |p: &PersonKey| RouteAt {
                    caller: p.clone(),
                    number: c.number.clone(),
                };
                let whole = [(&c.a, &c.b), (&c.b, &c.a)]
                    .iter()
                    .all(|(main, to)| s.phones_of(main).all(|from| holds(from, main, to)));
                if !whole {
                    found.insert(Breach::MissingRoute {
                        order_id: s.order_id.clone(),
                        number: c.number.clone(),
                        pair: [at(&c.a), at(&c.b)],
                    });
                }
                for p in s.phones_of(&c.a).chain(s.phones_of(&c.b)) {
                    match dialled.insert(at(p), &s.order_id) {
                        Some(other) if other != &s.order_id => {
                            let mut orders = [other.clone(), s.order_id.clone()];
                            orders.sort();
                            found.insert(Breach::DialledTwice {
                                number: c.number.clone(),
                                orders,
                                route: at(p),
                            });
                        }
                        _ => {}
                    }
                }
            }
        }
        found.into_iter().collect()
    }

    /// The breaches of `suspects` that a fresh read still shows: `fresh` holds the items that
    /// decide them, read again after the walk (a walk over a table in use can see one item
    /// before a commit and its partner after it).
    pub fn confirmed(suspects: &[Breach], fresh: &Audit) -> Vec<Breach> {
        let still: BTreeSet<Breach> = fresh.breaches().into_iter().collect();
        suspects
            .iter()
            .filter(|b| still.contains(b))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixTime = 1_000;

    fn key(p: &str) -> PersonKey {
        PersonKey::new(p)
    }

    fn vn(n: &str) -> VirtualNumber {
        VirtualNumber::parse_form(n).unwrap()
    }

    fn route(from: &str, to: &str, number: &str, order: &str, expires_at: UnixTime) -> StoredRoute {
        StoredRoute {
            caller: key(from),
            number: vn(number),
            order_id: order.parse().unwrap(),
            callee: key(to),
            capabilities: Capabilities::VOICE_AND_SMS,
            stands_for: None,
            caller_role: "customer".parse().unwrap(),
            callee_role: "driver".parse().unwrap(),
            closed: false,
            expires_at,
        }
    }

    fn session(order: &str, until: UnixTime, pairs: &[(&str, &str, &str)]) -> StoredSession {
        StoredSession {
            order_id: order.parse().unwrap(),
            routes_until: until,
            alternates: Default::default(),
            pairs: pairs
                .iter()
                .map(|(a, b, n)| StoredPair {
                    a: key(a),
                    b: key(b),
                    number: vn(n),
                    until,
                })
                .collect(),
            closed: Vec::new(),
        }
    }

    const V: &str = "+911140000010";

    fn kinds(audit: &Audit) -> Vec<&'static str> {
        audit.breaches().iter().map(Breach::kind).collect()
    }

    #[test]
    fn a_whole_pair_with_its_session_is_clean() {
        let mut a = Audit::new(NOW);
        a.add_session(session("o1", 2_000, &[("c", "d", V)]));
        a.add_route(route("c", "d", V, "o1", 2_000));
        a.add_route(route("d", "c", V, "o1", 2_000));
        assert!(a.breaches().is_empty());
        assert_eq!((a.live_routes(), a.live_sessions()), (2, 1));
    }

    fn alias(from: &str, main: &str, to: &str, number: &str, order: &str) -> StoredRoute {
        StoredRoute {
            stands_for: Some(key(main)),
            ..route(from, to, number, order, 2_000)
        }
    }

    #[test]
    fn a_route_closed_unlike_its_sessions_end_is_found() {
        let back = || StoredRoute {
            caller_role: "driver".parse().unwrap(),
            callee_role: "customer".parse().unwrap(),
            ..route("d", "c", V, "o1", 2_000)
        };
        let ended = || StoredSession {
            closed: vec![Direction {
                from: "customer".parse().unwrap(),
                to: "driver".parse().unwrap(),
            }],
            ..session("o1", 2_000, &[("c", "d", V)])
        };
        let closed = StoredRoute {
            closed: true,
            ..route("c", "d", V, "o1", 2_000)
        };
        // As the end wrote it: the customer's way closed, the driver's open.
        let mut a = Audit::new(NOW);
        a.add_session(ended());
        a.add_route(closed.clone());
        a.add_route(back());
        assert!(a.breaches().is_empty());
        // The closed way left open: found.
        let mut a = Audit::new(NOW);
        a.add_session(ended());
        a.add_route(route("c", "d", V, "o1", 2_000));
        a.add_route(back());
        assert_eq!(kinds(&a), ["closed_mismatch"]);
        // A route closed in an order whose end closed nothing: found too.
        let mut a = Audit::new(NOW);
        a.add_session(session("o1", 2_000, &[("c", "d", V)]));
        a.add_route(closed);
        a.add_route(back());
        assert_eq!(kinds(&a), ["closed_mismatch"]);
    }

    #[test]
    fn an_alternate_phone_dials_as_its_main_phone_and_is_checked_as_it() {
        let with_alternate = || {
            let mut s = session("o1", 2_000, &[("c", "d", V)]);
            s.alternates.insert(key("c2"), key("c"));
            s
        };
        let mut a = Audit::new(NOW);
        a.add_session(with_alternate());
        a.add_route(route("c", "d", V, "o1", 2_000));
        a.add_route(route("d", "c", V, "o1", 2_000));
        a.add_route(alias("c2", "c", "d", V, "o1"));
        assert!(a.breaches().is_empty(), "{:?}", a.breaches());

        // The alternate's route missing: the pair is not whole.
        let mut a = Audit::new(NOW);
        a.add_session(with_alternate());
        a.add_route(route("c", "d", V, "o1", 2_000));
        a.add_route(route("d", "c", V, "o1", 2_000));
        assert_eq!(kinds(&a), ["missing_route"]);

        // An alternate's route that its session does not list, or that stands for someone else.
        let mut a = Audit::new(NOW);
        a.add_session(session("o1", 2_000, &[("c", "d", V)]));
        a.add_route(route("c", "d", V, "o1", 2_000));
        a.add_route(route("d", "c", V, "o1", 2_000));
        a.add_route(alias("c2", "c", "d", V, "o1"));
        assert_eq!(kinds(&a), ["not_in_session"]);
        let mut a = Audit::new(NOW);
        a.add_session(with_alternate());
        a.add_route(route("c", "d", V, "o1", 2_000));
        a.add_route(route("d", "c", V, "o1", 2_000));
        a.add_route(alias("c2", "c", "d", V, "o1"));
        a.add_route(alias("x", "c", "d", V, "o1"));
        assert_eq!(kinds(&a), ["not_in_session"]);

        // An alternate whose main phone's pair is gone: its way back does not lead to it.
        let mut a = Audit::new(NOW);
        a.add_session(session("o2", 2_000, &[("d", "e", V)]));
        a.add_route(route("d", "e", V, "o2", 2_000));
        a.add_route(route("e", "d", V, "o2", 2_000));
        a.add_route(alias("c2", "c", "d", V, "o1"));
        assert_eq!(kinds(&a), ["crossed_pair", "no_live_session"]);
    }

    fn pin(principal: &str, callee: &str, order: &str, expires_at: UnixTime) -> StoredPin {
        StoredPin {
            at: PinAt::new(format!("pin-{principal}")),
            number: vn(V),
            order_id: order.parse().unwrap(),
            principal: key(principal),
            callee: key(callee),
            expires_at,
        }
    }

    #[test]
    fn a_pin_answers_only_while_its_participants_route_does() {
        let whole = || {
            let mut a = Audit::new(NOW);
            a.add_session(session("o1", 2_000, &[("c", "d", V)]));
            a.add_route(route("c", "d", V, "o1", 2_000));
            a.add_route(route("d", "c", V, "o1", 2_000));
            a
        };
        let mut a = whole();
        a.add_pin(pin("c", "d", "o1", 2_000));
        a.add_pin(pin("d", "c", "o1", 2_000));
        assert!(a.breaches().is_empty(), "{:?}", a.breaches());
        // A lapsed PIN is not checked.
        let mut a = whole();
        a.add_pin(pin("x", "d", "o1", NOW));
        assert!(a.breaches().is_empty());
        // A PIN of a participant with no route here, of another order, or to someone else.
        for stray in [
            pin("x", "d", "o1", 2_000),
            pin("c", "d", "o2", 2_000),
            pin("c", "e", "o1", 2_000),
        ] {
            let mut a = whole();
            a.add_pin(stray);
            assert_eq!(kinds(&a), ["orphan_pin"]);
            let shown = a.breaches()[0].to_string();
            assert!(!shown.contains("pin-"), "{shown}");
        }
    }

    #[test]
    fn an_alternate_dialling_one_number_in_two_live_orders_is_found() {
        let mut a = Audit::new(NOW);
        let mut o1 = session("o1", 2_000, &[("c", "d", V)]);
        o1.alternates.insert(key("x"), key("c"));
        a.add_session(o1);
        a.add_session(session("o2", 2_000, &[("x", "e", V)]));
        assert!(kinds(&a).contains(&"dialled_twice"), "{:?}", kinds(&a));
    }

    #[test]
    fn lapsed_pairs_and_sessions_are_not_checked() {
        let mut a = Audit::new(NOW);
        a.add_session(session("o1", NOW, &[("c", "d", V)]));
        a.add_route(route("c", "d", V, "o1", NOW));
        assert!(a.breaches().is_empty());
    }

    #[test]
    fn the_crossed_history_of_issue_14_is_found() {
        // o1 (C, D) lapsed; o2 took (C, v) for C and E; a late end revived (D, v) → C alone.
        let mut a = Audit::new(NOW);
        a.add_session(session("o1", 2_000, &[]));
        a.add_session(session("o2", 3_000, &[("c", "e", V)]));
        a.add_route(route("c", "e", V, "o2", 3_000));
        a.add_route(route("e", "c", V, "o2", 3_000));
        a.add_route(route("d", "c", V, "o1", 2_000));
        assert_eq!(kinds(&a), ["crossed_pair", "not_in_session"]);
        let shown = a.breaches()[0].to_string();
        assert_eq!(shown, format!("crossed_pair: order o1 and o2 on {V}"));
    }

    #[test]
    fn a_route_without_its_way_back_is_a_half_pair() {
        let mut a = Audit::new(NOW);
        a.add_session(session("o1", 2_000, &[("c", "d", V)]));
        a.add_route(route("c", "d", V, "o1", 2_000));
        a.add_route(route("d", "c", V, "o1", NOW));
        assert_eq!(kinds(&a), ["half_pair", "missing_route"]);
    }

    #[test]
    fn a_live_route_of_an_ended_or_unknown_order_has_no_live_session() {
        let mut a = Audit::new(NOW);
        a.add_session(session("o1", NOW - 1, &[("c", "d", V)]));
        a.add_route(route("c", "d", V, "o1", 2_000));
        a.add_route(route("d", "c", V, "o1", 2_000));
        assert_eq!(kinds(&a), ["no_live_session", "no_live_session"]);
    }

    #[test]
    fn one_person_on_one_number_in_two_live_orders_is_found() {
        let mut a = Audit::new(NOW);
        a.add_session(session("o1", 2_000, &[("c", "d", V)]));
        a.add_session(session("o2", 2_000, &[("c", "e", V)]));
        for (from, to) in [("c", "d"), ("d", "c")] {
            a.add_route(route(from, to, V, "o1", 2_000));
        }
        a.add_route(route("e", "c", V, "o2", 2_000));
        let found = a.breaches();
        assert!(found.iter().any(|b| b.kind() == "dialled_twice"));
        assert!(found.iter().any(|b| b.kind() == "crossed_pair"));
    }

    #[test]
    fn a_pair_whose_directions_carry_different_channels_is_crossed() {
        let mut a = Audit::new(NOW);
        a.add_session(session("o1", 2_000, &[("c", "d", V)]));
        a.add_route(route("c", "d", V, "o1", 2_000));
        a.add_route(StoredRoute {
            capabilities: Capabilities {
                voice: true,
                sms: false,
            },
            ..route("d", "c", V, "o1", 2_000)
        });
        assert_eq!(kinds(&a), ["crossed_pair", "crossed_pair"]);
    }

    #[test]
    fn breaches_never_show_a_person() {
        let mut a = Audit::new(NOW);
        a.add_route(route("secret-person-key", "other-key", V, "o1", 2_000));
        for b in a.breaches() {
            let shown = format!("{b} {b:?}");
            assert!(!shown.contains("secret-person-key"), "{shown}");
            assert!(!shown.contains("other-key"), "{shown}");
        }
    }

    #[test]
    fn a_breach_that_a_fresh_read_no_longer_shows_is_not_confirmed() {
        let mut walk = Audit::new(NOW);
        walk.add_session(session("o1", 2_000, &[("c", "d", V)]));
        walk.add_route(route("c", "d", V, "o1", 2_000));
        let suspects = walk.breaches();
        assert!(!suspects.is_empty());
        let mut fresh = Audit::new(NOW);
        fresh.add_session(session("o1", 2_000, &[("c", "d", V)]));
        fresh.add_route(route("c", "d", V, "o1", 2_000));
        fresh.add_route(route("d", "c", V, "o1", 2_000));
        assert!(Audit::confirmed(&suspects, &fresh).is_empty());
        assert_eq!(Audit::confirmed(&suspects, &walk), suspects);
    }
}
