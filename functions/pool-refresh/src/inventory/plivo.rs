//! Plivo's numbers: listing, buying, pointing them at us.
//!
//! Plivo (REST API v1, HTTP Basic with the auth id and auth token): the account's numbers,
//! `GET /v1/Account/{auth_id}/Number/`, twenty a page by `limit` and `offset`, page after page
//! by `meta.next`; `GET …/PhoneNumber/?country_iso=` to find numbers on offer; a POST to
//! `…/PhoneNumber/{number}/` to buy one attached to our application, sent once; and
//! `GET …/Number/{number}/` to look one up. Plivo writes numbers as their digits with the
//! country code, without `+`.
//!
//! A Plivo number hands its calls and messages to the application it is attached to (its
//! `application`, a resource URI ending in the application's id), unless it is attached to
//! something else (`object_type`, e.g. a SIP trunk). Ours are the numbers attached to one of
//! this deployment's applications, those whose answer and message URLs are our webhooks; the
//! others are counted, never pooled.

use std::collections::BTreeSet;
use std::str::FromStr;

use async_trait::async_trait;
use reqwest::{Method, Url};
use serde::Deserialize;
use serde_json::json;
use vnmask::config::Secret;
use vnmask::domain::{Capabilities, Market, Provider, VirtualNumber};
use vnmask::pool::ListedNumber;
use vnmask::providers::{digits_to_e164, e164_to_digits};

use super::http::{ApiClient, HttpPolicy, PostError};
use super::{AccountNumbers, Entry, Inventory, PageCounts, ProviderError, Vendor, Webhooks};

const LIST: &str = "Number list";
const SEARCH: &str = "PhoneNumber search";
const BUY: &str = "PhoneNumber buy";
const FIND: &str = "Number lookup";

/// Plivo's largest page.
const PAGE_SIZE: u32 = 20;
/// A hundred thousand numbers at most: a listing longer than this is a provider bug, not an
/// inventory.
const MAX_PAGES: usize = 5000;

/// Which kind of number to buy (the search's `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlivoNumberType {
    Fixed,
    Mobile,
    TollFree,
}

impl PlivoNumberType {
    fn as_str(self) -> &'static str {
        match self {
            PlivoNumberType::Fixed => "fixed",
            PlivoNumberType::Mobile => "mobile",
            PlivoNumberType::TollFree => "tollfree",
        }
    }
}

impl FromStr for PlivoNumberType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "fixed" | "local" => Ok(PlivoNumberType::Fixed),
            "mobile" => Ok(PlivoNumberType::Mobile),
            "toll-free" | "tollfree" => Ok(PlivoNumberType::TollFree),
            _ => Err("expected fixed, mobile or toll-free".into()),
        }
    }
}

/// The Plivo account whose numbers are listed and bought, its API credentials, and which of
/// its applications hand calls and messages to this deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlivoAccount {
    /// `MA…` (an account) or `SA…` (a subaccount reserved for the deployment): numbers are
    /// listed and bought there.
    pub auth_id: String,
    pub auth_token: Secret,
    /// `https://api.plivo.com`; a local fake in tests.
    pub base: Url,
    /// Our application: its answer URL and message URL are our webhooks. Bought numbers are
    /// attached to it, and a number attached to it is ours.
    pub app_id: String,
    /// Other applications whose numbers are ours too (one calling the same webhooks, or one
    /// being replaced); purchases never use them.
    pub other_app_ids: BTreeSet<String>,
    /// The kind of number to buy; any kind when not set.
    pub number_type: Option<PlivoNumberType>,
}

pub struct Plivo {
    api: ApiClient,
    auth_id: String,
    app_id: String,
    /// `app_id` and the others: the applications that make a number ours.
    app_ids: BTreeSet<String>,
    number_type: Option<PlivoNumberType>,
}

impl Plivo {
    pub fn new(account: &PlivoAccount, http: reqwest::Client, policy: HttpPolicy) -> Self {
        let provider: Provider = "plivo".parse().unwrap_or_else(|_| unreachable!());
        let mut app_ids = account.other_app_ids.clone();
        app_ids.insert(account.app_id.clone());
        Plivo {
            api: ApiClient::new(
                http,
                provider,
                account.base.clone(),
                account.auth_id.clone(),
                account.auth_token.clone(),
                policy,
            ),
            auth_id: account.auth_id.clone(),
            app_id: account.app_id.clone(),
            app_ids,
            number_type: account.number_type,
        }
    }

