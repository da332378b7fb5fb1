//! The table is defined once, in template.yaml: the code's key names and the tables tests
//! create must agree with it.

use vnmask::store::dynamodb::attrs;
use vnmask_tests::{local_dynamo, template_table, IndexSpec};

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
    // One index: the orders on a number, which pool refresh moves off numbers leaving service.
    assert_eq!(
        spec.global_indexes,
        vec![IndexSpec {
            name: attrs::BY_NUMBER_INDEX.to_owned(),
            hash_key: attrs::NUMBER_SHARD.to_owned(),
            range_key: Some(attrs::EXPIRES_AT.to_owned()),
            projection: "INCLUDE".to_owned(),
            included: vec![attrs::ORDER_ID.to_owned()],
        }]
    );
    assert_eq!(
        spec.attributes.get(attrs::NUMBER_SHARD).map(String::as_str),
        Some("S")
    );
    assert_eq!(
        spec.attributes.get(attrs::EXPIRES_AT).map(String::as_str),
        Some("N")
    );
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
    let indexes: Vec<IndexSpec> = table
        .global_secondary_indexes()
        .iter()
        .map(|i| {
            let key = |kind: &str| {
                i.key_schema()
                    .iter()
                    .find(|k| k.key_type().as_str() == kind)
                    .map(|k| k.attribute_name().to_owned())
            };
            let projection = i.projection().unwrap();
            IndexSpec {
                name: i.index_name().unwrap().to_owned(),
                hash_key: key("HASH").unwrap(),
                range_key: key("RANGE"),
                projection: projection.projection_type().unwrap().as_str().to_owned(),
                included: projection.non_key_attributes().to_vec(),
            }
        })
        .collect();
    assert_eq!(indexes, spec.global_indexes);
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
