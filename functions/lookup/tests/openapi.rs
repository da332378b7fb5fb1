//! Real responses of the lookup handler, success and every error, validated against
//! docs/openapi.yaml: status documented, content type documented, body valid against the
//! documented schema (with `$ref`s into `components`), required headers present and valid.

use crate::common;

use aws_sdk_dynamodb::types::AttributeValue;
use common::{assignment, completion, config, fixture, jwt_event, Answer};
use lookup::problem::ProblemKind;
use serde_json::{json, Value};
use vnmask::store::dynamodb::attrs;
use vnmask_tests::now;
use vnmask_tests::people::{customer, driver};

const CONTACTS: &str = "/v1/orders/{order_id}/contacts";

fn openapi() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.yaml");
    let text = std::fs::read_to_string(path).expect("docs/openapi.yaml exists");
    serde_norway::from_str(&text).expect("docs/openapi.yaml is YAML")
}

/// Follows a local `$ref` (`#/components/...`) if `node` is one.
fn resolve<'a>(doc: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').expect("a local $ref");
            resolve(
                doc,
                doc.pointer(pointer)
                    .unwrap_or_else(|| panic!("{reference} resolves")),
            )
        }
        None => node,
    }
}

/// Forbids properties a schema does not declare, everywhere, so that an undocumented field in a
/// response fails the test (the document itself leaves objects open for additive changes).
fn closed(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            map.values_mut().for_each(closed);
        }
        Value::Array(items) => items.iter_mut().for_each(closed),
        _ => {}
    }
}

/// Validates `instance` against `schema`, a schema found in `doc` whose `$ref`s point into it.
fn check_schema(doc: &Value, schema: &Value, instance: &Value, what: &str) {
    let mut root = doc.clone();
    closed(&mut root["components"]["schemas"]);
    let mut schema = schema.clone();
    closed(&mut schema);
    root["components"]["schemas"]["__under_test"] = schema;
    root["$ref"] = json!("#/components/schemas/__under_test");
    let validator = jsonschema::draft202012::new(&root).expect("the schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: {instance} does not match: {errors:#?}"
    );
}

/// Checks `answer` against the documented response of `method path`.
fn check(doc: &Value, path: &str, method: &str, answer: &Answer) {
    let what = format!("{method} {path} -> {}", answer.status.as_u16());
    let operation = &doc["paths"][path][method];
    assert!(operation.is_object(), "{method} {path} is documented");
    let response = operation["responses"]
        .get(answer.status.as_str())
        .unwrap_or_else(|| panic!("{what}: status not documented"));
    let response = resolve(doc, response);
    let content_type = answer.content_type().split(';').next().unwrap().trim();
    let media = response["content"]
        .get(content_type)
        .unwrap_or_else(|| panic!("{what}: content type {content_type} not documented"));
    check_schema(doc, resolve(doc, &media["schema"]), &answer.body, &what);
    if let Some(headers) = response["headers"].as_object() {
        for (name, header) in headers {
            let header = resolve(doc, header);
            let value = answer.header(name);
            if header["required"] == json!(true) {
                assert!(value.is_some(), "{what}: header {name} is required");
            }
            if let Some(value) = value {
                check_schema(
                    doc,
                    &header["schema"],
                    &json!(value),
                    &format!("{what} {name}"),
                );
            }
        }
    }
}

#[tokio::test]
async fn every_lookup_answer_matches_the_document() {
    let doc = openapi();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
    let orders = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::path("/orders/ord-down"))
        .respond_with(wiremock::ResponseTemplate::new(502))
        .mount(&orders)
        .await;
    let fx = fixture(4, config(&[("ORDERS_API_URL", &orders.uri())])).await;
    let t = now();
    fx.event(&assignment("ord-1", 3, &[customer(1), driver(1)]), t)
        .await;
    fx.event(&assignment("ord-2", 1, &[customer(2), driver(1)]), t - 600)
        .await;
    fx.event(&completion("ord-2", 2), t - 60).await;
    // A session item nobody can read: the one error retrying does not fix.
    fx.dynamo
        .client
        .put_item()
        .table_name(&fx.dynamo.table)
        .item(
            attrs::PK,
            AttributeValue::S(attrs::session_pk("ord-corrupt")),
        )
        .item(attrs::SK, AttributeValue::S(attrs::SESSION_SK.into()))
        .send()
        .await
        .unwrap();

    let mut anonymous = jwt_event("/v1/orders/ord-1/contacts", "c1");
    anonymous["requestContext"]
        .as_object_mut()
        .unwrap()
        .remove("authorizer");
    let mut delete = jwt_event("/v1/orders/ord-1/contacts", "c1");
    delete["requestContext"]["http"]["method"] = json!("DELETE");

    let cases = [
        (
            "active order",
            jwt_event("/v1/orders/ord-1/contacts", "c1"),
            200,
            "",
        ),
        (
            "ended order",
            jwt_event("/v1/orders/ord-2/contacts", "d1"),
            200,
            "",
        ),
        (
            "malformed id",
            jwt_event("/v1/orders/a%20b/contacts", "c1"),
            400,
            "invalid-order-id",
        ),
        ("no identity", anonymous, 401, "unauthenticated"),
        (
            "stranger",
            jwt_event("/v1/orders/ord-1/contacts", "d9"),
            404,
            "order-not-found",
        ),
        ("wrong method", delete, 405, "method-not-allowed"),
        (
            "unreadable session",
            jwt_event("/v1/orders/ord-corrupt/contacts", "c1"),
            500,
            "internal",
        ),
        (
            "orders service down",
            jwt_event("/v1/orders/ord-down/contacts", "c1"),
            503,
            "orders-unavailable",
        ),
    ];
    for (what, event, status, problem) in cases {
        let method = event["requestContext"]["http"]["method"]
            .as_str()
            .unwrap()
            .to_ascii_lowercase();
        let answer = fx.send(event).await;
        assert_eq!(answer.status.as_u16(), status, "{what}: {:?}", answer.body);
        if !problem.is_empty() {
            assert_eq!(
                answer.problem_type(),
                format!("urn:vnmask:problem:{problem}"),
                "{what}"
            );
        }
        // A 405 is documented on the operation it refuses, under the GET it allows.
        let documented = if method == "delete" {
            "get"
        } else {
            method.as_str()
        };
        check(&doc, CONTACTS, documented, &answer);
    }
}

