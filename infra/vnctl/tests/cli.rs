//! The real vnctl binary against the local services (DynamoDB Local, moto SQS and KMS).

use std::collections::BTreeMap;
use std::process::{Command, Output};

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::Value;
use vnmask::assignment::{AssignSettings, Assigner, OrderChange, OrderUpdate};
use vnmask::config::StoreConfig;
use vnmask::providers::{twilio, Secret};
use vnmask_tests::people::{customer, driver};
use vnmask_tests::{create_table, kms_store_env, local_sdk, market, now};

struct Vnctl {
    env: BTreeMap<String, String>,
}

impl Vnctl {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_vnctl"))
            .args(args)
            .envs(&self.env)
            .output()
            .expect("vnctl runs")
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        assert!(
            out.status.success(),
            "vnctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON output")
    }
}

async fn vnctl() -> (Vnctl, aws_config::SdkConfig) {
    let sdk = local_sdk().await;
    let table = create_table(&aws_sdk_dynamodb::Client::new(&sdk)).await;
    let env = kms_store_env(&sdk, &table).await;
    (Vnctl { env }, sdk)
}

#[tokio::test]
async fn pool_numbers_are_added_listed_drained_and_bad_input_is_refused() {
    let (cli, _) = vnctl().await;
    cli.json(&["pool", "add", "+911140000010", "--market", "IN"]);
    cli.json(&[
        "pool",
        "add",
        "+911140000011",
        "--market",
        "IN",
        "--capabilities",
        "voice",
    ]);
    let listed = cli.json(&["pool", "list", "--market", "IN"]);
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(listed[0]["state"], "active");
    assert_eq!(listed[1]["capabilities"], serde_json::json!(["voice"]));

    cli.json(&["pool", "drain", "+911140000010", "--market", "IN"]);
    let draining = cli.json(&["pool", "list", "--market", "IN", "--state", "draining"]);
    assert_eq!(draining.as_array().unwrap().len(), 1);
    assert_eq!(draining[0]["number"], "+911140000010");

    let missing = cli.run(&["pool", "retire", "+911149999999", "--market", "IN"]);
    assert_eq!(missing.status.code(), Some(3), "not found");
    let bad = cli.run(&["pool", "add", "12345", "--market", "IN"]);
    assert_eq!(bad.status.code(), Some(2), "bad input");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("E.164"));
    let unknown_market = cli.run(&["pool", "list", "--market", "XX"]);
    assert_eq!(unknown_market.status.code(), Some(2));
    assert_eq!(
        cli.json(&["pool", "list", "--market", "IN"])
            .as_array()
            .unwrap()
            .len(),
        2,
        "nothing changed"
    );
}

#[tokio::test]
async fn pool_numbers_are_quarantined_and_released_with_a_reason_that_is_never_a_phone_number() {
    let (cli, _) = vnctl().await;
    cli.json(&["pool", "add", "+911140000010", "--market", "IN"]);
    let held = cli.json(&[
        "pool",
        "quarantine",
        "+911140000010",
        "--market",
        "IN",
        "--reason",
        "carrier spam label, ticket 4411",
    ]);
    assert_eq!(held["state"], "quarantined");
    assert_eq!(held["hold"]["reason"], "operator");
    assert_eq!(held["hold"]["note"], "carrier spam label, ticket 4411");
    let listed = cli.run(&["pool", "list", "--market", "IN"]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.contains("quarantined")
            && text.contains("operator since")
            && text.contains("ticket 4411"),
        "{text}"
    );

    // Quarantined twice, a reason that may be a phone number, or none: refused, nothing changes.
    let again = cli.run(&[
        "pool",
        "quarantine",
        "+911140000010",
        "--market",
        "IN",
        "--reason",
        "again",
    ]);
    assert_eq!(again.status.code(), Some(2));
    let phone = cli.run(&[
        "pool",
        "quarantine",
        "+911140000010",
        "--market",
        "IN",
        "--reason",
        "call 98123 45678",
    ]);
    assert_eq!(phone.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&phone.stderr);
    assert!(
        stderr.contains("--reason") && !stderr.contains("98123"),
        "{stderr}"
    );
    let none = cli.run(&["pool", "quarantine", "+911140000010", "--market", "IN"]);
    assert_eq!(none.status.code(), Some(2));
    let listed = cli.json(&["pool", "list", "--market", "IN", "--state", "quarantined"]);
    assert_eq!(listed[0]["hold"]["note"], "carrier spam label, ticket 4411");

    // Released: cooling off for the period, keeping why it was held.
    let cooling = cli.json(&[
        "pool",
        "release",
        "+911140000010",
        "--market",
        "IN",
        "--cooling-off-seconds",
        "3600",
    ]);
    assert_eq!(cooling["state"], "cooling_off");
    let hold = &cooling["hold"];
    assert_eq!(hold["reason"], "operator");
    assert_eq!(
        hold["until"].as_i64().unwrap() - hold["since"].as_i64().unwrap(),
        3600
    );
    // Released at once: active, no hold. An active number has nothing to release.
    let active = cli.json(&[
        "pool",
        "release",
        "+911140000010",
        "--market",
        "IN",
        "--at-once",
    ]);
    assert_eq!(
        (active["state"].as_str(), active["hold"].is_null()),
        (Some("active"), true)
    );
    let nothing = cli.run(&["pool", "release", "+911140000010", "--market", "IN"]);
    assert_eq!(nothing.status.code(), Some(2));
}

