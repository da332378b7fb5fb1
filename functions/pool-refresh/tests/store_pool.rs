//! The store's pool-upkeep contract, on every store (memory, and DynamoDB Local through the
//! real SDK with keys and without them, as pool-refresh runs): versioned conditional writes,
//! the live-contacts peak, the purchase count, leases and the bounded route sample.

use std::sync::Arc;

use vnmask::crypto::CryptoError;
use vnmask::domain::{NumberState, PoolNumber, VirtualNumber};
use vnmask::store::dynamodb::DynamoStore;
use vnmask::store::memory::MemoryStore;
use vnmask::store::{AssignmentStore, AuditStore, PoolStore, RouteReader};
use vnmask::store::{LeaseTake, PoolWriteError, PurchaseCount, Store, StoreError};
use vnmask_tests::people::{customer, driver};
use vnmask_tests::{local_dynamo, market, now, pool, seed_pool, LocalDynamo};

/// DynamoDB without keys, over `dynamo`'s table.
fn keyless(dynamo: &LocalDynamo) -> Arc<DynamoStore> {
    Arc::new(DynamoStore::without_keys(
        dynamo.client.clone(),
        dynamo.table.clone(),
    ))
}

/// Each store under test, and a store with keys over the same data for what only one may
/// write (routes): the memory and keyed DynamoDB stores are their own.
async fn stores_and_writers() -> Vec<(&'static str, Arc<dyn Store>, Arc<dyn Store>)> {
    let memory: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let dynamo = local_dynamo().await;
    let other = local_dynamo().await;
    vec![
        ("memory", memory.clone(), memory),
        ("dynamodb", dynamo.store.clone(), dynamo.store.clone()),
        (
            "dynamodb without keys",
            keyless(&other),
            other.store.clone(),
        ),
    ]
}

async fn stores() -> Vec<(&'static str, Arc<dyn Store>)> {
    stores_and_writers()
        .await
        .into_iter()
        .map(|(name, store, _)| (name, store))
        .collect()
}

fn draining(v: &PoolNumber) -> PoolNumber {
    PoolNumber {
        state: NumberState::Draining,
        ..v.clone()
    }
}

#[tokio::test]
async fn conditional_pool_write_succeeds_only_on_the_version_read() {
    for (name, store) in stores().await {
        let vn = pool("IN", 1).remove(0);
        assert_eq!(store.put_number_if(&vn, None).await.unwrap(), 1, "{name}");
        assert!(
            matches!(
                store.put_number_if(&vn, None).await,
                Err(PoolWriteError::NumberChanged(_))
            ),
            "{name}: adding an existing number"
        );
        let entries = store.pool_entries(&market("IN")).await.unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!((entries[0].version, &entries[0].number), (1, &vn));

        assert_eq!(
            store.put_number_if(&draining(&vn), Some(1)).await.unwrap(),
            2
        );
        assert!(
            matches!(
                store.put_number_if(&vn, Some(1)).await,
                Err(PoolWriteError::NumberChanged(_))
            ),
            "{name}: a write based on a stale read must fail"
        );
        let entries = store.pool_entries(&market("IN")).await.unwrap();
        assert_eq!(entries[0].number.state, NumberState::Draining, "{name}");
        assert_eq!(
            store.pool(&market("IN")).await.unwrap(),
            vec![draining(&vn)]
        );
    }
}

#[tokio::test]
async fn unconditional_put_bumps_the_version_so_stale_writers_lose() {
    for (name, store) in stores().await {
        let vn = pool("IN", 1).remove(0);
        seed_pool(store.as_ref(), std::slice::from_ref(&vn)).await;
        let read = store.pool_entries(&market("IN")).await.unwrap()[0].version;
        // An operator drains the number between the refresher's read and its write.
        store.put_number(&draining(&vn)).await.unwrap();
        assert!(
            matches!(
                store.put_number_if(&vn, Some(read)).await,
                Err(PoolWriteError::NumberChanged(_))
            ),
            "{name}: the operator's change must not be lost"
        );
        let stored = store.pool_entries(&market("IN")).await.unwrap().remove(0);
        assert_eq!(stored.number.state, NumberState::Draining, "{name}");
        assert_eq!(stored.version, read + 1, "{name}");
    }
}

