//! The assigner records each market's daily peak of live contacts per person, which
//! pool-refresh reads for headroom: a conditional write only when the process sees a new high,
//! outside the assignment transaction.

use std::sync::Arc;

use vnmask::assignment::{AssignSettings, Assigner, OrderChange, OrderUpdate};
use vnmask::domain::Participant;
use vnmask::store::memory::MemoryStore;
use vnmask::store::PoolStore;
use vnmask::store::Store;
use vnmask_tests::people::{customer, driver};
use vnmask_tests::{local_dynamo, market, now, pool, seed_pool};

fn order(id: &str, people: Vec<Participant>) -> OrderUpdate {
    OrderUpdate {
        order_id: id.parse().unwrap(),
        market: market("IN"),
        version: 1,
        record: false,
        change: OrderChange::Participants(people),
    }
}

#[tokio::test]
async fn assigner_records_the_peak_with_one_write_per_new_high() {
    // GIVEN one driver taking six orders, then six unrelated one-order pairs
    let dynamo = local_dynamo().await;
    seed_pool(dynamo.store.as_ref(), &pool("IN", 10)).await;
    let assigner = Assigner::new(
        dynamo.store.clone(),
        AssignSettings::for_markets([market("IN")]),
    );
    let t = now();
    let day = vnmask::pool::day_key(t);
    dynamo.calls.reset();

    for i in 0..6 {
        assigner
            .apply(&order(&format!("d-{i}"), vec![customer(i), driver(0)]), t)
            .await
            .unwrap();
    }
    let writes_while_rising = dynamo.calls.snapshot().get("UpdateItem").copied();
    for i in 0..6 {
        assigner
            .apply(
                &order(&format!("p-{i}"), vec![customer(100 + i), driver(100 + i)]),
                t,
            )
            .await
            .unwrap();
    }

    // THEN the driver's six contacts are recorded, one write per new high and none after
    assert_eq!(
        dynamo.store.live_peak(&market("IN"), &day).await.unwrap(),
        Some(6)
    );
    assert_eq!(writes_while_rising, Some(6));
    assert_eq!(dynamo.calls.snapshot().get("UpdateItem").copied(), Some(6));
}

#[tokio::test]
async fn a_lower_count_from_another_process_does_not_lower_the_peak() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    seed_pool(store.as_ref(), &pool("IN", 10)).await;
    let busy = Assigner::new(store.clone(), AssignSettings::for_markets([market("IN")]));
    let quiet = Assigner::new(store.clone(), AssignSettings::for_markets([market("IN")]));
    let t = now();
    for i in 0..3 {
        busy.apply(&order(&format!("b-{i}"), vec![customer(i), driver(0)]), t)
            .await
            .unwrap();
    }
    quiet
        .apply(&order("q-0", vec![customer(50), driver(50)]), t)
        .await
        .unwrap();

    let day = vnmask::pool::day_key(t);
    assert_eq!(store.live_peak(&market("IN"), &day).await.unwrap(), Some(3));
}
