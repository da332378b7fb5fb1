//! Whole refresh runs against DynamoDB Local (through the real SDK) and wiremock fakes of the
//! providers: reconciliation, provider failures, overlapping runs, headroom and buying. The
//! refresher runs on a store without keys, as in production; tests seed with keys.

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use common::*;
use pool_refresh::inventory::{Inventory, ProviderError, StaticList, Vendor};
use pool_refresh::BuyingStopped;
use vnmask::assignment::{AssignSettings, Assigner, OrderChange, OrderUpdate};
use vnmask::domain::Market;
use vnmask::domain::{Capabilities, NumberState, PoolNumber, VirtualNumber};
use vnmask::store::{
    AssignmentStore, LeaseTake, PoolEntry, PoolStore, PoolUpkeep, PoolWriteError, PurchaseCount,
    PurchaseLedger, RouteReader, SampledRoute, Store, StoreError,
};
use vnmask_tests::people::{customer, driver};
use vnmask_tests::{local_dynamo, now, pool, seed_pool, FaultyStore, LocalDynamo};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const VOICE_ONLY: Capabilities = Capabilities {
    voice: true,
    sms: false,
};

fn vn(number: &str, provider: &str, caps: Capabilities, state: NumberState) -> PoolNumber {
    let number = VirtualNumber::parse(number).unwrap();
    PoolNumber {
        market: number.country().unwrap().clone(),
        number,
        provider: provider.parse().unwrap(),
        capabilities: caps,
        state,
        hold: None,
    }
}

fn twilio_vn(number: &str, state: NumberState) -> PoolNumber {
    vn(number, "twilio", Capabilities::VOICE_AND_SMS, state)
}

#[tokio::test]
async fn reconciliation_adds_retires_and_drains_numbers() {
    // GIVEN a US pool: 1000-1002 active, 1003 drained by operators
    let dynamo = local_dynamo().await;
    seed_pool(
        dynamo.store.as_ref(),
        &[
            twilio_vn("+14155551000", NumberState::Active),
            twilio_vn("+14155551001", NumberState::Active),
            twilio_vn("+14155551002", NumberState::Active),
            twilio_vn("+14155551003", NumberState::Draining),
        ],
    )
    .await;
    // AND Twilio lists 1000, 1001 without SMS now, 1003, and new 1004 and 1005 (1005 marked)
    let server = MockServer::start().await;
    twilio_lists(
        &server,
        &[
            ("+14155551000", true, true),
            ("+14155551001", true, false),
            ("+14155551003", true, true),
            ("+14155551004", true, true),
            ("+14155551005", true, true),
        ],
    )
    .await;
    let mut settings = settings(&["US"]);
    settings
        .drain
        .insert(VirtualNumber::parse("+14155551005").unwrap());
    let refresher = refresher(keyless(&dynamo), vec![twilio(&server)], None, settings);

    // WHEN the pool is refreshed
    let summary = refresher.refresh(now()).await;

    // THEN
    let m = &summary.markets[0];
    assert!(m.error.is_none(), "{:?}", m.error);
    assert_eq!(
        (m.added, m.drained, m.retired, m.updated, m.restored),
        (2, 1, 1, 0, 0)
    );
    let pool = pool_state(dynamo.store.as_ref(), "US").await;
    assert_eq!(state_of(&pool, "+14155551000"), NumberState::Active);
    assert_eq!(pool["+14155551001"].0, NumberState::Draining);
    assert_eq!(
        pool["+14155551001"].1, VOICE_ONLY,
        "keeps what it still can"
    );
    assert_eq!(state_of(&pool, "+14155551002"), NumberState::Retired);
    assert_eq!(state_of(&pool, "+14155551003"), NumberState::Draining);
    assert_eq!(
        pool["+14155551004"],
        (
            NumberState::Active,
            Capabilities::VOICE_AND_SMS,
            "twilio".into(),
            1
        )
    );
    assert_eq!(state_of(&pool, "+14155551005"), NumberState::Draining);
    assert_eq!(
        pool["+14155551000"].3, 1,
        "unchanged numbers are not rewritten"
    );
    assert_eq!(
        (m.numbers_active, m.numbers_draining, m.numbers_retired),
        (2, 3, 1)
    );
    assert_eq!(summary.providers[0].listed, 5);

    // AND a second run finds nothing to do
    let again = refresher.refresh(now()).await;
    let m = &again.markets[0];
    assert_eq!((m.added, m.drained, m.retired, m.updated), (0, 0, 0, 0));
    assert_eq!(pool_state(dynamo.store.as_ref(), "US").await, pool);
}

