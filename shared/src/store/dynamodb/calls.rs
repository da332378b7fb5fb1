//! The webhook's ledger of provider call ids: one conditional put per request.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};

use super::{attrs, store_error, DynamoStore};
use crate::domain::{CallId, UnixTime};
use crate::store::{CallLedger, Sighting, StoreError};

#[async_trait]
impl CallLedger for DynamoStore {
    async fn sight(
        &self,
        endpoint: &str,
        call_id: &CallId,
        now: UnixTime,
        keep_until: UnixTime,
    ) -> Result<Sighting, StoreError> {
        let number = |v: UnixTime| AttributeValue::N(v.to_string());
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(
                attrs::PK,
                AttributeValue::S(attrs::call_pk(endpoint, call_id.as_str())),
            )
            .item(attrs::SK, AttributeValue::S(attrs::CALL_SK.to_owned()))
            .item(attrs::FIRST_SEEN, number(now))
            .item(attrs::EXPIRES_AT, number(keep_until))
            // TTL deletes late: an entry past its time is as good as gone.
            .condition_expression("attribute_not_exists(#pk) OR #exp <= :now")
            .expression_attribute_names("#pk", attrs::PK)
            .expression_attribute_names("#exp", attrs::EXPIRES_AT)
            .expression_attribute_values(":now", number(now))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match put {
            Ok(_) => Ok(Sighting::First),
            Err(err) => match err.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(failed)) => {
                    let first_seen = failed
                        .item()
                        .and_then(|item| item.get(attrs::FIRST_SEEN))
                        .and_then(|v| v.as_n().ok())
                        .and_then(|v| v.parse().ok())
                        .ok_or(StoreError::Corrupt {
                            attribute: attrs::FIRST_SEEN,
                        })?;
                    Ok(Sighting::Repeat { first_seen })
                }
                _ => Err(store_error(err)),
            },
        }
    }
}
