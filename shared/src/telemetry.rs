//! What the functions tell operators besides their logs: CloudWatch metrics in the embedded
//! metric format (EMF), one JSON line on stdout per batch of metrics, which Lambda's log
//! pipeline turns into metrics with no API call (dimensions and values are ours to choose: never
//! put a phone number in either); and the panic hook every function installs.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

pub const NAMESPACE: &str = "vnmask";

/// Replaces the default panic hook, which prints the panic message (and a message can quote
/// anything, a real number included), with one error line that says where, never what.
/// Every function's `main` calls it once, before serving.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(location = ?info.location(), "panic");
    }));
}

#[derive(Debug, Clone, Copy)]
pub enum Unit {
    Count,
    Seconds,
    Milliseconds,
    Percent,
    None,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Seconds => "Seconds",
            Unit::Milliseconds => "Milliseconds",
            Unit::Percent => "Percent",
            Unit::None => "None",
        }
    }
}

/// One EMF record: a set of dimensions and the metrics measured under them.
#[derive(Debug, Clone)]
pub struct MetricSet {
    dimensions: Vec<(String, String)>,
    metrics: Vec<(String, f64, Unit)>,
}

impl MetricSet {
    /// Metrics of `function` (the `Function` dimension every record carries).
    pub fn new(function: &str) -> Self {
        MetricSet {
            dimensions: vec![("Function".into(), function.into())],
            metrics: Vec::new(),
        }
    }

    pub fn dimension(mut self, name: &str, value: &str) -> Self {
        self.dimensions.push((name.into(), value.into()));
        self
    }

    pub fn count(mut self, name: &str, value: u64) -> Self {
        self.metrics.push((name.into(), value as f64, Unit::Count));
        self
    }

    pub fn value(mut self, name: &str, value: f64, unit: Unit) -> Self {
        self.metrics.push((name.into(), value, unit));
        self
    }

    /// The EMF JSON document.
    pub fn to_json(&self) -> Value {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut doc = Map::new();
        doc.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [self.dimensions.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()],
                    "Metrics": self.metrics.iter().map(|(n, _, u)| json!({"Name": n, "Unit": u.as_str()})).collect::<Vec<_>>(),
                }],
            }),
        );
        for (k, v) in &self.dimensions {
            doc.insert(k.clone(), Value::String(v.clone()));
        }
        for (n, v, _) in &self.metrics {
            doc.insert(n.clone(), json!(v));
        }
        Value::Object(doc)
    }

    /// Writes the record to stdout, where Lambda picks it up.
    pub fn emit(&self) {
        if !self.metrics.is_empty() {
            println!("{}", self.to_json());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_declares_each_metric_and_dimension() {
        let doc = MetricSet::new("webhook")
            .dimension("Provider", "twilio")
            .count("Connected", 1)
            .to_json();
        let cw = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], "vnmask");
        assert_eq!(cw["Dimensions"][0], json!(["Function", "Provider"]));
        assert_eq!(
            cw["Metrics"][0],
            json!({"Name": "Connected", "Unit": "Count"})
        );
        assert_eq!(doc["Connected"], json!(1.0));
        assert_eq!(doc["Provider"], "twilio");
    }
}
