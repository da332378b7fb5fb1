//! The lookup Lambda: configuration and clients once per cold start, then the router.

use std::sync::Arc;

use lookup::config::LookupConfig;
use lookup::orders::OrdersApi;
use lookup::{router, Lookup};
use vnmask::assignment::Assigner;
use vnmask::aws::{sdk_config, SdkTimeouts};
use vnmask::config::{assign_settings, Env, StoreConfig};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambda_http::tracing::init_default_subscriber();
    vnmask::telemetry::install_panic_hook();

    let store_config = StoreConfig::from_source(&Env)?;
    let settings = assign_settings(&Env)?;
    let config = LookupConfig::from_source(&Env)?;
    if config.identity.local_claims_header.is_some() {
        tracing::warn!(
            header = ?config.identity.local_claims_header,
            "local claims header honoured: this process is not in AWS Lambda"
        );
    }
    let orders = config.orders.clone().map(OrdersApi::new).transpose()?;
    if orders.is_none() {
        tracing::warn!("ORDERS_API_URL is not set: orders without a session answer 503");
    }
    let sdk = sdk_config(SdkTimeouts::INTERACTIVE).await;
    let store = Arc::new(store_config.connect(&sdk).await?);
    let lookup = Lookup::new(Arc::new(Assigner::new(store, settings)), orders, &config);

    lambda_http::run(router(Arc::new(lookup))).await
}
