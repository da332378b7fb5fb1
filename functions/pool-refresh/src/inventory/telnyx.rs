//! Telnyx's numbers: listing, buying, pointing them at us.
//!
//! API v2 with the account's API key as a bearer token: `GET /v2/phone_numbers`, page after
//! page by `page[number]` up to `meta.total_pages`; `GET /v2/available_phone_numbers` to find
//! numbers on offer; `POST /v2/number_orders` to buy one onto our TeXML application and
//! messaging profile, sent once; and `GET /v2/phone_numbers?filter[phone_number]=` to find a
//! number whose purchase went unanswered.
//!
//! Telnyx routes a number's calls by its connection (the TeXML application whose voice URL is
//! our webhook) and its texts by its messaging profile (whose webhook URL is ours): neither URL
//! is set per number, so a purchase names the application and the profile, and the webhook URLs
//! are configured on them once. A number is ours when its connection is one of the configured
//! TeXML applications (it can carry calls) or its messaging profile is the configured one (it can
//! carry texts); Telnyx lists no other capabilities per number. The others are counted, never
//! pooled.

use std::collections::BTreeSet;

use async_trait::async_trait;
use reqwest::{Method, Url};
use serde::Deserialize;
use vnmask::config::Secret;
use vnmask::domain::{Capabilities, Market, Provider, VirtualNumber};
use vnmask::pool::ListedNumber;
use vnmask::providers::e164_to_digits;

use super::http::{ApiAuth, ApiClient, HttpPolicy, PostError};
use super::{
    exact_ours, AccountNumbers, Entry, Inventory, PageCounts, ProviderError, Vendor, Webhooks,
};

const LIST: &str = "phone_numbers list";
const SEARCH: &str = "available_phone_numbers search";
const BUY: &str = "number_orders create";
const FIND: &str = "phone_numbers lookup";

/// Telnyx's largest page.
const PAGE_SIZE: u32 = 250;
/// A quarter of a million numbers at most: longer is a provider bug, not an inventory.
const MAX_PAGES: usize = 1000;
/// The most numbers a search asks for.
const MAX_OFFERED: u32 = 100;

/// The Telnyx account whose numbers are listed and bought, and what of it is this deployment's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelnyxAccount {
    /// An API v2 key (`KEY…`), sent as a bearer token.
    pub api_key: Secret,
    /// `https://api.telnyx.com`; a local fake in tests.
    pub base: Url,
    /// The TeXML application (connection) whose voice URL is our webhook: numbers bought are put
    /// on it, and a number on it is ours.
    pub connection_id: String,
    /// Other TeXML applications whose voice URL is ours (while moving numbers from one to
    /// another): a number on one of them is ours too.
    pub other_connection_ids: BTreeSet<String>,
    /// The messaging profile whose webhook URL is ours: numbers bought are put on it, and a
    /// number on it carries texts. Without one, numbers carry calls only.
    pub messaging_profile_id: Option<String>,
}

pub struct Telnyx {
    api: ApiClient,
    connection_id: String,
    other_connection_ids: BTreeSet<String>,
    messaging_profile_id: Option<String>,
}

impl Telnyx {
    pub fn new(account: &TelnyxAccount, http: reqwest::Client, policy: HttpPolicy) -> Self {
        let provider: Provider = "telnyx".parse().unwrap_or_else(|_| unreachable!());
        Telnyx {
            api: ApiClient::with_auth(
                http,
                provider,
                account.base.clone(),
                ApiAuth::Bearer(account.api_key.clone()),
                policy,
            ),
            connection_id: account.connection_id.clone(),
            other_connection_ids: account.other_connection_ids.clone(),
            messaging_profile_id: account.messaging_profile_id.clone(),
        }
    }

    /// What a number on `connection_id` and `messaging_profile_id` carries for us: calls
    /// through one of our TeXML applications, texts through our messaging profile.
    fn carries(
        &self,
        connection_id: Option<&str>,
        messaging_profile_id: Option<&str>,
    ) -> Capabilities {
        let connection = connection_id.map(str::trim);
        Capabilities {
            voice: connection.is_some_and(|id| {
                id == self.connection_id || self.other_connection_ids.contains(id)
            }),
            sms: self
                .messaging_profile_id
                .as_deref()
                .is_some_and(|ours| messaging_profile_id.map(str::trim) == Some(ours)),
        }
    }

