//! The webhook Lambda: configuration, clients and the router, built once per cold start.

use std::sync::Arc;

use lambda_extension::{service_fn, Extension, LambdaEvent, NextEvent};
use lambda_http::{run, tracing, Error};
use tokio::sync::Mutex;
use vnmask::aws::{sdk_config, SdkTimeouts};
use vnmask::config::Env;
use webhook::{
    router, EnvironmentLoader, InteractionQueue, Outbox, Readiness, Webhook, WebhookSettings,
    ANSWER_WAIT,
};

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
        settings.confirm_routes.clone(),
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
    let queue = settings.interactions_queue_url.clone().map(|url| {
        InteractionQueue::new(
            aws_sdk_sqs::Client::new(&interactive_sdk),
            url,
            settings.interactions_timeout,
        )
    });
    let (outbox, drain) = Outbox::new(queue);
    let webhook = Arc::new(Webhook::with_readiness(settings, ready, Some(outbox)));
    // An internal extension: Lambda returns the answer as soon as the handler does, and freezes
    // the environment only once every extension has asked for its next event, so each
    // invocation's after-the-answer work (interactions, connected calls) is done before any
    // freeze.
    let drain = Arc::new(Mutex::new(drain));
    let extension = Extension::new()
        .with_events(&["INVOKE"])
        .with_events_processor(service_fn(move |event: LambdaEvent| {
            let drain = drain.clone();
            async move {
                if let NextEvent::Invoke(invoke) = event.next {
                    let mut drain = drain.lock().await;
                    drain
                        .flush_invocation(&invoke.request_id, ANSWER_WAIT)
                        .await;
                }
                Ok::<(), Error>(())
            }
        }))
        .with_extension_name("vnmask-after-answer")
        .register()
        .await?;
    tokio::try_join!(run(router(webhook)), extension.run())?;
    Ok(())
}
