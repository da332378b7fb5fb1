//! template.yaml as a security reviewer reads it (issue 16): no credential in any function's
//! environment, each function's secret its own, capacity isolated per function and per route,
//! every alarm paging, least-privilege data access, access logs that cannot hold a token, and a
//! dead-letter queue only the operator reads.
//!
//! The template is read as written, with CloudFormation's short tags (`!Ref x`, `!GetAtt a.b`,
//! `!Sub s`, `!If [...]`) turned into their long forms (`{"Ref": x}`, `{"Fn::GetAtt": [a, b]}`,
//! …), so each check compares plain JSON (`vnmask_tests::template_json`). Conditions are not
//! evaluated here: an `!If` is checked as written (tests/tests/template_regions.rs resolves the
//! template for one region and for two).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};
use vnmask::store::dynamodb::attrs;
use vnmask_tests::{template_json as template, template_path};

// ---------------------------------------------------------------------------------------------
// Reading the template

fn reference(logical_id: &str) -> Value {
    json!({ "Ref": logical_id })
}

fn get_att(logical_id: &str, attribute: &str) -> Value {
    json!({ "Fn::GetAtt": [logical_id, attribute] })
}

/// The ARN of the table the stack uses, as every grant on it must name it: the home stack's
/// table (its replica here) with `HomeTableName`, else the global table with `ReplicaRegion`,
/// else the one-region table (docs/multi-region.md).
fn table_arn() -> Value {
    json!({ "Fn::If": [
        "ReadsHomeTable",
        { "Fn::Sub": "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${HomeTableName}" },
        { "Fn::If": ["Replicated", get_att("GlobalTable", "Arn"), get_att("Table", "Arn")] },
    ] })
}

/// The ARN of the table's `index`, chosen as [`table_arn`] chooses the table.
fn index_arn(index: &str) -> Value {
    json!({ "Fn::If": [
        "ReadsHomeTable",
        { "Fn::Sub": format!("arn:${{AWS::Partition}}:dynamodb:${{AWS::Region}}:${{AWS::AccountId}}:table/${{HomeTableName}}/index/{index}") },
        { "Fn::If": [
            "Replicated",
            { "Fn::Sub": format!("${{GlobalTable.Arn}}/index/{index}") },
            { "Fn::Sub": format!("${{Table.Arn}}/index/{index}") },
        ] },
    ] })
}

fn resources(doc: &Value) -> &Map<String, Value> {
    doc["Resources"]
        .as_object()
        .expect("the template has Resources")
}

fn resources_of_type<'a>(doc: &'a Value, kind: &str) -> Vec<(&'a str, &'a Value)> {
    resources(doc)
        .iter()
        .filter(|(_, r)| r["Type"] == kind)
        .map(|(id, r)| (id.as_str(), r))
        .collect()
}

fn resource<'a>(doc: &'a Value, logical_id: &str) -> &'a Value {
    resources(doc)
        .get(logical_id)
        .unwrap_or_else(|| panic!("no resource {logical_id}"))
}

/// The function built from `binary` (its `BuildProperties.Binary`): its logical id and resource.
fn function<'a>(doc: &'a Value, binary: &str) -> (&'a str, &'a Value) {
    let found: Vec<_> = resources_of_type(doc, "AWS::Serverless::Function")
        .into_iter()
        .filter(|(_, f)| f["Metadata"]["BuildProperties"]["Binary"] == binary)
        .collect();
    assert_eq!(found.len(), 1, "one function runs the {binary} binary");
    found[0]
}

const FUNCTIONS: [&str; 4] = ["assign", "webhook", "lookup", "pool-refresh"];

/// A function's environment: the globals, overridden by its own variables.
fn environment(doc: &Value, binary: &str) -> Map<String, Value> {
    let mut env = doc["Globals"]["Function"]["Environment"]["Variables"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let (_, f) = function(doc, binary);
    if let Some(own) = f["Properties"]["Environment"]["Variables"].as_object() {
        env.extend(own.clone());
    }
    env
}

/// The logical id of a function's role (`Role: !GetAtt SomeRole.Arn`).
fn role_of<'a>(doc: &'a Value, binary: &str) -> &'a str {
    let (_, f) = function(doc, binary);
    let role = &f["Properties"]["Role"]["Fn::GetAtt"];
    assert_eq!(role[1], "Arn", "{binary}'s role is a role of this template");
    role[0].as_str().unwrap()
}

/// Every statement of a role's inline policies; a statement under `!If` counts with both of
/// its branches (`AWS::NoValue` is no statement).
fn role_statements<'a>(doc: &'a Value, role: &str) -> Vec<&'a Value> {
    let mut out = Vec::new();
    for policy in resource(doc, role)["Properties"]["Policies"]
        .as_array()
        .expect("the role has inline policies")
    {
        for statement in policy["PolicyDocument"]["Statement"]
            .as_array()
            .expect("a policy has statements")
        {
            collect_statements(statement, &mut out);
        }
    }
    out
}

fn collect_statements<'a>(statement: &'a Value, out: &mut Vec<&'a Value>) {
    if let Some(branches) = statement.get("Fn::If") {
        for branch in branches.as_array().unwrap().iter().skip(1) {
            collect_statements(branch, out);
        }
    } else if statement.get("Effect").is_some() {
        out.push(statement);
    }
}

