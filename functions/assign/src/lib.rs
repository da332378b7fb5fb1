//! The assign function: order events from SQS become number assignments (docs/events.md).
//!
//! Every record of a batch ends in exactly one of four ways: **applied**; **ignored** (stale,
//! duplicate, or a type this contract does not know); **dead-lettered** (permanently invalid:
//! sent to the dead-letter queue with its reason, then acknowledged); or **reported for retry**
//! as a batch item failure (transient: SQS delivers it again, and after `maxReceiveCount` moves
//! it to the same dead-letter queue).
//!
//! Records of different orders run concurrently; one order's records run one after another, in
//! version order on a standard queue and in delivery order on a FIFO queue, where a record left
//! for retry also holds back the later records of its message group. Each order's work runs in
//! its own task, so that a panic loses only that order's unfinished records (reported for retry).

pub mod config;
pub mod outbox;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use vnmask::assignment::{AssignError, Assigner, OrderChange, Outcome};
use vnmask::domain::{self, OrderId};
use vnmask::events::{participants_reason, EventError, OrderEvent, RejectReason};
use vnmask::telemetry::{MetricSet, Unit};

pub use config::QueueConfig;
pub use outbox::{Outbox, Rejection};
pub use vnmask::notification::NumbersAssigned;

/// The `Function` dimension of this function's metrics.
pub const FUNCTION: &str = "assign";

/// How one record ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOutcome {
    /// The change was written; `attempts` counts commits tried (1 when no race was lost).
    Applied { attempts: u32 },
    /// Not newer than what was applied: a duplicate, or overtaken by a newer event.
    Stale { stored_version: u64 },
    /// A type this contract does not know (producers add types over time): acknowledged.
    UnknownType,
    /// Permanently invalid: sent to the dead-letter queue, then acknowledged.
    DeadLettered(Rejection),
    /// Reported as a batch item failure, so that SQS delivers it again.
    Retry { reason: RetryReason },
}

impl RecordOutcome {
    /// The outcome as a log field and metric dimension.
    pub fn label(&self) -> &'static str {
        match self {
            RecordOutcome::Applied { .. } => "applied",
            RecordOutcome::Stale { .. } => "stale",
            RecordOutcome::UnknownType => "unknown_type",
            RecordOutcome::DeadLettered(_) => "dead_lettered",
            RecordOutcome::Retry { .. } => "retry",
        }
    }
}

/// What happened to one record of a batch.
#[derive(Debug, Clone)]
pub struct RecordReport {
    pub message_id: Option<String>,
    /// The event's type as a metric dimension; `Unparsed` when the body is not an event.
    pub event_type: &'static str,
    pub outcome: RecordOutcome,
    /// Commits lost to concurrent orders before this record's outcome.
    pub contention_retries: u32,
    /// `NumbersAssigned` could not be sent. The assignment stands: apps can still ask lookup.
    pub notify_failed: bool,
}

/// What happened to a whole batch, record by record in batch order.
#[derive(Debug, Clone)]
pub struct BatchReport {
    pub records: Vec<RecordReport>,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Without a message id a failure cannot be reported item by item; failing the invocation
    /// makes SQS deliver the whole batch again rather than lose the record.
    #[error("record {index} must be retried but has no message id")]
    Unidentifiable { index: usize },
}

impl From<BatchError> for lambda_runtime::Diagnostic {
    fn from(e: BatchError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: "BatchError".into(),
            error_message: e.to_string(),
        }
    }
}

impl BatchReport {
    /// The partial batch response: exactly the records left for retry.
    pub fn response(&self) -> Result<SqsBatchResponse, BatchError> {
        let mut response = SqsBatchResponse::default();
        for (index, record) in self.records.iter().enumerate() {
            if let RecordOutcome::Retry { .. } = record.outcome {
                match &record.message_id {
                    Some(id) if !id.is_empty() => response.add_failure(id.clone()),
                    _ => return Err(BatchError::Unidentifiable { index }),
                }
            }
        }
        Ok(response)
    }

