//! The DynamoDB store: one table, conditional writes, one transaction per order change.

mod answers;
pub mod attrs;
mod calls;
mod codec;
mod index;
mod pins;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, Put, ReturnConsumedCapacity, TransactWriteItem,
};
use aws_sdk_dynamodb::Client;
use futures_util::future::try_join_all;
use rand::Rng;

use crate::crypto::{CryptoError, Vault};
use crate::domain::invariant::{PinAt, RouteAt, StoredPin, StoredRoute, StoredSession};
use crate::domain::{
    Market, OrderId, PinKey, PinRoute, PoolNumber, RealNumber, Route, RouteKey, Session, UnixTime,
    VirtualNumber,
};
use crate::store::{
    AssignmentStore, AuditPage, AuditStore, CommitError, LeaseTake, LiveContact, Outage, PairWrite,
    PeakWrite, PoolEntry, PoolStore, PoolWriteError, PurchaseCount, PurchaseLedger, RouteReader,
    SampledRoute, SessionCommit, StoreError, StoreRejection, WalkCursor,
};

type Item = HashMap<String, AttributeValue>;

/// [`PoolStore::sample_routes`] reads consecutive segments of a parallel scan split this many ways,
/// from a random one: a random part of the table, whatever its size.
const SAMPLE_SEGMENTS: i32 = 16;

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

pub struct DynamoStore {
    client: Client,
    table: String,
    /// `None`: a store without keys, which reads and writes only what holds no real number.
    vault: Option<Arc<Vault>>,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>, vault: Arc<Vault>) -> Self {
        DynamoStore {
            client,
            table: table.into(),
            vault: Some(vault),
        }
    }

    /// A store without keys, for pool upkeep: the pool, its statistics, the purchase ledger,
    /// leases and the route sample (market and number only) hold no real number. Whatever needs
    /// a key (a route, a session, live contacts, a commit, an audit of routes) fails with
    /// [`CryptoError::NoKeys`] before any request is sent.
    pub fn without_keys(client: Client, table: impl Into<String>) -> Self {
        DynamoStore {
            client,
            table: table.into(),
            vault: None,
        }
    }

    fn vault(&self) -> Result<&Vault, StoreError> {
        self.vault
            .as_deref()
            .ok_or(StoreError::Crypto(CryptoError::NoKeys))
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

    /// A route's put; `indexed`: the first route of a contact's pair, listed by number.
    fn route_put(
        &self,
        route: &Route,
        indexed: bool,
        write: PairWrite,
        now: UnixTime,
    ) -> Result<TransactWriteItem, StoreError> {
        let vault = self.vault()?;
        let item = if indexed {
            codec::indexed_route_item(vault, route)?
        } else {
            codec::route_item(vault, route)?
        };
        self.pair_put(item, &route.order_id, None, write, now)
    }

    /// A PIN's put: as its pair's routes, and only over a PIN that stands for the same
    /// participant of this order (or a lapsed or absent one).
    fn pin_put(
        &self,
        pin: &PinRoute,
        write: PairWrite,
        now: UnixTime,
    ) -> Result<TransactWriteItem, StoreError> {
        let vault = self.vault()?;
        let principal = vault.person_key(&pin.route.caller);
        let item = codec::pin_item(vault, pin)?;
        self.pair_put(item, &pin.route.order_id, Some(principal), write, now)
    }

    /// An item of `order`'s pair, put under `write`'s condition; with `principal`, a PIN's,
    /// which the order may only rewrite for the participant it stands for. Live means
    /// `expires_at > now`, here as everywhere.
    fn pair_put(
        &self,
        item: Item,
        order: &OrderId,
        principal: Option<String>,
        write: PairWrite,
        now: UnixTime,
    ) -> Result<TransactWriteItem, StoreError> {
        let condition = match (write, principal.is_some()) {
            (PairWrite::Claim, false) => "attribute_not_exists(#pk) OR #exp <= :now OR #order = :order",
            (PairWrite::Renew, false) => "attribute_exists(#pk) AND #exp > :now AND #order = :order",
            (PairWrite::Claim, true) => {
                "attribute_not_exists(#pk) OR #exp <= :now OR (#order = :order AND #principal = :principal)"
            }
            (PairWrite::Renew, true) => {
                "attribute_exists(#pk) AND #exp > :now AND #order = :order AND #principal = :principal"
            }
        };
        let mut put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .expression_attribute_names("#pk", attrs::PK)
            .expression_attribute_names("#exp", attrs::EXPIRES_AT)
            .expression_attribute_names("#order", attrs::ORDER_ID)
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .expression_attribute_values(":order", AttributeValue::S(order.as_str().to_owned()));
        if let Some(principal) = principal {
            put = put
                .expression_attribute_names("#principal", attrs::PRINCIPAL)
                .expression_attribute_values(":principal", AttributeValue::S(principal));
        }
        let put = put
            .build()
            .map_err(|_| StoreError::Rejected(StoreRejection::Unbuildable))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn route_delete(
        &self,
        key: &RouteKey,
        order: &OrderId,
    ) -> Result<TransactWriteItem, StoreError> {
        let key = codec::route_key(self.vault()?, &key.caller, &key.number);
        self.pair_delete(key, order)
    }

    fn pin_delete(&self, key: &PinKey, order: &OrderId) -> Result<TransactWriteItem, StoreError> {
        self.pair_delete(codec::pin_key(self.vault()?, key), order)
    }

    /// The item at `key` deleted if it is (still) `order`'s: one that now serves another order
    /// is left alone, and refuses the commit.
    fn pair_delete(&self, key: Item, order: &OrderId) -> Result<TransactWriteItem, StoreError> {
        let delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key))
            .condition_expression("attribute_not_exists(#pk) OR #order = :order")
            .expression_attribute_names("#pk", attrs::PK)
            .expression_attribute_names("#order", attrs::ORDER_ID)
            .expression_attribute_values(":order", AttributeValue::S(order.as_str().to_owned()))
            .build()
            .map_err(|_| StoreError::Rejected(StoreRejection::Unbuildable))?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }
}

