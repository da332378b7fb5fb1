//! The webhook Lambda: configuration, clients and the router, built once per cold start.

use std::sync::Arc;

use lambda_http::{run, tracing, Error};
use vnmask::aws::{sdk_config, SdkTimeouts};
use vnmask::config::{Env, StoreConfig};
use webhook::{router, InteractionQueue, Webhook, WebhookConfig};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    vnmask::telemetry::install_panic_hook();
    let config = WebhookConfig::from_source(&Env)?;
    let store_config = StoreConfig::from_source(&Env)?;
    // Interactive timeouts: a DynamoDB outage must still let a call be refused within 2 s.
    let sdk = sdk_config(SdkTimeouts::INTERACTIVE).await;
    let store = store_config.connect(&sdk).await?;
    let interactions = config.interactions_queue_url.clone().map(|url| {
        InteractionQueue::new(
            aws_sdk_sqs::Client::new(&sdk),
            url,
            config.interactions_timeout,
        )
    });
    run(router(Arc::new(Webhook::new(
        Arc::new(store),
        config,
        interactions,
    ))))
    .await
}