    fn read_entry(&self, entry: serde_json::Value) -> Entry {
        let Ok(n) = serde_json::from_value::<TelnyxNumber>(entry) else {
            return Entry::Unreadable;
        };
        let capabilities = self.carries(
            n.connection_id.as_deref(),
            n.messaging_profile_id.as_deref(),
        );
        if capabilities == Capabilities::default() {
            return Entry::Foreign;
        }
        match n.listed(capabilities) {
            Some(listed) => Entry::Ours(listed),
            None => Entry::Unreadable,
        }
    }
}

#[derive(Deserialize)]
struct NumbersPage {
    data: Vec<serde_json::Value>,
    meta: PageMeta,
}

#[derive(Deserialize)]
struct PageMeta {
    total_pages: u32,
    /// The account's numbers when the page was cut; absent in older answers.
    #[serde(default)]
    total_results: Option<usize>,
}

#[derive(Deserialize)]
struct TelnyxNumber {
    phone_number: String,
    /// `active` for a number in service; any other word means Telnyx holds it (being bought
    /// or ported, emergency calls only, …). Absent: in service.
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    connection_id: Option<String>,
    #[serde(default)]
    messaging_profile_id: Option<String>,
    #[serde(default)]
    country_iso_alpha2: Option<String>,
}

impl TelnyxNumber {
    /// The number as listed, carrying `capabilities`; `None` when it is not E.164.
    fn listed(&self, capabilities: Capabilities) -> Option<ListedNumber> {
        Some(ListedNumber {
            number: VirtualNumber::parse(&self.phone_number).ok()?,
            capabilities,
            country: self
                .country_iso_alpha2
                .as_deref()
                .and_then(|c| c.parse().ok()),
            in_service: self.status.as_deref().is_none_or(|s| s == "active"),
        })
    }
}

#[derive(Deserialize)]
struct AvailablePage {
    data: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct AvailableNumber {
    phone_number: String,
    #[serde(default)]
    features: Vec<Feature>,
    #[serde(default)]
    region_information: Vec<Region>,
}

#[derive(Deserialize)]
struct Feature {
    name: String,
}

#[derive(Deserialize)]
struct Region {
    region_type: String,
    region_name: String,
}

impl AvailableNumber {
    fn capabilities(&self) -> Capabilities {
        let has = |name: &str| self.features.iter().any(|f| f.name == name);
        Capabilities {
            voice: has("voice"),
            sms: has("sms"),
        }
    }

    /// The country Telnyx files the number under, else the numbering plan's.
    fn market(&self, number: &VirtualNumber) -> Option<Market> {
        self.region_information
            .iter()
            .find(|r| r.region_type == "country_code")
            .and_then(|r| r.region_name.parse().ok())
            .or_else(|| number.country().cloned())
    }
}

#[derive(serde::Serialize)]
struct NumberOrder<'a> {
    phone_numbers: [OrderedNumber<'a>; 1],
    connection_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    messaging_profile_id: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct OrderedNumber<'a> {
    phone_number: &'a str,
}

#[derive(Deserialize)]
struct OrderAnswer {
    data: Order,
}

#[derive(Deserialize)]
struct Order {
    /// `pending` while Telnyx provisions the number, then `success` or `failure`.
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    connection_id: Option<String>,
    #[serde(default)]
    messaging_profile_id: Option<String>,
    #[serde(default)]
    phone_numbers: Vec<OrderedAnswer>,
}

#[derive(Deserialize)]
struct OrderedAnswer {
    phone_number: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    country_iso_alpha2: Option<String>,
}

#[async_trait]
impl Inventory for Telnyx {
    fn provider(&self) -> &Provider {
        self.api.provider()
    }

    async fn list_numbers(&self) -> Result<AccountNumbers, ProviderError> {
        let page_path =
            |page: u32| format!("/v2/phone_numbers?page[number]={page}&page[size]={PAGE_SIZE}");
        let mut numbers = AccountNumbers::default();
        let mut counts = PageCounts::default();
        // The page asked for, not the page the answer says it is: a page that misnames itself
        // cannot send the listing round in circles.
        let mut page = 1;
        self.api
            .follow_pages(LIST, &page_path(page), MAX_PAGES, |answer: NumbersPage| {
                counts.page(answer.data.len(), answer.meta.total_results);
                counts.pages(answer.meta.total_pages);
                numbers.extend(answer.data.into_iter().map(|e| self.read_entry(e)));
                (page < answer.meta.total_pages).then(|| {
                    page += 1;
                    page_path(page)
                })
            })
            .await?;
        counts.settle(self.api.provider(), &mut numbers);
        Ok(numbers)
    }