    /// EMF records: events by type and outcome, and the batch's totals.
    pub fn metrics(&self) -> Vec<MetricSet> {
        let mut by_kind: HashMap<(&'static str, &'static str), u64> = HashMap::new();
        let (mut contention, mut exhausted, mut dead, mut retried, mut notify_failed) =
            (0, 0, 0, 0, 0);
        for r in &self.records {
            *by_kind
                .entry((r.event_type, r.outcome.label()))
                .or_default() += 1;
            contention += u64::from(r.contention_retries);
            notify_failed += u64::from(r.notify_failed);
            match r.outcome {
                RecordOutcome::Retry {
                    reason: RetryReason::PoolExhausted,
                } => {
                    exhausted += 1;
                    retried += 1;
                }
                RecordOutcome::Retry { .. } => retried += 1,
                RecordOutcome::DeadLettered(_) => dead += 1,
                _ => {}
            }
        }
        let mut kinds: Vec<_> = by_kind.into_iter().collect();
        kinds.sort();
        let mut sets: Vec<MetricSet> = kinds
            .into_iter()
            .map(|((event_type, outcome), n)| {
                MetricSet::new(FUNCTION)
                    .dimension("EventType", event_type)
                    .dimension("Outcome", outcome)
                    .count("Events", n)
            })
            .collect();
        sets.push(
            MetricSet::new(FUNCTION)
                .count("Records", self.records.len() as u64)
                .count("ContentionRetries", contention)
                .count("PoolExhausted", exhausted)
                .count("DeadLettered", dead)
                .count("RetryReported", retried)
                .count("NotifyFailed", notify_failed)
                .value(
                    "HandlerLatency",
                    self.elapsed.as_secs_f64() * 1000.0,
                    Unit::Milliseconds,
                ),
        );
        sets
    }
}

/// Why a record is left for SQS to deliver again (docs/events.md lists the codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryReason {
    /// No number is free for a pair; a pool refresh may add some.
    PoolExhausted,
    /// Commits lost to concurrent orders as many times as allowed.
    Contention,
    /// The store is throttling or timing out.
    StoreUnavailable,
    /// The record is permanently invalid, but the dead-letter queue refused it.
    DeadLetterUnavailable,
    /// An earlier record of the same FIFO message group is left for retry.
    HeldBack,
    /// The order's task panicked (a bug); the batch's other orders are unaffected.
    Panicked,
}

impl RetryReason {
    pub const ALL: [RetryReason; 6] = [
        RetryReason::PoolExhausted,
        RetryReason::Contention,
        RetryReason::StoreUnavailable,
        RetryReason::DeadLetterUnavailable,
        RetryReason::HeldBack,
        RetryReason::Panicked,
    ];

    /// The stable, machine-readable code, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::PoolExhausted => "pool_exhausted",
            RetryReason::Contention => "contention",
            RetryReason::StoreUnavailable => "store_unavailable",
            RetryReason::DeadLetterUnavailable => "dead_letter_unavailable",
            RetryReason::HeldBack => "held_back",
            RetryReason::Panicked => "panicked",
        }
    }
}

impl std::fmt::Display for RetryReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The handler: cheap to clone, built once per cold start.
#[derive(Clone)]
pub struct AssignHandler {
    inner: Arc<Inner>,
}

struct Inner {
    assigner: Arc<Assigner>,
    outbox: Outbox,
    concurrency: usize,
}

/// One record, parsed up front so that it can be grouped by order.
struct Record {
    index: usize,
    message_id: Option<String>,
    body: String,
    source_queue: Option<String>,
    /// Set on FIFO queues.
    message_group: Option<String>,
    event: Result<OrderEvent, EventError>,
}

impl Record {
    fn new(index: usize, message: SqsMessage) -> Record {
        let body = message.body.unwrap_or_default();
        let event = OrderEvent::parse(&body);
        Record {
            index,
            message_group: message.attributes.get("MessageGroupId").cloned(),
            message_id: message.message_id,
            source_queue: message.event_source_arn,
            body,
            event,
        }
    }

    fn event_type(&self) -> &'static str {
        match &self.event {
            Ok(e) => e.event_type.metric_name(),
            Err(_) => "Unparsed",
        }
    }
}

#[derive(Hash, PartialEq, Eq)]
enum GroupKey {
    MessageGroup(String),
    Order(OrderId),
    Alone(usize),
}

/// Records that must run one after another.
struct Group {
    fifo: bool,
    records: Vec<Record>,
}

/// Groups records by FIFO message group, else by order; a body that is not an event stands alone.
fn groups(records: Vec<Record>) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    let mut at: HashMap<GroupKey, usize> = HashMap::new();
    for record in records {
        let key = match (&record.message_group, &record.event) {
            (Some(group), _) => GroupKey::MessageGroup(group.clone()),
            (None, Ok(event)) => GroupKey::Order(event.order_id.clone()),
            (None, Err(_)) => GroupKey::Alone(record.index),
        };
        let i = *at.entry(key).or_insert_with(|| {
            groups.push(Group {
                fifo: record.message_group.is_some(),
                records: Vec::new(),
            });
            groups.len() - 1
        });
        groups[i].records.push(record);
    }
    for group in groups.iter_mut().filter(|g| !g.fifo) {
        // Stable: events of equal version keep their delivery order.
        group
            .records
            .sort_by_key(|r| r.event.as_ref().map_or(0, |e| e.version));
    }
    groups
}

