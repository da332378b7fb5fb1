//! DynamoDB cost per operation: round trips and consumed capacity of each thing vnmask does,
//! through the real DynamoDB store against DynamoDB Local, and what a month of it costs.
//!
//! An SDK interceptor asks every request for `ReturnConsumedCapacity=TOTAL` and adds up what
//! the responses report, so the store's code is measured as it is. Writes the "dynamodb-cost"
//! section of BENCHMARKS.md. Needs the local services (`make bench` starts them).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::operation::get_item::{GetItemInput, GetItemOutput};
use aws_sdk_dynamodb::operation::put_item::{PutItemInput, PutItemOutput};
use aws_sdk_dynamodb::operation::query::{QueryInput, QueryOutput};
use aws_sdk_dynamodb::operation::scan::{ScanInput, ScanOutput};
use aws_sdk_dynamodb::operation::transact_write_items::{
    TransactWriteItemsInput, TransactWriteItemsOutput,
};
use aws_sdk_dynamodb::operation::update_item::{UpdateItemInput, UpdateItemOutput};
use aws_sdk_dynamodb::types::{
    AttributeValue, ConsumedCapacity, ReturnConsumedCapacity, TransactWriteItem,
};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextMut, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use vnmask::assignment::{
    AssignSettings, Assigner, EndTerms, Moved, OrderChange, OrderUpdate, Outcome,
};
use vnmask::domain::{NumberState, Participant, Session, UnixTime, VirtualNumber};
use vnmask::routing::live_route;
use vnmask::store::dynamodb::DynamoStore;
use vnmask::store::{AssignmentStore, PoolStore};
use vnmask_tests::bench::publish;
use vnmask_tests::people::{customer, driver, merchant};
use vnmask_tests::{
    create_table, local_sdk, market, now, operation_name, pool, seed_pool, test_vault,
};

/// On-demand prices, us-east-1, Standard table class (since the November 2024 price cut).
const USD_PER_MILLION_WRU: f64 = 0.625;
const USD_PER_MILLION_RRU: f64 = 0.125;
const USD_PER_GB_MONTH: f64 = 0.25;

const ORDERS_PER_DAY: f64 = 1_000_000.0;
const CALLS_PER_ORDER: f64 = 3.0;
const DAYS_PER_MONTH: f64 = 30.0;

/// One request as the server answered it: what DynamoDB would bill (by its documented rules,
/// from the request and the response) and what DynamoDB Local reported.
#[derive(Debug, Clone)]
struct Request {
    operation: String,
    read_units: f64,
    write_units: f64,
    reported: f64,
}

/// What the request side tells about the bill, carried to the response.
#[derive(Debug, Clone, Default)]
struct Billing {
    consistent: bool,
    /// Write units known from the request (puts carry their items; other items are small).
    write_units: f64,
}

impl Storable for Billing {
    type Storer = StoreReplace<Self>;
}

/// Asks every request for its consumed capacity and records it beside the billing rules' figure.
#[derive(Debug, Clone, Default)]
struct CapacityMeter(Arc<Mutex<Vec<Request>>>);

impl CapacityMeter {
    fn take(&self) -> Vec<Request> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn reported(c: Option<&ConsumedCapacity>) -> f64 {
    c.and_then(|c| c.capacity_units()).unwrap_or(0.0)
}

/// Units of `unit` bytes, at least one: how DynamoDB rounds item sizes.
fn units(bytes: usize, unit: usize) -> f64 {
    bytes.div_ceil(unit).max(1) as f64
}

/// Read units: 4 KB units, halved for eventually consistent reads.
fn read_units(bytes: usize, consistent: bool) -> f64 {
    units(bytes, 4096) * if consistent { 1.0 } else { 0.5 }
}

/// Write units of one item of a transaction: 1 KB units, doubled. Deletes and updates name a
/// key, not the item; vnmask's route and counter items are far under 1 KB (the report checks).
fn transaction_units(item: &TransactWriteItem) -> f64 {
    2.0 * item.put().map_or(1.0, |p| units(item_size(p.item()), 1024))
}

impl Intercept for CapacityMeter {
    fn name(&self) -> &'static str {
        "CapacityMeter"
    }

