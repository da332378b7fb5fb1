//! The webhook Lambda: configuration, clients and the router, built once per cold start.

use std::sync::Arc;

use lambda_http::{run, tracing, Error};
use vnmask::aws::{sdk_config, SdkTimeouts};
use vnmask::config::Env;
use webhook::{router, EnvironmentLoader, InteractionQueue, Readiness, Webhook, WebhookSettings};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    vnmask::telemetry::install_panic_hook();
    // How to answer comes from the environment alone: a mistake there is a deploy error.
    let settings = WebhookSettings::from_source(&Env)?;
    // Interactive timeouts: a DynamoDB outage must still let a call be refused within 2 s.
    let interactive_sdk = sdk_config(SdkTimeouts::INTERACTIVE).await;
    let loader = EnvironmentLoader::new(
        Box::new(Env),
        sdk_config(SdkTimeouts::STARTUP).await,
        interactive_sdk.clone(),
    );
    // Credentials and keys may fail to load, or be slow to (Secrets Manager or KMS down): the
    // webhook then refuses every call in the provider's format and loads again on later requests.
    let ready = Readiness::start(
        Arc::new(loader),
        settings.reload_after,
        settings.retry_load_after,
        settings.first_load_wait,
    )
    .await;
    let interactions = settings.interactions_queue_url.clone().map(|url| {
        InteractionQueue::new(
            aws_sdk_sqs::Client::new(&interactive_sdk),
            url,
            settings.interactions_timeout,
        )
    });
    run(router(Arc::new(Webhook::with_readiness(
        settings,
        ready,
        interactions,
    ))))
    .await
}