#[async_trait]
impl RouteReader for DynamoStore {
    async fn route(
        &self,
        caller: &RealNumber,
        dialled: &VirtualNumber,
    ) -> Result<Option<Route>, StoreError> {
        let vault = self.vault()?;
        let key = codec::route_key(vault, caller, dialled);
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
        codec::route_from_item(vault, caller, dialled, &item).map(Some)
    }

    async fn pin_route(&self, key: &PinKey) -> Result<Option<Route>, StoreError> {
        let vault = self.vault()?;
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(codec::pin_key(vault, key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(store_error)?;
        out.item
            .map(|item| codec::pin_route_from_item(vault, &key.number, &item))
            .transpose()
    }
}

#[async_trait]
impl AssignmentStore for DynamoStore {
    async fn session(&self, order: &OrderId) -> Result<Option<Session>, StoreError> {
        let vault = self.vault()?;
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
            .map(|item| codec::session_from_item(vault, &item))
            .transpose()
    }

    async fn live_contacts(
        &self,
        person: &RealNumber,
        now: UnixTime,
    ) -> Result<Vec<LiveContact>, StoreError> {
        let pk = attrs::route_pk(&self.vault()?.person_key(person));
        let items = self
            .query_partition(pk, Some("#sk, #order_id, #expires_at"), Some(now), true)
            .await?;
        items.iter().map(codec::live_contact_from_item).collect()
    }

    async fn pool(&self, market: &Market) -> Result<Vec<PoolNumber>, StoreError> {
        let items = self
            .query_partition(attrs::pool_pk(market.as_str()), None, None, false)
            .await?;
        items.iter().map(codec::number_from_item).collect()
    }

    async fn commit(&self, commit: &SessionCommit) -> Result<(), CommitError> {
        // Written only over the revision the commit was planned from (none stored, or an item
        // from before revisions: revision 0).
        let condition = match commit.expected_revision {
            None => "attribute_not_exists(#pk)",
            Some(0) => "attribute_not_exists(#revision)",
            Some(_) => "#revision = :revision",
        };
        let mut session_put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(codec::session_item(
                self.vault()?,
                &commit.session,
                commit.session_expires_at,
            )?))
            .condition_expression(condition);
        session_put = match commit.expected_revision {
            None => session_put.expression_attribute_names("#pk", attrs::PK),
            Some(0) => session_put.expression_attribute_names("#revision", attrs::REVISION),
            Some(revision) => session_put
                .expression_attribute_names("#revision", attrs::REVISION)
                .expression_attribute_values(":revision", AttributeValue::N(revision.to_string())),
        };
        let session_put = session_put
            .build()
            .map_err(|_| StoreError::Rejected(StoreRejection::Unbuildable))?;
        // Item order matters: cancellation reasons come back in the same order.
        let mut items = vec![TransactWriteItem::builder().put(session_put).build()];
        let mut keys: Vec<Written> =
            Vec::with_capacity(commit.pairs.len() * 4 + commit.delete_routes.len());
        for pair in &commit.pairs {
            for (i, route) in pair.routes().iter().enumerate() {
                items.push(self.route_put(route, i == 0, commit.pair_write, commit.now)?);
                keys.push(Written::Route(route.key()));
            }
        }
        for route in commit.handover_routes() {
            items.push(self.route_put(route, false, PairWrite::Renew, commit.now)?);
            keys.push(Written::Route(route.key()));
        }
        // Each person's entry of the order, live as long as the session's routes.
        let order = commit.session.order_id.as_str();
        let (people, former) = if commit.people_entries {
            (&commit.session.participants[..], &commit.former_users[..])
        } else {
            (&[][..], &[][..])
        };
        for p in people {
            let entry = Put::builder()
                .table_name(&self.table)
                .item(attrs::PK, s(attrs::user_pk(p.user_id.as_str())))
                .item(attrs::SK, s(attrs::user_order_sk(order)))
                .item(attrs::ORDER_ID, s(order))
                .item(attrs::ROLE, s(p.role.as_str()))
                .item(attrs::EXPIRES_AT, n(commit.session.routes_until))
                .build()
                .map_err(|_| StoreError::Rejected(StoreRejection::Unbuildable))?;
            items.push(TransactWriteItem::builder().put(entry).build());
            keys.push(Written::Other);
        }
        for user in former {
            let gone = Delete::builder()
                .table_name(&self.table)
                .key(attrs::PK, s(attrs::user_pk(user.as_str())))
                .key(attrs::SK, s(attrs::user_order_sk(order)))
                .build()
                .map_err(|_| StoreError::Rejected(StoreRejection::Unbuildable))?;
            items.push(TransactWriteItem::builder().delete(gone).build());
            keys.push(Written::Other);
        }
        for key in &commit.delete_routes {
            items.push(self.route_delete(key, &commit.session.order_id)?);
            keys.push(Written::Route(key.clone()));
        }
        for pin in commit.put_pins() {
            items.push(self.pin_put(pin, commit.pair_write, commit.now)?);
            keys.push(Written::Pin(pin.key()));
        }
        for key in &commit.delete_pins {
            items.push(self.pin_delete(key, &commit.session.order_id)?);
            keys.push(Written::Pin(key.clone()));
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

    async fn raise_live_peak(
        &self,
        market: &Market,
        day: &str,
        peak: u32,
        expires_at: UnixTime,
    ) -> Result<PeakWrite, StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attrs::PK, s(attrs::stats_pk(market.as_str())))
            .key(attrs::SK, s(attrs::day_sk(day)))
            .update_expression("SET #max = :n, #exp = :exp")
            .condition_expression("attribute_not_exists(#max) OR #max < :n")
            .expression_attribute_names("#max", attrs::MAX_LIVE)
            .expression_attribute_names("#exp", attrs::EXPIRES_AT)
            .expression_attribute_values(":n", n(peak))
            .expression_attribute_values(":exp", n(expires_at))
            .send()
            .await;
        let raised = written(out, UpdateItemError::is_conditional_check_failed_exception)?;
        Ok(if raised {
            PeakWrite::Raised
        } else {
            PeakWrite::AlreadyHigher
        })
    }
}

#[async_trait]
impl PoolStore for DynamoStore {
    async fn pool_entries(&self, market: &Market) -> Result<Vec<PoolEntry>, StoreError> {
        let items = self
            .query_partition(attrs::pool_pk(market.as_str()), None, None, true)
            .await?;
        items.iter().map(codec::pool_entry_from_item).collect()
    }