    fn confirms_absence_with(&self) -> Option<&dyn Vendor> {
        Some(self)
    }
}

#[async_trait]
impl Vendor for Telnyx {
    fn provider(&self) -> &Provider {
        self.api.provider()
    }

    async fn offered_numbers(
        &self,
        market: &Market,
        needs: Capabilities,
        limit: u32,
    ) -> Result<Vec<VirtualNumber>, ProviderError> {
        let mut url = self.api.url(SEARCH, "/v2/available_phone_numbers")?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("filter[country_code]", market.as_str());
            if needs.voice {
                query.append_pair("filter[features][]", "voice");
            }
            if needs.sms {
                query.append_pair("filter[features][]", "sms");
            }
            query.append_pair("filter[limit]", &limit.clamp(1, MAX_OFFERED).to_string());
        }
        let page: AvailablePage = self.api.get_json(SEARCH, &url).await?;
        Ok(page
            .data
            .into_iter()
            .filter_map(|entry| serde_json::from_value::<AvailableNumber>(entry).ok())
            .filter(|n| n.capabilities().contains(needs))
            .filter_map(|n| {
                let vn = VirtualNumber::parse(&n.phone_number).ok()?;
                (n.market(&vn).as_ref() == Some(market)).then_some(vn)
            })
            .take(limit as usize)
            .collect())
    }

    /// Orders `number` onto our TeXML application and messaging profile. Telnyx has no
    /// per-number webhook URLs: `webhooks` are those set on the application and the profile.
    async fn buy_number(
        &self,
        number: &VirtualNumber,
        _webhooks: &Webhooks,
    ) -> Result<ListedNumber, PostError> {
        let url = self
            .api
            .url(BUY, "/v2/number_orders")
            .map_err(PostError::Refused)?;
        let order = NumberOrder {
            phone_numbers: [OrderedNumber {
                phone_number: number.as_str(),
            }],
            connection_id: &self.connection_id,
            messaging_profile_id: self.messaging_profile_id.as_deref(),
        };
        let body = self.api.send_json(BUY, Method::POST, &url, &order).await?;
        let Some(answer) = serde_json::from_slice::<OrderAnswer>(&body).ok() else {
            // Ordered all the same; the next listing tells where it points.
            tracing::warn!(provider = "telnyx", number = %number, "number order answer unreadable");
            return Ok(ListedNumber {
                number: number.clone(),
                capabilities: self.carries(
                    Some(&self.connection_id),
                    self.messaging_profile_id.as_deref(),
                ),
                country: None,
                in_service: false,
            });
        };
        let order = answer.data;
        let ordered = order
            .phone_numbers
            .iter()
            .find(|n| n.phone_number == number.as_str());
        let failed = |status: Option<&str>| status == Some("failure");
        if failed(order.status.as_deref()) || failed(ordered.and_then(|n| n.status.as_deref())) {
            return Err(PostError::Refused(
                self.api.malformed(BUY, "the number order failed"),
            ));
        }
        // What the order says it points at, or else what it was asked to.
        let connection_id = order
            .connection_id
            .as_deref()
            .unwrap_or(&self.connection_id);
        let profile_id = order
            .messaging_profile_id
            .as_deref()
            .or(self.messaging_profile_id.as_deref());
        Ok(ListedNumber {
            number: number.clone(),
            capabilities: self.carries(Some(connection_id), profile_id),
            country: ordered
                .and_then(|n| n.country_iso_alpha2.as_deref())
                .and_then(|c| c.parse().ok()),
            // Telnyx provisions the number after answering: until the order succeeds, the
            // number is not in service.
            in_service: order.status.as_deref() == Some("success"),
        })
    }

    async fn find_number(
        &self,
        number: &VirtualNumber,
    ) -> Result<Option<ListedNumber>, ProviderError> {
        let mut url = self.api.url(FIND, "/v2/phone_numbers")?;
        // The filter takes digits only: a `+` would match nothing.
        url.query_pairs_mut()
            .append_pair("filter[phone_number]", e164_to_digits(number.as_str()));
        let page: NumbersPage = self.api.get_json(FIND, &url).await?;
        exact_ours(page.data.into_iter().map(|e| self.read_entry(e)), number)
            .map_err(|why| self.api.malformed(FIND, why))
    }
}