#[tokio::test]
async fn session_show_redacts_real_numbers_unless_revealed() {
    let (cli, _, [customer_phone, _]) = one_served_order("ord-77").await;
    let shown = cli.run(&["session", "show", "ord-77"]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success());
    assert!(text.contains("+911140000010") && text.contains("customer"));
    assert!(
        !text.contains(&customer_phone[3..]),
        "real numbers are redacted"
    );
    let revealed = cli.json(&["session", "show", "ord-77", "--reveal"]);
    assert_eq!(
        revealed["participants"][0]["phone"],
        customer_phone.as_str()
    );
    assert_eq!(
        cli.run(&["session", "show", "ord-404"]).status.code(),
        Some(3)
    );
}

/// A vnctl on a fresh table with one pool number and order `order` served for a customer and
/// a driver: a session and its two routes. Returns the vnctl, the SDK and the two real numbers.
async fn one_served_order(order: &str) -> (Vnctl, aws_config::SdkConfig, [String; 2]) {
    let (cli, sdk) = vnctl().await;
    cli.json(&["pool", "add", "+911140000010", "--market", "IN"]);
    let store = std::sync::Arc::new(
        StoreConfig::from_source(&cli.env)
            .unwrap()
            .connect(&sdk)
            .await
            .unwrap(),
    );
    let assigner = Assigner::new(store, AssignSettings::for_markets([market("IN")]));
    let (c, d) = (customer(1), driver(1));
    let phones = [c.phone.expose().to_owned(), d.phone.expose().to_owned()];
    assigner
        .apply(
            &OrderUpdate {
                order_id: order.parse().unwrap(),
                market: market("IN"),
                version: 1,
                record: false,
                change: OrderChange::Participants(vec![c, d]),
            },
            now(),
        )
        .await
        .unwrap();
    (cli, sdk, phones)
}

#[tokio::test]
async fn a_served_order_audits_clean() {
    let (cli, _, _) = one_served_order("ord-5").await;
    let out = cli.json(&["audit"]);
    assert_eq!(out["complete"], true, "{out}");
    assert_eq!(
        out["scanned"], 7,
        "pool number, daily peak, session, two routes, each person's entry: {out}"
    );
    assert_eq!(
        (&out["live_routes"], &out["live_sessions"]),
        (&2.into(), &1.into())
    );
    assert_eq!(out["breaches"], serde_json::json!([]));
    assert!(out["read_units"].as_f64().unwrap() > 0.0, "{out}");
    let text = cli.run(&["audit", "--page-size", "1"]);
    assert!(text.status.success());
    assert!(
        text.stderr.is_empty(),
        "no progress when stderr is not a terminal"
    );
    let shown = String::from_utf8_lossy(&text.stdout);
    assert!(
        shown.contains("7 items in 8 page(s)") && shown.contains("breaches: none"),
        "{shown}"
    );
}

