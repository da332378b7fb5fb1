//! What the webhook does after the provider has its answer: publish the interactions stream
//! and note on the call ledger what each connected call joined. The handler leaves the work in
//! an [`Outbox`] and never waits on it; the [`Drain`] does it afterwards.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use vnmask::domain::{CallId, ConnectedCall, Route, UnixTime, VirtualNumber};
use vnmask::store::{CallRouting, Sighting, StoreError, MAX_TALLY_DAYS};

use crate::interactions::{InteractionQueue, StreamEvent, Unsent};
use crate::relay::{RelayError, TextRelay, RELAY_TIMEOUT};

/// How long a flush waits for its invocation's answer: every answer is due within 2 s.
pub const ANSWER_WAIT: Duration = Duration::from_secs(3);

/// How long noting one connected call, or counting its end, may take.
const REMEMBER_TIMEOUT: Duration = Duration::from_secs(2);

/// At most this many unsent events wait for the next flush; older ones are dropped (their log
/// lines remain).
const MAX_UNSENT: usize = 100;

/// Lambda runs one request at a time per instance: a few recent ids are plenty.
const RECENT_ANSWERS: usize = 16;

/// One piece of after-the-answer work.
enum Work {
    Publish(StreamEvent),
    /// Note on `endpoint`'s ledger entry what the call joined.
    Remember {
        ledger: Arc<dyn CallRouting>,
        endpoint: &'static str,
        call: ConnectedCall,
    },
    /// Send a text over a route, through the provider's API, once per message: its id is
    /// sighted on `ledger` first, so that a provider's retry (answered again) sends nothing.
    Relay {
        relay: Arc<dyn TextRelay>,
        ledger: Arc<dyn CallRouting>,
        message_id: CallId,
        keep_until: UnixTime,
        route: Box<Route>,
        text: String,
    },
    /// Count a connected call's end on its number's answer tally.
    CountAnswer {
        stats: Arc<dyn CallRouting>,
        number: VirtualNumber,
        call_id: CallId,
        answered: bool,
        at: UnixTime,
    },
}

/// How long a day's answer tally is kept: longer than the most days read at once.
const KEEP_TALLY: UnixTime = (MAX_TALLY_DAYS as UnixTime + 2) * 86_400;

/// Where the handler leaves its after-the-answer work.
#[derive(Clone)]
pub struct Outbox {
    work: mpsc::UnboundedSender<Work>,
    answered: Arc<watch::Sender<VecDeque<String>>>,
}

/// The other end of an [`Outbox`]: does what the handler left.
pub struct Drain {
    work: mpsc::UnboundedReceiver<Work>,
    answered: watch::Receiver<VecDeque<String>>,
    /// Where events go; without one they are log lines only.
    queue: Option<InteractionQueue>,
    /// What earlier flushes could not send: tried again first.
    unsent: Vec<StreamEvent>,
}

