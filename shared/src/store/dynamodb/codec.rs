//! Domain values to and from DynamoDB items. Real numbers leave here only sealed or HMAC'd.
//! Numbers read back were parsed strictly before they were written: only their form is checked.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;

use super::attrs;
use crate::crypto::{Sealed, Vault};
use crate::domain::invariant::{
    PersonKey, PinAt, StoredPair, StoredPin, StoredRoute, StoredSession,
};
use crate::domain::{
    Capabilities, Capability, Contact, ContactPins, Direction, Handover, Hold, Participant, Pin,
    PinKey, PinRoute, PoolNumber, RealNumber, Route, Session, SessionState, UnixTime, UserId,
    VirtualNumber,
};
use crate::store::{LiveContact, PoolEntry, SampledRoute, StoreError};

type Item = HashMap<String, AttributeValue>;

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn corrupt(attribute: &'static str) -> StoreError {
    StoreError::Corrupt { attribute }
}

fn get_s<'a>(item: &'a Item, name: &'static str) -> Result<&'a str, StoreError> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
        .ok_or_else(|| corrupt(name))
}

fn get_n<T: std::str::FromStr>(item: &Item, name: &'static str) -> Result<T, StoreError> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| corrupt(name))
}

fn get_b<'a>(item: &'a Item, name: &'static str) -> Result<&'a [u8], StoreError> {
    item.get(name)
        .and_then(|v| v.as_b().ok())
        .map(|b| b.as_ref())
        .ok_or_else(|| corrupt(name))
}

fn get_l<'a>(item: &'a Item, name: &'static str) -> Result<&'a [AttributeValue], StoreError> {
    item.get(name)
        .and_then(|v| v.as_l().ok())
        .map(Vec::as_slice)
        .ok_or_else(|| corrupt(name))
}

fn parse<T: std::str::FromStr>(item: &Item, name: &'static str) -> Result<T, StoreError> {
    get_s(item, name)?.parse().map_err(|_| corrupt(name))
}

fn caps_value(caps: Capabilities) -> AttributeValue {
    AttributeValue::L(caps.iter().map(|c| s(c.as_str())).collect())
}

fn caps_from(item: &Item) -> Result<Capabilities, StoreError> {
    get_l(item, attrs::CAPABILITIES)?
        .iter()
        .map(|v| {
            v.as_s()
                .ok()
                .and_then(|c| c.parse::<Capability>().ok())
                .ok_or_else(|| corrupt(attrs::CAPABILITIES))
        })
        .collect()
}

/// A route item's channels. Items written before routes carried them have none and read as
/// voice and SMS: every pair had both then.
fn route_caps_from(item: &Item) -> Result<Capabilities, StoreError> {
    match item.get(attrs::CAPABILITIES) {
        None => Ok(Capabilities::VOICE_AND_SMS),
        Some(_) => caps_from(item),
    }
}

fn sealed(
    vault: &Vault,
    number: &RealNumber,
    context: &str,
) -> Result<(String, AttributeValue), StoreError> {
    let Sealed { key, blob } = vault.seal(number, context)?;
    Ok((key, AttributeValue::B(Blob::new(blob))))
}

pub fn route_key(vault: &Vault, caller: &RealNumber, number: &VirtualNumber) -> Item {
    HashMap::from([
        (
            attrs::PK.to_owned(),
            s(attrs::route_pk(&vault.person_key(caller))),
        ),
        (attrs::SK.to_owned(), s(attrs::number_sk(number.as_str()))),
    ])
}

pub fn route_item(vault: &Vault, route: &Route) -> Result<Item, StoreError> {
    route_attrs(vault, route_key(vault, &route.caller, &route.number), route)
}

/// The first route of a contact's pair, which the by-number index lists its order by.
pub fn indexed_route_item(vault: &Vault, route: &Route) -> Result<Item, StoreError> {
    let mut item = route_item(vault, route)?;
    let shard = crate::store::index_shard(&route.order_id);
    item.insert(
        attrs::NUMBER_SHARD.to_owned(),
        s(attrs::number_shard(route.number.as_str(), shard)),
    );
    Ok(item)
}

pub fn pin_key(vault: &Vault, key: &PinKey) -> Item {
    HashMap::from([
        (
            attrs::PK.to_owned(),
            s(attrs::pin_pk(&vault.pin_key(&key.number, &key.pin))),
        ),
        (attrs::SK.to_owned(), s(attrs::PIN_SK)),
    ])
}