#[tokio::test]
async fn a_half_pair_is_named_by_order_and_number_only_and_exits_4() {
    // GIVEN a served order whose driver's route was lost: the customer reaches a driver who
    // cannot call back.
    let (cli, sdk, phones) = one_served_order("ord-6").await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let table = &cli.env["VNMASK_TABLE"];
    let items = dynamo
        .scan()
        .table_name(table)
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    let pk =
        |i: &std::collections::HashMap<String, AttributeValue>| i["pk"].as_s().unwrap().clone();
    let routes: Vec<_> = items
        .iter()
        .filter(|i| pk(i).starts_with("ROUTE#"))
        .collect();
    assert_eq!(routes.len(), 2);
    let person_keys: Vec<String> = routes
        .iter()
        .map(|i| pk(i).trim_start_matches("ROUTE#").to_owned())
        .collect();
    dynamo
        .delete_item()
        .table_name(table)
        .key("pk", routes[1]["pk"].clone())
        .key("sk", routes[1]["sk"].clone())
        .send()
        .await
        .unwrap();

    // WHEN the operator audits, in text and in JSON
    let text = cli.run(&["audit"]);
    let json = cli.run(&["--json", "audit"]);

    // THEN both exit 4 and name the order and the number, and nothing shows a person.
    assert_eq!(text.status.code(), Some(4));
    assert_eq!(json.status.code(), Some(4));
    let shown = String::from_utf8_lossy(&text.stdout);
    assert!(
        shown.contains("half_pair: order ord-6 on +911140000010"),
        "{shown}"
    );
    assert!(
        shown.contains("missing_route: order ord-6 on +911140000010"),
        "{shown}"
    );
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["breaches_by_kind"]["half_pair"], 1, "{report}");
    assert_eq!(report["breaches_by_kind"]["missing_route"], 1, "{report}");
    assert_eq!(report["live_routes"], 1);
    let half = report["breaches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["kind"] == "half_pair")
        .unwrap();
    assert_eq!(half["orders"], serde_json::json!(["ord-6"]));
    assert_eq!(half["virtual_number"], "+911140000010");
    for out in [&text, &json] {
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let national = phones.iter().map(|p| &p[3..]);
        for secret in national.chain(person_keys.iter().map(String::as_str)) {
            assert!(!all.contains(secret), "a person in {all}");
        }
    }
}

#[tokio::test]
async fn an_audit_stopped_by_its_read_unit_cap_is_incomplete_and_exits_5() {
    let (cli, _, _) = one_served_order("ord-7").await;
    // DynamoDB Local counts half a unit per page of small items: the cap stops it after two.
    let out = cli.run(&[
        "--json",
        "audit",
        "--page-size",
        "1",
        "--max-read-units",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(5));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["complete"], false, "{report}");
    assert_eq!(report["pages"], 2, "{report}");
    assert_eq!(
        report["breaches"],
        Value::Null,
        "a partial walk judges nothing"
    );
    let bad = cli.run(&["audit", "--read-units-per-second", "0"]);
    assert_eq!(bad.status.code(), Some(2), "bad usage");
}

