//! Exotel (API v2_beta): the account's ExoPhones, `GET /v2_beta/Accounts/{sid}/IncomingPhoneNumbers`,
//! page after page by `next_page_uri` (an absolute link, followed on the configured host only).

use async_trait::async_trait;
use reqwest::Url;
use serde::{Deserialize, Deserializer};
use vnmask::config::Secret;
use vnmask::domain::{Capabilities, Market, Provider, VirtualNumber};
use vnmask::pool::{ListedNumber, Listing};

use super::http::{ApiClient, HttpPolicy};
use super::{Inventory, ProviderError};

const LIST: &str = "ExoPhones list";
const PAGE_SIZE: u32 = 100;
/// A hundred thousand ExoPhones at most: longer is a provider bug, not an inventory.
const MAX_PAGES: usize = 1000;

/// The Exotel account whose ExoPhones are listed, and its API credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExotelAccount {
    pub account_sid: String,
    pub api_key: String,
    pub api_token: Secret,
    /// The account's cluster: `https://api.exotel.com` (Singapore) or `https://api.in.exotel.com` (Mumbai).
    pub base: Url,
}

pub struct Exotel {
    api: ApiClient,
    account_sid: String,
}

impl Exotel {
    pub fn new(account: &ExotelAccount, http: reqwest::Client, policy: HttpPolicy) -> Self {
        let provider: Provider = "exotel".parse().unwrap_or_else(|_| unreachable!());
        Exotel {
            api: ApiClient::new(
                http,
                provider,
                account.base.clone(),
                account.api_key.clone(),
                account.api_token.clone(),
                policy,
            ),
            account_sid: account.account_sid.clone(),
        }
    }
}

#[derive(Deserialize)]
struct ExoPhonesPage {
    incoming_phone_numbers: Vec<serde_json::Value>,
    #[serde(default)]
    next_page_uri: Option<String>,
}

#[derive(Deserialize)]
struct ExoPhone {
    phone_number: String,
    capabilities: ExoCapabilities,
    /// ISO 3166-1 alpha-2, when given.
    #[serde(default)]
    country: Option<String>,
}

#[derive(Deserialize)]
struct ExoCapabilities {
    #[serde(default, deserialize_with = "flag")]
    voice: bool,
    #[serde(default, deserialize_with = "flag")]
    sms: bool,
}

/// A capability flag as a JSON boolean or as the string `"true"`/`"false"`.
fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Text(String),
    }
    match Flag::deserialize(d)? {
        Flag::Bool(b) => Ok(b),
        Flag::Text(t) if t.eq_ignore_ascii_case("true") => Ok(true),
        Flag::Text(t) if t.eq_ignore_ascii_case("false") => Ok(false),
        Flag::Text(_) => Err(serde::de::Error::custom("capability flag is not a boolean")),
    }
}

fn read_number(entry: serde_json::Value) -> Option<ListedNumber> {
    let phone: ExoPhone = serde_json::from_value(entry).ok()?;
    Some(ListedNumber {
        number: VirtualNumber::parse(&phone.phone_number).ok()?,
        capabilities: Capabilities {
            voice: phone.capabilities.voice,
            sms: phone.capabilities.sms,
        },
        country: match phone.country {
            Some(c) => Some(c.parse::<Market>().ok()?),
            None => None,
        },
    })
}

#[async_trait]
impl Inventory for Exotel {
    fn provider(&self) -> &Provider {
        self.api.provider()
    }

    async fn list_numbers(&self) -> Result<Listing, ProviderError> {
        let first = format!(
            "/v2_beta/Accounts/{}/IncomingPhoneNumbers?Page=0&PageSize={PAGE_SIZE}",
            self.account_sid
        );
        let mut listing = Listing::default();
        self.api
            .follow_pages(LIST, &first, MAX_PAGES, |page: ExoPhonesPage| {
                // An empty page ends the listing even if it links on.
                if page.incoming_phone_numbers.is_empty() {
                    return None;
                }
                listing.extend(page.incoming_phone_numbers.into_iter().map(read_number));
                page.next_page_uri
            })
            .await?;
        Ok(listing)
    }
}
