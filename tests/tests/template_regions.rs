//! template.yaml in one region and in two (issue 23, docs/multi-region.md): the stack a parameter
//! set deploys, resolved here as CloudFormation resolves it, uses one table and one key
//! throughout, and the global table is the one-region table replicated.
//!
//! The evaluator knows what the template uses: `Fn::If`, `Condition`, `Fn::Equals`, `Fn::Not`,
//! `Fn::And`, `Fn::Or`, `Ref` to parameters and pseudo parameters, and `Fn::Sub` of them.
//! References to resources (`Ref`, `Fn::GetAtt`, `${Resource}` in a `Fn::Sub`) stay as written,
//! so that a check can say which resource a value names.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use vnmask_tests::template_json;

const REGION: &str = "us-east-1";
const ACCOUNT: &str = "111122223333";
const REPLICA_REGION: &str = "eu-west-1";
const HOME_TABLE: &str = "vnmask-table";
const HOME_KEY: &str =
    "arn:aws:kms:us-east-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab";

// ---------------------------------------------------------------------------------------------
// Resolving the template for a parameter set

/// The template deployed with some parameters: the rest take their defaults, and those without
/// one a placeholder (`<Name>`).
struct Stack {
    doc: Value,
    parameters: BTreeMap<String, String>,
}