#[tokio::test]
async fn numbers_pointing_elsewhere_are_never_pooled_and_ours_that_stop_are_retired() {
    // GIVEN a US pool of two Twilio numbers
    let dynamo = local_dynamo().await;
    seed_pool(
        dynamo.store.as_ref(),
        &[
            twilio_vn("+14155551000", NumberState::Active),
            twilio_vn("+14155551001", NumberState::Active),
        ],
    )
    .await;
    // AND an account whose 1001 now points elsewhere, with a support line (1002) and a new
    // number of ours (1003)
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(twilio_path("IncomingPhoneNumbers.json")))
        .respond_with(ResponseTemplate::new(200).set_body_json(twilio_page_at(&[
            ("+14155551000", TWILIO_VOICE_URL),
            ("+14155551001", "https://other-product.example.com/voice"),
            ("+14155551002", "https://support.example.com/ivr"),
            ("+14155551003", TWILIO_VOICE_URL),
        ])))
        .mount(&server)
        .await;
    let refresher = refresher(
        keyless(&dynamo),
        vec![twilio(&server)],
        None,
        settings(&["US"]),
    );

    // WHEN
    let summary = refresher.refresh(now()).await;

    // THEN the support line is not pooled, 1001 is retired like a number no longer listed,
    // and the others are counted, not named
    let pool = pool_state(dynamo.store.as_ref(), "US").await;
    assert!(!pool.contains_key("+14155551002"), "{pool:?}");
    assert_eq!(state_of(&pool, "+14155551000"), NumberState::Active);
    assert_eq!(state_of(&pool, "+14155551001"), NumberState::Retired);
    assert_eq!(state_of(&pool, "+14155551003"), NumberState::Active);
    let p = &summary.providers[0];
    assert_eq!((p.listed, p.foreign), (2, 2));
    let emf = p.metrics().to_json();
    assert_eq!(emf["ProviderForeign"], 2.0);
    assert_eq!(emf["ProviderNumbers"], 2.0);
    let m = &summary.markets[0];
    assert_eq!((m.added, m.retired), (1, 1));
}

#[tokio::test]
async fn an_account_with_none_of_our_numbers_retires_nothing() {
    // GIVEN a US pool of two Twilio numbers
    let dynamo = local_dynamo().await;
    let pooled = [
        twilio_vn("+14155551000", NumberState::Active),
        twilio_vn("+14155551001", NumberState::Active),
    ];
    seed_pool(dynamo.store.as_ref(), &pooled).await;
    let before = pool_state(dynamo.store.as_ref(), "US").await;
    // AND an account whose numbers all point at another URL (a mistyped VNMASK_VOICE_URL)
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(twilio_path("IncomingPhoneNumbers.json")))
        .respond_with(ResponseTemplate::new(200).set_body_json(twilio_page_at(&[
            (
                "+14155551000",
                "https://hooks.example.com/v1/providers/twilio/voice/",
            ),
            (
                "+14155551001",
                "https://hooks.example.com/v1/providers/twilio/voice/",
            ),
        ])))
        .mount(&server)
        .await;
    let refresher = refresher(
        keyless(&dynamo),
        vec![twilio(&server)],
        None,
        settings(&["US"]),
    );

    // WHEN
    let summary = refresher.refresh(now()).await;

    // THEN the pool is as it was, and the foreign numbers are counted
    assert_eq!(pool_state(dynamo.store.as_ref(), "US").await, before);
    assert_eq!(summary.markets[0].retired, 0);
    assert_eq!(summary.providers[0].foreign, 2);
}

#[tokio::test]
async fn a_number_that_stops_pointing_at_us_is_retired_and_its_live_pair_moves_with_a_handover() {
    // GIVEN an Indian pool of two Twilio numbers, one of them serving a live order
    let dynamo = local_dynamo().await;
    let numbers = ["+911140001000", "+911140001001"];
    seed_pool(
        dynamo.store.as_ref(),
        &numbers.map(|n| {
            vn(
                n,
                "twilio",
                Capabilities::VOICE_AND_SMS,
                NumberState::Active,
            )
        }),
    )
    .await;
    let assigner = Assigner::new(
        dynamo.store.clone(),
        AssignSettings::for_markets([market("IN")]),
    );
    let t = now();
    assigner
        .apply(
            &OrderUpdate {
                order_id: "o1".parse().unwrap(),
                market: market("IN"),
                version: 1,
                record: false,
                change: OrderChange::Participants(vec![customer(0), driver(0)]),
            },
            t,
        )
        .await
        .unwrap();
    let serving = dynamo
        .store
        .live_contacts(&customer(0).phone, t)
        .await
        .unwrap()
        .remove(0)
        .number;
    // AND an account where that number now points elsewhere
    let server = MockServer::start().await;
    let listed: Vec<(&str, &str)> = numbers
        .iter()
        .map(|n| {
            let url = if *n == serving.as_str() {
                "https://other-product.example.com/voice"
            } else {
                TWILIO_VOICE_URL
            };
            (*n, url)
        })
        .collect();
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(twilio_page_at(&listed)))
        .mount(&server)
        .await;

    // WHEN the pool is refreshed (calls to that number no longer reach us)
    let summary = refresher(
        dynamo.store.clone(),
        vec![twilio(&server)],
        None,
        settings(&["IN"]),
    )
    .with_mover(pool_refresh::Mover {
        assigner,
        notify: None,
    })
    .refresh(t)
    .await;

    // THEN it gets no new contacts, the live order's pair moves to the other number, and the
    // old pair is handed over (for calls that still reach it through another path) until the
    // handover ends
    assert_eq!(summary.markets[0].retired, 1);
    assert_eq!(summary.markets[0].pairs_moved, 1);
    let pool = pool_state(dynamo.store.as_ref(), "IN").await;
    assert_eq!(state_of(&pool, serving.as_str()), NumberState::Retired);
    let session = dynamo
        .store
        .session(&"o1".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_ne!(session.contacts[0].number, serving);
    let handover = AssignSettings::for_markets([market("IN")])
        .handover
        .as_secs() as i64;
    let route = dynamo
        .store
        .route(&customer(0).phone, &serving)
        .await
        .unwrap()
        .expect("the handover route");
    assert_eq!(route.expires_at, t + handover);
}

