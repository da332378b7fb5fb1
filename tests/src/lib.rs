//! Test harness: the local AWS stand-ins (started by `make test`, see infra/local/services.sh),
//! tables created from template.yaml, a DynamoDB call counter and a fault-injecting store.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use vnmask::aws::{sdk_config, SdkTimeouts};
use vnmask::crypto::Vault;
use vnmask::domain::{
    Capabilities, Market, OrderId, Participant, PoolNumber, RealNumber, Session, UnixTime,
    VirtualNumber,
};
use vnmask::store::dynamodb::DynamoStore;
use vnmask::store::{
    AssignmentStore, CommitError, LeaseTake, LiveContact, Outage, PeakWrite, PoolEntry, PoolStore,
    PoolWriteError, PurchaseCount, PurchaseLedger, SampledRoute, SessionCommit, Store, StoreError,
};

pub mod bench;
pub mod people;
pub mod watch;

/// The SDK configuration for the local services. Panics (tests only) when `make test` did not
/// start them, or when an endpoint is not on the loopback interface.
pub async fn local_sdk() -> SdkConfig {
    for var in [
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_ENDPOINT_URL_SQS",
        "AWS_ENDPOINT_URL_KMS",
        "AWS_ENDPOINT_URL_SECRETS_MANAGER",
    ] {
        let url = std::env::var(var).unwrap_or_else(|_| {
            panic!(
                "{var} is not set: run the tests with `make test`, which starts the local services"
            )
        });
        assert!(
            url.starts_with("http://127.0.0.1:"),
            "{var} must point at 127.0.0.1, got {url}"
        );
    }
    sdk_config(SdkTimeouts::BACKGROUND).await
}

/// The table as template.yaml declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    /// (name, type) of each key attribute.
    pub attributes: BTreeMap<String, String>,
    pub hash_key: String,
    pub range_key: Option<String>,
    pub ttl_attribute: Option<String>,
    pub global_indexes: Vec<IndexSpec>,
}

/// A global secondary index of template.yaml's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSpec {
    pub name: String,
    pub hash_key: String,
    pub range_key: Option<String>,
    /// `ALL`, `KEYS_ONLY` or `INCLUDE`, with the included attributes.
    pub projection: String,
    pub included: Vec<String>,
}

pub fn template_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml")
}

/// template.yaml as JSON, CloudFormation's short tags (`!Ref x`, `!GetAtt a.b`, `!Sub s`,
/// `!If [...]`) in their long forms (`{"Ref": x}`, `{"Fn::GetAtt": [a, b]}`, …), so that tests
/// compare plain JSON.
pub fn template_json() -> serde_json::Value {
    let text = std::fs::read_to_string(template_path()).expect("template.yaml is readable");
    let doc: serde_norway::Value = serde_norway::from_str(&text).expect("template.yaml is YAML");
    long_form(doc)
}

/// A YAML value with its short tags in their long forms (see [`template_json`]).
pub fn long_form(value: serde_norway::Value) -> serde_json::Value {
    use serde_json::{json, Value};
    use serde_norway::Value as Y;
    match value {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                json!(i)
            } else if let Some(u) = n.as_u64() {
                json!(u)
            } else {
                json!(n
                    .as_f64()
                    .expect("a YAML number is a float if nothing else"))
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(long_form).collect()),
        Y::Mapping(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let key = k.as_str().expect("template keys are strings").to_owned();
                    (key, long_form(v))
                })
                .collect(),
        ),
        Y::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let inner = long_form(tagged.value);
            match name {
                "Ref" | "Condition" => json!({ name: inner }),
                // `!GetAtt Resource.Attribute` is `Fn::GetAtt: [Resource, Attribute]`.
                "GetAtt" => match inner {
                    Value::String(s) => {
                        let (resource, attribute) =
                            s.split_once('.').expect("!GetAtt names Resource.Attribute");
                        json!({ "Fn::GetAtt": [resource, attribute] })
                    }
                    other => json!({ "Fn::GetAtt": other }),
                },
                _ => json!({ format!("Fn::{name}"): inner }),
            }
        }
    }
}