/// A PIN's item: the route it stands for, keyed by number and PIN, with the participant's
/// phone sealed as `caller` and its person key as `principal`.
pub fn pin_item(vault: &Vault, pin: &PinRoute) -> Result<Item, StoreError> {
    let mut item = route_attrs(vault, pin_key(vault, &pin.key()), &pin.route)?;
    let context = attrs::seal_context(
        get_s(&item, attrs::PK)?,
        get_s(&item, attrs::SK)?,
        attrs::CALLER,
    );
    let (_, caller) = sealed(vault, &pin.route.caller, &context)?;
    item.insert(attrs::CALLER.to_owned(), caller);
    item.insert(
        attrs::PRINCIPAL.to_owned(),
        s(vault.person_key(&pin.route.caller)),
    );
    Ok(item)
}

/// The route a PIN item stands for.
pub fn pin_route_from_item(
    vault: &Vault,
    number: &VirtualNumber,
    item: &Item,
) -> Result<Route, StoreError> {
    let context = attrs::seal_context(
        get_s(item, attrs::PK)?,
        get_s(item, attrs::SK)?,
        attrs::CALLER,
    );
    let caller = vault.open(
        &Sealed {
            key: get_s(item, attrs::KEY)?.to_owned(),
            blob: get_b(item, attrs::CALLER)?.to_vec(),
        },
        &context,
    )?;
    route_from_item(vault, &caller, number, item)
}

/// A route's attributes on the item keyed `item`: the callee sealed under that key.
fn route_attrs(vault: &Vault, mut item: Item, route: &Route) -> Result<Item, StoreError> {
    let context = attrs::seal_context(
        get_s(&item, attrs::PK)?,
        get_s(&item, attrs::SK)?,
        attrs::CALLEE,
    );
    let (key, callee) = sealed(vault, &route.callee, &context)?;
    item.extend([
        (attrs::ORDER_ID.to_owned(), s(route.order_id.as_str())),
        (attrs::MARKET.to_owned(), s(route.market.as_str())),
        (attrs::NUMBER.to_owned(), s(route.number.as_str())),
        (attrs::CALLER_ROLE.to_owned(), s(route.caller_role.as_str())),
        (attrs::CALLEE_ROLE.to_owned(), s(route.callee_role.as_str())),
        (attrs::CALLEE.to_owned(), callee),
        (
            attrs::CAPABILITIES.to_owned(),
            caps_value(route.capabilities),
        ),
        (attrs::KEY.to_owned(), s(key)),
        (attrs::EXPIRES_AT.to_owned(), n(route.expires_at)),
    ]);
    if route.record {
        item.insert(attrs::RECORD.to_owned(), AttributeValue::Bool(true));
    }
    if route.closed {
        item.insert(attrs::CLOSED.to_owned(), AttributeValue::Bool(true));
    }
    if let Some(main) = &route.stands_for {
        let context = attrs::seal_context(
            get_s(&item, attrs::PK)?,
            get_s(&item, attrs::SK)?,
            attrs::STANDS_FOR,
        );
        // Sealed with the vault's current key, as `callee` just was: the item's one `key`.
        let (_, stands_for) = sealed(vault, main, &context)?;
        item.insert(attrs::STANDS_FOR.to_owned(), stands_for);
        item.insert(attrs::PRINCIPAL.to_owned(), s(vault.person_key(main)));
    }
    Ok(item)
}

/// The main phone a route from an alternate phone stands for, opened; `None` on other routes.
fn open_stands_for(vault: &Vault, item: &Item) -> Result<Option<RealNumber>, StoreError> {
    if !item.contains_key(attrs::STANDS_FOR) {
        return Ok(None);
    }
    let context = attrs::seal_context(
        get_s(item, attrs::PK)?,
        get_s(item, attrs::SK)?,
        attrs::STANDS_FOR,
    );
    Ok(Some(vault.open(
        &Sealed {
            key: get_s(item, attrs::KEY)?.to_owned(),
            blob: get_b(item, attrs::STANDS_FOR)?.to_vec(),
        },
        &context,
    )?))
}

/// Whether an item says its order records calls: `record` is `true`, or absent for no.
fn record_from(item: &Item) -> Result<bool, StoreError> {
    flag(item, attrs::RECORD)
}

/// A BOOL attribute written only when true: absent reads as false.
fn flag(item: &Item, name: &'static str) -> Result<bool, StoreError> {
    match item.get(name) {
        None => Ok(false),
        Some(AttributeValue::Bool(on)) => Ok(*on),
        Some(_) => Err(corrupt(name)),
    }
}

/// A session's directions closed at its end (none on items without the attribute).
fn closed_after_end_from(item: &Item) -> Result<Vec<Direction>, StoreError> {
    if !item.contains_key(attrs::CLOSED_AFTER_END) {
        return Ok(Vec::new());
    }
    get_l(item, attrs::CLOSED_AFTER_END)?
        .iter()
        .map(|v| {
            let m = v.as_m().map_err(|_| corrupt(attrs::CLOSED_AFTER_END))?;
            Ok(Direction {
                from: parse(m, attrs::FROM)?,
                to: parse(m, attrs::TO)?,
            })
        })
        .collect()
}

