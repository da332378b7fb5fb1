//! No real number reaches a log line, a metric, a dead letter or a panic's log line. In a test
//! binary of its own: it captures log lines with a thread-scoped subscriber, which other tests
//! running at the same time in the same process would race (tracing caches each callsite's
//! interest process-wide), and it sets the process-wide panic hook.

use crate::common;

use common::*;
use vnmask_tests::CapturedLogs;

#[tokio::test(flavor = "current_thread")]
async fn no_real_number_reaches_logs_metrics_or_dead_letter_attributes() {
    // A current-thread runtime polls every task here, where the subscriber is.
    let captured = CapturedLogs::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        // Ours at every level; the SDK's HTTP bodies, logged at TRACE, hold what is sent.
        .with_env_filter("debug,assign=trace,vnmask=trace")
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let fx = Fx::new().await;
    let mut metrics = Vec::new();
    for name in [
        "seeds_assigned.json",
        "rejects.json",
        "batch_with_poison.json",
        "shared_ride.json",
        "fifo_batch.json",
    ] {
        let report = fx.handler.process(fixture(name)).await;
        metrics.extend(report.metrics().iter().map(|m| m.to_json().to_string()));
    }
    // A panic's message can quote anything, a real number included: the hook every function
    // installs logs where it happened, never what it says.
    let quoted = fixture_phone_numbers();
    vnmask::telemetry::install_panic_hook();
    let panicked = std::panic::catch_unwind(|| panic!("participant {} is bad", quoted[0]));
    // The default hook again, so that this test's own failures print their messages.
    drop(std::panic::take_hook());
    assert!(panicked.is_err());

    let letters = fx.dead_letters().await;
    assert_eq!(letters.len(), 11);
    let attributes: Vec<String> = letters
        .iter()
        .flat_map(|l| {
            l.message_attributes
                .clone()
                .unwrap_or_default()
                .into_values()
        })
        .filter_map(|v| v.string_value().map(str::to_owned))
        .collect();
    let logs = captured.text();

    // The capture works: it holds the handler's lines.
    assert!(logs.contains("ord-1001") && logs.contains("dead_lettered"));
    assert!(attributes.iter().any(|a| a == "invalid_phone"));
    assert!(
        logs.contains(r#""message":"panic""#) && logs.contains("tests/logs.rs"),
        "the panic hook logs the panic's location"
    );
    for number in fixture_phone_numbers() {
        assert!(!logs.contains(&number), "a log line holds a real number");
        assert!(
            !metrics.iter().any(|m| m.contains(&number)),
            "a metric holds a real number"
        );
        assert!(
            !attributes.iter().any(|a| a.contains(&number)),
            "a dead-letter attribute holds a real number"
        );
    }
}
