//! Key material comes from KMS (moto here) and is unwrapped once; then sealing is local.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use vnmask::assignment::{AssignSettings, Assigner, OrderChange, OrderUpdate};
use vnmask::config::StoreConfig;
use vnmask::crypto::Vault;
use vnmask::domain::RealNumber;
use vnmask::store::{AssignmentStore, Store};
use vnmask_tests::people::{customer, driver};
use vnmask_tests::{
    create_table, kms_store_env, local_dynamo, local_sdk, market, now, pool, seed_pool,
};

#[tokio::test]
async fn keys_wrapped_by_kms_unwrap_into_a_working_store() {
    let sdk = local_sdk().await;
    let table = create_table(&aws_sdk_dynamodb::Client::new(&sdk)).await;
    let env = kms_store_env(&sdk, &table).await;
    let config = StoreConfig::from_source(&env).unwrap();
    assert!(!config.keys.as_ref().unwrap().hmac_key.is_empty());
    let store = config.connect(&sdk).await.expect("KMS unwraps the keys");
    seed_pool(&store, &pool("IN", 1)).await;
    assert_eq!(store.pool(&market("IN")).await.unwrap().len(), 1);
    let someone = RealNumber::parse("+919810000001").unwrap();
    assert!(store
        .live_contacts(&someone, now())
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn tampered_wrapped_key_is_refused_by_kms() {
    let sdk = local_sdk().await;
    let mut env = kms_store_env(&sdk, "unused").await;
    env.insert(
        "VNMASK_HMAC_KEY".into(),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
    );
    let config = StoreConfig::from_source(&env).unwrap();
    assert!(config.connect(&sdk).await.is_err());
}

/// Data-key rotation (README, "Rotating the data keys"): add a key and make it current; new
/// values are sealed with it, values sealed before still open, and an instance that does not
/// know the new key yet cannot open them (so every instance gets the new list first).
#[tokio::test]
async fn a_new_data_key_seals_new_values_and_old_ones_still_open() {
    let sdk = local_sdk().await;
    let kms = aws_sdk_kms::Client::new(&sdk);
    let key_id = kms
        .create_key()
        .description("vnmask rotation test")
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id;
    let (hmac, k1) = Vault::generate_wrapped_keys(&kms, &key_id, "k1")
        .await
        .unwrap();
    let (_, k2) = Vault::generate_wrapped_keys(&kms, &key_id, "k2")
        .await
        .unwrap();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let dynamo = local_dynamo().await;
    let env = |keys: String, current: &str| {
        StoreConfig::from_source(&BTreeMap::from([
            ("VNMASK_TABLE".to_owned(), dynamo.table.clone()),
            ("VNMASK_HMAC_KEY".to_owned(), b64(&hmac)),
            ("VNMASK_DATA_KEYS".to_owned(), keys),
            ("VNMASK_DATA_KEY_CURRENT".to_owned(), current.to_owned()),
        ]))
        .unwrap()
    };
    let before: Arc<dyn Store> = Arc::new(
        env(format!("k1={}", b64(&k1)), "k1")
            .connect(&sdk)
            .await
            .unwrap(),
    );
    let after: Arc<dyn Store> = Arc::new(
        env(format!("k1={},k2={}", b64(&k1), b64(&k2)), "k2")
            .connect(&sdk)
            .await
            .unwrap(),
    );
    seed_pool(before.as_ref(), &pool("IN", 2)).await;
    let assign = |store: &Arc<dyn Store>, order: &str, n: usize| {
        let assigner = Assigner::new(store.clone(), AssignSettings::for_markets([market("IN")]));
        let update = OrderUpdate {
            order_id: order.parse().unwrap(),
            market: market("IN"),
            version: 1,
            record: false,
            change: OrderChange::Participants(vec![customer(n), driver(n)]),
        };
        async move { assigner.apply(&update, now()).await.unwrap() }
    };
    assign(&before, "ord-old", 1).await;
    assign(&after, "ord-new", 2).await;

    // Each session item names the key that sealed it.
    let items = dynamo.items().await;
    let sealed_with = |order: &str| {
        items
            .iter()
            .find(|i| i["pk"].as_s().unwrap() == &format!("ORDER#{order}"))
            .unwrap()["key"]
            .as_s()
            .unwrap()
            .clone()
    };
    assert_eq!(sealed_with("ord-old"), "k1");
    assert_eq!(sealed_with("ord-new"), "k2");

    // The rotated store opens both; the old one only what k1 sealed.
    for order in ["ord-old", "ord-new"] {
        let session = after.session(&order.parse().unwrap()).await.unwrap();
        assert!(session.is_some(), "{order}");
    }
    let old = after
        .session(&"ord-old".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let route = old.route_pairs(now() + 60).remove(0).routes()[0].clone();
    let read = after.route(&route.caller, &route.number).await.unwrap();
    assert_eq!(read.map(|r| r.callee), Some(route.callee));
    assert!(before.session(&"ord-new".parse().unwrap()).await.is_err());
}