struct Finished {
    index: usize,
    outcome: RecordOutcome,
    contention_retries: u32,
    notify_failed: bool,
}

impl Finished {
    fn new(index: usize, outcome: RecordOutcome) -> Self {
        Finished {
            index,
            outcome,
            contention_retries: 0,
            notify_failed: false,
        }
    }
}

impl AssignHandler {
    /// `concurrency` bounds the orders of one batch applied at the same time.
    pub fn new(assigner: Arc<Assigner>, outbox: Outbox, concurrency: usize) -> Self {
        AssignHandler {
            inner: Arc::new(Inner {
                assigner,
                outbox,
                concurrency: concurrency.max(1),
            }),
        }
    }

    /// Handles a batch, emits its metrics, and answers which records SQS must deliver again.
    pub async fn handle(&self, event: SqsEvent) -> Result<SqsBatchResponse, BatchError> {
        let report = self.process(event).await;
        for set in report.metrics() {
            set.emit();
        }
        report.response()
    }

    /// Handles a batch and reports what happened to each record.
    pub async fn process(&self, event: SqsEvent) -> BatchReport {
        let started = Instant::now();
        let records: Vec<Record> = event
            .records
            .into_iter()
            .enumerate()
            .map(|(i, m)| Record::new(i, m))
            .collect();
        let described: Vec<(Option<String>, &'static str)> = records
            .iter()
            .map(|r| (r.message_id.clone(), r.event_type()))
            .collect();

        let (done, mut finished) = mpsc::unbounded_channel::<Finished>();
        let permits = Arc::new(Semaphore::new(self.inner.concurrency));
        let mut tasks = JoinSet::new();
        for group in groups(records) {
            // The semaphore is never closed, so a permit always comes.
            let permit = permits.clone().acquire_owned().await.ok();
            let inner = self.inner.clone();
            let done = done.clone();
            tasks.spawn(async move {
                let _permit = permit;
                inner.run_group(group, done).await;
            });
        }
        drop(done);
        while let Some(joined) = tasks.join_next().await {
            if let Err(e) = joined {
                // The payload is not logged: it could say anything.
                tracing::error!(
                    panicked = e.is_panic(),
                    "an order's task failed; its unfinished records are left for retry"
                );
            }
        }

        let mut outcomes: Vec<Option<Finished>> = described.iter().map(|_| None).collect();
        while let Ok(f) = finished.try_recv() {
            let index = f.index;
            outcomes[index] = Some(f);
        }
        let records = described
            .into_iter()
            .zip(outcomes)
            .enumerate()
            .map(|(index, ((message_id, event_type), f))| {
                let f = f.unwrap_or_else(|| {
                    Finished::new(
                        index,
                        RecordOutcome::Retry {
                            reason: RetryReason::Panicked,
                        },
                    )
                });
                RecordReport {
                    message_id,
                    event_type,
                    outcome: f.outcome,
                    contention_retries: f.contention_retries,
                    notify_failed: f.notify_failed,
                }
            })
            .collect();
        BatchReport {
            records,
            elapsed: started.elapsed(),
        }
    }
}

impl Inner {
    async fn run_group(&self, group: Group, done: mpsc::UnboundedSender<Finished>) {
        let mut held_back = false;
        for record in &group.records {
            let f = if held_back {
                let outcome = RecordOutcome::Retry {
                    reason: RetryReason::HeldBack,
                };
                log(record, &outcome, 0);
                Finished::new(record.index, outcome)
            } else {
                self.run_record(record).await
            };
            if group.fifo && matches!(f.outcome, RecordOutcome::Retry { .. }) {
                // Acknowledging a later record of the group would let it overtake this one.
                held_back = true;
            }
            // The receiver lives until every task has ended.
            let _ = done.send(f);
        }
    }

    async fn run_record(&self, record: &Record) -> Finished {
        let f = match &record.event {
            Err(e) => {
                let rejection = Rejection {
                    reason: e.reason(),
                    detail: e.to_string(),
                };
                Finished::new(record.index, self.reject(record, rejection).await)
            }
            Ok(event) => self.apply(record, event).await,
        };
        log(record, &f.outcome, f.contention_retries);
        f
    }

