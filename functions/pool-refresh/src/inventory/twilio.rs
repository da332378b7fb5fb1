//! Twilio (REST API 2010-04-01): the account's `IncomingPhoneNumbers`, page after page by
//! `next_page_uri`; `AvailablePhoneNumbers` to find numbers on offer; a POST to
//! `IncomingPhoneNumbers` to buy one with its `VoiceUrl` and `SmsUrl` set to our webhooks, sent
//! once; and `IncomingPhoneNumbers?PhoneNumber=` to find a number whose purchase went unanswered.

use std::str::FromStr;

use async_trait::async_trait;
use reqwest::Url;
use serde::Deserialize;
use vnmask::config::Secret;
use vnmask::domain::{Capabilities, Market, Provider, VirtualNumber};
use vnmask::pool::{ListedNumber, Listing};

use super::http::{ApiClient, HttpPolicy, PostError};
use super::{Inventory, ProviderError, Vendor, Webhooks};

const LIST: &str = "IncomingPhoneNumbers list";
const SEARCH: &str = "AvailablePhoneNumbers search";
const BUY: &str = "IncomingPhoneNumbers create";
const FIND: &str = "IncomingPhoneNumbers lookup";

/// Twilio's largest page.
const PAGE_SIZE: u32 = 1000;
/// A million numbers at most: a listing longer than this is a provider bug, not an inventory.
const MAX_PAGES: usize = 1000;

/// How requests are signed: the account's auth token, or an API key (recommended: revocable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TwilioAuth {
    AuthToken(Secret),
    ApiKey { sid: String, secret: Secret },
}

/// Which kind of number to buy (the `AvailablePhoneNumbers/{country}/{kind}` list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TwilioNumberType {
    Local,
    Mobile,
    TollFree,
}

impl TwilioNumberType {
    fn path(self) -> &'static str {
        match self {
            TwilioNumberType::Local => "Local",
            TwilioNumberType::Mobile => "Mobile",
            TwilioNumberType::TollFree => "TollFree",
        }
    }
}

impl FromStr for TwilioNumberType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "local" => Ok(TwilioNumberType::Local),
            "mobile" => Ok(TwilioNumberType::Mobile),
            "toll-free" | "tollfree" => Ok(TwilioNumberType::TollFree),
            _ => Err("expected local, mobile or toll-free".into()),
        }
    }
}

/// The Twilio account whose numbers are listed and bought: its SID, how its API requests are
/// signed, and what purchases send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwilioAccount {
    /// `AC` and 32 hex digits.
    pub account_sid: String,
    pub auth: TwilioAuth,
    /// `https://api.twilio.com`; a local fake in tests.
    pub base: Url,
    pub number_type: TwilioNumberType,
    /// Sent with purchases, for countries whose regulations require an address or a bundle.
    pub address_sid: Option<String>,
    pub bundle_sid: Option<String>,
}

pub struct Twilio {
    api: ApiClient,
    account_sid: String,
    number_type: TwilioNumberType,
    address_sid: Option<String>,
    bundle_sid: Option<String>,
}

impl Twilio {
    pub fn new(account: &TwilioAccount, http: reqwest::Client, policy: HttpPolicy) -> Self {
        let (user, password) = match &account.auth {
            TwilioAuth::AuthToken(token) => (account.account_sid.clone(), token.clone()),
            TwilioAuth::ApiKey { sid, secret } => (sid.clone(), secret.clone()),
        };
        let provider: Provider = "twilio".parse().unwrap_or_else(|_| unreachable!());
        Twilio {
            api: ApiClient::new(http, provider, account.base.clone(), user, password, policy),
            account_sid: account.account_sid.clone(),
            number_type: account.number_type,
            address_sid: account.address_sid.clone(),
            bundle_sid: account.bundle_sid.clone(),
        }
    }

    fn account_path(&self, rest: &str) -> String {
        format!("/2010-04-01/Accounts/{}/{rest}", self.account_sid)
    }
}

#[derive(Deserialize)]
struct NumbersPage {
    incoming_phone_numbers: Vec<serde_json::Value>,
    #[serde(default)]
    next_page_uri: Option<String>,
}

#[derive(Deserialize)]
struct TwilioNumber {
    phone_number: String,
    capabilities: TwilioCapabilities,
}

/// `IncomingPhoneNumbers` name them `voice`, `sms`, `mms`; `AvailablePhoneNumbers` `voice`, `SMS`, `MMS`.
#[derive(Clone, Copy, Deserialize)]
struct TwilioCapabilities {
    #[serde(default)]
    voice: bool,
    #[serde(default, alias = "SMS")]
    sms: bool,
}

