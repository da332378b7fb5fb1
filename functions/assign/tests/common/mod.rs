//! What the assign tests share: fixtures, and a handler on a fresh DynamoDB Local table with
//! its own moto queues. Each test binary uses part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use assign::{AssignHandler, BatchReport, Outbox, QueueConfig, RecordOutcome, RetryReason};
use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_sqs::types::{Message, QueueAttributeName};
use serde_json::Value;
use vnmask::assignment::{AssignSettings, Assigner};
use vnmask::domain::{OrderId, Participant, VirtualNumber};
use vnmask::routing::live_route;
use vnmask::store::{AssignmentStore, Store};
use vnmask_tests::{local_dynamo, local_sdk, market, pool, seed_pool, LocalDynamo};

pub const GRACE_SECONDS: i64 = 1800;

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn fixture(name: &str) -> SqsEvent {
    let text = std::fs::read_to_string(fixture_path(name)).expect("fixture is readable");
    serde_json::from_str(&text).expect("fixture is an SqsEvent")
}

pub fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixture_path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
}

pub fn message_ids(event: &SqsEvent) -> Vec<String> {
    event
        .records
        .iter()
        .map(|r| r.message_id.clone().unwrap())
        .collect()
}

/// Every phone number written in the bodies of every fixture, and its digits without `+`.
pub fn fixture_phone_numbers() -> Vec<String> {
    fn collect(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("phone", Value::String(p)) => out.push(p.clone()),
                        _ => collect(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    let mut numbers = Vec::new();
    for name in fixture_names() {
        for record in fixture(&name).records {
            if let Ok(body) = serde_json::from_str::<Value>(&record.body.unwrap_or_default()) {
                collect(&body, &mut numbers);
            }
        }
    }
    let mut all: Vec<String> = numbers
        .iter()
        .flat_map(|n| {
            let digits: String = n.chars().filter(char::is_ascii_digit).collect();
            // The national part too, as someone might log it without the country code.
            let national = digits.chars().skip(2).collect::<String>();
            [n.clone(), digits, national]
        })
        .filter(|s| s.len() >= 7)
        .collect();
    all.sort();
    all.dedup();
    all
}

/// The outcome labels of a report, in batch order.
pub fn labels(report: &BatchReport) -> Vec<&'static str> {
    report.records.iter().map(|r| r.outcome.label()).collect()
}

pub fn failed_ids(report: &BatchReport) -> Vec<String> {
    let mut ids: Vec<String> = report
        .response()
        .expect("every record has a message id")
        .batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier)
        .collect();
    ids.sort();
    ids
}

pub fn retry_reason(report: &BatchReport, index: usize) -> RetryReason {
    match report.records[index].outcome {
        RecordOutcome::Retry { reason } => reason,
        ref other => panic!("record {index} is {other:?}, not left for retry"),
    }
}

static QUEUES: AtomicU64 = AtomicU64::new(0);

/// A new moto queue, FIFO if asked.
pub async fn create_queue(sqs: &aws_sdk_sqs::Client, purpose: &str, fifo: bool) -> String {
    let mut name = format!(
        "assign-{purpose}-{}-{}",
        std::process::id(),
        QUEUES.fetch_add(1, Ordering::Relaxed)
    );
    let mut req = sqs.create_queue();
    if fifo {
        name.push_str(".fifo");
        req = req.attributes(QueueAttributeName::FifoQueue, "true");
    }
    req.queue_name(name)
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url")
}

/// Everything on the queue now, with its message attributes.
pub async fn drain(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<Message> {
    let mut all = Vec::new();
    loop {
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .wait_time_seconds(0)
            .send()
            .await
            .expect("receive");
        let batch = out.messages.unwrap_or_default();
        if batch.is_empty() {
            return all;
        }
        for m in &batch {
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle.clone().unwrap())
                .send()
                .await
                .expect("delete");
        }
        all.extend(batch);
    }
}

pub fn attribute(m: &Message, name: &str) -> Option<String> {
    m.message_attributes
        .as_ref()?
        .get(name)?
        .string_value()
        .map(str::to_owned)
}

pub type StoreWrapper = Box<dyn FnOnce(Arc<dyn Store>) -> Arc<dyn AssignmentStore>>;

pub struct Setup {
    pub pool_size: usize,
    pub concurrency: usize,
    pub settings: AssignSettings,
    /// Wraps the DynamoDB store (fault injection).
    pub wrap: StoreWrapper,
    /// A dead-letter queue URL instead of a new queue.
    pub dead_letter_url: Option<String>,
}