    fn account_path(&self, rest: &str) -> String {
        format!("/v1/Account/{}/{rest}", self.auth_id)
    }

    /// A number's own resource: `{kind}/{digits}/`.
    fn number_path(&self, kind: &str, number: &VirtualNumber) -> String {
        self.account_path(&format!("{kind}/{}/", e164_to_digits(number.as_str())))
    }

    /// Whether Plivo hands this number's calls and messages to one of our applications.
    fn points_at_us(&self, n: &PlivoNumber) -> bool {
        // Attached to a trunk (or anything else), the number's calls do not reach the
        // application it may still name.
        let attached_elsewhere = n.object_type.as_deref().is_some_and(|t| !t.is_empty());
        !attached_elsewhere
            && n.application
                .as_deref()
                .and_then(application_id)
                .is_some_and(|id| self.app_ids.contains(id))
    }

    fn read_entry(&self, entry: serde_json::Value) -> Entry {
        let Ok(n) = serde_json::from_value::<PlivoNumber>(entry) else {
            return Entry::Unreadable;
        };
        if !self.points_at_us(&n) {
            return Entry::Foreign;
        }
        match n.listed() {
            Some(number) => Entry::Ours(number),
            None => Entry::Unreadable,
        }
    }

    /// `number` as the account holds it now, wherever it points; `None` if it does not hold it.
    async fn lookup(&self, number: &VirtualNumber) -> Result<Option<PlivoNumber>, ProviderError> {
        let url = self.api.url(FIND, &self.number_path("Number", number))?;
        match self.api.get_json::<serde_json::Value>(FIND, &url).await {
            Ok(entry) => serde_json::from_value(entry)
                .map(Some)
                .map_err(|e| self.api.malformed(FIND, e.to_string())),
            Err(ProviderError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// `/v1/Account/MA…/Application/29986316244302815/` → `29986316244302815`.
fn application_id(uri: &str) -> Option<&str> {
    uri.trim()
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|id| !id.is_empty())
}

/// A number as Plivo writes it (`14155551234`), in E.164, checked strictly.
fn e164(digits: &str) -> Option<VirtualNumber> {
    let digits = digits.trim();
    VirtualNumber::parse(&digits_to_e164(digits.strip_prefix('+').unwrap_or(digits))).ok()
}

#[derive(Deserialize)]
struct NumbersPage {
    meta: PageMeta,
    objects: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct PageMeta {
    /// The next page's path and query; `null` (or empty) on the last.
    #[serde(default)]
    next: Option<String>,
    /// How many numbers the whole listing holds, as of this page.
    #[serde(default)]
    total_count: Option<usize>,
}

/// An `AccountPhoneNumber`.
#[derive(Deserialize)]
struct PlivoNumber {
    number: String,
    voice_enabled: bool,
    sms_enabled: bool,
    #[serde(default)]
    application: Option<String>,
    #[serde(default)]
    object_type: Option<String>,
    /// `false` while Plivo holds the number (e.g. waiting for the documents its country
    /// requires). Absent: in service.
    #[serde(default)]
    active: Option<bool>,
}

impl PlivoNumber {
    /// Plivo files a number under a country's name, not its ISO code: the numbering plan
    /// tells the market.
    fn listed(&self) -> Option<ListedNumber> {
        Some(ListedNumber {
            number: e164(&self.number)?,
            capabilities: Capabilities {
                voice: self.voice_enabled,
                sms: self.sms_enabled,
            },
            country: None,
            in_service: self.active != Some(false),
        })
    }
}

#[derive(Deserialize)]
struct SearchPage {
    objects: Vec<serde_json::Value>,
}

/// A `PhoneNumber` on offer.
#[derive(Deserialize)]
struct OfferedNumber {
    number: String,
    voice_enabled: bool,
    sms_enabled: bool,
}

/// The answer to a purchase: each number asked for and how it went.
#[derive(Deserialize)]
struct Purchase {
    #[serde(default)]
    numbers: Vec<PurchasedNumber>,
}

#[derive(Deserialize)]
struct PurchasedNumber {
    number: String,
    /// `Success`, or `pending` until the country's verification documents are accepted.
    #[serde(default)]
    status: Option<String>,
}

#[async_trait]
impl Inventory for Plivo {
    fn provider(&self) -> &Provider {
        self.api.provider()
    }

    async fn list_numbers(&self) -> Result<AccountNumbers, ProviderError> {
        let first = self.account_path(&format!("Number/?limit={PAGE_SIZE}&offset=0"));
        let mut numbers = AccountNumbers::default();
        let mut counts = PageCounts::default();
        self.api
            .follow_pages(LIST, &first, MAX_PAGES, |page: NumbersPage| {
                counts.page(page.objects.len(), page.meta.total_count);
                numbers.extend(page.objects.into_iter().map(|e| self.read_entry(e)));
                page.meta.next
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
impl Vendor for Plivo {
    fn provider(&self) -> &Provider {
        self.api.provider()
    }

    async fn offered_numbers(
        &self,
        market: &Market,
        needs: Capabilities,
        limit: u32,
    ) -> Result<Vec<VirtualNumber>, ProviderError> {
        let mut url = self.api.url(SEARCH, &self.account_path("PhoneNumber/"))?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("country_iso", market.as_str());
            let services = match (needs.voice, needs.sms) {
                (true, true) => Some("voice,sms"),
                (true, false) => Some("voice"),
                (false, true) => Some("sms"),
                (false, false) => None,
            };
            if let Some(services) = services {
                query.append_pair("services", services);
            }
            if let Some(kind) = self.number_type {
                query.append_pair("type", kind.as_str());
            }
            query.append_pair("limit", &limit.clamp(1, PAGE_SIZE).to_string());
        }
        let page: SearchPage = self.api.get_json(SEARCH, &url).await?;
        Ok(page
            .objects
            .into_iter()
            .filter_map(|entry| serde_json::from_value::<OfferedNumber>(entry).ok())
            .filter(|n| {
                Capabilities {
                    voice: n.voice_enabled,
                    sms: n.sms_enabled,
                }
                .contains(needs)
            })
            .filter_map(|n| e164(&n.number))
            .filter(|vn| vn.country() == Some(market))
            .take(limit as usize)
            .collect())
    }

    /// Buys `number` attached to our application (whose answer and message URLs are the
    /// webhooks: `webhooks` is not sent), then reads its capabilities from the account.
    async fn buy_number(
        &self,
        number: &VirtualNumber,
        _webhooks: &Webhooks,
    ) -> Result<ListedNumber, PostError> {
        let url = self
            .api
            .url(BUY, &self.number_path("PhoneNumber", number))
            .map_err(PostError::Refused)?;
        let body = self
            .api
            .send_json(BUY, Method::POST, &url, &json!({ "app_id": self.app_id }))
            .await?;
        let pending = serde_json::from_slice::<Purchase>(&body)
            .ok()
            .and_then(|p| {
                p.numbers
                    .into_iter()
                    .find(|n| e164(&n.number).as_ref() == Some(number))
            })
            .and_then(|n| n.status)
            .is_some_and(|s| s.eq_ignore_ascii_case("pending"));
        // Bought all the same whatever the lookup says; the next listing tells the rest.
        let listed = match self.lookup(number).await {
            Ok(Some(n)) => n.listed().filter(|n| &n.number == number),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(provider = "plivo", number = %number, error = %e, "bought number not read back");
                None
            }
        };
        Ok(listed.unwrap_or_else(|| ListedNumber {
            number: number.clone(),
            capabilities: Capabilities::default(),
            country: None,
            in_service: !pending,
        }))
    }

    async fn find_number(
        &self,
        number: &VirtualNumber,
    ) -> Result<Option<ListedNumber>, ProviderError> {
        match self.lookup(number).await? {
            Some(n) if self.points_at_us(&n) => Ok(n.listed().filter(|n| &n.number == number)),
            Some(_) | None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_application_uri_names_its_id() {
        for (uri, id) in [
            (
                "/v1/Account/MANWVLYTK4ZWU1YTY4ZT/Application/29986316244302815/",
                Some("29986316244302815"),
            ),
            ("/v1/Account/MA1/Application/42", Some("42")),
            ("", None),
            ("/", None),
        ] {
            assert_eq!(application_id(uri), id, "{uri:?}");
        }
    }

    #[test]
    fn plivos_digits_are_read_as_e164() {
        assert_eq!(
            e164("14155551000").map(|n| n.as_str().to_owned()),
            Some("+14155551000".into())
        );
        assert_eq!(
            e164("+14155551000").map(|n| n.as_str().to_owned()),
            Some("+14155551000".into())
        );
        assert!(e164("14155").is_none());
        assert!(e164("").is_none());
        assert!(e164("sip:x@y").is_none());
    }
}
