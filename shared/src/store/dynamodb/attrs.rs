//! The one place that knows the table's key shapes and attribute names (docs/data-model.md).

pub const PK: &str = "pk";
pub const SK: &str = "sk";
/// TTL attribute: epoch seconds.
pub const EXPIRES_AT: &str = "expires_at";

pub const ORDER_ID: &str = "order_id";
pub const MARKET: &str = "market";
pub const VERSION: &str = "version";
pub const STATE: &str = "state";
/// When a session's routes end (the pair invariant: they end together).
pub const ROUTES_UNTIL: &str = "routes_until";
pub const UPDATED_AT: &str = "updated_at";
pub const PARTICIPANTS: &str = "participants";
pub const CONTACTS: &str = "contacts";
/// A session's writes so far (absent on items written before revisions: 0).
pub const REVISION: &str = "revision";
/// A session's handovers: L of M (`a`, `b`, `number`, `capabilities`, `until`).
pub const HANDOVERS: &str = "handovers";
pub const UNTIL: &str = "until";
/// Name of the data key that sealed the item's encrypted values.
pub const KEY: &str = "key";

pub const ROLE: &str = "role";
pub const USER_ID: &str = "user_id";
pub const PERSON: &str = "person";
pub const PHONE: &str = "phone";

pub const A: &str = "a";
pub const B: &str = "b";
pub const NUMBER: &str = "number";
/// What a number carries: on pool items, session contacts and route items (a route item
/// without it was written before routes carried channels, and carries voice and SMS).
pub const CAPABILITIES: &str = "capabilities";
/// `true` on a route item and session item of an order that records its calls; absent
/// otherwise (items of orders that do not record are as they were before recording existed).
pub const RECORD: &str = "record";
/// `true` on a route item whose direction stopped connecting at its order's end (the pair's
/// other direction still connects); absent otherwise. On a session item, `closed_after_end`
/// lists such directions: L of M (`from`, `to`: roles), absent when none.
pub const CLOSED: &str = "closed";
pub const CLOSED_AFTER_END: &str = "closed_after_end";
pub const FROM: &str = "from";
pub const TO: &str = "to";
/// On a route from an alternate phone: the participant's main phone, sealed (`stands_for`), and
/// its person key (`principal`), which the audit reads without opening anything.
pub const STANDS_FOR: &str = "stands_for";
pub const PRINCIPAL: &str = "principal";
/// A participant's alternate phones in a session item: L of M (`person`, sealed `phone`).
pub const ALTERNATES: &str = "alternates";

pub const CALLER_ROLE: &str = "caller_role";
pub const CALLEE_ROLE: &str = "callee_role";
pub const CALLEE: &str = "callee";

pub const PROVIDER: &str = "provider";
/// A pool number's hold (quarantined, cooling off, retired by health): why, since when, until
/// when (a cooling-off), and an operator's note.
pub const HOLD_REASON: &str = "hold_reason";
pub const HOLD_SINCE: &str = "hold_since";
pub const HOLD_UNTIL: &str = "hold_until";
pub const HOLD_NOTE: &str = "hold_note";

/// The by-number index (a global secondary index): on the first route of each contact's pair,
/// `<VN>#<shard>` ([`crate::store::index_shard`] of the order), with `expires_at` as its sort
/// key and `order_id` projected. Handovers' routes are not in it.
pub const BY_NUMBER_INDEX: &str = "by-number";
pub const NUMBER_SHARD: &str = "number_shard";

pub fn number_shard(number: &str, shard: u32) -> String {
    format!("{number}#{shard}")
}

/// Statistics, purchases and leases (pool upkeep).
pub const MAX_LIVE: &str = "max_live";
pub const BOUGHT: &str = "bought";
pub const HOLDER: &str = "holder";

pub const SESSION_SK: &str = "SESSION";

pub fn session_pk(order_id: &str) -> String {
    format!("ORDER#{order_id}")
}

/// `person` is the HMAC person key, never the number.
pub fn route_pk(person: &str) -> String {
    format!("ROUTE#{person}")
}

pub fn number_sk(number: &str) -> String {
    format!("VN#{number}")
}

pub fn pool_pk(market: &str) -> String {
    format!("POOL#{market}")
}

