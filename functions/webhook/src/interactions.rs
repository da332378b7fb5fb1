//! Interactions: one record per call or message decided — who reached whom by role, in which
//! order, with what outcome — as a log line and, when configured, an SQS event. Never a real number.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use vnmask::domain::{CallId, Channel};
use vnmask::domain::{OrderId, UnixTime, VirtualNumber};
use vnmask::routing::{Decision, Refusal, RouteQuery};

/// The provider that asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Twilio,
    Exotel,
    Generic,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Twilio => "twilio",
            ProviderKind::Exotel => "exotel",
            ProviderKind::Generic => "generic",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Connected,
    Refused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Connected => "connected",
            Outcome::Refused => "refused",
        }
    }
}

/// One decided call or message.
#[derive(Debug, Clone, Serialize)]
pub struct Interaction {
    /// When it was decided, Unix seconds.
    pub at: UnixTime,
    pub provider: ProviderKind,
    pub channel: Channel,
    /// The provider's call or message id.
    pub call_id: CallId,
    /// The virtual number dialled, when it is one.
    pub number: Option<VirtualNumber>,
    pub order_id: Option<OrderId>,
    /// Who called whom, by role: `customer->driver`.
    pub direction: Option<String>,
    pub outcome: Outcome,
    pub reason: Option<Refusal>,
    /// Time from the request's arrival to the decision.
    pub latency_ms: f64,
}

impl Interaction {
    pub fn new(
        provider: ProviderKind,
        query: &RouteQuery,
        decision: &Decision,
        at: UnixTime,
        latency: Duration,
    ) -> Self {
        let (outcome, reason, order_id, direction) = match decision {
            Decision::Connect(route) => (
                Outcome::Connected,
                None,
                Some(route.order_id.clone()),
                Some(format!("{}->{}", route.caller_role, route.callee_role)),
            ),
            Decision::Refuse(reason) => (Outcome::Refused, Some(*reason), None, None),
        };
        Interaction {
            at,
            provider,
            channel: query.channel,
            call_id: query.call_id.clone(),
            number: query.dialled.as_ref().ok().cloned(),
            order_id,
            direction,
            outcome,
            reason,
            latency_ms: latency.as_secs_f64() * 1000.0,
        }
    }

    /// The structured log line.
    pub fn log(&self) {
        tracing::info!(
            provider = self.provider.as_str(),
            channel = self.channel.as_str(),
            call_id = self.call_id.as_str(),
            number = self.number.as_ref().map(VirtualNumber::as_str),
            order_id = self.order_id.as_ref().map(OrderId::as_str),
            direction = self.direction.as_deref(),
            outcome = self.outcome.as_str(),
            reason = self.reason.map(Refusal::as_str),
            latency_ms = self.latency_ms,
            "interaction"
        );
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("the interactions queue did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the interactions queue refused the events: {0}")]
    Send(String),
    #[error("the interaction could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The SQS queue interactions are published to.
#[derive(Debug, Clone)]
pub struct InteractionQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    timeout: Duration,
}

/// How long a flush waits for its invocation's answer: every answer is due within 2 s.
pub const ANSWER_WAIT: Duration = Duration::from_secs(3);

/// SQS takes at most ten messages a batch.
const BATCH: usize = 10;

impl InteractionQueue {
    /// `timeout` bounds each batch sent.
    pub fn new(client: aws_sdk_sqs::Client, queue_url: String, timeout: Duration) -> Self {
        InteractionQueue {
            client,
            queue_url,
            timeout,
        }
    }

    /// Sends the interactions, ten to a batch, and returns those SQS did not take (all of a
    /// batch that failed or timed out; a timed-out batch may yet arrive, so a consumer may see
    /// an interaction twice: `call_id` tells).
    pub async fn publish(&self, interactions: Vec<Interaction>) -> Unsent {
        let mut unsent = Unsent::default();
        let mut batches = interactions.into_iter().peekable();
        while batches.peek().is_some() {
            let batch: Vec<Interaction> = batches.by_ref().take(BATCH).collect();
            match self.send_batch(&batch).await {
                Ok(failed) => unsent
                    .interactions
                    .extend(failed.into_iter().map(|n| batch[n].clone())),
                Err(error) => {
                    unsent.interactions.extend(batch);
                    unsent.error = Some(error);
                }
            }
        }
        unsent
    }