/// Reads template.yaml's `Table`. With `ReplicaRegion` the template creates `GlobalTable`
/// instead, whose definition tests/tests/template_regions.rs holds equal to this one.
pub fn template_table() -> TableSpec {
    let text = std::fs::read_to_string(template_path()).expect("template.yaml is readable");
    let doc: serde_norway::Value = serde_norway::from_str(&text).expect("template.yaml is YAML");
    let table = &doc["Resources"]["Table"];
    assert_eq!(
        table["Type"].as_str(),
        Some("AWS::DynamoDB::Table"),
        "template.yaml declares the table as Table"
    );
    let props = &table["Properties"];
    let attributes = props["AttributeDefinitions"]
        .as_sequence()
        .expect("AttributeDefinitions")
        .iter()
        .map(|a| {
            (
                a["AttributeName"].as_str().unwrap().to_owned(),
                a["AttributeType"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let key_of = |schema: &serde_norway::Value, kind: &str| {
        schema
            .as_sequence()
            .expect("KeySchema")
            .iter()
            .find(|k| k["KeyType"].as_str() == Some(kind))
            .map(|k| k["AttributeName"].as_str().unwrap().to_owned())
    };
    let key = |kind: &str| key_of(&props["KeySchema"], kind);
    let ttl = &props["TimeToLiveSpecification"];
    TableSpec {
        attributes,
        hash_key: key("HASH").expect("a HASH key"),
        range_key: key("RANGE"),
        ttl_attribute: (ttl["Enabled"].as_bool() == Some(true))
            .then(|| ttl["AttributeName"].as_str().unwrap().to_owned()),
        global_indexes: props["GlobalSecondaryIndexes"]
            .as_sequence()
            .map(|indexes| {
                indexes
                    .iter()
                    .map(|i| IndexSpec {
                        name: i["IndexName"].as_str().unwrap().to_owned(),
                        hash_key: key_of(&i["KeySchema"], "HASH").expect("an index HASH key"),
                        range_key: key_of(&i["KeySchema"], "RANGE"),
                        projection: i["Projection"]["ProjectionType"]
                            .as_str()
                            .unwrap()
                            .to_owned(),
                        included: i["Projection"]["NonKeyAttributes"]
                            .as_sequence()
                            .map(|a| a.iter().map(|n| n.as_str().unwrap().to_owned()).collect())
                            .unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

static TABLES: AtomicU64 = AtomicU64::new(0);

/// Creates a new, empty table shaped as template.yaml says, with a name unique to this process.
pub async fn create_table(client: &aws_sdk_dynamodb::Client) -> String {
    let spec = template_table();
    let name = format!(
        "vnmask-test-{}-{}",
        std::process::id(),
        TABLES.fetch_add(1, Ordering::Relaxed)
    );
    let mut req = client
        .create_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest);
    for (attr, kind) in &spec.attributes {
        req = req.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(attr)
                .attribute_type(ScalarAttributeType::from(kind.as_str()))
                .build()
                .unwrap(),
        );
    }
    req = req.key_schema(
        KeySchemaElement::builder()
            .attribute_name(&spec.hash_key)
            .key_type(KeyType::Hash)
            .build()
            .unwrap(),
    );
    if let Some(range) = &spec.range_key {
        req = req.key_schema(
            KeySchemaElement::builder()
                .attribute_name(range)
                .key_type(KeyType::Range)
                .build()
                .unwrap(),
        );
    }
    for index in &spec.global_indexes {
        let mut keys = vec![KeySchemaElement::builder()
            .attribute_name(&index.hash_key)
            .key_type(KeyType::Hash)
            .build()
            .unwrap()];
        if let Some(range) = &index.range_key {
            keys.push(
                KeySchemaElement::builder()
                    .attribute_name(range)
                    .key_type(KeyType::Range)
                    .build()
                    .unwrap(),
            );
        }
        req = req.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(&index.name)
                .set_key_schema(Some(keys))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::from(index.projection.as_str()))
                        .set_non_key_attributes(
                            (!index.included.is_empty()).then(|| index.included.clone()),
                        )
                        .build(),
                )
                .build()
                .unwrap(),
        );
    }
    req.send().await.expect("create table");
    if let Some(ttl) = &spec.ttl_attribute {
        client
            .update_time_to_live()
            .table_name(&name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(ttl)
                    .enabled(true)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .expect("enable TTL");
    }
    name
}

/// The name of the SDK operation a request belongs to (`GetItem`, `TransactWriteItems`, …),
/// for interceptors.
pub fn operation_name(cfg: &ConfigBag) -> String {
    cfg.load::<Metadata>()
        .map(|m| m.name().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

/// Counts DynamoDB round trips (every attempt, retries included) by operation name.
#[derive(Debug, Clone, Default)]
pub struct CallCounter(Arc<Mutex<BTreeMap<String, u64>>>);

impl CallCounter {
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap().clone()
    }

    pub fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }

    pub fn reset(&self) {
        self.0.lock().unwrap().clear();
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        *self
            .0
            .lock()
            .unwrap()
            .entry(operation_name(cfg))
            .or_default() += 1;
        Ok(())
    }
}

/// A fixed vault for tests (the KMS path has its own test).
pub fn test_vault() -> Arc<Vault> {
    Arc::new(
        Vault::from_keys(
            &[0x42; 32],
            BTreeMap::from([("k1".to_owned(), vec![0x17; 32])]),
            "k1",
        )
        .unwrap(),
    )
}

/// A DynamoDB store on a fresh table of DynamoDB Local, with its call counter.
pub struct LocalDynamo {
    pub store: Arc<DynamoStore>,
    pub client: aws_sdk_dynamodb::Client,
    pub table: String,
    pub calls: CallCounter,
}

pub async fn local_dynamo() -> LocalDynamo {
    let sdk = local_sdk().await;
    let calls = CallCounter::default();
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk)
            .interceptor(calls.clone())
            .build(),
    );
    let table = create_table(&client).await;
    calls.reset();
    let store = Arc::new(DynamoStore::new(
        client.clone(),
        table.clone(),
        test_vault(),
    ));
    LocalDynamo {
        store,
        client,
        table,
        calls,
    }
}

impl LocalDynamo {
    /// Every item of the table, for assertions (a test may scan; request paths never do).
    pub async fn items(
        &self,
    ) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .set_exclusive_start_key(start)
                .send()
                .await
                .unwrap();
            items.extend(out.items.unwrap_or_default());
            start = out.last_evaluated_key;
            if start.is_none() {
                return items;
            }
        }
    }
}

/// A numbered pool of `count` active voice+SMS numbers in `market` (`+9111400000NN` style for IN).
pub fn pool(market: &str, count: usize) -> Vec<PoolNumber> {
    let prefix = match market {
        "IN" => "+91114000",
        "US" => "+1415555",
        other => panic!("no test numbering for market {other}"),
    };
    (0..count)
        .map(|i| PoolNumber {
            number: VirtualNumber::parse(&format!("{prefix}{:04}", 1000 + i)).unwrap(),
            provider: "static".parse().unwrap(),
            market: market.parse().unwrap(),
            capabilities: Capabilities::VOICE_AND_SMS,
            state: vnmask::domain::NumberState::Active,
            hold: None,
        })
        .collect()
}

pub async fn seed_pool(store: &dyn Store, numbers: &[PoolNumber]) {
    for n in numbers {
        store.put_number(n).await.unwrap();
    }
}

pub use vnmask::domain::now;

/// What the fault-injecting store does to commits.
#[derive(Debug, Default)]
pub struct Faults {
    /// The next this-many commits fail with a transaction conflict.
    pub conflicts: AtomicU32,
    /// Every store call for these orders fails as unavailable.
    pub broken_orders: Mutex<HashSet<OrderId>>,
    /// Store calls for these orders panic, standing in for a bug below the caller.
    pub panicking_orders: Mutex<HashSet<OrderId>>,
    /// The next this-many conditional pool writes fail as if another writer came first.
    pub changed_numbers: AtomicU32,
}

/// Wraps a store and injects the failures real DynamoDB produces and DynamoDB Local rarely does.
pub struct FaultyStore {
    pub inner: Arc<dyn Store>,
    pub faults: Arc<Faults>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        FaultyStore {
            inner,
            faults: Arc::default(),
        }
    }

    fn broken(&self, order: &OrderId) -> Result<(), StoreError> {
        let panics = self.faults.panicking_orders.lock().unwrap().contains(order);
        assert!(!panics, "injected panic for order {order}");
        if self.faults.broken_orders.lock().unwrap().contains(order) {
            Err(StoreError::Unavailable(Outage::ServiceError))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl AssignmentStore for FaultyStore {
    async fn session(&self, order: &OrderId) -> Result<Option<Session>, StoreError> {
        self.broken(order)?;
        self.inner.session(order).await
    }

    async fn live_contacts(
        &self,
        person: &RealNumber,
        now: UnixTime,
    ) -> Result<Vec<LiveContact>, StoreError> {
        self.inner.live_contacts(person, now).await
    }

    async fn pool(&self, market: &Market) -> Result<Vec<PoolNumber>, StoreError> {
        self.inner.pool(market).await
    }

    async fn commit(&self, commit: &SessionCommit) -> Result<(), CommitError> {
        self.broken(&commit.session.order_id)?;
        let conflict = self
            .faults
            .conflicts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if conflict {
            return Err(CommitError::Conflict);
        }
        self.inner.commit(commit).await
    }

    async fn raise_live_peak(
        &self,
        market: &Market,
        day: &str,
        peak: u32,
        expires_at: UnixTime,
    ) -> Result<PeakWrite, StoreError> {
        self.inner
            .raise_live_peak(market, day, peak, expires_at)
            .await
    }
}

#[async_trait]
impl PoolStore for FaultyStore {
    async fn pool_entries(&self, market: &Market) -> Result<Vec<PoolEntry>, StoreError> {
        self.inner.pool_entries(market).await
    }

    async fn put_number(&self, number: &PoolNumber) -> Result<(), StoreError> {
        self.inner.put_number(number).await
    }

    async fn put_number_if(
        &self,
        number: &PoolNumber,
        expected: Option<u64>,
    ) -> Result<u64, PoolWriteError> {
        let changed = self
            .faults
            .changed_numbers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if changed {
            return Err(PoolWriteError::NumberChanged(number.number.clone()));
        }
        self.inner.put_number_if(number, expected).await
    }

    async fn live_peak(&self, market: &Market, day: &str) -> Result<Option<u32>, StoreError> {
        self.inner.live_peak(market, day).await
    }

    async fn sample_routes(
        &self,
        now: UnixTime,
        budget: usize,
    ) -> Result<Vec<SampledRoute>, StoreError> {
        self.inner.sample_routes(now, budget).await
    }
}

#[async_trait]
impl PurchaseLedger for FaultyStore {
    async fn count_purchase(
        &self,
        month: &str,
        cap: u32,
        expires_at: UnixTime,
    ) -> Result<PurchaseCount, StoreError> {
        self.inner.count_purchase(month, cap, expires_at).await
    }

    async fn uncount_purchase(&self, month: &str) -> Result<(), StoreError> {
        self.inner.uncount_purchase(month).await
    }

    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: UnixTime,
        until: UnixTime,
    ) -> Result<LeaseTake, StoreError> {
        self.inner.take_lease(name, holder, now, until).await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.inner.release_lease(name, holder).await
    }
}

/// A participant from literals (tests only).
pub fn participant(role: &str, user: &str, phone: &str) -> Participant {
    Participant {
        role: role.parse().unwrap(),
        user_id: user.parse().unwrap(),
        phone: RealNumber::parse(phone).unwrap(),
        alternate_phones: Vec::new(),
    }
}

pub fn market(m: &str) -> Market {
    m.parse().unwrap()
}

/// An item printed with its map keys sorted, so that equal items print equal.
pub fn canonical(
    item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
) -> String {
    use aws_sdk_dynamodb::types::AttributeValue as V;
    fn value(v: &V) -> String {
        match v {
            V::M(m) => map(m),
            V::L(l) => format!("[{}]", l.iter().map(value).collect::<Vec<_>>().join(",")),
            other => format!("{other:?}"),
        }
    }
    fn map(m: &std::collections::HashMap<String, V>) -> String {
        let sorted: BTreeMap<_, _> = m.iter().collect();
        format!(
            "{{{}}}",
            sorted
                .into_iter()
                .map(|(k, v)| format!("{k}:{}", value(v)))
                .collect::<Vec<_>>()
                .join(",")
        )
    }
    map(item)
}

/// A fresh table and KMS-wrapped keys, as a deployment has them: the store's environment
/// (see [`kms_store_env`]) and the store it configures.
pub async fn kms_store(sdk: &SdkConfig) -> (BTreeMap<String, String>, DynamoStore) {
    let table = create_table(&aws_sdk_dynamodb::Client::new(sdk)).await;
    let env = kms_store_env(sdk, &table).await;
    let store = vnmask::config::StoreConfig::from_source(&env)
        .expect("the store's environment")
        .connect(sdk)
        .await
        .expect("the wrapped keys unwrap");
    (env, store)
}

/// Creates a KMS key in moto and new wrapped key material under it; returns the store's
/// environment (`VNMASK_TABLE`, `VNMASK_HMAC_KEY`, `VNMASK_DATA_KEYS`) for `table`.
pub async fn kms_store_env(sdk: &SdkConfig, table: &str) -> BTreeMap<String, String> {
    use base64::Engine;
    let kms = aws_sdk_kms::Client::new(sdk);
    let key = kms
        .create_key()
        .description("vnmask test key")
        .send()
        .await
        .expect("create KMS key");
    let key_id = key.key_metadata.expect("key metadata").key_id;
    let (hmac, data) = Vault::generate_wrapped_keys(&kms, &key_id, "k1")
        .await
        .expect("generate data keys");
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    BTreeMap::from([
        ("VNMASK_TABLE".to_owned(), table.to_owned()),
        ("VNMASK_HMAC_KEY".to_owned(), b64(&hmac)),
        ("VNMASK_DATA_KEYS".to_owned(), format!("k1={}", b64(&data))),
    ])
}

/// Creates a secret in moto's Secrets Manager holding `credentials` (a JSON object, as the
/// functions read it) under a fresh name; returns its ARN, for `VNMASK_SECRETS_ID`.
pub async fn put_secret(sdk: &SdkConfig, credentials: &[(&str, &str)]) -> String {
    put_secret_named(sdk, &secret_name(), credentials).await
}

/// A fresh secret name, for a secret a test creates later.
pub fn secret_name() -> String {
    format!("vnmask-test-{}", rand::random::<u64>())
}

/// [`put_secret`] under `name`.
pub async fn put_secret_named(sdk: &SdkConfig, name: &str, credentials: &[(&str, &str)]) -> String {
    let value: serde_json::Map<String, serde_json::Value> = credentials
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    aws_sdk_secretsmanager::Client::new(sdk)
        .create_secret()
        .name(name)
        .secret_string(serde_json::Value::Object(value).to_string())
        .send()
        .await
        .expect("create the secret in moto")
        .arn
        .expect("a secret's ARN")
}

/// What a test's `tracing` subscriber writes, kept for assertions:
/// `tracing_subscriber::fmt().with_writer(move || captured.clone())`.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl vnmask::store::AnswerStats for FaultyStore {
    async fn count_answer(
        &self,
        number: &VirtualNumber,
        call_id: &vnmask::domain::CallId,
        answered: bool,
        now: i64,
        keep_until: i64,
    ) -> Result<(), StoreError> {
        self.inner
            .count_answer(number, call_id, answered, now, keep_until)
            .await
    }

    async fn answer_tally(
        &self,
        number: &VirtualNumber,
        now: i64,
        days: u32,
    ) -> Result<vnmask::domain::AnswerTally, StoreError> {
        self.inner.answer_tally(number, now, days).await
    }
}

#[async_trait::async_trait]
impl vnmask::store::PairIndex for FaultyStore {
    async fn orders_on(
        &self,
        number: &VirtualNumber,
        now: i64,
        limit: usize,
    ) -> Result<vnmask::store::OrdersOn, StoreError> {
        self.inner.orders_on(number, now, limit).await
    }
}
