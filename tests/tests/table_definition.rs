//! The table is defined once, in template.yaml: the code's key names and the tables tests
//! create must agree with it.

use vnmask::store::dynamodb::attrs;
use vnmask_tests::{local_dynamo, template_table};

#[test]
fn template_keys_are_the_ones_the_store_writes() {
    let spec = template_table();
    assert_eq!(spec.hash_key, attrs::PK);
    assert_eq!(spec.range_key.as_deref(), Some(attrs::SK));
    assert_eq!(spec.ttl_attribute.as_deref(), Some(attrs::EXPIRES_AT));
    assert_eq!(
        spec.attributes.get(attrs::PK).map(String::as_str),
        Some("S")
    );
    assert_eq!(
        spec.attributes.get(attrs::SK).map(String::as_str),
        Some("S")
    );
    assert_eq!(spec.global_indexes, 0, "no access pattern needs an index");
}

#[tokio::test]
async fn tables_the_tests_create_match_the_template() {
    let d = local_dynamo().await;
    let spec = template_table();
    let table = d
        .client
        .describe_table()
        .table_name(&d.table)
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    let keys: Vec<(String, String)> = table
        .key_schema()
        .iter()
        .map(|k| {
            (
                k.attribute_name().to_owned(),
                k.key_type().as_str().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        vec![
            (spec.hash_key.clone(), "HASH".into()),
            (spec.range_key.clone().unwrap(), "RANGE".into())
        ]
    );
    let attributes: std::collections::BTreeMap<String, String> = table
        .attribute_definitions()
        .iter()
        .map(|a| {
            (
                a.attribute_name().to_owned(),
                a.attribute_type().as_str().to_owned(),
            )
        })
        .collect();
    assert_eq!(attributes, spec.attributes);
    assert!(table.global_secondary_indexes().is_empty());
    let ttl = d
        .client
        .describe_time_to_live()
        .table_name(&d.table)
        .send()
        .await
        .unwrap();
    let ttl = ttl.time_to_live_description.unwrap();
    assert_eq!(ttl.attribute_name(), spec.ttl_attribute.as_deref());
}
