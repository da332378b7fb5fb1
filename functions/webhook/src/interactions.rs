//! Interactions: one record per call or message decided — who reached whom by role, in which
//! order, with what outcome — as a log line and, when configured, an SQS event. Never a real number.

use std::time::Duration;

use serde::Serialize;
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
    #[error("the interactions queue refused the event: {0}")]
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

impl InteractionQueue {
    /// `timeout` bounds how long one send may delay a provider's answer.
    pub fn new(client: aws_sdk_sqs::Client, queue_url: String, timeout: Duration) -> Self {
        InteractionQueue {
            client,
            queue_url,
            timeout,
        }
    }

    pub async fn send(&self, interaction: &Interaction) -> Result<(), QueueError> {
        let body = serde_json::to_string(interaction)?;
        let send = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send();
        match tokio::time::timeout(self.timeout, send).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(QueueError::Send(
                aws_sdk_sqs::error::DisplayErrorContext(e).to_string(),
            )),
            Err(_) => Err(QueueError::Timeout(self.timeout)),
        }
    }
}
