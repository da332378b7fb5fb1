//! Interactions: one record per call or message decided — who reached whom by role, in which
//! order, with what outcome — one per connected call's end and one per recording a provider
//! reports, each a log line and, when configured, an event on an SQS queue. Never a real number.

use std::time::Duration;

use serde::Serialize;
use vnmask::domain::{
    CallEnd, CallId, Channel, ConnectedCall, DialStatus, Market, OrderId, Recording,
    RecordingReady, UnixTime, VirtualNumber,
};
use vnmask::routing::{Decision, Refusal, RouteQuery};

/// The provider that asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Twilio,
    Exotel,
    Generic,
    Plivo,
    Vonage,
    Telnyx,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Twilio => "twilio",
            ProviderKind::Exotel => "exotel",
            ProviderKind::Generic => "generic",
            ProviderKind::Plivo => "plivo",
            ProviderKind::Vonage => "vonage",
            ProviderKind::Telnyx => "telnyx",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Connected,
    /// The caller, without a route, was asked for a PIN.
    #[serde(rename = "asked_pin")]
    AskedPin,
    Refused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Connected => "connected",
            Outcome::AskedPin => "asked_pin",
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
            Decision::AskPin { .. } => (Outcome::AskedPin, None, None, None),
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

/// What a provider's report on a connected call is about: when it came, from whom, and what
/// the call joined (by role, and the virtual number only).
#[derive(Debug, Clone, Serialize)]
pub struct ReportedCall {
    /// When the report came, Unix seconds.
    pub at: UnixTime,
    pub provider: ProviderKind,
    pub call_id: CallId,
    pub number: VirtualNumber,
    pub market: Market,
    pub order_id: OrderId,
    /// Who called whom, by role: `customer->driver`.
    pub direction: String,
}

impl ReportedCall {
    pub fn new(
        provider: ProviderKind,
        call_id: CallId,
        call: &ConnectedCall,
        at: UnixTime,
    ) -> Self {
        ReportedCall {
            at,
            provider,
            call_id,
            number: call.number.clone(),
            market: call.market.clone(),
            order_id: call.order_id.clone(),
            direction: call.direction(),
        }
    }
}

/// How a connected call ended: the provider's report, read against what the call joined.
#[derive(Debug, Clone, Serialize)]
pub struct CallOutcome {
    #[serde(flatten)]
    pub call: ReportedCall,
    pub status: DialStatus,
    /// Seconds the two talked; 0 unless answered.
    pub talk_seconds: u32,
    /// Where the recording is, when the provider said so in this report (Exotel).
    #[serde(flatten)]
    pub recording: Option<Recording>,
}

impl CallOutcome {
    pub fn new(provider: ProviderKind, end: &CallEnd, call: &ConnectedCall, at: UnixTime) -> Self {
        CallOutcome {
            call: ReportedCall::new(provider, end.call_id.clone(), call, at),
            status: end.status,
            talk_seconds: end.talk_seconds,
            recording: end.recording.clone(),
        }
    }

    /// The structured log line.
    pub fn log(&self) {
        let c = &self.call;
        tracing::info!(
            provider = c.provider.as_str(),
            call_id = c.call_id.as_str(),
            number = c.number.as_str(),
            market = c.market.as_str(),
            order_id = c.order_id.as_str(),
            direction = c.direction.as_str(),
            status = self.status.as_str(),
            talk_seconds = self.talk_seconds,
            recorded = self.recording.is_some(),
            "call outcome"
        );
    }
}

/// Where a connected call's recording is, as its provider reported once it was ready, read
/// against what the call joined.
#[derive(Debug, Clone, Serialize)]
pub struct RecordingEvent {
    #[serde(flatten)]
    pub call: ReportedCall,
    #[serde(flatten)]
    pub recording: Recording,
}

impl RecordingEvent {
    pub fn new(
        provider: ProviderKind,
        report: RecordingReady,
        call: &ConnectedCall,
        at: UnixTime,
    ) -> Self {
        RecordingEvent {
            call: ReportedCall::new(provider, report.call_id, call, at),
            recording: report.recording,
        }
    }

    /// The structured log line: the recording's id, never its URL (which may fetch the audio).
    pub fn log(&self) {
        let c = &self.call;
        tracing::info!(
            provider = c.provider.as_str(),
            call_id = c.call_id.as_str(),
            number = c.number.as_str(),
            market = c.market.as_str(),
            order_id = c.order_id.as_str(),
            direction = c.direction.as_str(),
            recording_id = self.recording.recording_id.as_deref(),
            recording_seconds = self.recording.recording_seconds,
            "call recording"
        );
    }
}

/// What the interactions stream carries, told apart by `kind`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StreamEvent {
    /// A call or message decided (connected or refused).
    Decision(Interaction),
    /// How a connected call ended.
    Outcome(CallOutcome),
    /// Where a recorded call's recording is.
    Recording(RecordingEvent),
}

impl StreamEvent {
    pub fn call_id(&self) -> &CallId {
        match self {
            StreamEvent::Decision(i) => &i.call_id,
            StreamEvent::Outcome(o) => &o.call.call_id,
            StreamEvent::Recording(r) => &r.call.call_id,
        }
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

    /// Sends the events, ten to a batch, and returns those SQS did not take (all of a
    /// batch that failed or timed out; a timed-out batch may yet arrive, so a consumer may see
    /// an interaction twice: `call_id` tells).
    pub async fn publish(&self, events: Vec<StreamEvent>) -> Unsent {
        let mut unsent = Unsent::default();
        let mut batches = events.into_iter().peekable();
        while batches.peek().is_some() {
            let batch: Vec<StreamEvent> = batches.by_ref().take(BATCH).collect();
            match self.send_batch(&batch).await {
                Ok(failed) => unsent
                    .events
                    .extend(failed.into_iter().map(|n| batch[n].clone())),
                Err(error) => {
                    unsent.events.extend(batch);
                    unsent.error = Some(error);
                }
            }
        }
        unsent
    }

    /// One batch; the positions SQS refused.
    async fn send_batch(&self, batch: &[StreamEvent]) -> Result<Vec<usize>, QueueError> {
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
    pub events: Vec<StreamEvent>,
    pub error: Option<QueueError>,
}