/// A statement's actions, whether one string or a list.
fn actions(statement: &Value) -> Vec<String> {
    match &statement["Action"] {
        Value::String(a) => vec![a.clone()],
        Value::Array(list) => list
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect(),
        other => panic!("unexpected Action {other}"),
    }
}

/// A string or a list of them, as a list.
fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(list) => list
            .iter()
            .map(|v| v.as_str().expect("a string").to_owned())
            .collect(),
        other => panic!("expected a string or a list of strings, got {other}"),
    }
}

/// What a role may do to the table: each DynamoDB action with the partition-key prefixes its
/// statement allows (`None`: any key).
fn table_grants(doc: &Value, role: &str) -> Vec<(String, Option<BTreeSet<String>>)> {
    let mut grants = Vec::new();
    for statement in role_statements(doc, role) {
        assert_eq!(statement["Effect"], "Allow");
        for action in actions(statement) {
            if !action.starts_with("dynamodb:") {
                continue;
            }
            // An index's grant is the index's own (checked where one is given).
            if serde_json::to_string(&statement["Resource"])
                .unwrap()
                .contains("/index/")
            {
                continue;
            }
            assert_eq!(
                statement["Resource"],
                table_arn(),
                "{role}'s {action} is on the table only"
            );
            let leading =
                &statement["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"];
            let prefixes = (!leading.is_null()).then(|| strings(leading).into_iter().collect());
            grants.push((action, prefixes));
        }
    }
    grants
}

/// A `dynamodb:LeadingKeys` pattern for every key starting with `prefix`.
fn key_pattern(prefix: &str) -> String {
    format!("{prefix}*")
}

/// One metric an alarm watches.
#[derive(Debug)]
struct Watched {
    namespace: String,
    name: String,
    dimensions: BTreeMap<String, Value>,
}

