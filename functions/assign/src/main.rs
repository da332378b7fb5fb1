//! The assign Lambda: configuration and clients once per cold start, then the handler.

use std::sync::Arc;

use assign::{AssignHandler, Outbox, QueueConfig};
use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{service_fn, LambdaEvent};
use vnmask::assignment::Assigner;
use vnmask::aws::{sdk_config, SdkTimeouts};
use vnmask::config::{assign_settings, Env, StoreConfig};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    vnmask::telemetry::install_panic_hook();

    let store_config = StoreConfig::from_source(&Env)?;
    let settings = assign_settings(&Env)?;
    let queues = QueueConfig::from_source(&Env)?;
    let sdk = sdk_config(SdkTimeouts::BACKGROUND).await;
    let store = Arc::new(store_config.connect(&sdk).await?);
    let handler = AssignHandler::new(
        Arc::new(Assigner::new(store, settings)),
        Outbox::new(aws_sdk_sqs::Client::new(&sdk), &queues),
        queues.concurrency,
    );

    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let handler = handler.clone();
        async move { handler.handle(event.payload).await }
    }))
    .await
}