    async fn put_number(&self, number: &PoolNumber) -> Result<(), StoreError> {
        // An update rather than a put, so that the version grows instead of starting again.
        let mut item = codec::number_item(number);
        let key: Item = [attrs::PK, attrs::SK]
            .into_iter()
            .filter_map(|k| item.remove_entry(k))
            .collect();
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .expression_attribute_names("#version", attrs::VERSION)
            .expression_attribute_values(":one", n(1));
        let mut sets = Vec::with_capacity(item.len());
        for (i, (name, value)) in item.into_iter().enumerate() {
            sets.push(format!("#a{i} = :a{i}"));
            update = update
                .expression_attribute_names(format!("#a{i}"), name)
                .expression_attribute_values(format!(":a{i}"), value);
        }
        update
            .update_expression(format!("SET {} ADD #version :one", sets.join(", ")))
            .send()
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn put_number_if(
        &self,
        number: &PoolNumber,
        expected: Option<u64>,
    ) -> Result<u64, PoolWriteError> {
        let version = expected.map_or(1, |v| v + 1);
        let mut item = codec::number_item(number);
        item.insert(attrs::VERSION.to_owned(), n(version));
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .expression_attribute_names("#pk", attrs::PK);
        let put = match expected {
            None => put.condition_expression("attribute_not_exists(#pk)"),
            // Items written before versions existed count as version 0.
            Some(0) => put
                .condition_expression(
                    "attribute_exists(#pk) AND (attribute_not_exists(#version) OR #version = :v)",
                )
                .expression_attribute_names("#version", attrs::VERSION)
                .expression_attribute_values(":v", n(0)),
            Some(v) => put
                .condition_expression("attribute_exists(#pk) AND #version = :v")
                .expression_attribute_names("#version", attrs::VERSION)
                .expression_attribute_values(":v", n(v)),
        };
        if written(
            put.send().await,
            PutItemError::is_conditional_check_failed_exception,
        )? {
            Ok(version)
        } else {
            Err(PoolWriteError::NumberChanged(number.number.clone()))
        }
    }

    async fn live_peak(&self, market: &Market, day: &str) -> Result<Option<u32>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attrs::PK, s(attrs::stats_pk(market.as_str())))
            .key(attrs::SK, s(attrs::day_sk(day)))
            .projection_expression("#max")
            .expression_attribute_names("#max", attrs::MAX_LIVE)
            .send()
            .await
            .map_err(store_error)?;
        out.item
            .map(|item| {
                item.get(attrs::MAX_LIVE)
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse().ok())
                    .ok_or(StoreError::Corrupt {
                        attribute: attrs::MAX_LIVE,
                    })
            })
            .transpose()
    }

    async fn sample_routes(
        &self,
        now: UnixTime,
        budget: usize,
    ) -> Result<Vec<SampledRoute>, StoreError> {
        let first = rand::thread_rng().gen_range(0..SAMPLE_SEGMENTS);
        let mut read = 0usize;
        let mut routes = Vec::new();
        for k in 0..SAMPLE_SEGMENTS {
            let segment = (first + k) % SAMPLE_SEGMENTS;
            let mut start: Option<Item> = None;
            loop {
                if read >= budget {
                    return Ok(routes);
                }
                let page = i32::try_from((budget - read).min(1000)).unwrap_or(1000);
                let out = self
                    .client
                    .scan()
                    .table_name(&self.table)
                    .segment(segment)
                    .total_segments(SAMPLE_SEGMENTS)
                    .limit(page)
                    .filter_expression("begins_with(#pk, :route) AND #exp > :now")
                    .projection_expression("#market, #number")
                    .expression_attribute_names("#pk", attrs::PK)
                    .expression_attribute_names("#exp", attrs::EXPIRES_AT)
                    .expression_attribute_names("#market", attrs::MARKET)
                    .expression_attribute_names("#number", attrs::NUMBER)
                    .expression_attribute_values(":route", s(attrs::ROUTE_PK_PREFIX))
                    .expression_attribute_values(":now", n(now))
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(store_error)?;
                read += usize::try_from(out.scanned_count).unwrap_or(0).max(1);
                for item in out.items.unwrap_or_default() {
                    routes.push(codec::sampled_route_from_item(&item)?);
                }
                match out.last_evaluated_key {
                    Some(key) if !key.is_empty() => start = Some(key),
                    _ => break,
                }
            }
        }
        Ok(routes)
    }
}