#[test]
fn every_problem_type_is_documented() {
    let doc = openapi();
    let documented = doc["components"]["schemas"]["Problem"]["properties"]["type"]["enum"]
        .as_array()
        .unwrap()
        .clone();
    let emitted: Vec<Value> = ProblemKind::ALL
        .iter()
        .map(|k| json!(k.type_uri()))
        .collect();
    assert_eq!(documented, emitted);
}

#[test]
fn closing_the_schema_catches_an_undocumented_field() {
    // The check itself must be able to fail.
    let doc = openapi();
    let schema = json!({"$ref": "#/components/schemas/ContactList"});
    let good = json!({"order_id": "ord-1", "version": 1, "contacts": []});
    check_schema(&doc, &schema, &good, "good");
    let leaky = json!({"order_id": "ord-1", "version": 1, "contacts": [{
        "role": "driver", "user_id": "d1", "virtual_number": "+911140001000",
        "capabilities": ["voice"], "valid_until": null, "phone": "+919710000001"}]});
    let caught = std::panic::catch_unwind(|| check_schema(&doc, &schema, &leaky, "leaky"));
    assert!(
        caught.is_err(),
        "an extra `phone` field must fail validation"
    );
}

/// The webhook's JSON answers come from the shared renderers; their shapes must be the documented ones.
#[test]
fn webhook_json_answers_match_the_document() {
    use vnmask::domain::{RealNumber, Route, VirtualNumber};
    use vnmask::providers::exotel::{self, ConnectSettings};
    use vnmask::providers::generic;
    use vnmask::routing::{Decision, Refusal};

    let doc = openapi();
    let route = Route {
        caller: RealNumber::parse("+919810000001").unwrap(),
        number: VirtualNumber::parse("+911140001000").unwrap(),
        order_id: "ord-1".parse().unwrap(),
        market: "IN".parse().unwrap(),
        caller_role: "customer".parse().unwrap(),
        callee_role: "driver".parse().unwrap(),
        callee: RealNumber::parse("+919710000001").unwrap(),
        capabilities: vnmask::domain::Capabilities::VOICE_AND_SMS,
        record: false,
        stands_for: None,
        expires_at: now() + 60,
        closed: false,
    };
    // Every refusal: a new one stops this from compiling until it is listed below.
    let _listed = |r: Refusal| match r {
        Refusal::CallerUnknown
        | Refusal::NotOurNumber
        | Refusal::NoRoute
        | Refusal::StoreError
        | Refusal::StoreTimeout
        | Refusal::Replayed
        | Refusal::NotReady
        | Refusal::ChannelUnavailable
        | Refusal::PinWrong
        | Refusal::PinLimited
        | Refusal::ClosedAfterEnd => (),
    };
    let recorded = Route {
        record: true,
        ..route.clone()
    };
    let mut decisions = vec![Decision::Connect(route), Decision::Connect(recorded)];
    decisions.extend(
        [
            Refusal::CallerUnknown,
            Refusal::NotOurNumber,
            Refusal::NoRoute,
            Refusal::StoreError,
            Refusal::StoreTimeout,
            Refusal::Replayed,
            Refusal::NotReady,
            Refusal::ChannelUnavailable,
            Refusal::PinWrong,
            Refusal::PinLimited,
            Refusal::ClosedAfterEnd,
        ]
        .map(Decision::Refuse),
    );
    decisions.extend([
        Decision::AskPin { again: false },
        Decision::AskPin { again: true },
    ]);
    let generic_schema = &doc["paths"]["/v1/providers/generic/route"]["post"]["responses"]["200"]
        ["content"]["application/json"]["schema"];
    let exotel_response = resolve(
        &doc,
        &doc["paths"]["/v1/providers/exotel/connect"]["get"]["responses"]["200"],
    );
    let exotel_schema = &exotel_response["content"]["application/json"]["schema"];
    let settings = ConnectSettings {
        max_ringing_duration: 30,
        max_conversation_duration: 3600,
    };
    for decision in &decisions {
        let body: Value = serde_json::from_str(&generic::route_response(decision)).unwrap();
        check_schema(&doc, generic_schema, &body, "generic answer");
        let body: Value =
            serde_json::from_str(&exotel::connect_response(decision, &settings)).unwrap();
        check_schema(&doc, exotel_schema, &body, "exotel answer");
    }
}