/// A participant's entry for an order, so that a person's live sessions are found with one
/// query (the sessions API): `USER#<user id>` / `ORDER#<order id>`, with `order_id`, `role` and
/// `expires_at` (the session's `routes_until`). The user id is the platform's, never a number.
pub fn user_pk(user_id: &str) -> String {
    format!("USER#{user_id}")
}

pub fn user_order_sk(order_id: &str) -> String {
    format!("ORDER#{order_id}")
}

/// What every route item's partition key starts with.
pub const ROUTE_PK_PREFIX: &str = "ROUTE#";

/// A PIN's item: `PIN#<pin key>` (HMAC of the number and the PIN), sort key [`PIN_SK`]. It holds
/// the route the PIN stands for, with its caller (the participant) sealed in `caller`.
pub fn pin_pk(pin_key: &str) -> String {
    format!("{PIN_PK_PREFIX}{pin_key}")
}
pub const PIN_PK_PREFIX: &str = "PIN#";
pub const PIN_SK: &str = "PIN";
pub const CALLER: &str = "caller";
/// A session contact's PINs: M of `a`, `b`, each sealed.
pub const PINS: &str = "pins";

/// A market's daily statistics, under [`day_sk`].
pub fn stats_pk(market: &str) -> String {
    format!("STATS#{market}")
}

/// `day` is `yyyy-mm-dd`.
pub fn day_sk(day: &str) -> String {
    format!("DAY#{day}")
}

/// One shard of a virtual number's answer tally, one item per UTC day under [`day_sk`]. The
/// number is a virtual one (ours, never a person's).
pub fn answers_pk(number: &str, shard: u32) -> String {
    format!("{ANSWERS_PK_PREFIX}{number}#{shard}")
}

/// PIN attempt counters (`tries`), each under [`hour_sk`] or [`PIN_TRIES_SK`], kept a day: one
/// per call (`PINTRY#CALL#<endpoint>#<call id>`), one per caller on a number
/// (`PINTRY#<person key>#<number>`), and failures per number (`PINFAIL#<number>`).
pub fn pin_call_pk(endpoint: &str, call_id: &str) -> String {
    format!("{PIN_TRIES_PK_PREFIX}CALL#{endpoint}#{call_id}")
}
pub fn pin_caller_pk(person: &str, number: &str) -> String {
    format!("{PIN_TRIES_PK_PREFIX}{person}#{number}")
}
pub const PIN_TRIES_PK_PREFIX: &str = "PINTRY#";
pub fn pin_failures_pk(number: &str) -> String {
    format!("PINFAIL#{number}")
}
pub fn hour_sk(hour: i64) -> String {
    format!("HOUR#{hour}")
}
pub const PIN_TRIES_SK: &str = "TRIES";
pub const TRIES: &str = "tries";

/// What every answer-tally item's partition key starts with.
pub const ANSWERS_PK_PREFIX: &str = "ANSWERS#";
/// Connected calls whose end was reported, and of them those answered.
pub const ATTEMPTED: &str = "attempted";
pub const ANSWERED: &str = "answered";

/// Numbers bought, one item per month under [`month_sk`].
pub const PURCHASES_PK: &str = "PURCHASES";

/// `month` is `yyyy-mm`.
pub fn month_sk(month: &str) -> String {
    format!("MONTH#{month}")
}

pub fn lease_pk(name: &str) -> String {
    format!("LEASE#{name}")
}

pub const LEASE_SK: &str = "LEASE";

/// A provider call id one webhook endpoint has answered (the replay ledger). The id is the
/// provider's, held to a safe alphabet ([`crate::domain::CallId`]); never a number.
pub fn call_pk(endpoint: &str, call_id: &str) -> String {
    format!("CALL#{endpoint}#{call_id}")
}

/// What every call-ledger item's partition key starts with.
pub const CALL_PK_PREFIX: &str = "CALL#";

pub const CALL_SK: &str = "CALL";
/// When the ledger first saw the call id: epoch seconds.
pub const FIRST_SEEN: &str = "first_seen";

/// The authenticated context of an encrypted attribute: its item and its place in the item.
pub fn seal_context(pk: &str, sk: &str, place: &str) -> String {
    format!("{pk}|{sk}|{place}")
}