#[async_trait]
impl PurchaseLedger for DynamoStore {
    async fn count_purchase(
        &self,
        month: &str,
        cap: u32,
        expires_at: UnixTime,
    ) -> Result<PurchaseCount, StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attrs::PK, s(attrs::PURCHASES_PK))
            .key(attrs::SK, s(attrs::month_sk(month)))
            .update_expression("ADD #bought :one SET #exp = :exp")
            .condition_expression("attribute_not_exists(#bought) OR #bought < :cap")
            .expression_attribute_names("#bought", attrs::BOUGHT)
            .expression_attribute_names("#exp", attrs::EXPIRES_AT)
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":cap", n(cap))
            .expression_attribute_values(":exp", n(expires_at))
            .send()
            .await;
        let counted = written(out, UpdateItemError::is_conditional_check_failed_exception)?;
        Ok(if counted {
            PurchaseCount::Counted
        } else {
            PurchaseCount::AtCap
        })
    }

    async fn uncount_purchase(&self, month: &str) -> Result<(), StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attrs::PK, s(attrs::PURCHASES_PK))
            .key(attrs::SK, s(attrs::month_sk(month)))
            .update_expression("ADD #bought :minus_one")
            .condition_expression("#bought > :zero")
            .expression_attribute_names("#bought", attrs::BOUGHT)
            .expression_attribute_values(":minus_one", n(-1))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        // Not written: nothing counted this month to take back.
        written(out, UpdateItemError::is_conditional_check_failed_exception).map(drop)
    }

    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: UnixTime,
        until: UnixTime,
    ) -> Result<LeaseTake, StoreError> {
        let out = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(attrs::PK, s(attrs::lease_pk(name)))
            .item(attrs::SK, s(attrs::LEASE_SK))
            .item(attrs::HOLDER, s(holder))
            .item(attrs::EXPIRES_AT, n(until))
            .condition_expression("attribute_not_exists(#pk) OR #exp < :now")
            .expression_attribute_names("#pk", attrs::PK)
            .expression_attribute_names("#exp", attrs::EXPIRES_AT)
            .expression_attribute_values(":now", n(now))
            .send()
            .await;
        let taken = written(out, PutItemError::is_conditional_check_failed_exception)?;
        Ok(if taken {
            LeaseTake::Taken
        } else {
            LeaseTake::Held
        })
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        // Lapsed rather than deleted (TTL removes it): the refresher's role needs no DeleteItem.
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attrs::PK, s(attrs::lease_pk(name)))
            .key(attrs::SK, s(attrs::LEASE_SK))
            .update_expression("SET #exp = :lapsed")
            .condition_expression("#holder = :holder")
            .expression_attribute_names("#holder", attrs::HOLDER)
            .expression_attribute_names("#exp", attrs::EXPIRES_AT)
            .expression_attribute_values(":holder", s(holder))
            .expression_attribute_values(":lapsed", n(0))
            .send()
            .await;
        // Not written: taken over after it expired, no longer ours to release.
        written(out, UpdateItemError::is_conditional_check_failed_exception).map(drop)
    }
}

