//! The DynamoDB store: one table, conditional writes, one transaction per order change.

pub mod attrs;
mod codec;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem};
use aws_sdk_dynamodb::Client;

use crate::crypto::Vault;
use crate::domain::{
    Market, OrderId, RealNumber, Route, RouteKey, Session, UnixTime, VirtualNumber, VnNumber,
};
use crate::store::{CommitError, LiveContact, SessionCommit, Store, StoreError};

type Item = HashMap<String, AttributeValue>;

pub struct DynamoStore {
    client: Client,
    table: String,
    vault: Arc<Vault>,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>, vault: Arc<Vault>) -> Self {
        DynamoStore {
            client,
            table: table.into(),
            vault,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Reads every page of a query on one partition.
    async fn query_partition(
        &self,
        pk: String,
        projection: Option<&str>,
        live_at: Option<UnixTime>,
        consistent: bool,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", attrs::PK)
                .expression_attribute_values(":pk", AttributeValue::S(pk.clone()))
                .consistent_read(consistent)
                .set_exclusive_start_key(start.take());
            if let Some(p) = projection {
                q = q.projection_expression(p);
                for name in p.split(',').map(str::trim) {
                    q = q.expression_attribute_names(name, &name[1..]);
                }
            }
            if let Some(now) = live_at {
                q = q
                    .filter_expression("#exp > :now")
                    .expression_attribute_names("#exp", attrs::EXPIRES_AT)
                    .expression_attribute_values(":now", AttributeValue::N(now.to_string()));
            }
            let out = q.send().await.map_err(store_error)?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }

    fn route_put(&self, route: &Route, now: UnixTime) -> Result<TransactWriteItem, StoreError> {
        let item = codec::route_item(&self.vault, route)?;
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk) OR #exp < :now OR #order = :order")
            .expression_attribute_names("#pk", attrs::PK)
            .expression_attribute_names("#exp", attrs::EXPIRES_AT)
            .expression_attribute_names("#order", attrs::ORDER_ID)
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .expression_attribute_values(
                ":order",
                AttributeValue::S(route.order_id.as_str().to_owned()),
            )
            .build()
            .map_err(|e| StoreError::Rejected(e.to_string()))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn route_delete(
        &self,
        key: &RouteKey,
        order: &OrderId,
    ) -> Result<TransactWriteItem, StoreError> {
        let delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(codec::route_key(
                &self.vault,
                &key.caller,
                &key.number,
            )))
            .condition_expression("attribute_not_exists(#pk) OR #order = :order")
            .expression_attribute_names("#pk", attrs::PK)
            .expression_attribute_names("#order", attrs::ORDER_ID)
            .expression_attribute_values(":order", AttributeValue::S(order.as_str().to_owned()))
            .build()
            .map_err(|e| StoreError::Rejected(e.to_string()))?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }
}