async fn seeded_us_pool() -> LocalDynamo {
    let dynamo = local_dynamo().await;
    seed_pool(
        dynamo.store.as_ref(),
        &[
            twilio_vn("+14155551000", NumberState::Active),
            twilio_vn("+14155551001", NumberState::Draining),
        ],
    )
    .await;
    dynamo
}

#[tokio::test]
async fn provider_failing_with_500_throughout_changes_nothing() {
    let dynamo = seeded_us_pool().await;
    let before = pool_state(dynamo.store.as_ref(), "US").await;
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500))
        .expect(3)
        .mount(&server)
        .await;
    let refresher = refresher(
        keyless(&dynamo),
        vec![twilio(&server)],
        None,
        settings(&["US"]),
    );

    let summary = refresher.refresh(now()).await;

    assert_eq!(pool_state(dynamo.store.as_ref(), "US").await, before);
    assert_eq!(
        summary.providers[0].error,
        Some(ProviderError::Status {
            provider: "twilio".parse().unwrap(),
            operation: "IncomingPhoneNumbers list",
            status: 500
        })
    );
    let m = &summary.markets[0];
    assert_eq!((m.added, m.drained, m.retired), (0, 0, 0));
    assert!(m.error.is_none(), "{:?}", m.error);
}

#[tokio::test]
async fn malformed_provider_answer_changes_nothing_and_says_why() {
    let dynamo = seeded_us_pool().await;
    let before = pool_state(dynamo.store.as_ref(), "US").await;
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw("<html>Service Unavailable</html>", "text/html"),
        )
        .mount(&server)
        .await;
    let refresher = refresher(
        keyless(&dynamo),
        vec![twilio(&server)],
        None,
        settings(&["US"]),
    );

    let summary = refresher.refresh(now()).await;

    assert_eq!(pool_state(dynamo.store.as_ref(), "US").await, before);
    let error = &summary.providers[0].error;
    assert!(
        matches!(
            error,
            Some(ProviderError::Malformed { provider, operation: "IncomingPhoneNumbers list", .. })
                if provider.as_str() == "twilio"
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_failed_provider_retires_nothing_while_a_healthy_one_does() {
    // GIVEN an Indian pool of two Exotel and two static numbers
    let dynamo = local_dynamo().await;
    let exotel_numbers = ["+911140001000", "+911140001001"];
    let static_numbers = ["+911140001010", "+911140001011"];
    for n in exotel_numbers {
        dynamo
            .store
            .put_number(&vn(
                n,
                "exotel",
                Capabilities::VOICE_AND_SMS,
                NumberState::Active,
            ))
            .await
            .unwrap();
    }
    for n in static_numbers {
        dynamo
            .store
            .put_number(&vn(
                n,
                "static",
                Capabilities::VOICE_AND_SMS,
                NumberState::Active,
            ))
            .await
            .unwrap();
    }
    // AND Exotel is down, while the static list no longer names +911140001011
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let static_list = StaticList::from_json(r#"[{"number": "+911140001010"}]"#).unwrap();
    let inventories: Vec<Arc<dyn Inventory>> = vec![exotel(&server), Arc::new(static_list)];
    let refresher = refresher(keyless(&dynamo), inventories, None, settings(&["IN"]));

    // WHEN
    let summary = refresher.refresh(now()).await;

    // THEN only the healthy provider's missing number is retired
    let pool = pool_state(dynamo.store.as_ref(), "IN").await;
    for n in exotel_numbers {
        assert_eq!(state_of(&pool, n), NumberState::Active, "{n}");
        assert_eq!(pool[n].3, 1, "{n} not rewritten");
    }
    assert_eq!(state_of(&pool, "+911140001010"), NumberState::Active);
    assert_eq!(state_of(&pool, "+911140001011"), NumberState::Retired);
    assert_eq!(summary.markets[0].retired, 1);
    assert!(
        matches!(
            summary.providers[0].error,
            Some(ProviderError::Status { status: 503, .. })
        ),
        "{:?}",
        summary.providers[0].error
    );
}

#[tokio::test]
async fn two_overlapping_runs_write_each_change_once() {
    // GIVEN 5 stored numbers Twilio no longer lists, and 20 new ones it does
    let dynamo = local_dynamo().await;
    let gone: Vec<String> = (0..5).map(|i| format!("+1415555{}", 1100 + i)).collect();
    for n in &gone {
        dynamo
            .store
            .put_number(&twilio_vn(n, NumberState::Active))
            .await
            .unwrap();
    }
    let listed: Vec<String> = (0..20).map(|i| format!("+1415555{}", 1200 + i)).collect();
    let server = MockServer::start().await;
    let entries: Vec<(&str, bool, bool)> =
        listed.iter().map(|n| (n.as_str(), true, true)).collect();
    twilio_lists(&server, &entries).await;
    // Both runs read the pool before either writes: the worst overlap, every time.
    let lockstep: Arc<dyn PoolUpkeep> = Arc::new(Lockstep::new(keyless(&dynamo), 2));
    let a = refresher(
        lockstep.clone(),
        vec![twilio(&server)],
        None,
        settings(&["US"]),
    );
    let b = refresher(lockstep, vec![twilio(&server)], None, settings(&["US"]));

    // WHEN two runs overlap
    let (ra, rb) = tokio::join!(a.refresh(now()), b.refresh(now()));

    // THEN every change was written exactly once, by one run or the other, and the other
    // run's attempt failed its condition and was decided again
    let (ma, mb) = (&ra.markets[0], &rb.markets[0]);
    assert!(
        ma.error.is_none() && mb.error.is_none(),
        "{:?} {:?}",
        ma.error,
        mb.error
    );
    assert_eq!(ma.added + mb.added, 20, "{ma:?} {mb:?}");
    assert_eq!(ma.retired + mb.retired, 5);
    assert_eq!(
        ma.conflicts + mb.conflicts,
        25,
        "each change lost once by one run"
    );
    let pool = pool_state(dynamo.store.as_ref(), "US").await;
    for n in &listed {
        assert_eq!(pool[n.as_str()].0, NumberState::Active);
        assert_eq!(pool[n.as_str()].3, 1, "{n} written once");
    }
    for n in &gone {
        assert_eq!(pool[n.as_str()].0, NumberState::Retired);
        assert_eq!(pool[n.as_str()].3, 2, "{n}: seeded, then retired once");
    }
}

#[tokio::test]
async fn a_write_that_loses_a_race_is_decided_again_from_a_fresh_read() {
    let dynamo = seeded_us_pool().await;
    let faulty = Arc::new(FaultyStore::new(keyless(&dynamo)));
    faulty
        .faults
        .changed_numbers
        .store(2, std::sync::atomic::Ordering::SeqCst);
    let server = MockServer::start().await;
    twilio_lists(
        &server,
        &[
            ("+14155551000", true, true),
            ("+14155551001", true, true),
            ("+14155551002", true, true),
        ],
    )
    .await;
    let refresher = refresher(
        faulty.clone(),
        vec![twilio(&server)],
        None,
        settings(&["US"]),
    );

    let summary = refresher.refresh(now()).await;

    let m = &summary.markets[0];
    assert_eq!((m.conflicts, m.added), (2, 1));
    let pool = pool_state(dynamo.store.as_ref(), "US").await;
    assert_eq!(state_of(&pool, "+14155551002"), NumberState::Active);
    assert_eq!(state_of(&pool, "+14155551001"), NumberState::Draining);
}

/// A US pool of two listed Twilio numbers whose busiest person holds two live contacts:
/// headroom 0.
async fn dry_us_pool(server: &MockServer) -> LocalDynamo {
    let dynamo = local_dynamo().await;
    let numbers = ["+14155551000", "+14155551001"];
    for n in numbers {
        dynamo
            .store
            .put_number(&twilio_vn(n, NumberState::Active))
            .await
            .unwrap();
    }
    let today = vnmask::pool::day_key(now());
    dynamo
        .store
        .raise_live_peak(&market("US"), &today, 2, now() + 3600)
        .await
        .unwrap();
    twilio_lists(
        server,
        &[(numbers[0], true, true), (numbers[1], true, true)],
    )
    .await;
    dynamo
}

async fn purchases_counted(dynamo: &LocalDynamo) -> Option<String> {
    let month = vnmask::pool::month_key(now());
    dynamo
        .client
        .get_item()
        .table_name(&dynamo.table)
        .key("pk", AttributeValue::S("PURCHASES".into()))
        .key("sk", AttributeValue::S(format!("MONTH#{month}")))
        .send()
        .await
        .unwrap()
        .item
        .and_then(|i| i.get("bought").and_then(|v| v.as_n().ok()).cloned())
}

fn buying_refresher(
    dynamo: &LocalDynamo,
    server: &MockServer,
    per_run: u32,
    per_month: u32,
) -> pool_refresh::Refresher {
    buying_refresher_with(dynamo, twilio(server), per_run, per_month)
}

fn buying_refresher_with(
    dynamo: &LocalDynamo,
    twilio: Arc<pool_refresh::inventory::Twilio>,
    per_run: u32,
    per_month: u32,
) -> pool_refresh::Refresher {
    let mut settings = settings(&["US"]);
    settings.min_headroom = 5;
    settings.buying = Some(buying(per_run, per_month));
    refresher(
        keyless(dynamo),
        vec![twilio.clone()],
        Some(twilio as Arc<dyn Vendor>),
        settings,
    )
}

#[tokio::test]
async fn low_headroom_buys_up_to_the_per_run_cap_with_our_webhooks() {
    let server = MockServer::start().await;
    let dynamo = dry_us_pool(&server).await;
    twilio_offers(&server).await;
    Mock::given(method("POST"))
        .and(path(twilio_path("IncomingPhoneNumbers.json")))
        .respond_with(TwilioCreates)
        .expect(3)
        .mount(&server)
        .await;

    let summary = buying_refresher(&dynamo, &server, 3, 10)
        .refresh(now())
        .await;

    let m = &summary.markets[0];
    assert_eq!((m.headroom, m.needed, m.bought), (0, 5, 3), "{m:?}");
    assert!(
        matches!(m.buying_stopped, Some(BuyingStopped::RunCap)),
        "{:?}",
        m.buying_stopped
    );
    let purchases: Vec<Vec<(String, String)>> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .map(|r| serde_urlencoded_pairs(&r.body))
        .collect();
    assert_eq!(purchases.len(), 3);
    let pool = pool_state(dynamo.store.as_ref(), "US").await;
    for form in &purchases {
        let get = |k: &str| {
            form.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(
            get("VoiceUrl"),
            "https://hooks.example.com/webhook/twilio/voice"
        );
        assert_eq!(
            get("SmsUrl"),
            "https://hooks.example.com/webhook/twilio/sms"
        );
        assert_eq!(
            pool[get("PhoneNumber").as_str()],
            (
                NumberState::Active,
                Capabilities::VOICE_AND_SMS,
                "twilio".into(),
                1
            )
        );
    }
    assert_eq!(pool.len(), 5);
    assert_eq!(purchases_counted(&dynamo).await.as_deref(), Some("3"));
    assert!(
        dynamo
            .store
            .take_lease("pool-buy-US", "next-run", now(), now() + 60)
            .await
            .unwrap()
            == LeaseTake::Taken,
        "the buying lease is given back"
    );
}

#[tokio::test]
async fn buying_stops_at_the_monthly_cap() {
    let server = MockServer::start().await;
    let dynamo = dry_us_pool(&server).await;
    let month = vnmask::pool::month_key(now());
    assert!(
        dynamo
            .store
            .count_purchase(&month, 2, now() + 3600)
            .await
            .unwrap()
            == PurchaseCount::Counted
    );
    twilio_offers(&server).await;
    Mock::given(method("POST"))
        .respond_with(TwilioCreates)
        .expect(1)
        .mount(&server)
        .await;

    let summary = buying_refresher(&dynamo, &server, 5, 2)
        .refresh(now())
        .await;

    let m = &summary.markets[0];
    assert_eq!(m.bought, 1);
    assert!(
        matches!(m.buying_stopped, Some(BuyingStopped::MonthlyCap)),
        "{:?}",
        m.buying_stopped
    );
    assert_eq!(purchases_counted(&dynamo).await.as_deref(), Some("2"));
}

#[tokio::test]
async fn a_refused_purchase_is_not_counted() {
    let server = MockServer::start().await;
    let dynamo = dry_us_pool(&server).await;
    twilio_offers(&server).await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "code": 21422, "message": "PhoneNumber is not available", "status": 400
        })))
        .expect(1)
        .mount(&server)
        .await;

    let summary = buying_refresher(&dynamo, &server, 5, 10)
        .refresh(now())
        .await;

    let m = &summary.markets[0];
    assert_eq!(m.bought, 0);
    assert!(
        matches!(
            &m.buying_stopped,
            Some(BuyingStopped::Provider(ProviderError::Status {
                provider,
                operation: "IncomingPhoneNumbers create",
                status: 400
            })) if provider.as_str() == "twilio"
        ),
        "{:?}",
        m.buying_stopped
    );
    assert_eq!(purchases_counted(&dynamo).await.as_deref(), Some("0"));
    assert_eq!(pool_state(dynamo.store.as_ref(), "US").await.len(), 2);
}

