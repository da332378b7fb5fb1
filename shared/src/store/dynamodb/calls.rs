//! The webhook's ledger of provider call ids: one conditional put per request, and, after the
//! answer, what a connected call joined (read back when the provider reports its end).

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};

use super::{attrs, store_error, DynamoStore};
use crate::domain::{CallId, ConnectedCall, UnixTime, VirtualNumber};
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

    async fn remember_connected(
        &self,
        endpoint: &str,
        call: &ConnectedCall,
    ) -> Result<(), StoreError> {
        let text = |v: &str| AttributeValue::S(v.to_owned());
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(
                attrs::PK,
                text(&attrs::call_pk(endpoint, call.call_id.as_str())),
            )
            .key(attrs::SK, text(attrs::CALL_SK))
            .update_expression("SET #o = :o, #n = :n, #m = :m, #cr = :cr, #ce = :ce")
            // Only the entry the answer's sighting wrote: never a new item without its expiry.
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", attrs::PK)
            .expression_attribute_names("#o", attrs::ORDER_ID)
            .expression_attribute_names("#n", attrs::NUMBER)
            .expression_attribute_names("#m", attrs::MARKET)
            .expression_attribute_names("#cr", attrs::CALLER_ROLE)
            .expression_attribute_names("#ce", attrs::CALLEE_ROLE)
            .expression_attribute_values(":o", text(call.order_id.as_str()))
            .expression_attribute_values(":n", text(call.number.as_str()))
            .expression_attribute_values(":m", text(call.market.as_str()))
            .expression_attribute_values(":cr", text(call.caller_role.as_str()))
            .expression_attribute_values(":ce", text(call.callee_role.as_str()))
            .send()
            .await;
        match update {
            Ok(_) => Ok(()),
            // The entry has expired and gone: nothing to note it on.
            Err(err)
                if matches!(
                    err.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(())
            }
            Err(err) => Err(store_error(err)),
        }
    }

    async fn connected(
        &self,
        endpoint: &str,
        call_id: &CallId,
        now: UnixTime,
    ) -> Result<Option<ConnectedCall>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(
                attrs::PK,
                AttributeValue::S(attrs::call_pk(endpoint, call_id.as_str())),
            )
            .key(attrs::SK, AttributeValue::S(attrs::CALL_SK.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(store_error)?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let expires_at: Option<UnixTime> = item
            .get(attrs::EXPIRES_AT)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok());
        // TTL deletes late: an entry past its time is as good as gone.
        if expires_at.is_none_or(|at| at <= now) || !item.contains_key(attrs::ORDER_ID) {
            return Ok(None);
        }
        let text = |attribute: &'static str| {
            item.get(attribute)
                .and_then(|v| v.as_s().ok())
                .ok_or(StoreError::Corrupt { attribute })
        };
        Ok(Some(ConnectedCall {
            call_id: call_id.clone(),
            order_id: text(attrs::ORDER_ID)?
                .parse()
                .map_err(corrupt(attrs::ORDER_ID))?,
            number: VirtualNumber::parse(text(attrs::NUMBER)?).map_err(corrupt(attrs::NUMBER))?,
            market: text(attrs::MARKET)?
                .parse()
                .map_err(corrupt(attrs::MARKET))?,
            caller_role: text(attrs::CALLER_ROLE)?
                .parse()
                .map_err(corrupt(attrs::CALLER_ROLE))?,
            callee_role: text(attrs::CALLEE_ROLE)?
                .parse()
                .map_err(corrupt(attrs::CALLEE_ROLE))?,
        }))
    }
}

/// An attribute that does not read back as what it was written as.
fn corrupt<E>(attribute: &'static str) -> impl FnOnce(E) -> StoreError {
    move |_| StoreError::Corrupt { attribute }
}