#[async_trait]
impl Store for DynamoStore {
    async fn session(&self, order: &OrderId) -> Result<Option<Session>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(
                attrs::PK,
                AttributeValue::S(attrs::session_pk(order.as_str())),
            )
            .key(attrs::SK, AttributeValue::S(attrs::SESSION_SK.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(store_error)?;
        out.item
            .map(|item| codec::session_from_item(&self.vault, &item))
            .transpose()
    }

    async fn live_contacts(
        &self,
        person: &RealNumber,
        now: UnixTime,
    ) -> Result<Vec<LiveContact>, StoreError> {
        let pk = attrs::route_pk(&self.vault.person_key(person));
        let items = self
            .query_partition(pk, Some("#sk, #order_id, #expires_at"), Some(now), true)
            .await?;
        items.iter().map(codec::live_contact_from_item).collect()
    }

    async fn pool(&self, market: &Market) -> Result<Vec<VirtualNumber>, StoreError> {
        let items = self
            .query_partition(attrs::pool_pk(market.as_str()), None, None, false)
            .await?;
        items.iter().map(codec::number_from_item).collect()
    }

    async fn put_number(&self, number: &VirtualNumber) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(codec::number_item(number)))
            .send()
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn commit(&self, commit: &SessionCommit) -> Result<(), CommitError> {
        let session_put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(codec::session_item(
                &self.vault,
                &commit.session,
                commit.session_expires_at,
            )?))
            .condition_expression("attribute_not_exists(#pk) OR #version < :version")
            .expression_attribute_names("#pk", attrs::PK)
            .expression_attribute_names("#version", attrs::VERSION)
            .expression_attribute_values(
                ":version",
                AttributeValue::N(commit.session.version.to_string()),
            )
            .build()
            .map_err(|e| StoreError::Rejected(e.to_string()))?;
        // Item order matters: cancellation reasons come back in the same order.
        let mut items = vec![TransactWriteItem::builder().put(session_put).build()];
        let mut keys: Vec<RouteKey> =
            Vec::with_capacity(commit.put_routes.len() + commit.delete_routes.len());
        for route in &commit.put_routes {
            items.push(self.route_put(route, commit.now)?);
            keys.push(route.key());
        }
        for key in &commit.delete_routes {
            items.push(self.route_delete(key, &commit.session.order_id)?);
            keys.push(key.clone());
        }
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) => Err(commit_error(err, &keys)),
        }
    }

    async fn route(
        &self,
        caller: &RealNumber,
        dialled: &VnNumber,
        now: UnixTime,
    ) -> Result<Option<Route>, StoreError> {
        let key = codec::route_key(&self.vault, caller, dialled);
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(store_error)?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let route = codec::route_from_item(&self.vault, caller, dialled, &item)?;
        Ok(route.is_live(now).then_some(route))
    }
}

/// Reads a cancelled transaction's per-item reasons: item 0 is the session, the rest are `keys`.
fn commit_error<R>(err: SdkError<TransactWriteItemsError, R>, keys: &[RouteKey]) -> CommitError
where
    R: std::fmt::Debug,
{
    let SdkError::ServiceError(service) = &err else {
        return CommitError::Store(store_error(err));
    };
    let TransactWriteItemsError::TransactionCanceledException(cancelled) = service.err() else {
        return CommitError::Store(store_error(err));
    };
    let reasons = cancelled.cancellation_reasons();
    let code = |i: usize| reasons.get(i).and_then(|r| r.code()).unwrap_or("None");
    if (0..reasons.len()).any(|i| code(i) == "TransactionConflict") {
        return CommitError::Conflict;
    }
    if (0..reasons.len())
        .any(|i| matches!(code(i), "ThrottlingError" | "ProvisionedThroughputExceeded"))
    {
        return CommitError::Store(StoreError::Throttled);
    }
    if code(0) == "ConditionalCheckFailed" {
        return CommitError::StaleVersion;
    }
    let taken: Vec<RouteKey> = keys
        .iter()
        .enumerate()
        .filter(|(i, _)| code(i + 1) == "ConditionalCheckFailed")
        .map(|(_, k)| k.clone())
        .collect();
    if taken.is_empty() {
        let codes: Vec<&str> = (0..reasons.len())
            .map(code)
            .filter(|c| *c != "None")
            .collect();
        return CommitError::Store(StoreError::Rejected(format!(
            "transaction cancelled: {codes:?}"
        )));
    }
    CommitError::RoutesTaken(taken)
}

/// Maps an SDK failure to what callers decide on: retry later or not. Never includes item contents.
pub(crate) fn store_error<E, R>(err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match &err {
        SdkError::TimeoutError(_) => StoreError::Timeout,
        SdkError::DispatchFailure(f) if f.is_timeout() => StoreError::Timeout,
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            StoreError::Unavailable("no usable response".into())
        }
        SdkError::ServiceError(s) => match s.err().code() {
            Some(
                "ThrottlingException"
                | "ProvisionedThroughputExceededException"
                | "RequestLimitExceeded",
            ) => StoreError::Throttled,
            Some("InternalServerError" | "ServiceUnavailable") => {
                StoreError::Unavailable("service error".into())
            }
            Some(code) => StoreError::Rejected(code.to_owned()),
            None => StoreError::Unavailable("unrecognised service error".into()),
        },
        _ => StoreError::Rejected("request could not be built".into()),
    }
}