#[async_trait]
impl AuditStore for DynamoStore {
    async fn audit_page(
        &self,
        from: Option<WalkCursor>,
        limit: u32,
        live_at: UnixTime,
    ) -> Result<AuditPage, StoreError> {
        let start = from.map(|c| {
            HashMap::from([
                (attrs::PK.to_owned(), s(c.pk)),
                (attrs::SK.to_owned(), s(c.sk)),
            ])
        });
        let out = self
            .client
            .scan()
            .table_name(&self.table)
            .limit(i32::try_from(limit.max(1)).unwrap_or(i32::MAX))
            .filter_expression(
                "((begins_with(#pk, :route) OR begins_with(#pk, :pin)) AND #exp > :now) \
                 OR (#sk = :session AND #until > :now)",
            )
            .expression_attribute_values(":pin", s(attrs::PIN_PK_PREFIX))
            .expression_attribute_names("#pk", attrs::PK)
            .expression_attribute_names("#sk", attrs::SK)
            .expression_attribute_names("#exp", attrs::EXPIRES_AT)
            .expression_attribute_names("#until", attrs::ROUTES_UNTIL)
            .expression_attribute_values(":route", s(attrs::ROUTE_PK_PREFIX))
            .expression_attribute_values(":session", s(attrs::SESSION_SK))
            .expression_attribute_values(":now", n(live_at))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(store_error)?;
        let mut page = AuditPage {
            scanned: u64::try_from(out.scanned_count).unwrap_or(0),
            read_units: out
                .consumed_capacity
                .and_then(|c| c.capacity_units)
                .unwrap_or(0.0),
            ..AuditPage::default()
        };
        for item in out.items.unwrap_or_default() {
            if get_s(&item, attrs::SK) == Some(attrs::SESSION_SK) {
                page.sessions.push(codec::stored_session_from_item(&item)?);
            } else if get_s(&item, attrs::SK) == Some(attrs::PIN_SK) {
                page.pins
                    .push(codec::stored_pin_from_item(self.vault()?, &item)?);
            } else {
                page.routes
                    .push(codec::stored_route_from_item(self.vault()?, &item)?);
            }
        }
        page.next = out.last_evaluated_key.and_then(|key| {
            Some(WalkCursor {
                pk: get_s(&key, attrs::PK)?.to_owned(),
                sk: get_s(&key, attrs::SK)?.to_owned(),
            })
        });
        Ok(page)
    }