/// The route item's callee, opened: its context is the item's own key.
fn open_callee(vault: &Vault, item: &Item) -> Result<RealNumber, StoreError> {
    let context = attrs::seal_context(
        get_s(item, attrs::PK)?,
        get_s(item, attrs::SK)?,
        attrs::CALLEE,
    );
    Ok(vault.open(
        &Sealed {
            key: get_s(item, attrs::KEY)?.to_owned(),
            blob: get_b(item, attrs::CALLEE)?.to_vec(),
        },
        &context,
    )?)
}

pub fn route_from_item(
    vault: &Vault,
    caller: &RealNumber,
    number: &VirtualNumber,
    item: &Item,
) -> Result<Route, StoreError> {
    let callee = open_callee(vault, item)?;
    Ok(Route {
        caller: caller.clone(),
        number: number.clone(),
        order_id: parse(item, attrs::ORDER_ID)?,
        market: parse(item, attrs::MARKET)?,
        caller_role: parse(item, attrs::CALLER_ROLE)?,
        callee_role: parse(item, attrs::CALLEE_ROLE)?,
        callee,
        capabilities: route_caps_from(item)?,
        record: record_from(item)?,
        stands_for: open_stands_for(vault, item)?,
        closed: flag(item, attrs::CLOSED)?,
        expires_at: get_n(item, attrs::EXPIRES_AT)?,
    })
}

/// The virtual number in a route's sort key.
fn route_number(item: &Item) -> Result<VirtualNumber, StoreError> {
    get_s(item, attrs::SK)?
        .strip_prefix("VN#")
        .and_then(|v| VirtualNumber::parse_form(v).ok())
        .ok_or_else(|| corrupt(attrs::SK))
}

pub fn live_contact_from_item(item: &Item) -> Result<LiveContact, StoreError> {
    Ok(LiveContact {
        number: route_number(item)?,
        order_id: parse(item, attrs::ORDER_ID)?,
        expires_at: get_n(item, attrs::EXPIRES_AT)?,
    })
}

/// The seal context of side `side` (`a` or `b`) of contact `c`'s PINs in session `pk`.
fn pin_context(pk: &str, c: &Contact, side: &str) -> String {
    attrs::seal_context(
        pk,
        attrs::SESSION_SK,
        &format!("{}:{}:{}:{}:{side}", attrs::PINS, c.number, c.a, c.b),
    )
}

/// The seal context of a participant's `i`-th alternate phone in session `pk`.
fn alternate_context(pk: &str, user_id: &UserId, i: usize) -> String {
    attrs::seal_context(
        pk,
        attrs::SESSION_SK,
        &format!(
            "{}:{}:{}:{i}",
            attrs::PARTICIPANTS,
            user_id,
            attrs::ALTERNATES
        ),
    )
}