fn purchase_posts(requests: &[wiremock::Request]) -> Vec<String> {
    requests
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .flat_map(|r| serde_urlencoded_pairs(&r.body))
        .filter(|(k, _)| k == "PhoneNumber")
        .map(|(_, v)| v)
        .collect()
}

#[tokio::test]
async fn a_purchase_that_times_out_is_posted_once_counted_and_found_by_listing() {
    // GIVEN a dry US pool, numbers on offer, and a Twilio that buys but answers too late
    let server = MockServer::start().await;
    let dynamo = dry_us_pool(&server).await;
    twilio_offers(&server).await;
    Mock::given(method("POST"))
        .respond_with(Late(TwilioCreates))
        .mount(&server)
        .await;
    // AND whose account then lists the number it bought
    Mock::given(looks_up_a_number)
        .respond_with(TwilioFinds)
        .with_priority(1)
        .mount(&server)
        .await;
    let twilio = twilio_with(&server, short_timeout());

    // WHEN one number may be bought this run
    let summary = buying_refresher_with(&dynamo, twilio, 1, 10)
        .refresh(now())
        .await;

    // THEN the purchase was sent once, found in the account, pooled and counted once
    let m = &summary.markets[0];
    assert_eq!((m.bought, m.unconfirmed), (1, 0), "{m:?}");
    let posted = purchase_posts(&server.received_requests().await.unwrap());
    assert_eq!(posted.len(), 1, "{posted:?}");
    let pool = pool_state(dynamo.store.as_ref(), "US").await;
    assert_eq!(state_of(&pool, &posted[0]), NumberState::Active);
    assert_eq!(purchases_counted(&dynamo).await.as_deref(), Some("1"));
}

