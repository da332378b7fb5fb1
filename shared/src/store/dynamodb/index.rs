//! The by-number index: which orders hold live contacts on a number (pool refresh's moves).

use std::collections::HashSet;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use rand::Rng;

use super::{attrs, store_error, DynamoStore};
use crate::domain::{OrderId, UnixTime, UserId, VirtualNumber};
use crate::store::{OrdersOn, PairIndex, SessionDirectory, StoreError, INDEX_SHARDS};

#[async_trait]
impl PairIndex for DynamoStore {
    /// Reads the number's shards one after another from a random one, so that orders which
    /// cannot be moved (their pool ran dry) do not take every run's budget before the others.
    async fn orders_on(
        &self,
        number: &VirtualNumber,
        now: UnixTime,
        limit: usize,
    ) -> Result<OrdersOn, StoreError> {
        let first = rand::thread_rng().gen_range(0..INDEX_SHARDS);
        let mut seen: HashSet<OrderId> = HashSet::new();
        let mut found: Vec<OrderId> = Vec::new();
        for i in 0..INDEX_SHARDS {
            let shard = (first + i) % INDEX_SHARDS;
            let mut start = None;
            loop {
                let out = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .index_name(attrs::BY_NUMBER_INDEX)
                    .key_condition_expression("#shard = :shard AND #exp > :now")
                    .expression_attribute_names("#shard", attrs::NUMBER_SHARD)
                    .expression_attribute_names("#exp", attrs::EXPIRES_AT)
                    .expression_attribute_names("#order", attrs::ORDER_ID)
                    .expression_attribute_values(
                        ":shard",
                        AttributeValue::S(attrs::number_shard(number.as_str(), shard)),
                    )
                    .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
                    .projection_expression("#order")
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(store_error)?;
                for item in out.items() {
                    let order = item
                        .get(attrs::ORDER_ID)
                        .and_then(|v| v.as_s().ok())
                        .and_then(|v| v.parse::<OrderId>().ok())
                        .ok_or(StoreError::Corrupt {
                            attribute: attrs::ORDER_ID,
                        })?;
                    if seen.insert(order.clone()) {
                        if found.len() == limit {
                            return Ok(OrdersOn {
                                orders: found,
                                more: true,
                            });
                        }
                        found.push(order);
                    }
                }
                match out.last_evaluated_key {
                    Some(key) if !key.is_empty() => start = Some(key),
                    _ => break,
                }
            }
        }
        Ok(OrdersOn {
            orders: found,
            more: false,
        })
    }
}

#[async_trait]
impl SessionDirectory for DynamoStore {
    /// One query of the person's entries, live ones only.
    async fn sessions_of(&self, user: &UserId, now: UnixTime) -> Result<Vec<OrderId>, StoreError> {
        let items = self
            .query_partition(
                attrs::user_pk(user.as_str()),
                Some("#order_id, #expires_at"),
                Some(now),
                true,
            )
            .await?;
        items
            .iter()
            .map(|item| {
                item.get(attrs::ORDER_ID)
                    .and_then(|v| v.as_s().ok())
                    .and_then(|v| v.parse().ok())
                    .ok_or(StoreError::Corrupt {
                        attribute: attrs::ORDER_ID,
                    })
            })
            .collect()
    }
}