impl Outbox {
    pub fn new(queue: Option<InteractionQueue>) -> (Outbox, Drain) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (answered, answered_rx) = watch::channel(VecDeque::new());
        (
            Outbox {
                work: tx,
                answered: Arc::new(answered),
            },
            Drain {
                work: rx,
                answered: answered_rx,
                queue,
                unsent: Vec::new(),
            },
        )
    }

    /// Leaves an event to be published; never waits.
    pub fn publish(&self, event: StreamEvent) {
        // The drain is gone only when the process is stopping: the log line remains.
        let _ = self.work.send(Work::Publish(event));
    }

    /// Leaves a connected call to be noted on `endpoint`'s ledger entry; never waits.
    pub fn remember(
        &self,
        ledger: Arc<dyn CallRouting>,
        endpoint: &'static str,
        call: ConnectedCall,
    ) {
        let _ = self.work.send(Work::Remember {
            ledger,
            endpoint,
            call,
        });
    }

    /// Leaves a text to be relayed over `route`, unless message `message_id` was relayed
    /// already (its id is kept on `ledger` until `keep_until`); never waits.
    pub fn relay(
        &self,
        relay: Arc<dyn TextRelay>,
        message: RelayedMessage,
        route: Route,
        text: String,
    ) {
        let _ = self.work.send(Work::Relay {
            relay,
            ledger: message.ledger,
            message_id: message.id,
            keep_until: message.keep_until,
            route: Box::new(route),
            text,
        });
    }

    /// Leaves a connected call's end to be counted on its number's answer tally; never waits.
    pub fn count_answer(
        &self,
        stats: Arc<dyn CallRouting>,
        number: VirtualNumber,
        call_id: CallId,
        answered: bool,
        at: UnixTime,
    ) {
        let _ = self.work.send(Work::CountAnswer {
            stats,
            number,
            call_id,
            answered,
            at,
        });
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
    /// leaves no mark), then does everything left so far, its own work and any earlier. Nothing
    /// is left behind when the environment is frozen or shut down. Returns how many pieces of
    /// work it found.
    pub async fn flush_invocation(&mut self, request_id: &str, wait: Duration) -> usize {
        let answered = self
            .answered
            .wait_for(|ids| ids.iter().any(|id| id == request_id));
        // Timed out or the outbox is gone: do what there is.
        let answered = tokio::time::timeout(wait, answered)
            .await
            .is_ok_and(|r| r.is_ok());
        let mut pending = Vec::new();
        while let Ok(work) = self.work.try_recv() {
            pending.push(work);
        }
        tracing::debug!(
            request_id,
            answered,
            work = pending.len(),
            "flushing the invocation's work"
        );
        let count = pending.len();
        self.run_work(pending).await;
        count
    }

    /// Outside Lambda (`cargo lambda watch`, tests) nothing is frozen: does the work as it
    /// arrives, whatever is waiting at once, until every [`Outbox`] is dropped.
    pub async fn run(mut self) {
        while let Some(first) = self.work.recv().await {
            let mut pending = vec![first];
            while let Ok(next) = self.work.try_recv() {
                pending.push(next);
            }
            self.run_work(pending).await;
        }
    }

    async fn run_work(&mut self, pending: Vec<Work>) {
        let mut events = std::mem::take(&mut self.unsent);
        for work in pending {
            match work {
                Work::Publish(event) => events.push(event),
                Work::Remember {
                    ledger,
                    endpoint,
                    call,
                } => remember(ledger.as_ref(), endpoint, &call).await,
                Work::Relay {
                    relay,
                    ledger,
                    message_id,
                    keep_until,
                    route,
                    text,
                } => {
                    // The sighting and the send together within the relay's time.
                    let once = relay_once(
                        relay.as_ref(),
                        ledger.as_ref(),
                        &message_id,
                        keep_until,
                        &route,
                        &text,
                    );
                    let failed = match tokio::time::timeout(RELAY_TIMEOUT, once).await {
                        Ok(Ok(Relayed::Sent)) => false,
                        Ok(Ok(Relayed::Already)) => continue,
                        Ok(Err(error)) => {
                            tracing::warn!(order_id = %route.order_id, number = %route.number, %message_id, %error, "text not relayed");
                            true
                        }
                        Err(_) => {
                            tracing::warn!(order_id = %route.order_id, number = %route.number, %message_id, "text not relayed in time");
                            true
                        }
                    };
                    vnmask::telemetry::MetricSet::new("webhook")
                        .count("TextsRelayed", u64::from(!failed))
                        .count("TextsNotRelayed", u64::from(failed))
                        .emit();
                }
                Work::CountAnswer {
                    stats,
                    number,
                    call_id,
                    answered,
                    at,
                } => {
                    let counted =
                        stats.count_answer(&number, &call_id, answered, at, at + KEEP_TALLY);
                    match tokio::time::timeout(REMEMBER_TIMEOUT, counted).await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => {
                            tracing::warn!(%call_id, %error, "answer tally not counted")
                        }
                        Err(_) => tracing::warn!(%call_id, "answer tally not counted in time"),
                    }
                }
            }
        }
        self.publish(events).await;
    }

    /// Publishes `events`; what SQS did not take waits for the next flush, the newest
    /// [`MAX_UNSENT`] of it.
    async fn publish(&mut self, events: Vec<StreamEvent>) {
        let Some(queue) = &self.queue else {
            return;
        };
        if events.is_empty() {
            return;
        }
        let Unsent { mut events, error } = queue.publish(events).await;
        if events.is_empty() {
            return;
        }
        let dropped = events.len().saturating_sub(MAX_UNSENT);
        events.drain(..dropped);
        // Every event is also a log line: the stream may miss one, the record does not.
        tracing::warn!(
            kept = events.len(),
            dropped,
            error = error.map(|e| e.to_string()),
            "interactions not published; kept for the next flush"
        );
        self.unsent = events;
    }
}

/// The ledger entry of the texts relayed: a message's id is sighted there before it is sent.
const RELAYED_TEXTS: &str = "telnyx-sms-relay";

/// Where a relayed message's id is kept, so that it is relayed once.
pub struct RelayedMessage {
    pub ledger: Arc<dyn CallRouting>,
    pub id: CallId,
    pub keep_until: UnixTime,
}

enum Relayed {
    Sent,
    /// A provider's retry of a message relayed (or being relayed) already: at most once.
    Already,
}

#[derive(Debug, thiserror::Error)]
enum RelayFailure {
    #[error(transparent)]
    Relay(#[from] RelayError),
    #[error("the message id could not be recorded: {0}")]
    Ledger(#[from] StoreError),
}

async fn relay_once(
    relay: &dyn TextRelay,
    ledger: &dyn CallRouting,
    message_id: &CallId,
    keep_until: UnixTime,
    route: &Route,
    text: &str,
) -> Result<Relayed, RelayFailure> {
    let sighting = ledger
        .sight(RELAYED_TEXTS, message_id, vnmask::domain::now(), keep_until)
        .await?;
    if sighting != Sighting::First {
        return Ok(Relayed::Already);
    }
    relay.relay(route, text).await?;
    Ok(Relayed::Sent)
}

/// Notes a connected call; a failure costs only that call's outcome, which is then counted as
/// unknown when the provider reports it.
async fn remember(ledger: &dyn CallRouting, endpoint: &str, call: &ConnectedCall) {
    let noted = tokio::time::timeout(REMEMBER_TIMEOUT, ledger.remember_connected(endpoint, call));
    match noted.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(call_id = %call.call_id, %error, "connected call not noted")
        }
        Err(_) => tracing::warn!(call_id = %call.call_id, "connected call not noted in time"),
    }
}