    async fn audit_items(
        &self,
        routes: &[RouteAt],
        orders: &[OrderId],
    ) -> Result<(Vec<StoredRoute>, Vec<StoredSession>), StoreError> {
        // Routes are read to open their callee: without keys, refused before any read.
        let vault = if routes.is_empty() {
            None
        } else {
            Some(self.vault()?)
        };
        let read = |pk: String, sk: String| async move {
            self.client
                .get_item()
                .table_name(&self.table)
                .key(attrs::PK, s(pk))
                .key(attrs::SK, s(sk))
                .consistent_read(true)
                .send()
                .await
                .map(|out| out.item)
                .map_err(store_error)
        };
        let route_items = try_join_all(routes.iter().map(|at| {
            read(
                attrs::route_pk(at.caller.as_str()),
                attrs::number_sk(at.number.as_str()),
            )
        }))
        .await?;
        let session_items = try_join_all(
            orders
                .iter()
                .map(|o| read(attrs::session_pk(o.as_str()), attrs::SESSION_SK.to_owned())),
        )
        .await?;
        let routes = route_items
            .into_iter()
            .flatten()
            .map(|item| codec::stored_route_from_item(vault.ok_or(CryptoError::NoKeys)?, &item))
            .collect::<Result<_, _>>()?;
        let sessions = session_items
            .into_iter()
            .flatten()
            .map(|item| codec::stored_session_from_item(&item))
            .collect::<Result<_, _>>()?;
        Ok((routes, sessions))
    }

    async fn audit_pins(&self, pins: &[PinAt]) -> Result<Vec<StoredPin>, StoreError> {
        if pins.is_empty() {
            return Ok(Vec::new());
        }
        let vault = self.vault()?;
        let items = try_join_all(pins.iter().map(|at| {
            self.client
                .get_item()
                .table_name(&self.table)
                .key(attrs::PK, s(attrs::pin_pk(at.as_str())))
                .key(attrs::SK, s(attrs::PIN_SK))
                .consistent_read(true)
                .send()
        }))
        .await
        .map_err(store_error)?;
        items
            .into_iter()
            .filter_map(|out| out.item)
            .map(|item| codec::stored_pin_from_item(vault, &item))
            .collect()
    }
}

/// What a commit's item after the session is, in item order.
enum Written {
    Route(RouteKey),
    Pin(PinKey),
    /// An unconditional write (a person's entry): never the reason of a cancellation.
    Other,
}

