//! Number health on DynamoDB Local: numbers leave service (released at the provider, low answer
//! rate), their live pairs move to healthy numbers whole (both directions in one transaction,
//! the pair invariant audited at every step), the old pairs keep connecting for the handover
//! and no longer after it, and a cooling-off number serves no new pair until its period ends.

use crate::common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use pool_refresh::notify::{Notify, NotifyError, SqsNotify};
use pool_refresh::{covered_days, Mover, RefreshSettings, Refresher, MOVE_EVENT_ID};
use vnmask::assignment::{AssignSettings, Assigner, OrderChange, OrderUpdate, Outcome};
use vnmask::domain::now;
use vnmask::domain::{
    CallId, HoldReason, NumberState, Participant, PoolNumber, Session, UnixTime, VirtualNumber,
};
use vnmask::notification::NumbersAssigned;
use vnmask::pool::{capacity_bound, CallCapacity, CallLoad};
use vnmask::routing::live_route;
use vnmask::store::{audit, AnswerStats, Store};
use vnmask_tests::{local_dynamo, local_sdk, participant, LocalDynamo};
use wiremock::MockServer;

const HANDOVER: i64 = 600;

/// The `NumbersAssigned` a refresher sent.
#[derive(Default)]
struct Sent(Mutex<Vec<NumbersAssigned>>);

#[async_trait::async_trait]
impl Notify for Sent {
    async fn notify(&self, note: &NumbersAssigned) -> Result<(), NotifyError> {
        self.0.lock().unwrap().push(note.clone());
        Ok(())
    }
}

fn assign_settings() -> AssignSettings {
    AssignSettings {
        handover: Duration::from_secs(HANDOVER as u64),
        pool_cache: Duration::ZERO,
        ..AssignSettings::for_markets([market("US")])
    }
}

fn twilio_pool(count: usize) -> Vec<PoolNumber> {
    vnmask_tests::pool("US", count)
        .into_iter()
        .map(|n| PoolNumber {
            provider: "twilio".parse().unwrap(),
            ..n
        })
        .collect()
}

struct World {
    dynamo: LocalDynamo,
    assigner: Arc<Assigner>,
    numbers: Vec<PoolNumber>,
}

impl World {
    /// Twilio lists every number of the pool in service, but `gone` (released there).
    async fn listed_by_twilio(&self, server: &MockServer, gone: Option<&VirtualNumber>) {
        let listed: Vec<(&str, bool, bool)> = self
            .numbers
            .iter()
            .filter(|n| Some(&n.number) != gone)
            .map(|n| (n.number.as_str(), true, true))
            .collect();
        twilio_lists(server, &listed).await;
    }

    async fn new(count: usize) -> World {
        let dynamo = local_dynamo().await;
        let numbers = twilio_pool(count);
        vnmask_tests::seed_pool(dynamo.store.as_ref(), &numbers).await;
        let assigner = Arc::new(Assigner::new(dynamo.store.clone(), assign_settings()));
        World {
            dynamo,
            assigner,
            numbers,
        }
    }

    fn store(&self) -> &dyn Store {
        self.dynamo.store.as_ref()
    }

    /// A refresher on this store asking `server` (Twilio), moving with its own assigner.
    fn refresher(
        &self,
        server: &MockServer,
        settings: RefreshSettings,
        sent: Arc<Sent>,
    ) -> Refresher {
        Refresher::new(
            self.dynamo.store.clone(),
            vec![twilio(server)],
            None,
            settings,
        )
        .with_mover(Mover {
            assigner: Assigner::new(self.dynamo.store.clone(), assign_settings()),
            notify: Some(sent),
        })
    }

    /// Order `i`: customer `c{i}` and driver `d{i}`, version 1.
    async fn order(&self, i: usize, t: UnixTime) -> Session {
        let people = people(i);
        let update = OrderUpdate {
            order_id: format!("o{i}").parse().unwrap(),
            market: market("US"),
            version: 1,
            change: OrderChange::Participants(people),
            record: false,
        };
        match self.assigner.apply(&update, t).await.unwrap() {
            Outcome::Applied { session, .. } => session,
            other => panic!("{other:?}"),
        }
    }

    async fn session(&self, i: usize) -> Session {
        self.store()
            .session(&format!("o{i}").parse().unwrap())
            .await
            .unwrap()
            .unwrap()
    }

    async fn clean_at(&self, at: UnixTime) {
        assert_eq!(
            audit(self.store(), at).await.unwrap(),
            vec![],
            "audit at {at}"
        );
    }