impl From<TwilioCapabilities> for Capabilities {
    fn from(c: TwilioCapabilities) -> Self {
        Capabilities {
            voice: c.voice,
            sms: c.sms,
        }
    }
}

#[derive(Deserialize)]
struct AvailablePage {
    available_phone_numbers: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct AvailableNumber {
    phone_number: String,
    #[serde(default)]
    iso_country: Option<String>,
    capabilities: TwilioCapabilities,
}

fn read_number(entry: serde_json::Value) -> Option<ListedNumber> {
    let n: TwilioNumber = serde_json::from_value(entry).ok()?;
    Some(ListedNumber {
        number: VirtualNumber::parse(&n.phone_number).ok()?,
        capabilities: n.capabilities.into(),
        country: None,
    })
}

#[async_trait]
impl Inventory for Twilio {
    fn provider(&self) -> &Provider {
        self.api.provider()
    }

    async fn list_numbers(&self) -> Result<Listing, ProviderError> {
        let first = self.account_path(&format!("IncomingPhoneNumbers.json?PageSize={PAGE_SIZE}"));
        let mut listing = Listing::default();
        self.api
            .follow_pages(LIST, &first, MAX_PAGES, |page: NumbersPage| {
                listing.extend(page.incoming_phone_numbers.into_iter().map(read_number));
                page.next_page_uri
            })
            .await?;
        Ok(listing)
    }
}

#[async_trait]
impl Vendor for Twilio {
    fn provider(&self) -> &Provider {
        self.api.provider()
    }

    async fn offered_numbers(
        &self,
        market: &Market,
        needs: Capabilities,
        limit: u32,
    ) -> Result<Vec<VirtualNumber>, ProviderError> {
        let path = self.account_path(&format!(
            "AvailablePhoneNumbers/{}/{}.json",
            market.as_str(),
            self.number_type.path()
        ));
        let mut url = self.api.url(SEARCH, &path)?;
        {
            let mut query = url.query_pairs_mut();
            if needs.voice {
                query.append_pair("VoiceEnabled", "true");
            }
            if needs.sms {
                query.append_pair("SmsEnabled", "true");
            }
            query.append_pair("PageSize", &limit.clamp(1, 50).to_string());
        }
        let page: AvailablePage = self.api.get_json(SEARCH, &url).await?;
        Ok(page
            .available_phone_numbers
            .into_iter()
            .filter_map(|entry| serde_json::from_value::<AvailableNumber>(entry).ok())
            .filter(|n| Capabilities::from(n.capabilities).contains(needs))
            .filter_map(|n| {
                let vn = VirtualNumber::parse(&n.phone_number).ok()?;
                let country = n
                    .iso_country
                    .as_deref()
                    .and_then(|c| c.parse::<Market>().ok())
                    .or_else(|| vn.country().cloned());
                (country.as_ref() == Some(market)).then_some(vn)
            })
            .take(limit as usize)
            .collect())
    }

    async fn buy_number(
        &self,
        number: &VirtualNumber,
        webhooks: &Webhooks,
    ) -> Result<ListedNumber, PostError> {
        let url = self
            .api
            .url(BUY, &self.account_path("IncomingPhoneNumbers.json"))
            .map_err(PostError::Refused)?;
        let mut form = vec![
            ("PhoneNumber", number.as_str()),
            ("VoiceUrl", webhooks.voice_url.as_str()),
            ("VoiceMethod", "POST"),
            ("SmsUrl", webhooks.sms_url.as_str()),
            ("SmsMethod", "POST"),
        ];
        if let Some(sid) = &self.address_sid {
            form.push(("AddressSid", sid));
        }
        if let Some(sid) = &self.bundle_sid {
            form.push(("BundleSid", sid));
        }
        let body = self.api.post_form(BUY, &url, &form).await?;
        let bought = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(read_number)
            .filter(|n| &n.number == number);
        Ok(bought.unwrap_or_else(|| {
            // Bought all the same; the next listing tells its capabilities.
            tracing::warn!(provider = "twilio", number = %number, "purchase answer unreadable");
            ListedNumber {
                number: number.clone(),
                capabilities: Capabilities::default(),
                country: None,
            }
        }))
    }

    async fn find_number(
        &self,
        number: &VirtualNumber,
    ) -> Result<Option<ListedNumber>, ProviderError> {
        let mut url = self
            .api
            .url(FIND, &self.account_path("IncomingPhoneNumbers.json"))?;
        url.query_pairs_mut()
            .append_pair("PhoneNumber", number.as_str());
        let page: NumbersPage = self.api.get_json(FIND, &url).await?;
        // The filter also matches partial numbers: only the exact one counts.
        Ok(page
            .incoming_phone_numbers
            .into_iter()
            .filter_map(read_number)
            .find(|n| &n.number == number))
    }
}
