//! The event contract: docs/events.schema.json, docs/events.md and the parser agree.

use crate::common;

use assign::RetryReason;
use common::*;
use serde_json::Value;
use vnmask::events::{OrderEvent, RejectReason};

/// Rules the schema cannot express; the parser enforces them (docs/events.md).
const BEYOND_THE_SCHEMA: [&str; 3] = ["invalid_phone", "person_twice", "unknown_market"];

#[test]
fn schema_is_a_valid_draft_2020_12_schema() {
    let schema = schema();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    jsonschema::draft202012::meta::validate(&schema).expect("valid against the meta-schema");
}

#[test]
fn schema_and_parser_agree_on_every_fixture_body() {
    let validator = validator(None);
    let (mut valid, mut refused_by_both, mut beyond) = (0, 0, 0);
    for name in fixture_names() {
        for (i, record) in fixture(&name).records.iter().enumerate() {
            let body = record.body.as_deref().unwrap();
            let schema_ok = serde_json::from_str::<Value>(body)
                .map(|v| validator.is_valid(&v))
                .unwrap_or(false);
            match (OrderEvent::parse(body), schema_ok) {
                (Ok(_), true) => valid += 1,
                (Ok(_), false) => panic!("{name}[{i}]: parsed, but the schema refuses it"),
                (Err(_), false) => refused_by_both += 1,
                (Err(e), true) => {
                    assert!(
                        BEYOND_THE_SCHEMA.contains(&e.reason().as_str()),
                        "{name}[{i}]: schema accepts what the parser refuses: {e}"
                    );
                    beyond += 1;
                }
            }
        }
    }
    // Each branch is exercised, so that this test can fail.
    assert!(valid >= 20, "{valid} valid bodies");
    assert!(refused_by_both >= 5, "{refused_by_both} refused by both");
    assert!(beyond >= 4, "{beyond} refused beyond the schema");
}

/// The ```json blocks of docs/events.md, but the interactions stream's (those have a `kind`:
/// the webhook's tests check them).
fn documented_examples() -> Vec<Value> {
    events_doc()
        .split("```json")
        .skip(1)
        .map(|block| {
            let json = block.split("```").next().unwrap();
            serde_json::from_str::<Value>(json).expect("a documented example is JSON")
        })
        .filter(|example| example.get("kind").is_none())
        .collect()
}

#[test]
fn documented_examples_are_valid() {
    let events = validator(None);
    let notices = validator(Some("NumbersAssigned"));
    let examples = documented_examples();
    assert!(examples.len() >= 4);
    for example in examples {
        if example["type"] == "NumbersAssigned" {
            assert!(notices.is_valid(&example), "{example}");
        } else {
            assert!(events.is_valid(&example), "{example}");
            OrderEvent::parse(&example.to_string()).expect("the parser takes it");
        }
    }
}

#[test]
fn issue_example_is_the_first_documented_example() {
    let first = &documented_examples()[0];
    let event = OrderEvent::parse(&first.to_string()).unwrap();
    assert_eq!(event.order_id.as_str(), "ord-1001");
    assert_eq!(event.version, 3);
    assert_eq!(event.participants.map(|p| p.len()), Some(2));
}

#[test]
fn schema_refuses_a_wrong_notification() {
    let notices = validator(Some("NumbersAssigned"));
    let leaky: Value = serde_json::json!({
        "type": "NumbersAssigned", "event_id": "e-1", "order_id": "ord-1", "version": 1,
        "market": "IN",
        "participants": [{"user_id": "u-c", "role": "customer", "phone": "+919812345678",
                          "contacts": []}]});
    assert!(
        !notices.is_valid(&leaky),
        "no field may carry a real number"
    );
}

/// docs/events.md.
fn events_doc() -> String {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/events.md");
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn dead_letter_reasons_are_the_documented_ones() {
    let doc = events_doc();
    let table = doc
        .split("| reason | cause |")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .expect("docs/events.md has the dead-letter reason table");
    let documented: Vec<&str> = table
        .lines()
        .filter_map(|row| row.strip_prefix("| `"))
        .filter_map(|row| row.split('`').next())
        .collect();
    let ours: Vec<&str> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(documented, ours);
}

#[test]
fn retry_reasons_are_the_documented_ones() {
    let doc = events_doc();
    let section = doc
        .split("### Left for retry")
        .nth(1)
        .and_then(|rest| rest.split("\n#").next())
        .expect("docs/events.md says why records are left for retry");
    let mut documented: Vec<&str> = section
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|code| {
            *code != "reason" && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
        .collect();
    documented.sort_unstable();
    let mut ours: Vec<&str> = RetryReason::ALL.iter().map(|r| r.as_str()).collect();
    ours.sort_unstable();
    assert_eq!(documented, ours);
}