impl Stack {
    fn new(overrides: &[(&str, &str)]) -> Self {
        let doc = template_json();
        let mut parameters: BTreeMap<String, String> = doc["Parameters"]
            .as_object()
            .expect("the template has Parameters")
            .iter()
            .map(|(name, p)| {
                let value = match &p["Default"] {
                    Value::Null => format!("<{name}>"),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (name.clone(), value)
            })
            .collect();
        for (name, value) in overrides {
            assert!(parameters.contains_key(*name), "no parameter {name}");
            parameters.insert((*name).to_owned(), (*value).to_owned());
        }
        Self { doc, parameters }
    }

    /// One region: every parameter of this feature left empty.
    fn one_region() -> Self {
        Self::new(&[])
    }

    /// The home stack of two regions.
    fn home() -> Self {
        Self::new(&[("ReplicaRegion", REPLICA_REGION)])
    }

    /// The other region's stack, on the home stack's global table and key.
    fn other_region() -> Self {
        Self::new(&[("HomeTableName", HOME_TABLE), ("HomeDataKeyArn", HOME_KEY)])
    }

    /// A parameter's or pseudo parameter's value; `None` for anything else (a resource).
    fn value_of(&self, name: &str) -> Option<String> {
        let pseudo = match name {
            "AWS::Region" => REGION,
            "AWS::AccountId" => ACCOUNT,
            "AWS::Partition" => "aws",
            "AWS::URLSuffix" => "amazonaws.com",
            "AWS::StackName" => "vnmask",
            _ => return self.parameters.get(name).cloned(),
        };
        Some(pseudo.to_owned())
    }

    fn condition(&self, name: &str) -> bool {
        let definition = self.doc["Conditions"]
            .get(name)
            .unwrap_or_else(|| panic!("no condition {name}"));
        self.holds(definition)
    }

    /// A condition function's truth.
    fn holds(&self, value: &Value) -> bool {
        let (function, args) =
            intrinsic(value).unwrap_or_else(|| panic!("not a condition: {value}"));
        let list = || {
            args.as_array()
                .unwrap_or_else(|| panic!("{function} takes a list"))
        };
        match function {
            "Fn::Equals" => {
                let sides = list();
                assert_eq!(sides.len(), 2, "Fn::Equals compares two values");
                self.resolve(&sides[0]) == self.resolve(&sides[1])
            }
            "Fn::Not" => !self.holds(&list()[0]),
            "Fn::And" => list().iter().all(|c| self.holds(c)),
            "Fn::Or" => list().iter().any(|c| self.holds(c)),
            "Condition" => self.condition(args.as_str().expect("a condition's name")),
            other => panic!("{other} is not a condition function"),
        }
    }

    /// `value` as deployed: conditions chosen, parameters substituted; `None` for
    /// `AWS::NoValue` (the property or list item is left out).
    fn resolve(&self, value: &Value) -> Option<Value> {
        if let Some((function, args)) = intrinsic(value) {
            return match function {
                "Fn::If" => {
                    let branches = args.as_array().expect("Fn::If takes a list");
                    let name = branches[0].as_str().expect("Fn::If names a condition");
                    self.resolve(&branches[if self.condition(name) { 1 } else { 2 }])
                }
                "Ref" => {
                    let name = args.as_str().expect("Ref names something");
                    if name == "AWS::NoValue" {
                        return None;
                    }
                    Some(
                        self.value_of(name)
                            .map_or_else(|| value.clone(), Value::String),
                    )
                }
                "Fn::Sub" => Some(self.sub(args)),
                _ => Some(json!({ function: self.resolve(args) })),
            };
        }
        match value {
            Value::Object(map) => Some(Value::Object(
                map.iter()
                    .filter_map(|(k, v)| self.resolve(v).map(|v| (k.clone(), v)))
                    .collect(),
            )),
            Value::Array(items) => Some(Value::Array(
                items.iter().filter_map(|i| self.resolve(i)).collect(),
            )),
            other => Some(other.clone()),
        }
    }

    /// A `Fn::Sub` with parameters substituted: a plain string once nothing else is left.
    fn sub(&self, args: &Value) -> Value {
        let (text, variables) = match args {
            Value::String(s) => (s.as_str(), None),
            Value::Array(pair) => (
                pair[0].as_str().expect("Fn::Sub's string"),
                self.resolve(&pair[1]),
            ),
            other => panic!("Fn::Sub of {other}"),
        };
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            let end = start + rest[start..].find('}').expect("a closed ${…}");
            let name = &rest[start + 2..end];
            out.push_str(&rest[..start]);
            let own = variables.as_ref().and_then(|v| v.get(name));
            match self.value_of(name) {
                Some(value) if own.is_none() => out.push_str(&value),
                _ => out.push_str(&rest[start..=end]),
            }
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        match variables {
            Some(variables) => json!({ "Fn::Sub": [out, variables] }),
            None if out.contains("${") => json!({ "Fn::Sub": out }),
            None => Value::String(out),
        }
    }

    /// Whether the stack creates the resource (its `Condition`, if any, holds).
    fn creates(&self, logical_id: &str) -> bool {
        let resource = self.doc["Resources"]
            .get(logical_id)
            .unwrap_or_else(|| panic!("no resource {logical_id}"));
        resource["Condition"]
            .as_str()
            .is_none_or(|name| self.condition(name))
    }

    /// Every resource the stack creates, resolved.
    fn resources(&self) -> BTreeMap<String, Value> {
        self.doc["Resources"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|id| self.creates(id))
            .map(|id| (id.clone(), self.resource(id)))
            .collect()
    }

    /// A resource as the template declares it, resolved (whether or not it is created).
    fn resource(&self, logical_id: &str) -> Value {
        self.resolve(&self.doc["Resources"][logical_id])
            .expect("a resource is a value")
    }

    fn resources_of_type(&self, kind: &str) -> Vec<(String, Value)> {
        self.resources()
            .into_iter()
            .filter(|(_, r)| r["Type"] == kind)
            .collect()
    }

    /// Every output the stack has, resolved.
    fn outputs(&self) -> Map<String, Value> {
        self.doc["Outputs"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, o)| o["Condition"].as_str().is_none_or(|c| self.condition(c)))
            .map(|(id, o)| (id.clone(), self.resolve(o).unwrap()))
            .collect()
    }