#[tokio::test]
async fn an_unconfirmed_purchase_stays_counted_and_the_next_listing_takes_it_in() {
    // GIVEN a dry US pool, numbers on offer, a Twilio whose purchase answers 500, and a
    // month that allows one purchase
    let server = MockServer::start().await;
    let dynamo = dry_us_pool(&server).await;
    twilio_offers(&server).await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    // AND an account that does not list the number (yet)
    Mock::given(looks_up_a_number)
        .respond_with(ResponseTemplate::new(200).set_body_json(twilio_page(&[])))
        .with_priority(1)
        .mount(&server)
        .await;

    // WHEN the pool is refreshed with three purchases allowed this run
    let summary = buying_refresher(&dynamo, &server, 3, 1)
        .refresh(now())
        .await;

    // THEN one purchase was sent, once; it is counted; buying stopped and says why
    let m = &summary.markets[0];
    assert_eq!((m.bought, m.unconfirmed), (0, 1), "{m:?}");
    assert!(
        matches!(
            &m.buying_stopped,
            Some(BuyingStopped::PurchaseUnconfirmed(ProviderError::Status {
                status: 500,
                ..
            }))
        ),
        "{:?}",
        m.buying_stopped
    );
    assert_eq!(m.metrics().to_json()["PurchasesUnconfirmed"], 1.0);
    let posted = purchase_posts(&server.received_requests().await.unwrap());
    assert_eq!(posted.len(), 1, "{posted:?}");
    assert_eq!(purchases_counted(&dynamo).await.as_deref(), Some("1"));
    assert_eq!(pool_state(dynamo.store.as_ref(), "US").await.len(), 2);

    // WHEN it had gone through: the account lists it at the next run
    server.reset().await;
    twilio_lists(
        &server,
        &[
            ("+14155551000", true, true),
            ("+14155551001", true, true),
            (posted[0].as_str(), true, true),
        ],
    )
    .await;
    twilio_offers(&server).await;
    let again = buying_refresher(&dynamo, &server, 3, 1)
        .refresh(now())
        .await;

    // THEN it is pooled, and the month's cap, reached by it, buys nothing more
    let m = &again.markets[0];
    assert_eq!((m.added, m.bought), (1, 0), "{m:?}");
    assert!(
        matches!(m.buying_stopped, Some(BuyingStopped::MonthlyCap)),
        "{:?}",
        m.buying_stopped
    );
    let pool = pool_state(dynamo.store.as_ref(), "US").await;
    assert_eq!(state_of(&pool, &posted[0]), NumberState::Active);
    assert!(purchase_posts(&server.received_requests().await.unwrap()).is_empty());
}