pub fn session_item(
    vault: &Vault,
    session: &Session,
    expires_at: UnixTime,
) -> Result<Item, StoreError> {
    let pk = attrs::session_pk(session.order_id.as_str());
    let participants = session
        .participants
        .iter()
        .map(|p| {
            let context = attrs::seal_context(
                &pk,
                attrs::SESSION_SK,
                &format!("{}:{}", attrs::PARTICIPANTS, p.user_id),
            );
            let (_, phone) = sealed(vault, &p.phone, &context)?;
            let mut m = HashMap::from([
                (attrs::ROLE.to_owned(), s(p.role.as_str())),
                (attrs::USER_ID.to_owned(), s(p.user_id.as_str())),
                (attrs::PERSON.to_owned(), s(vault.person_key(&p.phone))),
                (attrs::PHONE.to_owned(), phone),
            ]);
            if !p.alternate_phones.is_empty() {
                let alternates = p
                    .alternate_phones
                    .iter()
                    .enumerate()
                    .map(|(i, alt)| {
                        let (_, phone) =
                            sealed(vault, alt, &alternate_context(&pk, &p.user_id, i))?;
                        Ok(AttributeValue::M(HashMap::from([
                            (attrs::PERSON.to_owned(), s(vault.person_key(alt))),
                            (attrs::PHONE.to_owned(), phone),
                        ])))
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                m.insert(attrs::ALTERNATES.to_owned(), AttributeValue::L(alternates));
            }
            Ok(AttributeValue::M(m))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let contacts = session
        .contacts
        .iter()
        .map(|c| {
            let mut m = pair_attrs(c);
            if let Some(pins) = &c.pins {
                let seal = |side: &str, pin: &Pin| -> Result<AttributeValue, StoreError> {
                    let sealed = vault.seal_pin(pin, &pin_context(&pk, c, side))?;
                    Ok(AttributeValue::B(Blob::new(sealed.blob)))
                };
                m.insert(
                    attrs::PINS.to_owned(),
                    AttributeValue::M(HashMap::from([
                        (attrs::A.to_owned(), seal(attrs::A, &pins.a)?),
                        (attrs::B.to_owned(), seal(attrs::B, &pins.b)?),
                    ])),
                );
            }
            Ok(AttributeValue::M(m))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let mut item = HashMap::from([
        (attrs::PK.to_owned(), s(pk)),
        (attrs::SK.to_owned(), s(attrs::SESSION_SK)),
        (attrs::ORDER_ID.to_owned(), s(session.order_id.as_str())),
        (attrs::MARKET.to_owned(), s(session.market.as_str())),
        (attrs::VERSION.to_owned(), n(session.version)),
        (attrs::UPDATED_AT.to_owned(), n(session.updated_at)),
        (attrs::ROUTES_UNTIL.to_owned(), n(session.routes_until)),
        (
            attrs::PARTICIPANTS.to_owned(),
            AttributeValue::L(participants),
        ),
        (attrs::CONTACTS.to_owned(), AttributeValue::L(contacts)),
        (attrs::REVISION.to_owned(), n(session.revision)),
        (attrs::KEY.to_owned(), s(vault.current_key())),
        (attrs::EXPIRES_AT.to_owned(), n(expires_at)),
    ]);
    let state = match session.state {
        SessionState::Active => "active",
        SessionState::Ended => "ended",
    };
    item.insert(attrs::STATE.to_owned(), s(state));
    if session.record {
        item.insert(attrs::RECORD.to_owned(), AttributeValue::Bool(true));
    }
    if !session.closed_after_end.is_empty() {
        let closed = session
            .closed_after_end
            .iter()
            .map(|d| {
                AttributeValue::M(HashMap::from([
                    (attrs::FROM.to_owned(), s(d.from.as_str())),
                    (attrs::TO.to_owned(), s(d.to.as_str())),
                ]))
            })
            .collect();
        item.insert(
            attrs::CLOSED_AFTER_END.to_owned(),
            AttributeValue::L(closed),
        );
    }
    if !session.handovers.is_empty() {
        let handovers = session
            .handovers
            .iter()
            .map(|h| {
                let mut m = pair_attrs(&h.contact);
                m.insert(attrs::UNTIL.to_owned(), n(h.until));
                AttributeValue::M(m)
            })
            .collect();
        item.insert(attrs::HANDOVERS.to_owned(), AttributeValue::L(handovers));
    }
    Ok(item)
}

/// A contact's people (by user id), number and channels: a session's contact or handover.
fn pair_attrs(c: &Contact) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (attrs::A.to_owned(), s(c.a.as_str())),
        (attrs::B.to_owned(), s(c.b.as_str())),
        (attrs::NUMBER.to_owned(), s(c.number.as_str())),
        (attrs::CAPABILITIES.to_owned(), caps_value(c.capabilities)),
    ])
}

/// A contact's people, number and channels as [`pair_attrs`] wrote them (no PINs).
fn pair_from(m: &Item) -> Result<Contact, StoreError> {
    Ok(Contact {
        a: parse(m, attrs::A)?,
        b: parse(m, attrs::B)?,
        number: parse::<String>(m, attrs::NUMBER)
            .and_then(|v| VirtualNumber::parse_form(&v).map_err(|_| corrupt(attrs::NUMBER)))?,
        capabilities: caps_from(m)?,
        pins: None,
    })
}

/// A session's handovers (none on items written before handovers).
fn handovers_from(item: &Item) -> Result<Vec<Handover>, StoreError> {
    if !item.contains_key(attrs::HANDOVERS) {
        return Ok(Vec::new());
    }
    get_l(item, attrs::HANDOVERS)?
        .iter()
        .map(|v| {
            let m = v.as_m().map_err(|_| corrupt(attrs::HANDOVERS))?;
            Ok(Handover {
                contact: pair_from(m)?,
                until: get_n(m, attrs::UNTIL)?,
            })
        })
        .collect()
}

/// A session's revision (0 on items written before revisions).
fn revision_from(item: &Item) -> Result<u64, StoreError> {
    match item.get(attrs::REVISION) {
        None => Ok(0),
        Some(_) => get_n(item, attrs::REVISION),
    }
}

pub fn session_from_item(vault: &Vault, item: &Item) -> Result<Session, StoreError> {
    let pk = get_s(item, attrs::PK)?;
    let key = get_s(item, attrs::KEY)?;
    let participants = get_l(item, attrs::PARTICIPANTS)?
        .iter()
        .map(|v| {
            let m = v.as_m().map_err(|_| corrupt(attrs::PARTICIPANTS))?;
            let user_id = parse(m, attrs::USER_ID)?;
            let context = attrs::seal_context(
                pk,
                attrs::SESSION_SK,
                &format!("{}:{}", attrs::PARTICIPANTS, user_id),
            );
            let phone = vault.open(
                &Sealed {
                    key: key.to_owned(),
                    blob: get_b(m, attrs::PHONE)?.to_vec(),
                },
                &context,
            )?;
            let alternate_phones = match m.get(attrs::ALTERNATES) {
                None => Vec::new(),
                Some(_) => get_l(m, attrs::ALTERNATES)?
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        let alt = v.as_m().map_err(|_| corrupt(attrs::ALTERNATES))?;
                        Ok(vault.open(
                            &Sealed {
                                key: key.to_owned(),
                                blob: get_b(alt, attrs::PHONE)?.to_vec(),
                            },
                            &alternate_context(pk, &user_id, i),
                        )?)
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?,
            };
            Ok(Participant {
                role: parse(m, attrs::ROLE)?,
                user_id,
                phone,
                alternate_phones,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let contacts = get_l(item, attrs::CONTACTS)?
        .iter()
        .map(|v| {
            let m = v.as_m().map_err(|_| corrupt(attrs::CONTACTS))?;
            let mut contact = pair_from(m)?;
            if let Some(pins) = m.get(attrs::PINS) {
                let pins = pins.as_m().map_err(|_| corrupt(attrs::PINS))?;
                let open = |side: &'static str| -> Result<Pin, StoreError> {
                    Ok(vault.open_pin(
                        &Sealed {
                            key: key.to_owned(),
                            blob: get_b(pins, side)?.to_vec(),
                        },
                        &pin_context(pk, &contact, side),
                    )?)
                };
                contact.pins = Some(ContactPins {
                    a: open(attrs::A)?,
                    b: open(attrs::B)?,
                });
            }
            Ok(contact)
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let state = match get_s(item, attrs::STATE)? {
        "active" => SessionState::Active,
        "ended" => SessionState::Ended,
        _ => return Err(corrupt(attrs::STATE)),
    };
    Ok(Session {
        order_id: parse(item, attrs::ORDER_ID)?,
        market: parse(item, attrs::MARKET)?,
        version: get_n(item, attrs::VERSION)?,
        revision: revision_from(item)?,
        state,
        participants,
        contacts,
        handovers: handovers_from(item)?,
        updated_at: get_n(item, attrs::UPDATED_AT)?,
        routes_until: get_n(item, attrs::ROUTES_UNTIL)?,
        record: record_from(item)?,
        closed_after_end: closed_after_end_from(item)?,
    })
}

pub fn number_item(vn: &PoolNumber) -> Item {
    let mut item = HashMap::from([
        (attrs::PK.to_owned(), s(attrs::pool_pk(vn.market.as_str()))),
        (
            attrs::SK.to_owned(),
            s(attrs::number_sk(vn.number.as_str())),
        ),
        (attrs::NUMBER.to_owned(), s(vn.number.as_str())),
        (attrs::MARKET.to_owned(), s(vn.market.as_str())),
        (attrs::PROVIDER.to_owned(), s(vn.provider.as_str())),
        (attrs::CAPABILITIES.to_owned(), caps_value(vn.capabilities)),
        (attrs::STATE.to_owned(), s(vn.state.as_str())),
    ]);
    if let Some(hold) = &vn.hold {
        item.insert(attrs::HOLD_REASON.to_owned(), s(hold.reason.as_str()));
        item.insert(attrs::HOLD_SINCE.to_owned(), n(hold.since));
        if let Some(until) = hold.until {
            item.insert(attrs::HOLD_UNTIL.to_owned(), n(until));
        }
        if let Some(note) = &hold.note {
            item.insert(attrs::HOLD_NOTE.to_owned(), s(note.as_str()));
        }
    }
    item
}

/// A pool number's hold, if it has one.
fn hold_from(item: &Item) -> Result<Option<Hold>, StoreError> {
    if !item.contains_key(attrs::HOLD_REASON) {
        return Ok(None);
    }
    Ok(Some(Hold {
        reason: parse(item, attrs::HOLD_REASON)?,
        since: get_n(item, attrs::HOLD_SINCE)?,
        until: match item.get(attrs::HOLD_UNTIL) {
            None => None,
            Some(_) => Some(get_n(item, attrs::HOLD_UNTIL)?),
        },
        note: match item.get(attrs::HOLD_NOTE) {
            None => None,
            Some(_) => Some(parse(item, attrs::HOLD_NOTE)?),
        },
    }))
}

/// A pool item with its version; items written before versions existed are at version 0.
pub fn pool_entry_from_item(item: &Item) -> Result<PoolEntry, StoreError> {
    let version = match item.get(attrs::VERSION) {
        None => 0,
        Some(_) => get_n(item, attrs::VERSION)?,
    };
    Ok(PoolEntry {
        number: number_from_item(item)?,
        version,
    })
}

pub fn sampled_route_from_item(item: &Item) -> Result<SampledRoute, StoreError> {
    Ok(SampledRoute {
        market: parse(item, attrs::MARKET)?,
        number: VirtualNumber::parse_form(get_s(item, attrs::NUMBER)?)
            .map_err(|_| corrupt(attrs::NUMBER))?,
    })
}

pub fn number_from_item(item: &Item) -> Result<PoolNumber, StoreError> {
    Ok(PoolNumber {
        number: VirtualNumber::parse_form(get_s(item, attrs::NUMBER)?)
            .map_err(|_| corrupt(attrs::NUMBER))?,
        provider: parse(item, attrs::PROVIDER)?,
        market: parse(item, attrs::MARKET)?,
        capabilities: caps_from(item)?,
        state: parse(item, attrs::STATE)?,
        hold: hold_from(item)?,
    })
}

/// A route item as the pair invariant sees it: people by person key (the callee's is made
/// from its sealed number), never by number.
pub fn stored_route_from_item(vault: &Vault, item: &Item) -> Result<StoredRoute, StoreError> {
    let caller = get_s(item, attrs::PK)?
        .strip_prefix(attrs::ROUTE_PK_PREFIX)
        .ok_or_else(|| corrupt(attrs::PK))?;
    Ok(StoredRoute {
        caller: PersonKey::new(caller),
        number: route_number(item)?,
        order_id: parse(item, attrs::ORDER_ID)?,
        callee: PersonKey::new(vault.person_key(&open_callee(vault, item)?)),
        capabilities: route_caps_from(item)?,
        stands_for: match item.get(attrs::PRINCIPAL) {
            None => None,
            Some(_) => Some(PersonKey::new(get_s(item, attrs::PRINCIPAL)?)),
        },
        caller_role: parse(item, attrs::CALLER_ROLE)?,
        callee_role: parse(item, attrs::CALLEE_ROLE)?,
        closed: flag(item, attrs::CLOSED)?,
        expires_at: get_n(item, attrs::EXPIRES_AT)?,
    })
}

/// A PIN item as the invariant sees it: keyed by its item's key, people by person key (the
/// callee's made from its sealed number), never the digits.
pub fn stored_pin_from_item(vault: &Vault, item: &Item) -> Result<StoredPin, StoreError> {
    let at = get_s(item, attrs::PK)?
        .strip_prefix(attrs::PIN_PK_PREFIX)
        .ok_or_else(|| corrupt(attrs::PK))?;
    Ok(StoredPin {
        at: PinAt::new(at),
        number: VirtualNumber::parse_form(get_s(item, attrs::NUMBER)?)
            .map_err(|_| corrupt(attrs::NUMBER))?,
        order_id: parse(item, attrs::ORDER_ID)?,
        principal: PersonKey::new(get_s(item, attrs::PRINCIPAL)?),
        callee: PersonKey::new(vault.person_key(&open_callee(vault, item)?)),
        expires_at: get_n(item, attrs::EXPIRES_AT)?,
    })
}

/// A session item as the pair invariant sees it: its pairs by person key, nothing opened.
pub fn stored_session_from_item(item: &Item) -> Result<StoredSession, StoreError> {
    let mut people: HashMap<String, PersonKey> = HashMap::new();
    let mut alternates: HashMap<PersonKey, PersonKey> = HashMap::new();
    for v in get_l(item, attrs::PARTICIPANTS)? {
        let m = v.as_m().map_err(|_| corrupt(attrs::PARTICIPANTS))?;
        let main = PersonKey::new(get_s(m, attrs::PERSON)?);
        if m.contains_key(attrs::ALTERNATES) {
            for alt in get_l(m, attrs::ALTERNATES)? {
                let alt = alt.as_m().map_err(|_| corrupt(attrs::ALTERNATES))?;
                alternates.insert(PersonKey::new(get_s(alt, attrs::PERSON)?), main.clone());
            }
        }
        people.insert(get_s(m, attrs::USER_ID)?.to_owned(), main);
    }
    let routes_until: UnixTime = get_n(item, attrs::ROUTES_UNTIL)?;
    let person = |user: &UserId| {
        people
            .get(user.as_str())
            .cloned()
            .ok_or_else(|| corrupt(attrs::CONTACTS))
    };
    let pair = |c: &Contact, until: UnixTime| -> Result<StoredPair, StoreError> {
        Ok(StoredPair {
            a: person(&c.a)?,
            b: person(&c.b)?,
            number: c.number.clone(),
            until,
        })
    };
    let mut pairs = get_l(item, attrs::CONTACTS)?
        .iter()
        .map(|v| {
            let m = v.as_m().map_err(|_| corrupt(attrs::CONTACTS))?;
            pair(&pair_from(m)?, routes_until)
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    for h in handovers_from(item)? {
        pairs.push(pair(&h.contact, h.until.min(routes_until))?);
    }
    Ok(StoredSession {
        order_id: parse(item, attrs::ORDER_ID)?,
        routes_until,
        pairs,
        alternates,
        closed: closed_after_end_from(item)?,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn vault() -> Vault {
        let keys = BTreeMap::from([("k1".to_owned(), vec![7u8; 32])]);
        Vault::from_keys(&[1u8; 32], keys, "k1").unwrap()
    }

    fn route(capabilities: Capabilities) -> Route {
        Route {
            caller: RealNumber::parse("+919810000001").unwrap(),
            number: VirtualNumber::parse("+911140001000").unwrap(),
            order_id: "ord-1".parse().unwrap(),
            market: "IN".parse().unwrap(),
            caller_role: "customer".parse().unwrap(),
            callee_role: "driver".parse().unwrap(),
            callee: RealNumber::parse("+919710000001").unwrap(),
            capabilities,
            record: false,
            stands_for: None,
            expires_at: 10_000,
            closed: false,
        }
    }

    fn read(vault: &Vault, item: &Item) -> Result<Route, StoreError> {
        let r = route(Capabilities::default());
        route_from_item(vault, &r.caller, &r.number, item)
    }

    const VOICE_ONLY: Capabilities = Capabilities {
        voice: true,
        sms: false,
    };

    #[test]
    fn a_route_item_keeps_its_pairs_channels() {
        let vault = vault();
        for caps in [VOICE_ONLY, Capabilities::VOICE_AND_SMS] {
            let item = route_item(&vault, &route(caps)).unwrap();
            assert_eq!(read(&vault, &item).unwrap(), route(caps));
            let stored = stored_route_from_item(&vault, &item).unwrap();
            assert_eq!(stored.capabilities, caps);
        }
        let item = route_item(&vault, &route(VOICE_ONLY)).unwrap();
        assert_eq!(
            item[attrs::CAPABILITIES],
            AttributeValue::L(vec![s("voice")])
        );
    }

    #[test]
    fn a_route_item_written_before_routes_carried_channels_reads_as_voice_and_sms() {
        let vault = vault();
        let mut item = route_item(&vault, &route(VOICE_ONLY)).unwrap();
        item.remove(attrs::CAPABILITIES);
        assert_eq!(
            read(&vault, &item).unwrap(),
            route(Capabilities::VOICE_AND_SMS)
        );
        assert_eq!(
            stored_route_from_item(&vault, &item).unwrap().capabilities,
            Capabilities::VOICE_AND_SMS
        );
    }

    #[test]
    fn a_route_item_with_unreadable_channels_is_corrupt() {
        let vault = vault();
        let mut item = route_item(&vault, &route(VOICE_ONLY)).unwrap();
        for bad in [s("voice"), AttributeValue::L(vec![s("fax")])] {
            item.insert(attrs::CAPABILITIES.to_owned(), bad);
            assert!(matches!(
                read(&vault, &item),
                Err(StoreError::Corrupt {
                    attribute: attrs::CAPABILITIES
                })
            ));
        }
    }

    #[test]
    fn only_a_recorded_orders_route_item_says_record() {
        let vault = vault();
        let plain = route_item(&vault, &route(VOICE_ONLY)).unwrap();
        assert!(!plain.contains_key(attrs::RECORD));
        assert!(!read(&vault, &plain).unwrap().record);
        let recorded = Route {
            record: true,
            ..route(VOICE_ONLY)
        };
        let mut item = route_item(&vault, &recorded).unwrap();
        assert_eq!(item[attrs::RECORD], AttributeValue::Bool(true));
        assert_eq!(read(&vault, &item).unwrap(), recorded);
        item.insert(attrs::RECORD.to_owned(), s("yes"));
        assert!(matches!(
            read(&vault, &item),
            Err(StoreError::Corrupt {
                attribute: attrs::RECORD
            })
        ));
    }

    #[test]
    fn a_closed_direction_reads_back_closed_on_its_route_pin_and_session() {
        let vault = vault();
        assert!(!route_item(&vault, &route(VOICE_ONLY))
            .unwrap()
            .contains_key(attrs::CLOSED));
        let closed = Route {
            closed: true,
            ..route(VOICE_ONLY)
        };
        let item = route_item(&vault, &closed).unwrap();
        assert_eq!(item[attrs::CLOSED], AttributeValue::Bool(true));
        assert_eq!(read(&vault, &item).unwrap(), closed);
        let pin = PinRoute {
            pin: Pin::parse("048213").unwrap(),
            route: closed,
        };
        let item = pin_item(&vault, &pin).unwrap();
        assert!(
            pin_route_from_item(&vault, &pin.route.number, &item)
                .unwrap()
                .closed
        );
        let session = Session {
            order_id: "ord-1".parse().unwrap(),
            market: "IN".parse().unwrap(),
            version: 2,
            revision: 2,
            handovers: Vec::new(),
            state: SessionState::Ended,
            participants: Vec::new(),
            contacts: Vec::new(),
            updated_at: 5,
            routes_until: 10,
            record: false,
            closed_after_end: vec![Direction {
                from: "driver".parse().unwrap(),
                to: "customer".parse().unwrap(),
            }],
        };
        let item = session_item(&vault, &session, 99).unwrap();
        assert_eq!(session_from_item(&vault, &item).unwrap(), session);
    }

    #[test]
    fn an_alternates_route_keeps_whom_it_stands_for_sealed() {
        let vault = vault();
        let main = RealNumber::parse("+919810000009").unwrap();
        let alias = Route {
            stands_for: Some(main.clone()),
            ..route(VOICE_ONLY)
        };
        let item = route_item(&vault, &alias).unwrap();
        assert!(matches!(item[attrs::STANDS_FOR], AttributeValue::B(_)));
        assert_eq!(item[attrs::PRINCIPAL], s(vault.person_key(&main)));
        assert!(
            !format!("{item:?}").contains("9810000009"),
            "sealed, never in the clear"
        );
        assert_eq!(read(&vault, &item).unwrap(), alias);
        assert_eq!(
            stored_route_from_item(&vault, &item).unwrap().stands_for,
            Some(PersonKey::new(vault.person_key(&main)))
        );
        let plain = route_item(&vault, &route(VOICE_ONLY)).unwrap();
        assert!(!plain.contains_key(attrs::STANDS_FOR) && !plain.contains_key(attrs::PRINCIPAL));
    }

    #[test]
    fn a_sessions_alternates_and_pins_are_sealed_and_alternates_seen_by_the_audit_by_person_key() {
        let vault = vault();
        let person = |role: &str, user: &str, phone: &str, alts: &[&str]| Participant {
            role: role.parse().unwrap(),
            user_id: user.parse().unwrap(),
            phone: RealNumber::parse(phone).unwrap(),
            alternate_phones: alts.iter().map(|a| RealNumber::parse(a).unwrap()).collect(),
        };
        let session = Session {
            order_id: "ord-1".parse().unwrap(),
            market: "IN".parse().unwrap(),
            version: 2,
            revision: 1,
            handovers: Vec::new(),
            state: SessionState::Active,
            participants: vec![
                person(
                    "customer",
                    "c",
                    "+919810000001",
                    &["+919810000002", "+919810000003"],
                ),
                person("driver", "d", "+919710000001", &[]),
            ],
            contacts: vec![],
            updated_at: 5,
            routes_until: 10,
            record: false,
            closed_after_end: Vec::new(),
        };
        let mut session = session;
        session.contacts = vec![Contact {
            a: "c".parse().unwrap(),
            b: "d".parse().unwrap(),
            number: VirtualNumber::parse("+911140001000").unwrap(),
            capabilities: Capabilities::VOICE_AND_SMS,
            pins: Some(ContactPins {
                a: Pin::parse("048213").unwrap(),
                b: Pin::parse("777001").unwrap(),
            }),
        }];
        let item = session_item(&vault, &session, 99).unwrap();
        assert!(!format!("{item:?}").contains("9810000002"));
        assert!(!format!("{item:?}").contains("048213"), "PINs are sealed");
        assert_eq!(session_from_item(&vault, &item).unwrap(), session);
        let stored = stored_session_from_item(&item).unwrap();
        let main = PersonKey::new(vault.person_key(&session.participants[0].phone));
        assert_eq!(stored.alternates.len(), 2);
        assert!(stored.alternates.values().all(|m| m == &main));
    }

    #[test]
    fn a_pin_item_is_keyed_by_number_and_pin_and_reads_back_the_route_it_stands_for() {
        let vault = vault();
        let pin = PinRoute {
            pin: Pin::parse("048213").unwrap(),
            route: route(VOICE_ONLY),
        };
        let item = pin_item(&vault, &pin).unwrap();
        let shown = format!("{item:?}");
        assert!(
            !shown.contains("048213")
                && !shown.contains("9810000001")
                && !shown.contains("9710000001")
        );
        assert_eq!(
            item[attrs::PK],
            s(attrs::pin_pk(&vault.pin_key(&pin.route.number, &pin.pin)))
        );
        assert_eq!(
            pin_route_from_item(&vault, &pin.route.number, &item).unwrap(),
            pin.route
        );
        let other = Pin::parse("048214").unwrap();
        assert_ne!(
            vault.pin_key(&pin.route.number, &other),
            vault.pin_key(&pin.route.number, &pin.pin)
        );
    }
}
