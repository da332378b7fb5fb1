//! pool-refresh on Lambda: configuration, clients and the runtime, nothing else.

use std::sync::Arc;

use lambda_runtime::{service_fn, LambdaEvent};
use pool_refresh::config::Config;
use pool_refresh::notify::{Notify, SqsNotify};
use pool_refresh::{inventory, Mover, Refresher};
use vnmask::assignment::Assigner;
use vnmask::aws::{sdk_config, SdkTimeouts};
use vnmask::config::Env;
use vnmask::secrets::{Credentials, Layered};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    vnmask::telemetry::install_panic_hook();
    let sdk = sdk_config(SdkTimeouts::BACKGROUND).await;
    // The providers' credentials come from the function's secret, never its environment.
    let credentials = Credentials::from_environment(&Env, &sdk).await?;
    let config = Config::from_source(&Layered {
        env: &Env,
        credentials: &credentials,
    })?;
    let store = Arc::new(config.store.connect(&sdk).await?);
    let http = config.http.client()?;
    let configured = inventory::from_config(&config, &http);
    let mover = Mover {
        assigner: Assigner::new(store.clone(), config.assign),
        notify: config.notify_url.map(|url| {
            Arc::new(SqsNotify::new(aws_sdk_sqs::Client::new(&sdk), url)) as Arc<dyn Notify>
        }),
    };
    let mut refresher = Refresher::new(store, configured.inventories, None, config.refresh.clone())
        .with_mover(mover);
    // Each market buys from the provider VNMASK_POOL_BUY_FROM names for it.
    for market in config.refresh.markets.keys() {
        let vendor = config
            .buy_from
            .for_market(market)
            .and_then(|name| configured.vendors.get(name));
        if let Some(vendor) = vendor {
            refresher = refresher.with_vendor_for(market.clone(), vendor.clone());
        }
    }
    let refresher = &refresher;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            refresher.handle(event.payload).await
        },
    ))
    .await
}