    async fn apply(&self, record: &Record, event: &OrderEvent) -> Finished {
        let Some(update) = event.update() else {
            return Finished::new(record.index, RecordOutcome::UnknownType);
        };
        match self.assigner.apply(&update, domain::now()).await {
            Ok(Outcome::Applied { session, attempts }) => {
                let mut notify_failed = false;
                if matches!(update.change, OrderChange::Participants(_)) && self.outbox.notifies() {
                    let note = NumbersAssigned::new(event.event_id.as_str(), &session);
                    let source = record
                        .message_id
                        .as_deref()
                        .unwrap_or(event.event_id.as_str());
                    if let Err(e) = self.outbox.notify(&note, source).await {
                        tracing::warn!(order_id = %event.order_id, version = event.version, error = %e, "NumbersAssigned not sent");
                        notify_failed = true;
                    }
                }
                Finished {
                    index: record.index,
                    outcome: RecordOutcome::Applied { attempts },
                    contention_retries: attempts.saturating_sub(1),
                    notify_failed,
                }
            }
            Ok(Outcome::Stale { stored_version }) => {
                Finished::new(record.index, RecordOutcome::Stale { stored_version })
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(order_id = %event.order_id, version = event.version, error = %e, "transient failure");
                let (reason, contention_retries) = match &e {
                    AssignError::PoolExhausted(_) => (RetryReason::PoolExhausted, 0),
                    AssignError::Contention { attempts } => {
                        (RetryReason::Contention, attempts.saturating_sub(1))
                    }
                    _ => (RetryReason::StoreUnavailable, 0),
                };
                Finished {
                    contention_retries,
                    ..Finished::new(record.index, RecordOutcome::Retry { reason })
                }
            }
            Err(e) => {
                let rejection = Rejection {
                    reason: permanent_reason(&e),
                    detail: e.to_string(),
                };
                Finished::new(record.index, self.reject(record, rejection).await)
            }
        }
    }

    /// Sends the record to the dead-letter queue; if that fails, leaves it for retry (never lost).
    async fn reject(&self, record: &Record, rejection: Rejection) -> RecordOutcome {
        let source_message_id = record.message_id.as_deref().unwrap_or_default();
        let order_group = record.event.as_ref().ok().map(|e| e.order_id.as_str());
        let letter = outbox::DeadLetter {
            body: &record.body,
            rejection: &rejection,
            source_message_id,
            source_queue: record.source_queue.as_deref(),
            group: record
                .message_group
                .as_deref()
                .or(order_group)
                .unwrap_or("unparsed"),
        };
        match self.outbox.dead_letter(&letter).await {
            Ok(()) => RecordOutcome::DeadLettered(rejection),
            Err(e) => {
                tracing::error!(message_id = source_message_id, reason = rejection.reason.as_str(), error = %e, "dead-letter queue refused the record");
                RecordOutcome::Retry {
                    reason: RetryReason::DeadLetterUnavailable,
                }
            }
        }
    }
}

fn permanent_reason(e: &AssignError) -> RejectReason {
    match e {
        AssignError::Invalid(e) => participants_reason(e),
        AssignError::UnknownMarket(_) => RejectReason::UnknownMarket,
        _ => RejectReason::StoreRejected,
    }
}

/// One line per record: identifiers and the outcome, never a phone number.
fn log(record: &Record, outcome: &RecordOutcome, contention_retries: u32) {
    let event = record.event.as_ref().ok();
    let order_id = event.map(|e| e.order_id.as_str());
    let version = event.map(|e| e.version);
    let event_id = event.map(|e| e.event_id.as_str());
    let event_type = event.map(|e| e.event_type.as_str());
    let message_id = record.message_id.as_deref();
    match outcome {
        RecordOutcome::DeadLettered(r) => tracing::warn!(
            message_id,
            event_id,
            order_id,
            version,
            event_type,
            outcome = outcome.label(),
            reason = r.reason.as_str(),
            detail = %r.detail,
            "event rejected"
        ),
        RecordOutcome::Retry { reason } => tracing::warn!(
            message_id,
            event_id,
            order_id,
            version,
            event_type,
            outcome = outcome.label(),
            reason = reason.as_str(),
            contention_retries,
            "event left for redelivery"
        ),
        _ => tracing::info!(
            message_id,
            event_id,
            order_id,
            version,
            event_type,
            outcome = outcome.label(),
            contention_retries,
            "event handled"
        ),
    }
}