    /// A function's environment: the globals, overridden by its own variables.
    fn environment(&self, function: &Value) -> Map<String, Value> {
        let globals = &self.doc["Globals"]["Function"]["Environment"]["Variables"];
        let mut env = self
            .resolve(globals)
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default();
        if let Some(own) = function["Properties"]["Environment"]["Variables"].as_object() {
            env.extend(own.clone());
        }
        env
    }

    /// The function built from `binary`.
    fn function(&self, binary: &str) -> Value {
        let found: Vec<_> = self
            .resources_of_type("AWS::Serverless::Function")
            .into_iter()
            .filter(|(_, f)| f["Metadata"]["BuildProperties"]["Binary"] == binary)
            .collect();
        assert_eq!(found.len(), 1, "one function runs {binary}");
        found[0].1.clone()
    }

    /// The assertions of the template's `Rules` that these parameters break.
    fn broken_rules(&self) -> Vec<String> {
        let mut broken = Vec::new();
        for (name, rule) in self.doc["Rules"]
            .as_object()
            .expect("the template has Rules")
        {
            if rule.get("RuleCondition").is_some_and(|c| !self.holds(c)) {
                continue;
            }
            for assertion in rule["Assertions"].as_array().unwrap() {
                if !self.holds(&assertion["Assert"]) {
                    broken.push(format!("{name}: {}", assertion["AssertDescription"]));
                }
            }
        }
        broken
    }
}

/// `(function, argument)` of an intrinsic function (`{"Ref": …}`, `{"Fn::…": …}`,
/// `{"Condition": …}`); `None` for any other value.
fn intrinsic(value: &Value) -> Option<(&str, &Value)> {
    let map = value.as_object()?;
    let (key, args) = map.iter().next()?;
    let is_function = key == "Ref" || key == "Condition" || key.starts_with("Fn::");
    (map.len() == 1 && is_function).then_some((key.as_str(), args))
}

