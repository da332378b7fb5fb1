//! Exotel (API v2_beta): the account's ExoPhones, `GET /v2_beta/Accounts/{sid}/IncomingPhoneNumbers`,
//! page after page by `next_page_uri` (an absolute link, followed on the configured host only).
//!
//! An ExoPhone hands its calls to the flow (app) its `voice_url` names,
//! `http://my.exotel.com/{sid}/exoml/start_voice/{app_id}`: ours are those connected to one of
//! the flows configured as this deployment's (`VNMASK_EXOTEL_APP_IDS`, the flows whose
//! Connect applet calls our webhook). Exotel cannot tell which flow calls which URL, so the set
//! must be configured; the others are counted, never pooled.

use std::collections::BTreeSet;

use async_trait::async_trait;
use reqwest::Url;
use serde::{Deserialize, Deserializer};
use vnmask::config::Secret;
use vnmask::domain::{Capabilities, Market, Provider, VirtualNumber};
use vnmask::pool::ListedNumber;

use super::http::{ApiClient, HttpPolicy};
use super::{AccountNumbers, Entry, Inventory, ProviderError};

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
    /// The flows (app ids) that hand calls to this deployment: an ExoPhone connected to one of
    /// them is ours.
    pub app_ids: BTreeSet<String>,
}

pub struct Exotel {
    api: ApiClient,
    account_sid: String,
    app_ids: BTreeSet<String>,
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
            app_ids: account.app_ids.clone(),
        }
    }

    /// Whether the ExoPhone's calls start one of our flows: its voice URL ends in
    /// `/start_voice/{app_id}` with a configured app id.
    fn points_at_us(&self, phone: &ExoPhone) -> bool {
        let Some(url) = phone
            .voice_url
            .as_deref()
            .and_then(|u| Url::parse(u.trim()).ok())
        else {
            return false;
        };
        let segments: Vec<&str> = url
            .path_segments()
            .map(|s| s.filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        matches!(segments.as_slice(), [.., "start_voice", app] if self.app_ids.contains(*app))
    }

    fn read_entry(&self, entry: serde_json::Value) -> Entry {
        let Ok(phone) = serde_json::from_value::<ExoPhone>(entry) else {
            return Entry::Unreadable;
        };
        if !self.points_at_us(&phone) {
            return Entry::Foreign;
        }
        read_number(phone).map_or(Entry::Unreadable, Entry::Ours)
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
    /// The flow its calls start.
    #[serde(default)]
    voice_url: Option<String>,
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

fn read_number(phone: ExoPhone) -> Option<ListedNumber> {
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
        in_service: true,
    })
}

#[async_trait]
impl Inventory for Exotel {
    fn provider(&self) -> &Provider {
        self.api.provider()
    }

    async fn list_numbers(&self) -> Result<AccountNumbers, ProviderError> {
        let first = format!(
            "/v2_beta/Accounts/{}/IncomingPhoneNumbers?Page=0&PageSize={PAGE_SIZE}",
            self.account_sid
        );
        let mut numbers = AccountNumbers::default();
        self.api
            .follow_pages(LIST, &first, MAX_PAGES, |page: ExoPhonesPage| {
                // An empty page ends the listing even if it links on.
                if page.incoming_phone_numbers.is_empty() {
                    return None;
                }
                numbers.extend(
                    page.incoming_phone_numbers
                        .into_iter()
                        .map(|e| self.read_entry(e)),
                );
                page.next_page_uri
            })
            .await?;
        Ok(numbers)
    }
}