    fn modify_before_serialization(
        &self,
        context: &mut BeforeSerializationInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let input = context.input_mut();
        let total = Some(ReturnConsumedCapacity::Total);
        let mut billing = Billing::default();
        if let Some(i) = input.downcast_mut::<GetItemInput>() {
            i.return_consumed_capacity = total;
            billing.consistent = i.consistent_read == Some(true);
        } else if let Some(i) = input.downcast_mut::<QueryInput>() {
            i.return_consumed_capacity = total;
            billing.consistent = i.consistent_read == Some(true);
        } else if let Some(i) = input.downcast_mut::<ScanInput>() {
            i.return_consumed_capacity = total;
        } else if let Some(i) = input.downcast_mut::<PutItemInput>() {
            i.return_consumed_capacity = total;
            billing.write_units = units(i.item.as_ref().map_or(0, item_size), 1024);
        } else if let Some(i) = input.downcast_mut::<UpdateItemInput>() {
            i.return_consumed_capacity = total;
            billing.write_units = 1.0;
        } else if let Some(i) = input.downcast_mut::<TransactWriteItemsInput>() {
            i.return_consumed_capacity = total;
            billing.write_units = i.transact_items().iter().map(transaction_units).sum();
        }
        cfg.interceptor_state().store_put(billing);
        Ok(())
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = operation_name(cfg);
        let billing = cfg.load::<Billing>().cloned().unwrap_or_default();
        let (mut read, mut reported_units) = (0.0, 0.0);
        // A refused conditional write still costs its write units; this benchmark has no
        // contention, so none is expected.
        if let Some(Ok(out)) = context.output_or_error() {
            if let Some(o) = out.downcast_ref::<GetItemOutput>() {
                read = read_units(o.item().map_or(0, item_size), billing.consistent);
                reported_units = reported(o.consumed_capacity());
            } else if let Some(o) = out.downcast_ref::<QueryOutput>() {
                // Billed on the items read: with a projection these are a lower bound.
                let bytes = o.items().iter().map(item_size).sum();
                read = read_units(bytes, billing.consistent);
                reported_units = reported(o.consumed_capacity());
            } else if let Some(o) = out.downcast_ref::<PutItemOutput>() {
                reported_units = reported(o.consumed_capacity());
            } else if let Some(o) = out.downcast_ref::<UpdateItemOutput>() {
                reported_units = reported(o.consumed_capacity());
            } else if let Some(o) = out.downcast_ref::<ScanOutput>() {
                reported_units = reported(o.consumed_capacity());
            } else if let Some(o) = out.downcast_ref::<TransactWriteItemsOutput>() {
                reported_units = o
                    .consumed_capacity()
                    .iter()
                    .map(|c| reported(Some(c)))
                    .sum();
            }
        }
        self.0.lock().unwrap().push(Request {
            operation,
            read_units: read,
            write_units: billing.write_units,
            reported: reported_units,
        });
        Ok(())
    }
}

/// What one operation cost: round trips by operation, read and write units (the table's and
/// the `by-number` index's).
struct Cost {
    what: &'static str,
    requests: Vec<Request>,
    index_write_units: f64,
}

impl Cost {
    fn round_trips(&self) -> String {
        let mut by_op: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &self.requests {
            *by_op.entry(&r.operation).or_default() += 1;
        }
        let list: Vec<String> = by_op.iter().map(|(op, n)| format!("{n} {op}")).collect();
        format!("{} ({})", self.requests.len(), list.join(", "))
    }
    fn read_units(&self) -> f64 {
        self.requests.iter().map(|r| r.read_units).sum::<f64>() + 0.0
    }
    fn write_units(&self) -> f64 {
        self.requests.iter().map(|r| r.write_units).sum::<f64>() + self.index_write_units
    }
    fn reported(&self) -> f64 {
        self.requests.iter().map(|r| r.reported).sum::<f64>() + 0.0
    }
    fn usd(&self) -> f64 {
        (self.read_units() * USD_PER_MILLION_RRU + self.write_units() * USD_PER_MILLION_WRU) / 1e6
    }
}