    /// One batch; the positions SQS refused.
    async fn send_batch(&self, batch: &[Interaction]) -> Result<Vec<usize>, QueueError> {
        let entries = batch
            .iter()
            .enumerate()
            .map(|(n, i)| {
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(n.to_string())
                    .message_body(serde_json::to_string(i)?)
                    .build()
                    .map_err(|e| QueueError::Send(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let send = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send();
        match tokio::time::timeout(self.timeout, send).await {
            Ok(Ok(out)) => Ok(out
                .failed
                .iter()
                .filter_map(|f| f.id.parse().ok())
                .filter(|n| *n < batch.len())
                .collect()),
            Ok(Err(e)) => Err(QueueError::Send(
                aws_sdk_sqs::error::DisplayErrorContext(e).to_string(),
            )),
            Err(_) => Err(QueueError::Timeout(self.timeout)),
        }
    }
}

/// What a publish left behind, and the last error that made it so.
#[derive(Debug, Default)]
pub struct Unsent {
    pub interactions: Vec<Interaction>,
    pub error: Option<QueueError>,
}

/// At most this many unsent interactions wait for the next flush; older ones are dropped (their
/// log lines remain).
const MAX_UNSENT: usize = 100;

/// Where the handler leaves each interaction, so that publishing never delays an answer: the
/// provider is answered first, and the [`Drain`] publishes afterwards.
#[derive(Debug, Clone)]
pub struct Outbox {
    interactions: mpsc::UnboundedSender<Interaction>,
    answered: Arc<watch::Sender<VecDeque<String>>>,
}

/// The other end of an [`Outbox`]: publishes what the handler left.
#[derive(Debug)]
pub struct Drain {
    interactions: mpsc::UnboundedReceiver<Interaction>,
    answered: watch::Receiver<VecDeque<String>>,
    queue: InteractionQueue,
    /// What earlier flushes could not send: tried again first.
    unsent: Vec<Interaction>,
}

/// Lambda runs one request at a time per instance: a few recent ids are plenty.
const RECENT_ANSWERS: usize = 16;

impl Outbox {
    pub fn new(queue: InteractionQueue) -> (Outbox, Drain) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (answered, answered_rx) = watch::channel(VecDeque::new());
        (
            Outbox {
                interactions: tx,
                answered: Arc::new(answered),
            },
            Drain {
                interactions: rx,
                answered: answered_rx,
                queue,
                unsent: Vec::new(),
            },
        )
    }

    /// Leaves an interaction to be published; never waits.
    pub fn push(&self, interaction: Interaction) {
        // The drain is gone only when the process is stopping: the log line remains.
        let _ = self.interactions.send(interaction);
    }

    /// The invocation `request_id` is answered (whatever the answer): everything it left is in
    /// the outbox.
    pub fn answered(&self, request_id: &str) {
        self.answered.send_modify(|ids| {
            if ids.len() == RECENT_ANSWERS {
                ids.pop_front();
            }
            ids.push_back(request_id.to_owned());
        });
    }
}

impl Drain {
    /// Lambda's way: an internal extension calls this on each INVOKE event. Lambda sends the
    /// answer back as soon as the handler returns, and freezes the environment only after
    /// every extension has asked for its next event: so this waits until the invocation
    /// `request_id` is answered (at most `wait`: a request that never reached the router
    /// leaves no mark), then publishes everything left so far, its own interactions and any
    /// earlier ones. Nothing is left behind when the environment is frozen or shut down.
    pub async fn flush_invocation(&mut self, request_id: &str, wait: Duration) -> usize {
        let answered = self
            .answered
            .wait_for(|ids| ids.iter().any(|id| id == request_id));
        // Timed out or the outbox is gone: publish what there is.
        let answered = tokio::time::timeout(wait, answered)
            .await
            .is_ok_and(|r| r.is_ok());
        let mut pending = std::mem::take(&mut self.unsent);
        while let Ok(interaction) = self.interactions.try_recv() {
            pending.push(interaction);
        }
        tracing::debug!(
            request_id,
            answered,
            interactions = pending.len(),
            "flushing the invocation's interactions"
        );
        let count = pending.len();
        self.publish(pending).await;
        count
    }

    /// Outside Lambda (`cargo lambda watch`, tests) nothing is frozen: publishes as interactions
    /// arrive, whatever is waiting in one batch, until every [`Outbox`] is dropped.
    pub async fn run(mut self) {
        while let Some(first) = self.interactions.recv().await {
            let mut pending = std::mem::take(&mut self.unsent);
            pending.push(first);
            while let Ok(next) = self.interactions.try_recv() {
                pending.push(next);
            }
            self.publish(pending).await;
        }
    }

    /// Publishes `pending`; what SQS did not take waits for the next flush, the newest
    /// [`MAX_UNSENT`] of it.
    async fn publish(&mut self, pending: Vec<Interaction>) {
        if pending.is_empty() {
            return;
        }
        let Unsent {
            mut interactions,
            error,
        } = self.queue.publish(pending).await;
        if interactions.is_empty() {
            return;
        }
        let dropped = interactions.len().saturating_sub(MAX_UNSENT);
        interactions.drain(..dropped);
        // Every interaction is also a log line: the stream may miss one, the record does not.
        tracing::warn!(
            kept = interactions.len(),
            dropped,
            error = error.map(|e| e.to_string()),
            "interactions not published; kept for the next flush"
        );
        self.unsent = interactions;
    }
}