#[tokio::test]
async fn events_are_checked_before_publishing_and_dead_letters_are_listed_and_replayed() {
    let (mut cli, sdk) = vnctl().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue = sqs
        .create_queue()
        .queue_name(format!("events-{}", now()))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let dlq = sqs
        .create_queue()
        .queue_name(format!("dlq-{}", now()))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    cli.env
        .insert("VNMASK_ORDER_EVENTS_QUEUE_URL".into(), queue.clone());
    cli.env.insert("VNMASK_DLQ_URL".into(), dlq.clone());
    let dir = std::env::temp_dir().join(format!("vnctl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let event = r#"{"event_id": "e-1", "type": "DriverAssigned", "order_id": "ord-1", "version": 3,
        "occurred_at": "2026-11-24T10:15:00Z", "market": "IN",
        "participants": [{"role": "customer", "user_id": "u-c", "phone": "+919812345678"},
                         {"role": "driver", "user_id": "u-d", "phone": "+919898765432"}]}"#;
    std::fs::write(dir.join("good.json"), event).unwrap();
    std::fs::write(
        dir.join("bad.json"),
        event.replace("+919812345678", "98123"),
    )
    .unwrap();

    let bad = cli.run(&["publish", dir.join("bad.json").to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        !String::from_utf8_lossy(&bad.stderr).contains("98123"),
        "errors never echo numbers"
    );
    let published = cli.json(&["publish", dir.join("good.json").to_str().unwrap()]);
    assert_eq!(published["order_id"], "ord-1");
    let got = sqs
        .receive_message()
        .queue_url(&queue)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert_eq!(got.len(), 1, "only the good event reached the queue");
    sqs.delete_message()
        .queue_url(&queue)
        .receipt_handle(got[0].receipt_handle.clone().unwrap())
        .send()
        .await
        .unwrap();

    // A dead letter as the assign function writes it.
    let text = |v: &str| {
        aws_sdk_sqs::types::MessageAttributeValue::builder()
            .data_type("String")
            .string_value(v)
            .build()
            .unwrap()
    };
    sqs.send_message()
        .queue_url(&dlq)
        .message_body(event)
        .message_attributes("vnmask_reason", text("unknown_market"))
        .message_attributes("vnmask_detail", text("market XX is not served"))
        .send()
        .await
        .unwrap();
    let listed = cli.run(&["dlq", "list"]);
    let out = String::from_utf8_lossy(&listed.stdout);
    assert!(
        out.contains("order=ord-1") && out.contains("reason=unknown_market"),
        "{out}"
    );
    assert!(!out.contains("9812345678"), "bodies are not printed");
    assert_eq!(
        cli.json(&["dlq", "list"]).as_array().unwrap().len(),
        1,
        "listing hides nothing"
    );

    let replayed = cli.json(&["dlq", "replay"]);
    assert_eq!(replayed["replayed"].as_array().unwrap().len(), 1);
    assert!(cli.json(&["dlq", "list"]).as_array().unwrap().is_empty());
    let back = sqs
        .receive_message()
        .queue_url(&queue)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert_eq!(back[0].body.as_deref(), Some(event));
}

#[tokio::test]
async fn generated_keys_unwrap_into_a_working_store() {
    let (cli, sdk) = vnctl().await;
    let kms = aws_sdk_kms::Client::new(&sdk);
    let key = kms
        .create_key()
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id;
    let keys = cli.json(&["keys", "generate", "--kms-key", &key, "--name", "k7"]);
    let mut env = cli.env.clone();
    env.insert(
        "VNMASK_HMAC_KEY".into(),
        keys["VNMASK_HMAC_KEY"].as_str().unwrap().into(),
    );
    env.insert(
        "VNMASK_DATA_KEYS".into(),
        keys["VNMASK_DATA_KEYS"].as_str().unwrap().into(),
    );
    let config = StoreConfig::from_source(&env).unwrap();
    assert_eq!(config.keys.as_ref().unwrap().current_data_key, "k7");
    config
        .connect(&sdk)
        .await
        .expect("the generated keys unwrap");
}

#[tokio::test]
async fn simulated_calls_carry_a_valid_twilio_signature() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/providers/twilio/voice"))
        .respond_with(ResponseTemplate::new(200).set_body_string(
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial callerId="+911140000010"><Number>+919898765432</Number></Dial></Response>"#,
        ))
        .mount(&server)
        .await;
    let (mut cli, _) = vnctl().await;
    cli.env
        .insert("VNMASK_PUBLIC_BASE_URL".into(), server.uri());
    cli.env
        .insert("VNMASK_TWILIO_AUTH_TOKENS".into(), "token-a,token-b".into());
    let out = cli.json(&[
        "simulate",
        "call",
        "--from",
        "+919812345678",
        "--to",
        "+911140000010",
    ]);
    assert_eq!(out["decision"], "connect");
    let received = server.received_requests().await.unwrap();
    let request = &received[0];
    let params: Vec<(String, String)> = serde_urlencoded::from_bytes(&request.body).unwrap();
    let signature = request
        .headers
        .get(twilio::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    let url = format!("{}/v1/providers/twilio/voice", server.uri());
    twilio::verify(&[Secret::new("token-a")], &url, &params, signature)
        .expect("signed with the first token");
    assert!(params
        .iter()
        .any(|(k, v)| k == "CallSid" && v.starts_with("CA")));
    assert_eq!(
        cli.run(&[
            "simulate",
            "call",
            "--from",
            "anonymous",
            "--to",
            "+911140000010"
        ])
        .status
        .code(),
        Some(2)
    );
}

#[tokio::test]
async fn a_simulated_call_asked_for_a_pin_keys_it_in_at_the_gathers_action() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/providers/twilio/voice"))
        .respond_with(ResponseTemplate::new(200).set_body_string(
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Gather input="dtmf" numDigits="6"><Say>PIN?</Say></Gather><Hangup/></Response>"#,
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(twilio::PIN_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_string(
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial callerId="+911140000010"><Number>+919898765432</Number></Dial></Response>"#,
        ))
        .mount(&server)
        .await;
    let (mut cli, _) = vnctl().await;
    cli.env
        .insert("VNMASK_PUBLIC_BASE_URL".into(), server.uri());
    cli.env
        .insert("VNMASK_TWILIO_AUTH_TOKENS".into(), "token-a".into());
    let call = |pin: Option<&str>| {
        let mut args = vec![
            "simulate",
            "call",
            "--from",
            "+919720000042",
            "--to",
            "+911140000010",
        ];
        args.extend(pin.map(|p| ["--pin", p]).into_iter().flatten());
        cli.json(&args)
    };
    assert_eq!(call(None)["decision"], "ask_pin");
    assert_eq!(call(Some("048213"))["decision"], "connect");
    let received = server.received_requests().await.unwrap();
    let pin_post = received
        .iter()
        .find(|r| r.url.path() == twilio::PIN_PATH)
        .expect("the PIN was posted to the Gather's action");
    let params: Vec<(String, String)> = serde_urlencoded::from_bytes(&pin_post.body).unwrap();
    let url = format!("{}{}", server.uri(), twilio::PIN_PATH);
    let signature = pin_post
        .headers
        .get(twilio::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    twilio::verify(&[Secret::new("token-a")], &url, &params, signature).expect("signed");
    assert!(params.contains(&("Digits".to_owned(), "048213".to_owned())));
    // A text has no PIN to key in.
    let sms = cli.run(&[
        "simulate",
        "sms",
        "--from",
        "+919720000042",
        "--to",
        "+911140000010",
        "--pin",
        "1",
    ]);
    assert_eq!(sms.status.code(), Some(2));
}

#[tokio::test]
async fn simulated_exotel_calls_send_the_connect_applets_request_in_national_form() {
    use wiremock::matchers::{method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/providers/exotel/connect"))
        .and(query_param("CallFrom", "09812345678"))
        .and(query_param("CallTo", "01140000010"))
        .and(query_param("vnmask_token", "exo-a"))
        .respond_with(ResponseTemplate::new(200).set_body_string(
            r#"{"fetch_after_attempt":false,"destination":{"numbers":["+919898765432"]},"outgoing_phone_number":"+911140000010"}"#,
        ))
        .mount(&server)
        .await;
    let (mut cli, _) = vnctl().await;
    cli.env
        .insert("VNMASK_PUBLIC_BASE_URL".into(), server.uri());
    cli.env
        .insert("VNMASK_EXOTEL_TOKENS".into(), "exo-a,exo-b".into());
    cli.env.remove("VNMASK_TWILIO_AUTH_TOKENS");
    let call = |from: &'static str, extra: &[&'static str]| {
        let mut args = vec!["simulate", "call", "--provider", "exotel"];
        args.extend(["--from", from, "--to", "01140000010"]);
        args.extend(extra);
        args
    };
    let out = cli.json(&call("09812345678", &[]));
    assert_eq!(out["decision"], "connect", "{out}");
    let received = server.received_requests().await.unwrap();
    let query = received[0].url.query().unwrap_or_default().to_owned();
    assert!(query.contains("CallSid="), "{query}");

    // Another answer (no number to dial) is a refusal; bad input never leaves vnctl.
    server.reset().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string(r#"{"fetch_after_attempt":false,"destination":{"numbers":[]}}"#),
        )
        .mount(&server)
        .await;
    assert_eq!(cli.json(&call("09812345678", &[]))["decision"], "refuse");
    for bad in [
        call("0981234", &[]),
        call("09812345678", &["--exotel-market", "XX"]),
        vec![
            "simulate",
            "sms",
            "--provider",
            "exotel",
            "--from",
            "09812345678",
            "--to",
            "01140000010",
        ],
    ] {
        assert_eq!(cli.run(&bad).status.code(), Some(2), "{bad:?}");
    }
    cli.env.remove("VNMASK_EXOTEL_TOKENS");
    let missing = cli.run(&call("09812345678", &[]));
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--exotel-token"));
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        1,
        "only the good request was sent"
    );
}