/// DynamoDB's item size: attribute names plus values, as its documentation defines it.
fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => n.len().div_ceil(2) + 1,
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| n.len().div_ceil(2) + 1).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| k.len() + value_size(v) + 1)
                .sum::<usize>()
        }
        AttributeValue::L(l) => 3 + l.iter().map(|v| value_size(v) + 1).sum::<usize>(),
        _ => 0,
    }
}

/// The table's primary key.
type ItemKey = (String, String);

/// An item's entry in the `by-number` index: its keys (`number_shard`, `expires_at`) and the
/// projected `order_id`. Only the first route of each pair has one.
type IndexEntry = (AttributeValue, AttributeValue, Option<AttributeValue>);

/// Every item of the table, read by a client the meter does not see.
async fn all_items(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Vec<HashMap<String, AttributeValue>> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        items.extend(page.items().iter().cloned());
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            return items;
        }
    }
}

fn index_entries(items: &[HashMap<String, AttributeValue>]) -> HashMap<ItemKey, IndexEntry> {
    let text = |item: &HashMap<String, AttributeValue>, name: &str| match item.get(name) {
        Some(AttributeValue::S(s)) => s.clone(),
        _ => String::new(),
    };
    items
        .iter()
        .filter_map(|item| {
            let entry = (
                item.get("number_shard")?.clone(),
                item.get("expires_at")?.clone(),
                item.get("order_id").cloned(),
            );
            Some(((text(item, "pk"), text(item, "sk")), entry))
        })
        .collect()
}

/// The index's write units between two states of the table, by DynamoDB's rules for a global
/// secondary index (each written asynchronously, never doubled by a transaction; every entry
/// here is far under 1 KB): an entry added or removed is one write, one whose index keys
/// changed (a renewed `expires_at`) two, one whose projected attribute alone changed one.
fn index_write_units(
    before: &HashMap<ItemKey, IndexEntry>,
    after: &HashMap<ItemKey, IndexEntry>,
) -> f64 {
    let changed = after
        .iter()
        .map(|(key, now)| match before.get(key) {
            None => 1,
            Some(was) if (&was.0, &was.1) != (&now.0, &now.1) => 2,
            Some(was) if was.2 != now.2 => 1,
            Some(_) => 0,
        })
        .sum::<usize>();
    let removed = before.keys().filter(|k| !after.contains_key(*k)).count();
    (changed + removed) as f64
}

fn number_between(session: &Session, a: &Participant, b: &Participant) -> VirtualNumber {
    session
        .contacts
        .iter()
        .find(|c| c.involves(&a.user_id) && c.involves(&b.user_id))
        .map(|c| c.number.clone())
        .expect("a contact between the two")
}

