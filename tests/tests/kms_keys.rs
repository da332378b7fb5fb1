//! Key material comes from KMS (moto here) and is unwrapped once; then sealing is local.

use vnmask::config::StoreConfig;
use vnmask::domain::RealNumber;
use vnmask::store::AssignmentStore;
use vnmask_tests::{create_table, kms_store_env, local_sdk, market, now, pool, seed_pool};

#[tokio::test]
async fn keys_wrapped_by_kms_unwrap_into_a_working_store() {
    let sdk = local_sdk().await;
    let table = create_table(&aws_sdk_dynamodb::Client::new(&sdk)).await;
    let env = kms_store_env(&sdk, &table).await;
    let config = StoreConfig::from_source(&env).unwrap();
    assert!(!config.wrapped_hmac_key.is_empty());
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