#[tokio::test]
async fn while_another_run_buys_this_one_does_not() {
    let server = MockServer::start().await;
    let dynamo = dry_us_pool(&server).await;
    assert!(
        dynamo
            .store
            .take_lease("pool-buy-US", "another-run", now(), now() + 600)
            .await
            .unwrap()
            == LeaseTake::Taken
    );
    Mock::given(method("POST"))
        .respond_with(TwilioCreates)
        .expect(0)
        .mount(&server)
        .await;

    let summary = buying_refresher(&dynamo, &server, 5, 10)
        .refresh(now())
        .await;

    assert_eq!(summary.markets[0].bought, 0);
    assert!(
        matches!(
            summary.markets[0].buying_stopped,
            Some(BuyingStopped::AnotherRunBuying)
        ),
        "{:?}",
        summary.markets[0].buying_stopped
    );
}

#[tokio::test]
async fn with_buying_off_a_shortfall_is_only_reported() {
    let server = MockServer::start().await;
    let dynamo = dry_us_pool(&server).await;
    Mock::given(method("GET"))
        .and(path(twilio_path("AvailablePhoneNumbers/US/Local.json")))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(TwilioCreates)
        .expect(0)
        .mount(&server)
        .await;
    let twilio = twilio(&server);
    let mut settings = settings(&["US"]);
    settings.min_headroom = 5;
    let refresher = refresher(
        keyless(&dynamo),
        vec![twilio.clone()],
        Some(twilio as Arc<dyn Vendor>),
        settings,
    );

    let summary = refresher.refresh(now()).await;

    let m = &summary.markets[0];
    assert_eq!((m.headroom, m.needed, m.bought), (0, 5, 0));
    let emf = m.metrics().to_json();
    assert_eq!(emf["NumbersNeeded"], 5.0);
    assert_eq!(emf["Headroom"], 0.0);
    assert_eq!(emf["Bought"], 0.0);
    assert_eq!(emf["NumbersActive"], 2.0);
    assert_eq!(emf["Market"], "US");
    assert_eq!(pool_state(dynamo.store.as_ref(), "US").await.len(), 2);
}