fn watched(alarm: &Value) -> Vec<Watched> {
    let props = &alarm["Properties"];
    let dims = |list: &Value| -> BTreeMap<String, Value> {
        list.as_array()
            .map(|ds| {
                ds.iter()
                    .map(|d| (d["Name"].as_str().unwrap().to_owned(), d["Value"].clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    if let Some(name) = props["MetricName"].as_str() {
        return vec![Watched {
            namespace: props["Namespace"].as_str().unwrap().to_owned(),
            name: name.to_owned(),
            dimensions: dims(&props["Dimensions"]),
        }];
    }
    props["Metrics"]
        .as_array()
        .expect("an alarm watches a metric or metric math")
        .iter()
        .filter_map(|m| m.get("MetricStat"))
        .map(|stat| Watched {
            namespace: stat["Metric"]["Namespace"].as_str().unwrap().to_owned(),
            name: stat["Metric"]["MetricName"].as_str().unwrap().to_owned(),
            dimensions: dims(&stat["Metric"]["Dimensions"]),
        })
        .collect()
}

/// The alarms that watch `namespace`/`name` with (at least) these dimensions.
fn alarms_watching<'a>(
    doc: &'a Value,
    namespace: &str,
    name: &str,
    dimensions: &[(&str, Value)],
) -> Vec<&'a str> {
    resources_of_type(doc, "AWS::CloudWatch::Alarm")
        .into_iter()
        .filter(|(_, alarm)| {
            watched(alarm).iter().any(|m| {
                m.namespace == namespace
                    && m.name == name
                    && dimensions
                        .iter()
                        .all(|(k, v)| m.dimensions.get(*k) == Some(v))
            })
        })
        .map(|(id, _)| id)
        .collect()
}

fn parameter<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["Parameters"]
        .get(name)
        .unwrap_or_else(|| panic!("no parameter {name}"))
}

/// The default of the Number parameter that `value` refers to.
fn number_parameter_default(doc: &Value, value: &Value) -> i64 {
    let name = value["Ref"]
        .as_str()
        .unwrap_or_else(|| panic!("{value} is a parameter reference"));
    let p = parameter(doc, name);
    assert_eq!(p["Type"], "Number", "{name} is a Number");
    p["Default"]
        .as_i64()
        .unwrap_or_else(|| panic!("{name} has a default"))
}

/// The logical id of the order events' dead-letter queue (the redrive target).
fn dead_letter_queue(doc: &Value) -> String {
    let targets: Vec<String> = resources_of_type(doc, "AWS::SQS::Queue")
        .into_iter()
        .filter_map(|(_, q)| {
            q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(targets.len(), 1, "one dead-letter queue");
    targets[0].clone()
}

// ---------------------------------------------------------------------------------------------
// Secrets

/// Credential variables as the code names them: they live in each function's secret.
const CREDENTIALS: [&str; 7] = [
    "VNMASK_TWILIO_AUTH_TOKENS",
    "VNMASK_EXOTEL_TOKENS",
    "VNMASK_GENERIC_SECRETS",
    "ORDERS_API_AUTH_VALUE",
    "VNMASK_TWILIO_API_KEY_SECRET",
    "VNMASK_TWILIO_AUTH_TOKEN",
    "VNMASK_EXOTEL_API_TOKEN",
];

/// Whether a variable's name says it holds a credential.
fn looks_secret(name: &str) -> bool {
    ["TOKEN", "SECRET", "AUTH_VALUE", "PASSWORD", "KEY"]
        .iter()
        .any(|word| name.contains(word))
}

/// Names that look secret and are not: KMS ciphertexts that only the key policy's principals
/// can open, the id of the function's secret, account and key identifiers, and Exotel's API
/// key, the user name half of its API credential (the token is the secret half).
fn not_a_credential(name: &str) -> bool {
    matches!(
        name,
        "VNMASK_HMAC_KEY"
            | "VNMASK_DATA_KEYS"
            | "VNMASK_DATA_KEY_CURRENT"
            | "VNMASK_SECRETS_ID"
            | "VNMASK_EXOTEL_API_KEY"
            // Vonage's API key is the account's public identifier (its secret is in the secret).
            | "VNMASK_VONAGE_API_KEY"
            // Telnyx's public keys check signatures; only Telnyx holds the private one.
            | "VNMASK_TELNYX_PUBLIC_KEYS"
    ) || name.ends_with("_SID")
}

#[test]
fn no_function_environment_holds_a_credential() {
    let doc = template();
    assert_eq!(
        resources_of_type(&doc, "AWS::Serverless::Function").len(),
        FUNCTIONS.len()
    );
    for binary in FUNCTIONS {
        let env = environment(&doc, binary);
        assert!(
            env.contains_key("VNMASK_TABLE"),
            "{binary} has its variables"
        );
        for (name, value) in &env {
            assert!(
                !looks_secret(name) || not_a_credential(name),
                "{binary}'s environment holds {name}"
            );
            assert!(!CREDENTIALS.contains(&name.as_str()), "{binary}: {name}");
            // A NoEcho parameter is a secret passed in; only the wrapped keys may be.
            if let Some(p) = value["Ref"].as_str() {
                if let Some(param) = doc["Parameters"].get(p) {
                    assert!(
                        param["NoEcho"] != true
                            || ["VNMASK_HMAC_KEY", "VNMASK_DATA_KEYS"].contains(&name.as_str()),
                        "{binary}'s {name} is the NoEcho parameter {p}"
                    );
                }
            }
        }
    }
}

#[test]
fn the_template_never_turns_on_local_development() {
    let text = std::fs::read_to_string(template_path()).unwrap();
    for local_only in ["VNMASK_LOCAL_DEVELOPMENT", "VNMASK_LOCAL_CLAIMS_HEADER"] {
        assert!(
            !text.contains(local_only),
            "template.yaml sets {local_only}"
        );
    }
}

#[test]
fn each_function_reads_only_its_own_secret() {
    let doc = template();
    let mut secrets_seen = BTreeSet::new();
    for binary in ["webhook", "lookup", "pool-refresh"] {
        let env = environment(&doc, binary);
        let secret = env["VNMASK_SECRETS_ID"]["Ref"]
            .as_str()
            .unwrap_or_else(|| panic!("{binary}'s VNMASK_SECRETS_ID names a secret"));
        let created = resource(&doc, secret);
        assert_eq!(created["Type"], "AWS::SecretsManager::Secret");
        assert_eq!(
            created["Properties"]["SecretString"], "{}",
            "{secret} starts empty: its values are put by the operator"
        );
        assert!(
            secrets_seen.insert(secret.to_owned()),
            "{secret} serves one function"
        );
        for other in FUNCTIONS {
            let grants: Vec<_> = role_statements(&doc, role_of(&doc, other))
                .into_iter()
                .filter(|s| actions(s).iter().any(|a| a.starts_with("secretsmanager:")))
                .collect();
            let reads_it = grants.iter().any(|s| s["Resource"] == reference(secret));
            assert_eq!(reads_it, other == binary, "{other} and {secret}");
            for grant in grants {
                assert_eq!(actions(grant), ["secretsmanager:GetSecretValue"]);
            }
        }
    }
    assert!(!environment(&doc, "assign").contains_key("VNMASK_SECRETS_ID"));
}

// ---------------------------------------------------------------------------------------------
// Capacity isolation

#[test]
fn every_function_has_reserved_concurrency() {
    let doc = template();
    for binary in FUNCTIONS {
        let (id, f) = function(&doc, binary);
        let reserved = &f["Properties"]["ReservedConcurrentExecutions"];
        assert!(!reserved.is_null(), "{id} has no reserved concurrency");
        assert!(number_parameter_default(&doc, reserved) >= 1, "{id}");
    }
    let (_, webhook) = function(&doc, "webhook");
    let (_, lookup) = function(&doc, "lookup");
    assert_ne!(
        webhook["Properties"]["ReservedConcurrentExecutions"],
        lookup["Properties"]["ReservedConcurrentExecutions"],
        "call routing and lookups are sized apart"
    );
}

#[test]
fn the_sessions_api_is_for_iam_principals_and_app_routes_for_app_users() {
    let doc = template();
    let (id, f) = function(&doc, "lookup");
    let mut sessions = 0;
    for (event, route) in f["Properties"]["Events"].as_object().unwrap() {
        let path = route["Properties"]["Path"].as_str().unwrap_or_default();
        let authorizer = &route["Properties"]["Auth"]["Authorizer"];
        if path.starts_with("/v1/sessions") {
            sessions += 1;
            assert_eq!(authorizer, "AWS_IAM", "{id}.{event}: SigV4 only");
        } else {
            assert_eq!(authorizer, "AppUsers", "{id}.{event}: an app user's token");
        }
    }
    assert_eq!(sessions, 4, "PUT, GET, the end and the list");
}

#[test]
fn webhook_and_lookup_routes_are_throttled_separately() {
    let doc = template();
    let mut limits = BTreeMap::new();
    for binary in ["webhook", "lookup"] {
        let (id, f) = function(&doc, binary);
        let routes: Vec<_> = f["Properties"]["Events"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, e)| e["Type"] == "HttpApi")
            .collect();
        assert!(!routes.is_empty(), "{id} serves routes");
        for (event, route) in routes {
            let settings = &route["Properties"]["RouteSettings"];
            for limit in ["ThrottlingRateLimit", "ThrottlingBurstLimit"] {
                assert!(
                    number_parameter_default(&doc, &settings[limit]) >= 1,
                    "{id}.{event} has no {limit}"
                );
                limits
                    .entry(binary)
                    .or_insert_with(BTreeSet::new)
                    .insert(settings[limit].to_string());
            }
        }
    }
    assert!(
        limits["webhook"].is_disjoint(&limits["lookup"]),
        "webhooks and lookups have their own limits: {limits:?}"
    );
}

#[test]
fn the_order_events_source_has_a_maximum_concurrency_within_assigns_reservation() {
    let doc = template();
    let (_, assign) = function(&doc, "assign");
    let sqs: Vec<_> = assign["Properties"]["Events"]
        .as_object()
        .unwrap()
        .values()
        .filter(|e| e["Type"] == "SQS")
        .collect();
    assert_eq!(sqs.len(), 1);
    let maximum = number_parameter_default(
        &doc,
        &sqs[0]["Properties"]["ScalingConfig"]["MaximumConcurrency"],
    );
    assert!((2..=1000).contains(&maximum), "Lambda's range");
    let reserved =
        number_parameter_default(&doc, &assign["Properties"]["ReservedConcurrentExecutions"]);
    assert!(
        maximum <= reserved,
        "a source allowed more than the reservation is throttled"
    );
}

// ---------------------------------------------------------------------------------------------
// Alarms

#[test]
fn every_alarm_notifies_the_alarm_topic() {
    let doc = template();
    let topic = parameter(&doc, "AlarmTopicArn");
    assert!(
        topic.get("Default").is_none(),
        "a deploy must name its topic"
    );
    let alarms = resources_of_type(&doc, "AWS::CloudWatch::Alarm");
    assert!(alarms.len() >= 8, "{} alarms", alarms.len());
    for (id, alarm) in alarms {
        let actions = alarm["Properties"]["AlarmActions"]
            .as_array()
            .unwrap_or_else(|| panic!("{id} has no AlarmActions"));
        assert!(
            actions.contains(&reference("AlarmTopicArn")),
            "{id} does not notify AlarmTopicArn"
        );
    }
}

#[test]
fn webhook_refusals_for_store_failures_and_for_not_being_ready_alarm() {
    let doc = template();
    for reason in ["store_error", "store_timeout", "not_ready"] {
        let alarms = alarms_watching(
            &doc,
            "vnmask",
            "Refused",
            &[("Function", json!("webhook")), ("Reason", json!(reason))],
        );
        assert!(!alarms.is_empty(), "no alarm on refusals for {reason}");
    }
}

#[test]
fn a_non_empty_dead_letter_queue_alarms() {
    let doc = template();
    let dlq = dead_letter_queue(&doc);
    let alarms = alarms_watching(
        &doc,
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        &[("QueueName", get_att(&dlq, "QueueName"))],
    );
    assert_eq!(alarms.len(), 1);
    let props = &resource(&doc, alarms[0])["Properties"];
    assert_eq!(props["Threshold"], 0);
    assert_eq!(props["ComparisonOperator"], "GreaterThanThreshold");
}

#[test]
fn pool_exhaustion_and_low_headroom_alarm() {
    let doc = template();
    assert!(!alarms_watching(
        &doc,
        "vnmask",
        "PoolExhausted",
        &[("Function", json!("assign"))]
    )
    .is_empty());
    let headroom = alarms_watching(
        &doc,
        "vnmask",
        "Headroom",
        &[("Function", json!("pool-refresh"))],
    );
    assert_eq!(headroom.len(), 1);
    let props = &resource(&doc, headroom[0])["Properties"];
    assert_eq!(props["ComparisonOperator"], "LessThanThreshold");
    assert!(
        props["Dimensions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["Name"] == "Market"),
        "headroom is per market"
    );
}

#[test]
fn lookup_server_errors_alarm_on_the_lookups_own_route() {
    let doc = template();
    let (_, lookup) = function(&doc, "lookup");
    let route = &lookup["Properties"]["Events"]["Contacts"]["Properties"];
    let route_key = format!(
        "{} {}",
        route["Method"].as_str().unwrap(),
        route["Path"].as_str().unwrap()
    );
    assert_eq!(
        route["RouteSettings"]["DetailedMetricsEnabled"], true,
        "route metrics are published only when enabled"
    );
    let alarms = alarms_watching(
        &doc,
        "AWS/ApiGateway",
        "5xx",
        &[
            ("ApiId", reference("HttpApi")),
            ("Stage", json!("$default")),
            ("Route", json!(route_key)),
        ],
    );
    assert_eq!(alarms.len(), 1, "one alarm on the lookup route's 5xx");
}

// ---------------------------------------------------------------------------------------------
// Least privilege

#[test]
fn webhook_reads_only_routes_and_calls_and_writes_only_calls_and_answer_tallies() {
    let doc = template();
    let grants = table_grants(&doc, role_of(&doc, "webhook"));
    // The replay ledger's items (`CALL#<endpoint>#<call id>`, attrs::call_pk), which also note
    // what a connected call joined, read back at its end.
    let call_keys = BTreeSet::from([key_pattern(attrs::CALL_PK_PREFIX)]);
    // … and the numbers' answer tallies (`ANSWERS#<number>#<shard>`, attrs::answers_pk).
    // … and the PIN attempt counters (attrs::pin_call_pk, pin_caller_pk, pin_failures_pk).
    let pin_tries = key_pattern(attrs::PIN_TRIES_PK_PREFIX);
    let pin_failures = key_pattern(&attrs::pin_failures_pk(""));
    let noted_keys = BTreeSet::from([
        key_pattern(attrs::CALL_PK_PREFIX),
        key_pattern(attrs::ANSWERS_PK_PREFIX),
        pin_tries,
        pin_failures.clone(),
    ]);
    // Routes, the ledger, PINs (attrs::pin_pk) and the number's wrong PINs this hour; and
    // sessions, read only to confirm the routes of a market homed in another region.
    let read_keys = BTreeSet::from([
        key_pattern(attrs::ROUTE_PK_PREFIX),
        key_pattern(attrs::CALL_PK_PREFIX),
        key_pattern(&attrs::pin_pk("")),
        pin_failures,
        key_pattern(&attrs::session_pk("")),
    ]);
    let mut seen = BTreeSet::new();
    for (action, prefixes) in &grants {
        let expected = match action.as_str() {
            "dynamodb:GetItem" => &read_keys,
            "dynamodb:PutItem" => &call_keys,
            "dynamodb:UpdateItem" => &noted_keys,
            other => panic!("the webhook is allowed {other}"),
        };
        assert_eq!(
            prefixes.as_ref(),
            Some(expected),
            "{action} without its dynamodb:LeadingKeys condition"
        );
        seen.insert(action.as_str());
    }
    assert_eq!(
        seen,
        BTreeSet::from([
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem"
        ])
    );
}

#[test]
fn lookup_writes_only_what_its_fallback_assignment_writes() {
    let doc = template();
    let prefix = |pk: String| key_pattern(&pk);
    let sessions = prefix(attrs::session_pk(""));
    let routes = prefix(attrs::route_pk(""));
    let pins = prefix(attrs::pin_pk(""));
    let pool = prefix(attrs::pool_pk(""));
    let stats = prefix(attrs::stats_pk(""));
    // People's entries of their orders: written with the session, read by the sessions API.
    let users = prefix(attrs::user_pk(""));
    let allowed: BTreeMap<&str, BTreeSet<String>> = BTreeMap::from([
        (
            "dynamodb:GetItem",
            BTreeSet::from([
                sessions.clone(),
                routes.clone(),
                pool.clone(),
                users.clone(),
            ]),
        ),
        (
            "dynamodb:Query",
            BTreeSet::from([sessions.clone(), routes.clone(), pool, users.clone()]),
        ),
        // The assigner's transaction: the session and the routes, PINs and entries it puts and
        // deletes.
        (
            "dynamodb:PutItem",
            BTreeSet::from([sessions, routes.clone(), pins.clone(), users.clone()]),
        ),
        ("dynamodb:DeleteItem", BTreeSet::from([routes, pins, users])),
        // The daily peak of live contacts (raise_live_peak).
        ("dynamodb:UpdateItem", BTreeSet::from([stats])),
    ]);
    let grants = table_grants(&doc, role_of(&doc, "lookup"));
    assert!(grants.iter().any(|(a, _)| a == "dynamodb:PutItem"));
    for (action, prefixes) in grants {
        let limit = allowed
            .get(action.as_str())
            .unwrap_or_else(|| panic!("lookup is allowed {action}"));
        let prefixes = prefixes.unwrap_or_else(|| panic!("lookup's {action} is on any key"));
        assert!(
            prefixes.is_subset(limit),
            "lookup's {action} reaches {prefixes:?}"
        );
    }
}

#[test]
fn the_table_is_protected_from_deletion() {
    let doc = template();
    let tables = resources_of_type(&doc, "AWS::DynamoDB::Table");
    assert_eq!(tables.len(), 1);
    let (_, table) = tables[0];
    assert_eq!(table["Properties"]["DeletionProtectionEnabled"], true);
    assert_eq!(table["DeletionPolicy"], "Retain");
    // The same for the global table, in every region it has a replica.
    let global = resource(&doc, "GlobalTable");
    assert_eq!(global["DeletionPolicy"], "Retain");
    assert_eq!(global["UpdateReplacePolicy"], "Retain");
    let replicas = global["Properties"]["Replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 2);
    for replica in replicas {
        assert_eq!(replica["DeletionProtectionEnabled"], true, "{replica}");
        assert_eq!(
            replica["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"], true,
            "{replica}"
        );
    }
}

#[test]
fn api_access_logs_are_json_without_paths_query_strings_or_bodies() {
    let doc = template();
    let apis = resources_of_type(&doc, "AWS::Serverless::HttpApi");
    assert_eq!(apis.len(), 1);
    let logs = &apis[0].1["Properties"]["AccessLogSettings"];
    let group = logs["DestinationArn"]["Fn::GetAtt"][0].as_str().unwrap();
    assert_eq!(resource(&doc, group)["Type"], "AWS::Logs::LogGroup");
    assert!(resource(&doc, group)["Properties"]["RetentionInDays"].is_number());
    let format: Map<String, Value> =
        serde_json::from_str(logs["Format"].as_str().expect("a format string"))
            .expect("the access log format is a JSON object");
    let fields: Vec<&str> = format.values().map(|v| v.as_str().unwrap()).collect();
    assert!(fields.contains(&"$context.routeKey"), "{fields:?}");
    assert!(fields.contains(&"$context.status"), "{fields:?}");
    for field in fields {
        let lower = field.to_ascii_lowercase();
        // Exotel's token is in the path or the query string; order ids are in lookup paths.
        for leak in ["path", "query", "body", "$input", "$request", "header"] {
            assert!(!lower.contains(leak), "the access log records {field}");
        }
    }
}

#[test]
fn dead_letters_are_readable_only_by_the_operator_role() {
    let doc = template();
    let dlq = dead_letter_queue(&doc);
    let operator = reference("OperatorRoleArn");
    let policies: Vec<_> = resources_of_type(&doc, "AWS::SQS::QueuePolicy")
        .into_iter()
        .filter(|(_, p)| {
            p["Properties"]["Queues"]
                .as_array()
                .is_some_and(|q| q.contains(&reference(&dlq)))
        })
        .collect();
    assert_eq!(policies.len(), 1, "the dead-letter queue has a policy");
    let statements = policies[0].1["Properties"]["PolicyDocument"]["Statement"]
        .as_array()
        .unwrap();
    let denies: Vec<_> = statements
        .iter()
        .filter(|s| s["Effect"] == "Deny")
        .collect();
    assert!(
        denies.iter().any(|s| {
            let acts = actions(s);
            s["Principal"] == "*"
                && ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:PurgeQueue"]
                    .iter()
                    .all(|a| acts.iter().any(|x| x == a))
                && s["Resource"] == get_att(&dlq, "Arn")
                && s["Condition"]["ArnNotEquals"]["aws:PrincipalArn"] == operator
        }),
        "nobody but the operator role may receive dead letters"
    );
    for deny in &denies {
        assert!(
            !actions(deny)
                .iter()
                .any(|a| a == "sqs:SendMessage" || a == "sqs:*"),
            "assign must still dead-letter events"
        );
    }
    // Assign sends to it; no function reads it.
    let dlq_arn = get_att(&dlq, "Arn");
    for binary in FUNCTIONS {
        for s in role_statements(&doc, role_of(&doc, binary)) {
            let on_dlq = s["Resource"] == dlq_arn
                || s["Resource"].to_string().contains(&dlq_arn.to_string());
            if on_dlq {
                for action in actions(s) {
                    assert!(
                        action == "sqs:SendMessage",
                        "{binary} may {action} on the dead-letter queue"
                    );
                }
            }
        }
    }
    let assign_sends = role_statements(&doc, role_of(&doc, "assign"))
        .into_iter()
        .any(|s| {
            actions(s).iter().any(|a| a == "sqs:SendMessage")
                && s["Resource"].to_string().contains(&dlq_arn.to_string())
        });
    assert!(assign_sends, "assign dead-letters invalid events");
}

/// The key policy's statements that name `principal` (alone or in a list).
fn key_statements_for<'a>(doc: &'a Value, principal: &Value) -> Vec<&'a Value> {
    let keys = resources_of_type(doc, "AWS::KMS::Key");
    assert_eq!(keys.len(), 1);
    keys[0].1["Properties"]["KeyPolicy"]["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            let aws = &s["Principal"]["AWS"];
            aws == principal || aws.as_array().is_some_and(|list| list.contains(principal))
        })
        .collect()
}

/// The other region's replica key is bound by exactly the key's policy, so every check of
/// `key_statements_for` holds for it too.
#[test]
fn the_replica_key_has_the_keys_policy() {
    let doc = template();
    let replicas = resources_of_type(&doc, "AWS::KMS::ReplicaKey");
    assert_eq!(replicas.len(), 1);
    let (_, key) = resources_of_type(&doc, "AWS::KMS::Key")[0];
    assert_eq!(
        replicas[0].1["Properties"]["KeyPolicy"],
        key["Properties"]["KeyPolicy"]
    );
    assert_eq!(replicas[0].1["DeletionPolicy"], "Retain");
}

/// The condition every use of the key must carry: the encryption context that
/// shared/src/crypto.rs sets (purpose=vnmask, key=hmac or data:<name>).
fn assert_bound_to_vnmask_keys(statement: &Value) {
    let condition = &statement["Condition"];
    assert_eq!(
        condition["StringEquals"]["kms:EncryptionContext:purpose"], "vnmask",
        "{statement}"
    );
    let keys: BTreeSet<String> = strings(&condition["StringLike"]["kms:EncryptionContext:key"])
        .into_iter()
        .collect();
    assert_eq!(keys, BTreeSet::from(["hmac".into(), "data:*".into()]));
}

#[test]
fn the_key_policy_lets_each_function_only_unwrap_vnmask_keys() {
    let doc = template();
    for binary in ["assign", "webhook", "lookup"] {
        let role = role_of(&doc, binary);
        let statements = key_statements_for(&doc, &get_att(role, "Arn"));
        assert!(!statements.is_empty(), "{binary} cannot unwrap its keys");
        for s in statements {
            assert_eq!(s["Effect"], "Allow");
            assert_eq!(actions(s), ["kms:Decrypt"], "{binary}");
            assert_bound_to_vnmask_keys(s);
        }
    }
    let operator = key_statements_for(&doc, &reference("OperatorRoleArn"));
    assert!(operator
        .iter()
        .any(|s| actions(s).contains(&"kms:GenerateDataKey".to_owned())));
    for s in operator {
        assert_bound_to_vnmask_keys(s);
    }
    // The account administers the key; it does not use it through IAM policies.
    let root = json!({"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"});
    for s in key_statements_for(&doc, &root) {
        for action in actions(s) {
            assert!(
                ![
                    "kms:*",
                    "kms:Decrypt",
                    "kms:Encrypt",
                    "kms:ReEncrypt*",
                    "kms:GenerateDataKey"
                ]
                .contains(&action.as_str())
                    && !action.starts_with("kms:GenerateDataKey")
                    && !action.starts_with("kms:ReEncrypt"),
                "the account root may {action}"
            );
        }
    }
}

#[test]
fn pool_refresh_reaches_only_the_items_its_upkeep_and_moves_use() {
    let doc = template();
    let prefix = |pk: String| key_pattern(&pk);
    let (pool, stats, sessions) = (
        prefix(attrs::pool_pk("")),
        prefix(attrs::stats_pk("")),
        prefix(attrs::session_pk("")),
    );
    let (routes, pins, leases, users) = (
        prefix(attrs::route_pk("")),
        prefix(attrs::pin_pk("")),
        prefix(attrs::lease_pk("")),
        prefix(attrs::user_pk("")),
    );
    let answers = prefix(attrs::ANSWERS_PK_PREFIX.to_owned());
    let allowed: BTreeMap<&str, BTreeSet<String>> = BTreeMap::from([
        (
            "dynamodb:GetItem",
            BTreeSet::from([
                pool.clone(),
                stats.clone(),
                sessions.clone(),
                routes.clone(),
            ]),
        ),
        (
            "dynamodb:Query",
            BTreeSet::from([pool.clone(), stats, sessions.clone(), routes.clone()]),
        ),
        ("dynamodb:BatchGetItem", BTreeSet::from([answers])),
        (
            "dynamodb:PutItem",
            BTreeSet::from([
                pool.clone(),
                leases.clone(),
                sessions,
                routes.clone(),
                pins.clone(),
                users.clone(),
            ]),
        ),
        (
            "dynamodb:UpdateItem",
            BTreeSet::from([pool, attrs::PURCHASES_PK.to_owned(), leases]),
        ),
        ("dynamodb:DeleteItem", BTreeSet::from([routes, pins, users])),
    ]);
    let grants = table_grants(&doc, role_of(&doc, "pool-refresh"));
    assert!(grants.iter().any(|(a, _)| a == "dynamodb:BatchGetItem"));
    for (action, prefixes) in grants {
        // The route sample's Scan cannot be held to keys.
        if action == "dynamodb:Scan" {
            continue;
        }
        let limit = allowed
            .get(action.as_str())
            .unwrap_or_else(|| panic!("pool-refresh is allowed {action}"));
        let prefixes = prefixes.unwrap_or_else(|| panic!("pool-refresh's {action} is on any key"));
        assert!(
            prefixes.is_subset(limit),
            "pool-refresh's {action} reaches {prefixes:?}"
        );
    }
}

#[test]
fn pool_refresh_unwraps_keys_only_through_the_key_policy_and_finds_pairs_by_number() {
    let doc = template();
    let role = role_of(&doc, "pool-refresh");
    for s in role_statements(&doc, role) {
        for action in actions(s) {
            assert!(!action.starts_with("kms:"), "pool-refresh may {action}");
        }
    }
    // Moves of pairs off numbers leaving service open sessions and seal routes: the key
    // policy lets it unwrap vnmask's keys, as it lets the other functions.
    assert!(!key_statements_for(&doc, &get_att(role, "Arn")).is_empty());
    let env = environment(&doc, "pool-refresh");
    for key in [
        "VNMASK_HMAC_KEY",
        "VNMASK_DATA_KEYS",
        "VNMASK_DATA_KEY_CURRENT",
        "VNMASK_HANDOVER_SECONDS",
        "VNMASK_COOLING_OFF_SECONDS",
    ] {
        assert!(env.contains_key(key), "pool-refresh is not given {key}");
    }
    // The by-number index, and nothing else of the table's indexes, nor of any other table.
    let index: Vec<_> = role_statements(&doc, role)
        .into_iter()
        .filter(|s| {
            serde_json::to_string(&s["Resource"])
                .unwrap()
                .contains("/index/")
        })
        .collect();
    assert_eq!(index.len(), 1, "one statement for the index");
    assert_eq!(index[0]["Resource"], index_arn(attrs::BY_NUMBER_INDEX));
    assert_eq!(actions(index[0]), ["dynamodb:Query"]);
    // Its Twilio filter compares each number's voice URL with ours.
    assert!(env.contains_key("VNMASK_VOICE_URL"));
    // No function role grants KMS itself: the key policy is the one place.
    for binary in FUNCTIONS {
        for s in role_statements(&doc, role_of(&doc, binary)) {
            assert!(
                !actions(s).iter().any(|a| a.starts_with("kms:")),
                "{binary}'s role grants KMS"
            );
        }
    }
}

#[test]
fn exotel_sources_are_passed_to_the_webhook() {
    let doc = template();
    let env = environment(&doc, "webhook");
    let sources = env["VNMASK_EXOTEL_ALLOWED_SOURCES"]["Ref"]
        .as_str()
        .expect("a parameter");
    assert_eq!(parameter(&doc, sources)["Type"], "String");
}

// ---------------------------------------------------------------------------------------------
// Dashboard

/// Every metric name the functions emit through `MetricSet::count` and `MetricSet::value`.
fn emitted_metrics() -> BTreeSet<String> {
    let root = template_path()
        .parent()
        .expect("the template is in the checkout")
        .to_owned();
    let mut sources = Vec::new();
    let mut dirs = vec![root.join("shared/src"), root.join("functions")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() && name != "tests" && name != "benches" {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                sources.push(std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut names = BTreeSet::new();
    for source in sources {
        // rustfmt may break a call after its parenthesis.
        let flat: String = source.split_whitespace().collect();
        for call in [".count(\"", ".value(\""] {
            for (at, _) in flat.match_indices(call) {
                let rest = &flat[at + call.len()..];
                if let Some(end) = rest.find('"') {
                    names.insert(rest[..end].to_owned());
                }
            }
        }
    }
    names
}

#[test]
fn the_dashboard_shows_only_metrics_the_code_emits() {
    let doc = template();
    let [(_, dashboard)] = resources_of_type(&doc, "AWS::CloudWatch::Dashboard")[..] else {
        panic!("one dashboard");
    };
    let sub = &dashboard["Properties"]["DashboardBody"]["Fn::Sub"];
    let body = sub[0].as_str().expect("the body is a !Sub template");
    assert!(
        sub[1]["DlqName"] == get_att("OrderEventsDlq", "QueueName"),
        "the dead letters are the order events' DLQ"
    );
    let body: Value = serde_json::from_str(body).expect("the body is JSON");
    let emitted = emitted_metrics();
    assert!(emitted.contains("Connected") && emitted.contains("TalkSeconds"));
    let mut shown = BTreeSet::new();
    let mut titles = Vec::new();
    for widget in body["widgets"].as_array().unwrap() {
        titles.push(widget["properties"]["title"].as_str().unwrap().to_owned());
        for metric in widget["properties"]["metrics"].as_array().unwrap() {
            let metric = metric.as_array().unwrap();
            match (&metric[0], metric[0]["expression"].as_str()) {
                (_, Some(expression)) => {
                    for (at, _) in expression.match_indices("MetricName=\"") {
                        let rest = &expression[at + "MetricName=\"".len()..];
                        let name = &rest[..rest.find('"').unwrap()];
                        assert!(
                            expression.contains("{vnmask,"),
                            "vnmask's namespace: {expression}"
                        );
                        shown.insert(name.to_owned());
                    }
                }
                (Value::String(namespace), None) if namespace == "vnmask" => {
                    shown.insert(metric[1].as_str().unwrap().to_owned());
                }
                (Value::String(namespace), None) => {
                    assert_eq!(namespace, "AWS/SQS", "{metric:?}");
                    assert_eq!(metric[1], "ApproximateNumberOfMessagesVisible");
                }
                other => panic!("a metric neither named nor searched: {other:?}"),
            }
        }
    }
    let unknown: Vec<_> = shown.difference(&emitted).collect();
    assert!(unknown.is_empty(), "shown but never emitted: {unknown:?}");
    for wanted in [
        "Connected",
        "Refused",
        "CallsAnswered",
        "CallsUnanswered",
        "TalkSeconds",
        "Headroom",
        "NumbersQuarantined",
        "NumbersCoolingOff",
        "PairsMoved",
        "PairsWaiting",
    ] {
        assert!(shown.contains(wanted), "{wanted} is not on the dashboard");
    }
    assert_eq!(titles.len(), 8, "{titles:?}");
}
