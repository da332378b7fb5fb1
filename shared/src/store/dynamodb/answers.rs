//! Virtual numbers' answer tallies: per number, day and shard, counters added to with one
//! `UpdateItem` and read back, every shard of every day asked for, with one `BatchGetItem`.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};

use super::{attrs, store_error, DynamoStore};
use crate::domain::{AnswerTally, CallId, UnixTime, VirtualNumber};
use crate::pool::day_key;
use crate::store::{
    answer_shard, AnswerStats, StoreError, StoreRejection, ANSWER_SHARDS, MAX_TALLY_DAYS,
};

const DAY: UnixTime = 86_400;

/// `BatchGetItem` may leave keys unprocessed when throttled: asked again this many times.
const BATCH_ATTEMPTS: usize = 3;

#[async_trait]
impl AnswerStats for DynamoStore {
    async fn count_answer(
        &self,
        number: &VirtualNumber,
        call_id: &CallId,
        answered: bool,
        now: UnixTime,
        keep_until: UnixTime,
    ) -> Result<(), StoreError> {
        let n = |v: i64| AttributeValue::N(v.to_string());
        self.client
            .update_item()
            .table_name(&self.table)
            .key(
                attrs::PK,
                AttributeValue::S(attrs::answers_pk(number.as_str(), answer_shard(call_id))),
            )
            .key(attrs::SK, AttributeValue::S(attrs::day_sk(&day_key(now))))
            .update_expression("ADD #att :one, #ans :answered SET #exp = :exp")
            .expression_attribute_names("#att", attrs::ATTEMPTED)
            .expression_attribute_names("#ans", attrs::ANSWERED)
            .expression_attribute_names("#exp", attrs::EXPIRES_AT)
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":answered", n(i64::from(answered)))
            .expression_attribute_values(":exp", n(keep_until))
            .send()
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn answer_tally(
        &self,
        number: &VirtualNumber,
        now: UnixTime,
        days: u32,
    ) -> Result<AnswerTally, StoreError> {
        let days = days.clamp(1, MAX_TALLY_DAYS);
        let keys: Vec<HashMap<String, AttributeValue>> = (0..days)
            .flat_map(|back| {
                let day = attrs::day_sk(&day_key(now - i64::from(back) * DAY));
                (0..ANSWER_SHARDS).map(move |shard| {
                    HashMap::from([
                        (
                            attrs::PK.to_owned(),
                            AttributeValue::S(attrs::answers_pk(number.as_str(), shard)),
                        ),
                        (attrs::SK.to_owned(), AttributeValue::S(day.clone())),
                    ])
                })
            })
            .collect();
        let mut request = KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .build()
            .map_err(|_| StoreError::Rejected(StoreRejection::Unbuildable))?;
        let mut tally = AnswerTally::default();
        for _ in 0..BATCH_ATTEMPTS {
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(store_error)?;
            for item in out
                .responses
                .into_iter()
                .flatten()
                .flat_map(|(_, items)| items)
            {
                let count = |attribute: &'static str| {
                    item.get(attribute)
                        .and_then(|v| v.as_n().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .ok_or(StoreError::Corrupt { attribute })
                };
                tally.attempted += count(attrs::ATTEMPTED)?;
                tally.answered += count(attrs::ANSWERED)?;
            }
            match out
                .unprocessed_keys
                .and_then(|mut left| left.remove(&self.table))
            {
                Some(left) if !left.keys.is_empty() => request = left,
                _ => return Ok(tally),
            }
        }
        Err(StoreError::Throttled)
    }
}
