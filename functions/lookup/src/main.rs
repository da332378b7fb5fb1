//! The lookup Lambda: configuration and clients once per cold start, then the router.

use std::sync::Arc;

use lookup::config::LookupConfig;
use lookup::orders::OrdersApi;
use lookup::{router, Lookup};
use vnmask::assignment::Assigner;
use vnmask::aws::{sdk_config, SdkTimeouts};
use vnmask::config::{assign_settings, Env, StoreConfig};
use vnmask::secrets::{Credentials, Layered};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambda_http::tracing::init_default_subscriber();
    vnmask::telemetry::install_panic_hook();

    // Cold start, off any request's path: patient timeouts for Secrets Manager and KMS.
    let startup_sdk = sdk_config(SdkTimeouts::STARTUP).await;
    let credentials = Credentials::from_environment(&Env, &startup_sdk).await?;
    let store_config = StoreConfig::from_source(&Env)?;
    let settings = assign_settings(&Env)?;
    let config = LookupConfig::from_source(&Layered {
        env: &Env,
        credentials: &credentials,
    })?;
    if config.identity.local_claims_header.is_some() {
        tracing::warn!(
            header = ?config.identity.local_claims_header,
            "local claims header honoured: this process is not in AWS Lambda"
        );
    }
    let orders = config.orders.clone().map(OrdersApi::new).transpose()?;
    if orders.is_none() {
        tracing::warn!("ORDERS_API_URL is not set: orders without a session answer 404");
    }
    let sdk = sdk_config(SdkTimeouts::INTERACTIVE).await;
    let store = Arc::new(store_config.connect_with(&startup_sdk, &sdk).await?);
    let lookup = Lookup::new(
        Arc::new(Assigner::new(store.clone(), settings)),
        store,
        orders,
        &config,
    );

    lambda_http::run(router(Arc::new(lookup))).await
}