#[tokio::test]
async fn headroom_counts_only_numbers_carrying_each_markets_channels() {
    // GIVEN a voice-only Indian market and a voice+sms US market, each pool mixing voice-only
    // numbers with voice+sms ones, and a busiest person holding one live contact in each
    let dynamo = local_dynamo().await;
    let entries = [
        ("+911140001000", r#"["voice"]"#),
        ("+911140001001", r#"["voice"]"#),
        ("+911140001002", r#"["voice"]"#),
        ("+911140001003", r#"["voice", "sms"]"#),
        ("+14155551000", r#"["voice"]"#),
        ("+14155551001", r#"["voice"]"#),
        ("+14155551002", r#"["voice", "sms"]"#),
    ];
    let listed: Vec<String> = entries
        .iter()
        .map(|(n, caps)| format!(r#"{{"number": "{n}", "capabilities": {caps}}}"#))
        .collect();
    let static_list = StaticList::from_json(&format!("[{}]", listed.join(","))).unwrap();
    let today = vnmask::pool::day_key(now());
    for m in ["IN", "US"] {
        dynamo
            .store
            .raise_live_peak(&market(m), &today, 1, now() + 3600)
            .await
            .unwrap();
    }
    let mut settings = settings(&["IN", "US"]);
    settings.markets.insert(market("IN"), VOICE_ONLY);
    let refresher = refresher(
        keyless(&dynamo),
        vec![Arc::new(static_list)],
        None,
        settings,
    );

    // WHEN the pools are refreshed
    let summary = refresher.refresh(now()).await;

    // THEN India counts its voice-only numbers and the voice+sms one; the US only its
    // voice+sms number, and is one short of nothing
    let by_market: BTreeMap<&str, _> = summary
        .markets
        .iter()
        .map(|m| (m.market.as_str(), m))
        .collect();
    let (india, us) = (by_market["IN"], by_market["US"]);
    assert!(india.error.is_none() && us.error.is_none(), "{summary:?}");
    assert_eq!(
        (india.numbers_active, india.eligible, india.headroom),
        (4, 4, 3),
        "{india:?}"
    );
    assert_eq!(
        (us.numbers_active, us.eligible, us.headroom),
        (3, 1, 0),
        "{us:?}"
    );
}

#[tokio::test]
async fn a_voice_only_market_buys_voice_numbers_without_asking_for_sms() {
    // GIVEN a dry US pool whose market is configured voice-only, and buying on
    let server = MockServer::start().await;
    let dynamo = dry_us_pool(&server).await;
    twilio_offers(&server).await;
    Mock::given(method("POST"))
        .and(path(twilio_path("IncomingPhoneNumbers.json")))
        .respond_with(TwilioCreates)
        .mount(&server)
        .await;
    let twilio = twilio(&server);
    let mut settings = settings(&["US"]);
    settings.markets.insert(market("US"), VOICE_ONLY);
    settings.min_headroom = 3;
    settings.buying = Some(buying(1, 10));
    let refresher = refresher(
        keyless(&dynamo),
        vec![twilio.clone()],
        Some(twilio as Arc<dyn Vendor>),
        settings,
    );

    // WHEN
    let summary = refresher.refresh(now()).await;

    // THEN the search asked for voice and not for SMS, and a number was bought
    let m = &summary.markets[0];
    assert_eq!(m.bought, 1, "{m:?}");
    let searches: Vec<Vec<(String, String)>> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| {
            r.url
                .path()
                .ends_with("AvailablePhoneNumbers/US/Local.json")
        })
        .map(|r| {
            r.url
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .collect();
    assert_eq!(searches.len(), 1);
    assert!(searches[0].contains(&("VoiceEnabled".into(), "true".into())));
    assert!(
        !searches[0].iter().any(|(k, _)| k == "SmsEnabled"),
        "{searches:?}"
    );
}

#[tokio::test]
async fn headroom_and_busiest_share_follow_the_assignments() {
    // GIVEN four static Indian numbers, and three live orders of one customer
    let dynamo = local_dynamo().await;
    let numbers = pool("IN", 4);
    seed_pool(dynamo.store.as_ref(), &numbers).await;
    let store: Arc<dyn Store> = dynamo.store.clone();
    let assigner = Assigner::new(store.clone(), AssignSettings::for_markets([market("IN")]));
    let t = now();
    for i in 0..3 {
        let update = OrderUpdate {
            order_id: format!("order-{i}").parse().unwrap(),
            market: market("IN"),
            version: 1,
            record: false,
            change: OrderChange::Participants(vec![customer(0), driver(i)]),
        };
        assigner.apply(&update, t).await.unwrap();
    }
    let listed: Vec<String> = numbers
        .iter()
        .map(|v| format!(r#"{{"number": "{}"}}"#, v.number))
        .collect();
    let static_list = StaticList::from_json(&format!("[{}]", listed.join(","))).unwrap();
    let refresher = refresher(
        keyless(&dynamo),
        vec![Arc::new(static_list)],
        None,
        settings(&["IN"]),
    );

    // WHEN
    let summary = refresher.refresh(t).await;

    // THEN the customer's three contacts bound the pool, and each of their numbers carries
    // one order's two routes
    let m = &summary.markets[0];
    assert_eq!(
        (m.eligible, m.peak_live_contacts, m.headroom),
        (4, 3, 1),
        "{m:?}"
    );
    assert_eq!(m.routes_sampled, 6);
    assert_eq!(m.busiest_share, Some(2.0 / 6.0));
    let emf = m.metrics().to_json();
    assert!((emf["BusiestShare"].as_f64().unwrap() - 100.0 / 3.0).abs() < 1e-9);
}

#[tokio::test]
async fn handler_accepts_what_the_scheduler_sends() {
    let dynamo = seeded_us_pool().await;
    let server = MockServer::start().await;
    twilio_lists(&server, &[("+14155551000", true, true)]).await;
    let refresher = refresher(
        keyless(&dynamo),
        vec![twilio(&server)],
        None,
        settings(&["US"]),
    );

    for payload in [
        "scheduler/default_input.json",
        "scheduler/scheduled_event.json",
    ] {
        let summary = refresher.handle(json_fixture(payload)).await.unwrap();
        assert_eq!(summary.markets.len(), 1, "{payload}");
    }
    let pool = pool_state(dynamo.store.as_ref(), "US").await;
    assert_eq!(state_of(&pool, "+14155551001"), NumberState::Retired);
}

/// Delegates to a store, but holds the first `n` pool reads until all `n` have happened.
struct Lockstep {
    inner: Arc<dyn PoolUpkeep>,
    reads: std::sync::atomic::AtomicUsize,
    barrier: tokio::sync::Barrier,
    n: usize,
}

impl Lockstep {
    fn new(inner: Arc<dyn PoolUpkeep>, n: usize) -> Self {
        Lockstep {
            inner,
            reads: std::sync::atomic::AtomicUsize::new(0),
            barrier: tokio::sync::Barrier::new(n),
            n,
        }
    }
}

#[async_trait::async_trait]
impl PoolStore for Lockstep {
    async fn pool_entries(
        &self,
        market: &vnmask::domain::Market,
    ) -> Result<Vec<PoolEntry>, vnmask::store::StoreError> {
        let entries = self.inner.pool_entries(market).await;
        if self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < self.n {
            self.barrier.wait().await;
        }
        entries
    }

    async fn put_number(&self, number: &PoolNumber) -> Result<(), StoreError> {
        self.inner.put_number(number).await
    }

    async fn put_number_if(
        &self,
        number: &PoolNumber,
        expected: Option<u64>,
    ) -> Result<u64, PoolWriteError> {
        self.inner.put_number_if(number, expected).await
    }

    async fn live_peak(&self, market: &Market, day: &str) -> Result<Option<u32>, StoreError> {
        self.inner.live_peak(market, day).await
    }

    async fn sample_routes(
        &self,
        now: i64,
        budget: usize,
    ) -> Result<Vec<SampledRoute>, StoreError> {
        self.inner.sample_routes(now, budget).await
    }
}

#[async_trait::async_trait]
impl PurchaseLedger for Lockstep {
    async fn count_purchase(
        &self,
        month: &str,
        cap: u32,
        expires_at: i64,
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
        now: i64,
        until: i64,
    ) -> Result<LeaseTake, StoreError> {
        self.inner.take_lease(name, holder, now, until).await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.inner.release_lease(name, holder).await
    }
}

#[async_trait::async_trait]
impl vnmask::store::AnswerStats for Lockstep {
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
impl vnmask::store::PairIndex for Lockstep {
    async fn orders_on(
        &self,
        number: &VirtualNumber,
        now: i64,
        limit: usize,
    ) -> Result<vnmask::store::OrdersOn, StoreError> {
        self.inner.orders_on(number, now, limit).await
    }
}