#[tokio::main]
async fn main() {
    let sdk = local_sdk().await;
    let meter = CapacityMeter::default();
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk)
            .interceptor(meter.clone())
            .build(),
    );
    let table = create_table(&client).await;
    let store = Arc::new(DynamoStore::new(
        client.clone(),
        table.clone(),
        test_vault(),
    ));
    seed_pool(store.as_ref(), &pool("IN", 12)).await;
    let assigner = Assigner::new(store.clone(), AssignSettings::for_markets([market("IN")]));
    let t = now();
    // What follows an order's assignment comes later, as it does in service: a re-assignment
    // renews the routes it keeps (their expiry, and so their index entries).
    let later = t + 600;
    let apply = |order: &str, version: u64, change: OrderChange, at: UnixTime| {
        let update = OrderUpdate {
            order_id: order.parse().unwrap(),
            market: market("IN"),
            version,
            record: false,
            change,
        };
        let assigner = &assigner;
        async move {
            match assigner.apply(&update, at).await.expect("applied") {
                Outcome::Applied { session, attempts } => {
                    assert_eq!(attempts, 1, "no contention here");
                    session
                }
                Outcome::Stale { .. } => panic!("stale"),
            }
        }
    };
    // The index is priced from what each operation changed in it, read by a client the meter
    // does not count.
    let unmetered = aws_sdk_dynamodb::Client::new(&sdk);
    let mut index = index_entries(&all_items(&unmetered, &table).await);
    let mut costs = Vec::new();
    // Prices what happened since the last call; `None` sets it aside (set-up, not priced).
    macro_rules! measure {
        ($what:expr) => {{
            let before = std::mem::replace(
                &mut index,
                index_entries(&all_items(&unmetered, &table).await),
            );
            let what: Option<&'static str> = $what;
            let requests = meter.take();
            if let Some(what) = what {
                costs.push(Cost {
                    what,
                    requests,
                    index_write_units: index_write_units(&before, &index),
                });
            }
        }};
    }

    measure!(None);
    // The function's first assignment reads the pool (then cached) and records the day's peak.
    apply(
        "ord-first",
        1,
        OrderChange::Participants(vec![customer(90), driver(90)]),
        t,
    )
    .await;
    measure!(Some(
        "first assignment of a cold instance (reads the pool, raises the day's peak)"
    ));
    let two = apply(
        "ord-2",
        1,
        OrderChange::Participants(vec![customer(1), driver(1)]),
        t,
    )
    .await;
    measure!(Some("assign a two-party order (customer, driver)"));
    apply(
        "ord-3",
        1,
        OrderChange::Participants(vec![customer(2), driver(2), merchant(1)]),
        t,
    )
    .await;
    measure!(Some(
        "assign a three-party order (customer, driver, merchant)"
    ));
    apply(
        "ord-3",
        2,
        OrderChange::Participants(vec![customer(2), driver(3), merchant(1)]),
        later,
    )
    .await;
    measure!(Some("re-assign the driver of the three-party order"));
    let vn = number_between(&two, &customer(1), &driver(1));
    let route = live_route(store.as_ref(), &customer(1).phone, &vn, t)
        .await
        .unwrap()
        .expect("a live route");
    assert_eq!(route.callee.expose(), driver(1).phone.expose());
    measure!(Some("route one call (webhook)"));
    store
        .session(&"ord-2".parse().unwrap())
        .await
        .unwrap()
        .expect("a session");
    measure!(Some("lookup: an app asks for its contacts (fast path)"));
    // The sessions API (lookup's router, as a platform without events calls it): the same
    // two-party order created by a call instead of an event, then the same call again.
    let lookup = lookup::router(std::sync::Arc::new(lookup::Lookup::new(
        std::sync::Arc::new(Assigner::new(
            store.clone(),
            AssignSettings::for_markets([market("IN")]),
        )),
        store.clone(),
        None,
        &lookup::config::LookupConfig::from_source(
            &std::collections::BTreeMap::<String, String>::new(),
        )
        .expect("lookup config"),
    )));
    let put = serde_json::json!({"market": "IN", "version": 1, "participants": [
        {"role": "customer", "user_id": "c-api", "phone": customer(60).phone.expose()},
        {"role": "driver", "user_id": "d-api", "phone": driver(60).phone.expose()},
    ]})
    .to_string();
    let call = |body: String| {
        let request = http::Request::builder()
            .method("PUT")
            .uri("/v1/sessions/ord-api")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body))
            .unwrap();
        tower::ServiceExt::oneshot(lookup.clone(), request)
    };
    // Warm the sessions API's own assigner (its first call reads the pool): not what is priced.
    let warm = serde_json::json!({"market": "IN", "version": 1, "participants": [
        {"role": "customer", "user_id": "c-warm", "phone": customer(61).phone.expose()},
        {"role": "driver", "user_id": "d-warm", "phone": driver(61).phone.expose()},
    ]})
    .to_string();
    let warmed = tower::ServiceExt::oneshot(
        lookup.clone(),
        http::Request::builder()
            .method("PUT")
            .uri("/v1/sessions/ord-warm")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(warm))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(warmed.status(), 200);
    measure!(None);
    assert_eq!(call(put.clone()).await.unwrap().status(), 200);
    measure!(Some(
        "sessions API: PUT a two-party order (instead of its event)"
    ));
    assert_eq!(call(put).await.unwrap().status(), 200);
    measure!(Some(
        "sessions API: the same PUT again (answered from the stored session)"
    ));
    apply("ord-2", 2, OrderChange::End(EndTerms::default()), later).await;
    measure!(Some(
        "release: the order ends (routes live on through the grace period)"
    ));
    apply("ord-3", 3, OrderChange::End(EndTerms::default()), later).await;
    // Pool refresh moves a two-party order off a number leaving service.
    let moving = apply(
        "ord-move",
        1,
        OrderChange::Participants(vec![customer(70), driver(70)]),
        later,
    )
    .await;
    let leaving = number_between(&moving, &customer(70), &driver(70));
    let mut quarantined = pool("IN", 12)
        .into_iter()
        .find(|n| n.number == leaving)
        .expect("a pool number");
    quarantined.state = NumberState::Quarantined;
    store.put_number(&quarantined).await.unwrap();
    measure!(None);
    match assigner.move_off(&"ord-move".parse().unwrap(), later).await {
        Ok(Moved::Moved { pairs: 1, .. }) => {}
        other => panic!("not moved: {other:?}"),
    }
    measure!(Some(
        "move a two-party order off a number leaving service (pool refresh; a 10-minute handover)"
    ));

    // Storage: what the two-party and three-party orders left behind, by item.
    let items = all_items(&unmetered, &table).await;
    let of_order = |i: &&HashMap<String, AttributeValue>| {
        i.get("order_id") == Some(&AttributeValue::S("ord-2".into()))
    };
    let is_session = |i: &&HashMap<String, AttributeValue>| {
        i.get("pk") == Some(&AttributeValue::S("ORDER#ord-2".into()))
    };
    let stored = Stored {
        session: items
            .iter()
            .filter(of_order)
            .filter(is_session)
            .map(item_size)
            .sum(),
        routes: items
            .iter()
            .filter(of_order)
            .filter(|i| !is_session(i))
            .map(item_size)
            .sum(),
        // An index entry: its keys and projected attribute, the table's keys, and 100 bytes.
        index: items
            .iter()
            .filter(of_order)
            .filter(|i| i.contains_key("number_shard"))
            .map(|i| {
                ["number_shard", "expires_at", "order_id", "pk", "sk"]
                    .iter()
                    .filter_map(|name| Some(name.len() + value_size(i.get(*name)?)))
                    .sum::<usize>()
                    + 100
            })
            .sum(),
        retention_days: assigner.settings().retention.as_secs_f64() / 86_400.0,
    };
    report(&costs, &stored, &items);
}