impl Default for Setup {
    fn default() -> Self {
        let mut settings = AssignSettings::for_markets([market("IN")]);
        settings.grace = std::time::Duration::from_secs(GRACE_SECONDS as u64);
        Setup {
            pool_size: 20,
            concurrency: QueueConfig::DEFAULT_CONCURRENCY,
            settings,
            wrap: Box::new(|s| s),
            dead_letter_url: None,
        }
    }
}

/// A handler on a fresh table with a seeded pool, a new dead-letter queue and notifications queue.
pub struct Fx {
    pub handler: AssignHandler,
    /// The table, read directly (not through the setup's wrapper).
    pub store: Arc<dyn Store>,
    pub dynamo: LocalDynamo,
    pub sqs: aws_sdk_sqs::Client,
    pub dead_letter_url: String,
    pub notify_url: String,
}

impl Fx {
    pub async fn new() -> Fx {
        Fx::with(Setup::default()).await
    }

    pub async fn with(setup: Setup) -> Fx {
        let dynamo = local_dynamo().await;
        seed_pool(dynamo.store.as_ref(), &pool("IN", setup.pool_size)).await;
        dynamo.calls.reset();
        let store: Arc<dyn Store> = dynamo.store.clone();
        let sqs = aws_sdk_sqs::Client::new(&local_sdk().await);
        let dead_letter_url = match setup.dead_letter_url {
            Some(url) => url,
            None => create_queue(&sqs, "dlq", false).await,
        };
        let notify_url = create_queue(&sqs, "notify", false).await;
        let config = QueueConfig {
            dead_letter_url: dead_letter_url.clone(),
            notify_url: Some(notify_url.clone()),
            concurrency: setup.concurrency,
        };
        let handler = AssignHandler::new(
            Arc::new(Assigner::new((setup.wrap)(store.clone()), setup.settings)),
            Outbox::new(sqs.clone(), &config),
            config.concurrency,
        );
        Fx {
            handler,
            store,
            dynamo,
            sqs,
            dead_letter_url,
            notify_url,
        }
    }

    pub async fn dead_letters(&self) -> Vec<Message> {
        drain(&self.sqs, &self.dead_letter_url).await
    }

    /// The `NumbersAssigned` notifications sent so far, as JSON.
    pub async fn notifications(&self) -> Vec<Value> {
        drain(&self.sqs, &self.notify_url)
            .await
            .iter()
            .map(|m| serde_json::from_str(m.body.as_deref().unwrap()).unwrap())
            .collect()
    }

    /// The number `from` and `to` reach each other on in `order`, after checking both routes:
    /// each reaches the other party and shows the same number as caller id.
    pub async fn number_between(
        &self,
        order: &str,
        from: &Participant,
        to: &Participant,
        at: i64,
    ) -> VirtualNumber {
        let session = self
            .store
            .session(&order.parse().unwrap())
            .await
            .unwrap()
            .expect("session exists");
        let contact = session
            .contacts
            .iter()
            .find(|c| c.joins(&from.user_id, &to.user_id))
            .expect("a contact joins them");
        for (caller, callee) in [(from, to), (to, from)] {
            let route = live_route(self.store.as_ref(), &caller.phone, &contact.number, at)
                .await
                .unwrap()
                .expect("route is live");
            assert_eq!(
                route.callee, callee.phone,
                "the route reaches the other party"
            );
            assert_eq!(route.caller_id(), &contact.number, "caller id is the VN");
            assert_eq!(route.order_id.as_str(), order);
            assert_eq!(route.caller_role, caller.role);
            assert_eq!(route.callee_role, callee.role);
        }
        contact.number.clone()
    }

    pub async fn version(&self, order: &str) -> Option<u64> {
        let id: OrderId = order.parse().unwrap();
        self.store.session(&id).await.unwrap().map(|s| s.version)
    }

    /// Every item of the table, printed and sorted: equal pictures mean nothing changed.
    pub async fn picture(&self) -> Vec<String> {
        let mut items: Vec<String> = self
            .dynamo
            .items()
            .await
            .iter()
            .map(vnmask_tests::canonical)
            .collect();
        items.sort();
        items
    }
}

/// docs/events.schema.json.
pub fn schema() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/events.schema.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("schema is readable"))
        .expect("schema is JSON")
}

/// A validator for the schema's root (an order event), or for one of its `$defs`.
pub fn validator(definition: Option<&str>) -> jsonschema::Validator {
    let mut schema = schema();
    if let Some(def) = definition {
        schema["$ref"] = Value::String(format!("#/$defs/{def}"));
    }
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&schema)
        .expect("the schema compiles")
}