    /// Whether the customer of order `i` reaches its driver dialling `number` at `at`, and the
    /// driver them back.
    async fn connects(&self, i: usize, number: &VirtualNumber, at: UnixTime) -> bool {
        let [c, d] = people(i).try_into().unwrap();
        let there = live_route(self.store(), &c.phone, number, at)
            .await
            .unwrap();
        let back = live_route(self.store(), &d.phone, number, at)
            .await
            .unwrap();
        match (there, back) {
            (Some(there), Some(back)) => {
                assert_eq!((&there.callee, &back.callee), (&d.phone, &c.phone));
                true
            }
            (None, None) => false,
            halves => panic!("a half pair: {halves:?}"),
        }
    }
}

fn people(i: usize) -> Vec<Participant> {
    vec![
        participant(
            "customer",
            &format!("c{i}"),
            &format!("+1415777{:04}", 1000 + i),
        ),
        participant(
            "driver",
            &format!("d{i}"),
            &format!("+1415888{:04}", 1000 + i),
        ),
    ]
}

fn number_of(session: &Session) -> VirtualNumber {
    assert_eq!(session.contacts.len(), 1);
    session.contacts[0].number.clone()
}

async fn state_of(store: &dyn Store, number: &VirtualNumber) -> PoolNumber {
    store
        .pool_entries(&market("US"))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.number)
        .find(|n| &n.number == number)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_released_at_the_provider_has_its_pairs_moved_and_handed_over() {
    // GIVEN four Twilio numbers and eight live orders, some of them on number N
    let w = World::new(4).await;
    let t = now();
    let mut sessions = Vec::new();
    for i in 0..8 {
        sessions.push(w.order(i, t).await);
    }
    let gone = number_of(&sessions[0]);
    let on_gone: Vec<usize> = (0..8)
        .filter(|&i| number_of(&sessions[i]) == gone)
        .collect();
    assert!(!on_gone.is_empty());
    // WHEN Twilio no longer lists N and pool refresh runs
    let server = MockServer::start().await;
    w.listed_by_twilio(&server, Some(&gone)).await;
    let sent = Arc::new(Sent::default());
    let at = t + 60;
    let summary = w
        .refresher(&server, settings(&["US"]), sent.clone())
        .refresh(at)
        .await;

    // THEN N is retired, every pair on it moved (one transaction each) and nothing waits
    let m = &summary.markets[0];
    assert_eq!((m.retired, m.error.is_none()), (1, true), "{m:?}");
    assert_eq!(
        (m.pairs_moved, m.orders_moved),
        (on_gone.len(), on_gone.len())
    );
    assert_eq!((m.orders_waiting, m.moves_failed), (0, 0));
    let retired = state_of(w.store(), &gone).await;
    assert_eq!(retired.state, NumberState::Retired);
    assert_eq!(retired.hold.unwrap().reason, HoldReason::ProviderGone);
    w.clean_at(at).await;
    let notes = sent.0.lock().unwrap().clone();
    assert_eq!(notes.len(), on_gone.len());
    for &i in &on_gone {
        // lookup shows the session's contacts: the new number, same version, next revision
        let moved = w.session(i).await;
        let new = number_of(&moved);
        assert_ne!(new, gone);
        assert_eq!((moved.version, moved.revision), (1, 2));
        let note = notes
            .iter()
            .find(|n| n.order_id == moved.order_id)
            .expect("NumbersAssigned for each moved order");
        assert_eq!((note.event_id.as_str(), note.revision), (MOVE_EVENT_ID, 2));
        assert!(note
            .participants
            .iter()
            .all(|p| p.contacts.iter().all(|c| c.number == new)));
        // calls on the new number connect; on the old one through the handover, not after
        assert!(w.connects(i, &new, at).await);
        assert!(
            w.connects(i, &gone, at + HANDOVER - 1).await,
            "order {i} in handover"
        );
        assert!(
            !w.connects(i, &gone, at + HANDOVER).await,
            "order {i} after handover"
        );
        assert!(w.connects(i, &new, at + HANDOVER).await);
    }
    // Orders on other numbers were left alone.
    for i in (0..8).filter(|i| !on_gone.contains(i)) {
        assert_eq!(w.session(i).await.revision, 1);
    }
    w.clean_at(at + HANDOVER - 1).await;
    w.clean_at(at + HANDOVER).await;

    // AND a second run finds nothing more to move
    let again = w
        .refresher(&server, settings(&["US"]), sent.clone())
        .refresh(at + 120)
        .await;
    assert_eq!(again.markets[0].pairs_moved, 0);
    assert_eq!(sent.0.lock().unwrap().len(), on_gone.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_answered_far_less_than_its_market_is_quarantined_only_with_enough_calls() {
    // GIVEN eight numbers with live orders, all listed by Twilio
    let w = World::new(8).await;
    let t = now();
    let mut sessions = Vec::new();
    for i in 0..12 {
        sessions.push(w.order(i, t).await);
    }
    let bad = number_of(&sessions[0]);
    let server = MockServer::start().await;
    w.listed_by_twilio(&server, None).await;
    // Recorded outcomes: the others answer 8 in 10 of 100 calls each
    let keep = t + 86_400;
    let mut call = 0;
    let mut record = |number: &VirtualNumber, calls: usize, answered: usize| {
        let store = w.dynamo.store.clone();
        let number = number.clone();
        let first = call;
        call += calls;
        async move {
            for k in 0..calls {
                let id = CallId::parse(&format!("CA{:032}", first + k)).unwrap();
                store
                    .count_answer(&number, &id, k < answered, t, keep)
                    .await
                    .unwrap();
            }
        }
    };
    for n in w.numbers.iter().filter(|n| n.number != bad) {
        record(&n.number, 100, 80).await;
    }
    // WHEN the bad number's 20 calls were answered twice: too few calls to judge
    record(&bad, 20, 2).await;
    let sent = Arc::new(Sent::default());
    let summary = w
        .refresher(&server, settings(&["US"]), sent.clone())
        .refresh(t + 60)
        .await;
    // THEN nothing is quarantined
    assert_eq!(summary.markets[0].quarantined, 0);
    assert_eq!(state_of(w.store(), &bad).await.state, NumberState::Active);

    // WHEN 40 more calls go unanswered (60 calls, 17 % answered against the market's 77 %)
    record(&bad, 40, 0).await;
    let summary = w
        .refresher(&server, settings(&["US"]), sent.clone())
        .refresh(t + 120)
        .await;
    // THEN it is quarantined and its pairs moved, the others untouched
    let m = &summary.markets[0];
    assert_eq!((m.quarantined, m.numbers_quarantined), (1, 1), "{m:?}");
    assert!(m.answer_rate.unwrap() > 0.7);
    let held = state_of(w.store(), &bad).await;
    assert_eq!(held.state, NumberState::Quarantined);
    assert_eq!(held.hold.unwrap().reason, HoldReason::LowAnswerRate);
    let on_bad: Vec<usize> = (0..12)
        .filter(|&i| number_of(&sessions[i]) == bad)
        .collect();
    assert_eq!(m.pairs_moved, on_bad.len());
    for &i in &on_bad {
        assert_ne!(number_of(&w.session(i).await), bad);
    }
    w.clean_at(t + 120).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooling_off_number_serves_no_new_pair_until_its_period_ends() {
    // GIVEN two numbers, one of them (N) cooling off until t + 300
    let w = World::new(2).await;
    let t = now();
    let cooling = w.numbers[1].clone();
    let released = vnmask::pool::release(
        &vnmask::pool::quarantined(&cooling, HoldReason::Operator, None, t - 10),
        300,
        false,
        t,
    )
    .unwrap();
    w.store().put_number(&released).await.unwrap();
    // WHEN one customer places two orders before the end: the second has no number left
    w.order(0, t).await;
    let second = OrderUpdate {
        order_id: "o-second".parse().unwrap(),
        market: market("US"),
        version: 1,
        change: OrderChange::Participants(vec![
            people(0).remove(0),
            participant("driver", "d-other", "+14158889999"),
        ]),
        record: false,
    };
    let refused = w.assigner.apply(&second, t + 10).await;
    // THEN the policy refuses rather than use N
    assert!(
        matches!(
            refused,
            Err(vnmask::assignment::AssignError::PoolExhausted(_))
        ),
        "{refused:?}"
    );
    // WHEN the period ends and pool refresh runs
    let server = MockServer::start().await;
    w.listed_by_twilio(&server, None).await;
    let summary = w
        .refresher(&server, settings(&["US"]), Arc::new(Sent::default()))
        .refresh(t + 300)
        .await;
    assert_eq!(summary.markets[0].reactivated, 1);
    let active = state_of(w.store(), &cooling.number).await;
    assert_eq!((active.state, active.hold), (NumberState::Active, None));
    // THEN the second order gets N
    match w.assigner.apply(&second, t + 301).await.unwrap() {
        Outcome::Applied { session, .. } => assert_eq!(number_of(&session), cooling.number),
        other => panic!("{other:?}"),
    }
    w.clean_at(t + 301).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_beyond_a_runs_budget_wait_for_the_next_run() {
    // GIVEN twelve orders on three numbers, one of which an operator quarantines
    let w = World::new(3).await;
    let t = now();
    let mut sessions = Vec::new();
    for i in 0..12 {
        sessions.push(w.order(i, t).await);
    }
    let bad = number_of(&sessions[0]);
    let on_bad = sessions.iter().filter(|s| number_of(s) == bad).count();
    assert!(on_bad >= 2, "the spread put {on_bad} orders on one number");
    let held = vnmask::pool::quarantine_by_operator(
        &state_of(w.store(), &bad).await,
        Some("carrier spam label".parse().unwrap()),
        t,
    )
    .unwrap();
    w.store().put_number(&held).await.unwrap();
    let server = MockServer::start().await;
    w.listed_by_twilio(&server, None).await;
    // WHEN a run may move one order only
    let budget = RefreshSettings {
        moves_per_run: 1,
        ..settings(&["US"])
    };
    let sent = Arc::new(Sent::default());
    let first = w
        .refresher(&server, budget.clone(), sent.clone())
        .refresh(t + 60)
        .await;
    // THEN it moves one and says how many wait; runs go on until none is left
    assert_eq!(first.markets[0].orders_moved, 1);
    assert_eq!(first.markets[0].orders_waiting, on_bad - 1);
    w.clean_at(t + 60).await;
    let mut at = t + 60;
    for _ in 1..on_bad {
        at += 60;
        let run = w
            .refresher(&server, budget.clone(), sent.clone())
            .refresh(at)
            .await;
        assert_eq!(run.markets[0].orders_moved, 1, "{:?}", run.markets[0]);
        w.clean_at(at).await;
    }
    for i in 0..12 {
        assert_ne!(number_of(&w.session(i).await), bad);
    }
    let last = w.refresher(&server, budget, sent).refresh(at + 60).await;
    assert_eq!(
        (last.markets[0].orders_moved, last.markets[0].orders_waiting),
        (0, 0)
    );
    // An operator's quarantine stays until released.
    assert_eq!(
        state_of(w.store(), &bad).await.state,
        NumberState::Quarantined
    );
}

#[tokio::test]
async fn a_moves_notification_reaches_the_queue() {
    let sdk = local_sdk().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let url = sqs
        .create_queue()
        .queue_name(format!("moves-{}", std::process::id()))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let w = World::new(2).await;
    let session = w.order(0, now()).await;
    let note = NumbersAssigned::new(MOVE_EVENT_ID, &session);
    SqsNotify::new(sqs.clone(), &url)
        .notify(&note)
        .await
        .unwrap();
    let got = sqs
        .receive_message()
        .queue_url(&url)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(got.messages()[0].body().unwrap()).unwrap();
    assert_eq!(body, serde_json::to_value(&note).unwrap());
    assert_eq!(body["revision"], 1);
    let phones: HashSet<String> = people(0)
        .iter()
        .map(|p| p.phone.expose().to_owned())
        .collect();
    let text = body.to_string();
    assert!(phones.iter().all(|p| !text.contains(p.as_str())));
}

/// Capacity (issue 23): the headroom counts the numbers the market's calls need as well as the
/// person bound. Four numbers serve two people's orders easily, but 480 calls a day on numbers
/// that may carry one call at once and ten an hour need more: the market is short by the
/// capacity bound (calls per day over the days the tallies cover: yesterday and today so far),
/// and a market without a configured capacity is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_headroom_counts_what_the_markets_calls_need() {
    let w = World::new(4).await;
    let t = now();
    w.order(0, t).await;
    let server = MockServer::start().await;
    w.listed_by_twilio(&server, None).await;
    let keep = t + 86_400;
    for (i, n) in w.numbers.iter().enumerate() {
        for k in 0..120 {
            let id = CallId::parse(&format!("CA{:032}", i * 1000 + k)).unwrap();
            w.dynamo
                .store
                .count_answer(&n.number, &id, true, t, keep)
                .await
                .unwrap();
        }
    }
    let mut sized = settings(&["US"]);
    // Two days, so that a run just past midnight still reads the calls recorded before it.
    sized.health.answer_days = 2;
    sized.capacity.per_market.insert(
        market("US"),
        CallCapacity {
            concurrent: 1,
            per_hour: 10,
        },
    );
    let expected = capacity_bound(
        &CallLoad {
            calls_per_day: 480.0 / covered_days(2, t + 60),
            peak_hour_share: sized.capacity.peak_hour_share,
            mean_call_seconds: sized.capacity.mean_call_seconds,
        },
        CallCapacity {
            concurrent: 1,
            per_hour: 10,
        },
    );
    assert!(expected > 4, "{expected}");
    let sent = Arc::new(Sent::default());
    let summary = w
        .refresher(&server, sized, sent.clone())
        .refresh(t + 60)
        .await;
    let m = &summary.markets[0];
    assert_eq!(m.capacity_bound, expected, "{m:?}");
    assert_eq!(m.headroom, 4 - i64::from(expected));
    assert_eq!(m.needed, expected - 4);
    // Without a capacity for the market, the person bound alone: no shortfall.
    let mut uncapped = settings(&["US"]);
    uncapped.health.answer_days = 2;
    let m = &w
        .refresher(&server, uncapped, sent)
        .refresh(t + 120)
        .await
        .markets[0];
    assert_eq!((m.capacity_bound, m.needed), (0, 0), "{m:?}");
    assert!(m.headroom >= 0);
}