#[tokio::test]
async fn unversioned_pool_items_count_as_version_zero() {
    let dynamo = local_dynamo().await;
    let vn = pool("IN", 1).remove(0);
    // An item as written before pool items had versions.
    dynamo
        .client
        .put_item()
        .table_name(&dynamo.table)
        .set_item(Some(
            [
                ("pk", "POOL#IN"),
                ("sk", "VN#+911140001000"),
                ("number", "+911140001000"),
                ("market", "IN"),
                ("provider", "static"),
                ("state", "active"),
            ]
            .into_iter()
            .map(|(k, v)| {
                (
                    k.to_owned(),
                    aws_sdk_dynamodb::types::AttributeValue::S(v.to_owned()),
                )
            })
            .chain([(
                "capabilities".to_owned(),
                aws_sdk_dynamodb::types::AttributeValue::L(vec![
                    aws_sdk_dynamodb::types::AttributeValue::S("voice".into()),
                    aws_sdk_dynamodb::types::AttributeValue::S("sms".into()),
                ]),
            )])
            .collect(),
        ))
        .send()
        .await
        .unwrap();
    let entries = dynamo.store.pool_entries(&market("IN")).await.unwrap();
    assert_eq!((entries[0].version, &entries[0].number), (0, &vn));
    assert_eq!(
        dynamo
            .store
            .put_number_if(&draining(&vn), Some(0))
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn live_peak_only_ever_rises() {
    for (name, store) in stores().await {
        let m = market("IN");
        assert_eq!(store.live_peak(&m, "2026-05-28").await.unwrap(), None);
        store
            .raise_live_peak(&m, "2026-05-28", 3, now() + 60)
            .await
            .unwrap();
        store
            .raise_live_peak(&m, "2026-05-28", 2, now() + 60)
            .await
            .unwrap();
        assert_eq!(
            store.live_peak(&m, "2026-05-28").await.unwrap(),
            Some(3),
            "{name}"
        );
        store
            .raise_live_peak(&m, "2026-05-28", 5, now() + 60)
            .await
            .unwrap();
        assert_eq!(
            store.live_peak(&m, "2026-05-28").await.unwrap(),
            Some(5),
            "{name}"
        );
        assert_eq!(
            store.live_peak(&m, "2026-05-29").await.unwrap(),
            None,
            "{name}"
        );
        assert_eq!(
            store.live_peak(&market("US"), "2026-05-28").await.unwrap(),
            None
        );
    }
}

#[tokio::test]
async fn purchase_count_stops_at_the_cap_and_gives_back_failed_ones() {
    for (name, store) in stores().await {
        let exp = now() + 3600;
        assert!(store.count_purchase("2026-05", 2, exp).await.unwrap() == PurchaseCount::Counted);
        assert!(store.count_purchase("2026-05", 2, exp).await.unwrap() == PurchaseCount::Counted);
        assert!(
            store.count_purchase("2026-05", 2, exp).await.unwrap() == PurchaseCount::AtCap,
            "{name}: at the cap"
        );
        store.uncount_purchase("2026-05").await.unwrap();
        assert!(
            store.count_purchase("2026-05", 2, exp).await.unwrap() == PurchaseCount::Counted,
            "{name}"
        );
        assert!(
            store.count_purchase("2026-06", 2, exp).await.unwrap() == PurchaseCount::Counted,
            "{name}: a new month"
        );
        // Giving back more than was counted never goes below zero.
        for _ in 0..3 {
            store.uncount_purchase("2026-06").await.unwrap();
        }
        assert!(store.count_purchase("2026-06", 1, exp).await.unwrap() == PurchaseCount::Counted);
        assert!(
            store.count_purchase("2026-06", 1, exp).await.unwrap() == PurchaseCount::AtCap,
            "{name}"
        );
    }
}

#[tokio::test]
async fn concurrent_purchase_counts_never_pass_the_cap() {
    for (name, store) in stores().await {
        let exp = now() + 3600;
        let counted = futures_util::future::join_all(
            (0..12).map(|_| store.count_purchase("2026-05", 5, exp)),
        )
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap() == PurchaseCount::Counted)
        .count();
        assert_eq!(counted, 5, "{name}");
    }
}

#[tokio::test]
async fn a_lease_has_one_holder_until_released_or_expired() {
    for (name, store) in stores().await {
        let t = now();
        assert!(
            store
                .take_lease("pool-buy-IN", "a", t, t + 60)
                .await
                .unwrap()
                == LeaseTake::Taken
        );
        assert!(
            store
                .take_lease("pool-buy-IN", "b", t + 1, t + 61)
                .await
                .unwrap()
                == LeaseTake::Held,
            "{name}"
        );
        assert!(
            store
                .take_lease("pool-buy-US", "b", t, t + 60)
                .await
                .unwrap()
                == LeaseTake::Taken,
            "{name}"
        );
        // Only the holder releases.
        store.release_lease("pool-buy-IN", "b").await.unwrap();
        assert!(
            store
                .take_lease("pool-buy-IN", "b", t + 2, t + 62)
                .await
                .unwrap()
                == LeaseTake::Held,
            "{name}"
        );
        store.release_lease("pool-buy-IN", "a").await.unwrap();
        assert!(
            store
                .take_lease("pool-buy-IN", "b", t + 3, t + 63)
                .await
                .unwrap()
                == LeaseTake::Taken,
            "{name}"
        );
        // An expired lease is free.
        assert!(
            store
                .take_lease("pool-buy-IN", "c", t + 64, t + 124)
                .await
                .unwrap()
                == LeaseTake::Taken,
            "{name}"
        );
    }
}

#[tokio::test]
async fn route_sample_sees_live_routes_within_its_budget() {
    use vnmask::assignment::{AssignSettings, Assigner, OrderChange, OrderUpdate};
    for (name, store, writer) in stores_and_writers().await {
        seed_pool(store.as_ref(), &pool("IN", 4)).await;
        let assigner = Assigner::new(writer, AssignSettings::for_markets([market("IN")]));
        let t = now();
        for i in 0..5 {
            let update = OrderUpdate {
                order_id: format!("o{i}").parse().unwrap(),
                market: market("IN"),
                version: 1,
                record: false,
                change: OrderChange::Participants(vec![customer(i), driver(i)]),
            };
            assigner.apply(&update, t).await.unwrap();
        }
        // 5 orders × 1 contact × 2 directions.
        let sample = store.sample_routes(t, 10_000).await.unwrap();
        assert_eq!(sample.len(), 10, "{name}");
        assert!(sample.iter().all(|r| r.market == market("IN")));
        let bounded = store.sample_routes(t, 3).await.unwrap();
        assert!(bounded.len() <= 3, "{name}: read at most the budget");
        assert!(store.sample_routes(t, 0).await.unwrap().is_empty());
        // Expired routes are not live.
        let later = t + 10 * 24 * 3600;
        assert!(
            store.sample_routes(later, 10_000).await.unwrap().is_empty(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_store_without_keys_refuses_real_numbers_with_a_typed_error() {
    // GIVEN a table with a live order's routes and session, written with keys
    use vnmask::assignment::{AssignSettings, Assigner, OrderChange, OrderUpdate};
    let dynamo = local_dynamo().await;
    seed_pool(dynamo.store.as_ref(), &pool("IN", 2)).await;
    let assigner = Assigner::new(
        dynamo.store.clone(),
        AssignSettings::for_markets([market("IN")]),
    );
    let t = now();
    let order = OrderUpdate {
        order_id: "o1".parse().unwrap(),
        market: market("IN"),
        version: 1,
        record: false,
        change: OrderChange::Participants(vec![customer(1), driver(1)]),
    };
    assigner.apply(&order, t).await.unwrap();
    let before = dynamo.items().await;
    let store = keyless(&dynamo);
    let no_keys = |e: &StoreError| matches!(e, StoreError::Crypto(CryptoError::NoKeys));
    let caller = customer(1).phone;
    let number = VirtualNumber::parse("+911140001000").unwrap();

    // WHEN the keyless store is asked to make a person key, open or seal
    let route = store.route(&caller, &number).await;
    let session = store.session(&order.order_id).await;
    let contacts = store.live_contacts(&caller, t).await;
    let audit = store.audit_page(None, 1000, t).await;
    let reassign = Assigner::new(store.clone(), AssignSettings::for_markets([market("IN")]))
        .apply(
            &OrderUpdate {
                version: 2,
                record: false,
                change: OrderChange::Participants(vec![customer(1), driver(2)]),
                ..order.clone()
            },
            t,
        )
        .await;

    // THEN each is a typed error, nothing was written, and pool upkeep still works
    assert!(no_keys(route.as_ref().unwrap_err()), "{route:?}");
    assert!(no_keys(session.as_ref().unwrap_err()), "{session:?}");
    assert!(no_keys(contacts.as_ref().unwrap_err()), "{contacts:?}");
    assert!(no_keys(audit.as_ref().unwrap_err()), "{audit:?}");
    assert!(reassign.is_err(), "{reassign:?}");
    assert_eq!(dynamo.items().await, before);
    assert_eq!(store.pool_entries(&market("IN")).await.unwrap().len(), 2);
    assert_eq!(store.sample_routes(t, 1000).await.unwrap().len(), 2);
}