/// Every resource a resolved value refers to: `Ref`, `Fn::GetAtt` and `${Resource…}` in a
/// `Fn::Sub` (parameters are already substituted).
fn referenced(value: &Value, out: &mut Vec<String>) {
    match intrinsic(value) {
        Some(("Ref", Value::String(id))) => out.push(id.clone()),
        Some(("Fn::GetAtt", args)) => out.push(args[0].as_str().unwrap().to_owned()),
        Some(("Fn::Sub", args)) => {
            let (text, own) = match args {
                Value::Array(pair) => (pair[0].as_str().unwrap(), Some(&pair[1])),
                other => (other.as_str().unwrap(), None),
            };
            for (at, _) in text.match_indices("${") {
                let name = &text[at + 2..at + 2 + text[at + 2..].find('}').unwrap()];
                let resource = name.split('.').next().unwrap();
                if !name.starts_with('!') && own.is_none_or(|v| v.get(name).is_none()) {
                    out.push(resource.to_owned());
                }
            }
            if let Some(own) = own {
                referenced(own, out);
            }
        }
        _ => match value {
            Value::Object(map) => map.values().for_each(|v| referenced(v, out)),
            Value::Array(items) => items.iter().for_each(|v| referenced(v, out)),
            _ => {}
        },
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

/// What the stack's data access names: every DynamoDB grant's `Resource` in every role, each
/// with the roles and actions that use it.
fn dynamodb_resources(stack: &Stack) -> BTreeMap<String, Vec<String>> {
    let mut named: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (role, r) in stack.resources_of_type("AWS::IAM::Role") {
        for policy in r["Properties"]["Policies"].as_array().unwrap() {
            for statement in policy["PolicyDocument"]["Statement"].as_array().unwrap() {
                for action in actions(statement) {
                    if action.starts_with("dynamodb:") {
                        named
                            .entry(statement["Resource"].to_string())
                            .or_default()
                            .push(format!("{role} {action}"));
                    }
                }
            }
        }
    }
    named
}

/// The table and index ARNs every grant must name, and the table's name, in one stack.
struct Expected {
    table_name: Value,
    table_arn: Value,
    index_arn: Value,
}

fn assert_uses_the_table(stack: &Stack, expected: &Expected) {
    for binary in ["assign", "webhook", "lookup", "pool-refresh"] {
        let env = stack.environment(&stack.function(binary));
        assert_eq!(env["VNMASK_TABLE"], expected.table_name, "{binary}'s table");
    }
    let named = dynamodb_resources(stack);
    assert!(
        named.len() == 2,
        "the table and its index, nothing else: {named:?}"
    );
    for (resource, grants) in &named {
        let resource: Value = serde_json::from_str(resource).unwrap();
        assert!(
            resource == expected.table_arn || resource == expected.index_arn,
            "{grants:?} on {resource}"
        );
    }
    assert_eq!(stack.outputs()["TableName"]["Value"], expected.table_name);
}

/// Every resource, output and environment refers only to resources the stack creates.
fn assert_refers_only_to_created_resources(stack: &Stack) {
    let created = stack.resources();
    let mut everything = Vec::new();
    for (id, resource) in &created {
        let mut refs = Vec::new();
        referenced(resource, &mut refs);
        everything.extend(refs.into_iter().map(|r| (id.clone(), r)));
    }
    let globals = stack.resolve(&stack.doc["Globals"]).unwrap();
    let mut refs = Vec::new();
    referenced(&globals, &mut refs);
    everything.extend(refs.into_iter().map(|r| ("Globals".to_owned(), r)));
    for (id, output) in stack.outputs() {
        let mut refs = Vec::new();
        referenced(&output, &mut refs);
        everything.extend(refs.into_iter().map(|r| (id.clone(), r)));
    }
    assert!(!everything.is_empty());
    for (from, to) in everything {
        assert!(
            created.contains_key(&to),
            "{from} refers to {to}, which this stack does not create"
        );
    }
}

fn replication_latency_alarms(stack: &Stack) -> Vec<Value> {
    stack
        .resources_of_type("AWS::CloudWatch::Alarm")
        .into_iter()
        .map(|(_, a)| a["Properties"].clone())
        .filter(|p| p["Namespace"] == "AWS/DynamoDB" && p["MetricName"] == "ReplicationLatency")
        .collect()
}

// ---------------------------------------------------------------------------------------------
// One region

#[test]
fn one_region_creates_the_table_and_a_single_region_key_as_before() {
    let stack = Stack::one_region();
    assert!(stack.creates("Table"));
    assert!(!stack.creates("GlobalTable"));
    assert!(!stack.creates("DataKeyReplica"));
    assert!(stack.creates("DataKey"));
    // Absent, as before this template knew two regions: an existing key sees no change.
    let key = stack.resource("DataKey");
    assert!(key["Properties"].get("MultiRegion").is_none(), "{key}");
    assert_eq!(
        stack.resource("DataKeyAlias")["Properties"]["TargetKeyId"],
        json!({ "Ref": "DataKey" })
    );
    assert_eq!(
        stack.outputs()["DataKeyArn"]["Value"],
        json!({ "Fn::GetAtt": ["DataKey", "Arn"] })
    );
    assert!(replication_latency_alarms(&stack).is_empty());
    assert!(
        stack.broken_rules().is_empty(),
        "{:?}",
        stack.broken_rules()
    );
}

#[test]
fn one_region_reads_and_grants_only_the_table() {
    let stack = Stack::one_region();
    assert_uses_the_table(
        &stack,
        &Expected {
            table_name: json!({ "Ref": "Table" }),
            table_arn: json!({ "Fn::GetAtt": ["Table", "Arn"] }),
            index_arn: json!({ "Fn::Sub": "${Table.Arn}/index/by-number" }),
        },
    );
    assert_refers_only_to_created_resources(&stack);
}

#[test]
fn one_region_webhook_does_not_confirm_routes() {
    let stack = Stack::one_region();
    let env = stack.environment(&stack.function("webhook"));
    assert_eq!(env["VNMASK_CONFIRM_ROUTES"], "off");
}

// ---------------------------------------------------------------------------------------------
// The home stack of two regions

#[test]
fn the_home_stack_creates_a_global_table_replicated_to_the_other_region() {
    let stack = Stack::home();
    assert!(stack.creates("GlobalTable"));
    assert!(!stack.creates("Table"));
    assert!(!stack.creates("DataKeyReplica"));
    let table = stack.resource("GlobalTable");
    assert_eq!(table["DeletionPolicy"], "Retain");
    assert_eq!(table["UpdateReplacePolicy"], "Retain");
    let props = &table["Properties"];
    // Replicas are fed from the table's stream.
    assert_eq!(
        props["StreamSpecification"]["StreamViewType"],
        "NEW_AND_OLD_IMAGES"
    );
    let regions: Vec<&Value> = props["Replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["Region"])
        .collect();
    assert_eq!(regions, [REGION, REPLICA_REGION]);
    assert!(
        stack.broken_rules().is_empty(),
        "{:?}",
        stack.broken_rules()
    );
}

/// Everything `Table` declares, the global table declares the same: a property of the table's
/// own, or of each replica where a global table sets it per region.
#[test]
fn the_global_table_is_the_table_replicated_without_drift() {
    let stack = Stack::home();
    let table = stack.resource("Table");
    let global = stack.resource("GlobalTable");
    let (table, global) = (&table["Properties"], &global["Properties"]);
    let per_replica = [
        "DeletionProtectionEnabled",
        "PointInTimeRecoverySpecification",
    ];
    for (property, value) in table.as_object().unwrap() {
        if per_replica.contains(&property.as_str()) {
            for replica in global["Replicas"].as_array().unwrap() {
                assert_eq!(&replica[property], value, "{property} of {replica}");
            }
        } else {
            assert_eq!(&global[property], value, "{property}");
        }
    }
    // The ones that define the data, named so that a table without them fails here.
    for property in [
        "AttributeDefinitions",
        "KeySchema",
        "GlobalSecondaryIndexes",
        "TimeToLiveSpecification",
        "SSESpecification",
        "BillingMode",
    ] {
        assert!(table.get(property).is_some(), "Table has no {property}");
    }
    // Nothing of the global table's own but its replicas and their stream.
    for property in global.as_object().unwrap().keys() {
        assert!(
            table.get(property).is_some()
                || ["Replicas", "StreamSpecification"].contains(&property.as_str()),
            "GlobalTable's {property} is not Table's"
        );
    }
}

#[test]
fn the_home_stack_reads_and_grants_only_the_global_table() {
    let stack = Stack::home();
    assert_uses_the_table(
        &stack,
        &Expected {
            table_name: json!({ "Ref": "GlobalTable" }),
            table_arn: json!({ "Fn::GetAtt": ["GlobalTable", "Arn"] }),
            index_arn: json!({ "Fn::Sub": "${GlobalTable.Arn}/index/by-number" }),
        },
    );
    assert_refers_only_to_created_resources(&stack);
    let env = stack.environment(&stack.function("webhook"));
    assert_eq!(
        env["VNMASK_CONFIRM_ROUTES"], "elsewhere",
        "the home stack confirms the routes of markets homed in the other region"
    );
}

#[test]
fn the_home_stacks_key_is_multi_region() {
    let stack = Stack::home();
    assert!(stack.creates("DataKey"));
    assert_eq!(stack.resource("DataKey")["Properties"]["MultiRegion"], true);
    assert_eq!(
        stack.outputs()["DataKeyArn"]["Value"],
        json!({ "Fn::GetAtt": ["DataKey", "Arn"] })
    );
}

#[test]
fn the_home_stack_pages_when_the_replica_falls_behind() {
    let stack = Stack::home();
    let alarms = replication_latency_alarms(&stack);
    assert_eq!(alarms.len(), 1);
    let alarm = &alarms[0];
    let dimensions: BTreeMap<&str, &Value> = alarm["Dimensions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["Name"].as_str().unwrap(), &d["Value"]))
        .collect();
    assert_eq!(
        dimensions,
        BTreeMap::from([
            ("TableName", &json!({ "Ref": "GlobalTable" })),
            ("ReceivingRegion", &json!(REPLICA_REGION)),
        ])
    );
    assert_eq!(alarm["Statistic"], "Maximum");
    assert_eq!(alarm["Period"], 60);
    assert_eq!(alarm["EvaluationPeriods"], 5);
    assert_eq!(alarm["Threshold"], 5000, "milliseconds");
    assert_eq!(alarm["ComparisonOperator"], "GreaterThanThreshold");
    let topic = json!(stack.parameters["AlarmTopicArn"]);
    for actions in ["AlarmActions", "OKActions"] {
        assert_eq!(alarm[actions], json!([topic]), "{actions}");
    }
}

// ---------------------------------------------------------------------------------------------
// The other region's stack

#[test]
fn the_other_region_creates_no_table_and_replicates_the_home_key() {
    let stack = Stack::other_region();
    for absent in ["Table", "GlobalTable", "DataKey", "ReplicationLatencyAlarm"] {
        assert!(!stack.creates(absent), "{absent}");
    }
    assert!(stack.resources_of_type("AWS::DynamoDB::Table").is_empty());
    assert!(stack.resources_of_type("AWS::KMS::Key").is_empty());
    assert!(stack.creates("DataKeyReplica"));
    let replica = stack.resource("DataKeyReplica");
    assert_eq!(replica["Properties"]["PrimaryKeyArn"], HOME_KEY);
    // This region's roles get exactly what the home key's policy gives the home region's.
    assert_eq!(
        replica["Properties"]["KeyPolicy"],
        stack.resource("DataKey")["Properties"]["KeyPolicy"]
    );
    assert_eq!(replica["DeletionPolicy"], "Retain");
    assert_eq!(replica["UpdateReplacePolicy"], "Retain");
    assert_eq!(
        stack.resource("DataKeyAlias")["Properties"]["TargetKeyId"],
        json!({ "Ref": "DataKeyReplica" })
    );
    assert_eq!(
        stack.outputs()["DataKeyArn"]["Value"],
        json!({ "Fn::GetAtt": ["DataKeyReplica", "Arn"] })
    );
    assert!(
        stack.broken_rules().is_empty(),
        "{:?}",
        stack.broken_rules()
    );
}

#[test]
fn the_other_region_reads_and_grants_only_the_home_tables_replica() {
    let stack = Stack::other_region();
    let arn = format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{HOME_TABLE}");
    assert_uses_the_table(
        &stack,
        &Expected {
            table_name: json!(HOME_TABLE),
            table_arn: json!(arn),
            index_arn: json!(format!("{arn}/index/by-number")),
        },
    );
    assert_refers_only_to_created_resources(&stack);
}

#[test]
fn the_other_regions_webhook_confirms_the_routes_it_did_not_write() {
    let stack = Stack::other_region();
    let env = stack.environment(&stack.function("webhook"));
    assert_eq!(env["VNMASK_CONFIRM_ROUTES"], "elsewhere");
}

// ---------------------------------------------------------------------------------------------
// Parameter sets the template refuses

#[test]
fn a_stack_is_either_the_home_or_reads_it_with_the_homes_key() {
    let refused = [
        vec![("HomeTableName", HOME_TABLE)],
        vec![("HomeDataKeyArn", HOME_KEY)],
        vec![
            ("ReplicaRegion", REPLICA_REGION),
            ("HomeTableName", HOME_TABLE),
            ("HomeDataKeyArn", HOME_KEY),
        ],
    ];
    for parameters in refused {
        let broken = Stack::new(&parameters).broken_rules();
        assert!(!broken.is_empty(), "{parameters:?} is deployed");
    }
}
