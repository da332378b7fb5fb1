//! PIN attempt counters: one `UpdateItem` (`ADD`) each for the call and for the caller on the
//! number this hour, and a strongly consistent read of the number's failures this hour, all at
//! once. Counters are kept a day; a PIN's digits are never in them.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{attrs, store_error, DynamoStore};
use crate::domain::{CallId, RealNumber, UnixTime, VirtualNumber};
use crate::store::{PinAttempts, PinGuard, StoreError};

const HOUR: UnixTime = 3_600;
const KEEP: UnixTime = 24 * HOUR;

impl DynamoStore {
    /// Adds one to the counter at (`pk`, `sk`) and returns its new value.
    async fn add_try(&self, pk: String, sk: String, now: UnixTime) -> Result<u32, StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attrs::PK, AttributeValue::S(pk))
            .key(attrs::SK, AttributeValue::S(sk))
            .update_expression("ADD #tries :one SET #exp = :exp")
            .expression_attribute_names("#tries", attrs::TRIES)
            .expression_attribute_names("#exp", attrs::EXPIRES_AT)
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":exp", AttributeValue::N((now + KEEP).to_string()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(store_error)?;
        Ok(tries(out.attributes.as_ref()))
    }
}

/// The `tries` of an item's attributes, 0 when absent.
fn tries(item: Option<&std::collections::HashMap<String, AttributeValue>>) -> u32 {
    item.and_then(|i| i.get(attrs::TRIES))
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[async_trait]
impl PinGuard for DynamoStore {
    async fn count_pin_attempt(
        &self,
        endpoint: &str,
        call_id: &CallId,
        caller: &RealNumber,
        number: &VirtualNumber,
        now: UnixTime,
    ) -> Result<PinAttempts, StoreError> {
        let hour = attrs::hour_sk(now.div_euclid(HOUR));
        let person = self.vault()?.person_key(caller);
        let failures = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(
                attrs::PK,
                AttributeValue::S(attrs::pin_failures_pk(number.as_str())),
            )
            .key(attrs::SK, AttributeValue::S(hour.clone()))
            .consistent_read(true)
            .send();
        let (this_call, caller_this_hour, failures) = tokio::join!(
            self.add_try(
                attrs::pin_call_pk(endpoint, call_id.as_str()),
                attrs::PIN_TRIES_SK.to_owned(),
                now,
            ),
            self.add_try(
                attrs::pin_caller_pk(&person, number.as_str()),
                hour.clone(),
                now,
            ),
            failures,
        );
        Ok(PinAttempts {
            this_call: this_call?,
            caller_this_hour: caller_this_hour?,
            number_failures_this_hour: tries(failures.map_err(store_error)?.item.as_ref()),
        })
    }

    async fn count_pin_failure(
        &self,
        number: &VirtualNumber,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        self.add_try(
            attrs::pin_failures_pk(number.as_str()),
            attrs::hour_sk(now.div_euclid(HOUR)),
            now,
        )
        .await
        .map(|_| ())
    }
}