/// Reads a cancelled transaction's per-item reasons: item 0 is the session, the rest are `keys`.
fn commit_error<R>(err: SdkError<TransactWriteItemsError, R>, keys: &[Written]) -> CommitError
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
        return CommitError::SessionChanged;
    }
    let (mut routes, mut pins) = (Vec::new(), Vec::new());
    for (i, key) in keys.iter().enumerate() {
        if code(i + 1) == "ConditionalCheckFailed" {
            match key {
                Written::Route(k) => routes.push(k.clone()),
                Written::Pin(k) => pins.push(k.clone()),
                Written::Other => {}
            }
        }
    }
    if routes.is_empty() && pins.is_empty() {
        let codes = (0..reasons.len())
            .map(code)
            .filter(|c| *c != "None")
            .map(str::to_owned)
            .collect();
        return CommitError::Store(StoreError::Rejected(StoreRejection::Cancelled(codes)));
    }
    // Routes first: a pair that moves draws new PINs anyway.
    if routes.is_empty() {
        CommitError::PinsTaken(pins)
    } else {
        CommitError::RoutesTaken(routes)
    }
}

/// Whether a conditional write happened: `Ok(false)` when its condition did not hold, a store
/// error for any other failure.
fn written<O, E, R>(
    out: Result<O, SdkError<E, R>>,
    condition_failed: fn(&E) -> bool,
) -> Result<bool, StoreError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match out {
        Ok(_) => Ok(true),
        Err(e) if e.as_service_error().is_some_and(condition_failed) => Ok(false),
        Err(e) => Err(store_error(e)),
    }
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
            StoreError::Unavailable(Outage::NoResponse)
        }
        SdkError::ServiceError(s) => match s.err().code() {
            Some(
                "ThrottlingException"
                | "ProvisionedThroughputExceededException"
                | "RequestLimitExceeded",
            ) => StoreError::Throttled,
            Some("InternalServerError" | "ServiceUnavailable") => {
                StoreError::Unavailable(Outage::ServiceError)
            }
            Some(code) => StoreError::Rejected(StoreRejection::Service(code.to_owned())),
            None => StoreError::Unavailable(Outage::Unrecognised),
        },
        _ => StoreError::Rejected(StoreRejection::Unbuildable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{SessionState, VirtualNumber};
    use crate::store::{AssignmentStore, AuditStore, PairWrite, RouteReader};

    /// A keyless store whose client can reach nothing: a request sent would fail otherwise.
    fn keyless() -> DynamoStore {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:9")
            .build();
        DynamoStore::without_keys(Client::from_conf(config), "t")
    }

    fn no_keys<T: std::fmt::Debug>(result: Result<T, StoreError>) -> bool {
        matches!(result, Err(StoreError::Crypto(CryptoError::NoKeys)))
    }

    #[tokio::test]
    async fn a_store_without_keys_refuses_whatever_needs_one_with_a_typed_error() {
        let store = keyless();
        let caller = RealNumber::parse("+919812345678").unwrap();
        let dialled = VirtualNumber::parse("+911140001000").unwrap();
        let order: OrderId = "ord-1".parse().unwrap();
        let now = 1_780_000_000;

        assert!(no_keys(store.route(&caller, &dialled).await));
        assert!(no_keys(store.session(&order).await));
        assert!(no_keys(store.live_contacts(&caller, now).await));
        let at = RouteAt {
            caller: crate::domain::invariant::PersonKey::new("00"),
            number: dialled.clone(),
        };
        assert!(no_keys(store.audit_items(&[at], &[]).await));
        let commit = SessionCommit {
            session: Session {
                order_id: order.clone(),
                market: "IN".parse().unwrap(),
                version: 1,
                revision: 1,
                handovers: Vec::new(),
                state: SessionState::Active,
                participants: Vec::new(),
                contacts: Vec::new(),
                updated_at: now,
                routes_until: now + 60,
                record: false,
                closed_after_end: Vec::new(),
            },
            session_expires_at: now + 120,
            expected_revision: None,
            pairs: Vec::new(),
            pair_write: PairWrite::Claim,
            handovers: Vec::new(),
            delete_routes: Vec::new(),
            delete_pins: Vec::new(),
            former_users: Vec::new(),
            people_entries: true,
            now,
        };
        assert!(matches!(
            store.commit(&commit).await,
            Err(CommitError::Store(StoreError::Crypto(CryptoError::NoKeys)))
        ));
    }
}