/// What a two-party order leaves in the table.
struct Stored {
    session: usize,
    routes: usize,
    /// Its routes' entries in the `by-number` index, as DynamoDB sizes them.
    index: usize,
    retention_days: f64,
}

fn report(costs: &[Cost], stored: &Stored, items: &[HashMap<String, AttributeValue>]) {
    let largest_item = items.iter().map(item_size).max().unwrap_or(0);
    let mut partitions: HashMap<String, usize> = HashMap::new();
    for item in items {
        if let Some(AttributeValue::S(pk)) = item.get("pk") {
            *partitions.entry(pk.clone()).or_default() += item_size(item);
        }
    }
    let largest_partition = partitions.values().copied().max().unwrap_or(0);
    let mut md = format!(
        "## DynamoDB cost per operation\n\n\
         Method: `cargo bench --workspace --bench dynamodb_cost`. Each operation runs once \
         through the real DynamoDB store and assignment code against DynamoDB Local, with no \
         contention. An SDK interceptor counts the round trips and prices each request by \
         DynamoDB's documented on-demand rules, from the request and its response: a strongly \
         consistent read is 1 read unit per 4 KB read (at least 1, even when nothing matches; \
         half for eventually consistent), a write 1 write unit per 1 KB, and every item of a \
         transaction twice that. Checked against this run's items: the largest item is \
         {largest_item} bytes and the largest partition a query reads {largest_partition} bytes, \
         so every write is one 1 KB unit and every read one 4 KB unit. The interceptor also sets \
         `ReturnConsumedCapacity=TOTAL`; DynamoDB Local's answer is shown beside, but it does not \
         bill as DynamoDB does (it reports empty queries as 0 and transactions undoubled), so the \
         rules' figures are the ones priced. The `by-number` index (the first route of each \
         pair, for pool refresh's moves) is billed too: the table is read before and after each \
         operation, and each index entry added or removed is 1 write unit, each whose keys \
         changed (a renewed `expires_at`) 2, as DynamoDB bills a global secondary index, never \
         doubled by a transaction.\n\n\
         | operation | round trips | read units | write units (of which the index) | USD per million | DynamoDB Local reported |\n\
         | --- | --- | --- | --- | --- | --- |\n",
    );
    for c in costs {
        md.push_str(&format!(
            "| {} | {} | {} | {} ({}) | {:.2} | {} |\n",
            c.what,
            c.round_trips(),
            c.read_units(),
            c.write_units(),
            c.index_write_units,
            c.usd() * 1e6,
            c.reported(),
        ));
    }
    let find = |prefix: &str| {
        costs
            .iter()
            .find(|c| c.what.starts_with(prefix))
            .expect("measured")
    };
    let (two, three, reassign, route, lookup, release) = (
        find("assign a two"),
        find("assign a three"),
        find("re-assign"),
        find("route one call"),
        find("lookup"),
        find("release"),
    );
    // The month: 95 % two-party and 5 % shared (three-party) orders, one driver change in ten,
    // every order released, 3 calls and 2 lookups per order.
    let (shared, reassigned, lookups) = (0.05, 0.10, 2.0);
    let per_order = |f: &dyn Fn(&Cost) -> f64| {
        (1.0 - shared) * f(two)
            + shared * f(three)
            + reassigned * f(reassign)
            + f(release)
            + CALLS_PER_ORDER * f(route)
            + lookups * f(lookup)
    };
    let rru = per_order(&|c| c.read_units());
    let wru = per_order(&|c| c.write_units());
    let orders_month = ORDERS_PER_DAY * DAYS_PER_MONTH;
    let read_usd = rru * orders_month / 1e6 * USD_PER_MILLION_RRU;
    let write_usd = wru * orders_month / 1e6 * USD_PER_MILLION_WRU;
    // Routes (and their index entries) expire after the grace period and session items
    // `retention` later (TTL deletes are free): at steady state a day of routes and
    // retention + 1 days of sessions are stored.
    let stored_gb = ((stored.routes + stored.index) as f64
        + stored.session as f64 * (stored.retention_days + 1.0))
        * ORDERS_PER_DAY
        / 1e9;
    let storage_usd = stored_gb * USD_PER_GB_MONTH;
    md.push_str(&format!(
        "\n### A month at 1 M orders a day\n\n\
         Prices (on-demand, us-east-1, Standard table class): ${USD_PER_MILLION_WRU} per million \
         write request units, ${USD_PER_MILLION_RRU} per million read request units, \
         ${USD_PER_GB_MONTH} per GB-month stored. Mix: {:.0} % two-party and {:.0} % three-party \
         orders, {:.0} % of orders re-assign their driver, every order released, \
         {CALLS_PER_ORDER} calls and {lookups} app lookups per order, {DAYS_PER_MONTH} days.\n\n\
         | figure | value |\n| --- | --- |\n\
         | read units per order | {rru:.2} |\n\
         | write units per order | {wru:.2} |\n\
         | reads per month | {:.0} M units, ${read_usd:.2} |\n\
         | writes per month | {:.0} M units, ${write_usd:.2} |\n\
         | a two-party order's items | session {} bytes, routes {} bytes, their index entries {} bytes ({} items in the table after the run) |\n\
         | stored at steady state (a day of routes, {:.0} + 1 days of sessions) | {stored_gb:.1} GB, ${storage_usd:.2} a month |\n\
         | **DynamoDB per month** | **${:.2}** (${:.4} per thousand orders) |\n",
        (1.0 - shared) * 100.0,
        shared * 100.0,
        reassigned * 100.0,
        rru * orders_month / 1e6,
        wru * orders_month / 1e6,
        stored.session,
        stored.routes,
        stored.index,
        items.len(),
        stored.retention_days,
        read_usd + write_usd + storage_usd,
        (read_usd + write_usd + storage_usd) / orders_month * 1000.0,
    ));
    publish("dynamodb-cost", &md);
}
