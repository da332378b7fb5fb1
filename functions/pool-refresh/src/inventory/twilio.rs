//! Twilio (REST API 2010-04-01): the account's `IncomingPhoneNumbers`, page after page by
//! `next_page_uri`; `AvailablePhoneNumbers` to find numbers on offer; a POST to
//! `IncomingPhoneNumbers` to buy one with its `VoiceUrl` and `SmsUrl` set to our webhooks, sent
//! once; and `IncomingPhoneNumbers?PhoneNumber=` to find a number whose purchase went unanswered.
//!
//! Only the account's numbers that point at this deployment are ours: those whose calls Twilio
//! sends to our voice URL (no TwiML application or SIP trunk overriding it), or every number of
//! a sub-account reserved for the deployment. The others are counted, never pooled.

use std::str::FromStr;

use async_trait::async_trait;
use reqwest::Url;
use serde::Deserialize;
use vnmask::config::Secret;
use vnmask::domain::{Capabilities, Market, Provider, VirtualNumber};
use vnmask::pool::ListedNumber;

use super::http::{ApiClient, HttpPolicy, PostError};
use super::{AccountNumbers, Entry, Inventory, ProviderError, Vendor, Webhooks};

const LIST: &str = "IncomingPhoneNumbers list";
const SEARCH: &str = "AvailablePhoneNumbers search";
const BUY: &str = "IncomingPhoneNumbers create";
const FIND: &str = "IncomingPhoneNumbers lookup";

/// Twilio's largest page.
const PAGE_SIZE: u32 = 1000;
/// A million numbers at most: a listing longer than this is a provider bug, not an inventory.
const MAX_PAGES: usize = 1000;

/// How requests are signed: an API key (preferred: revocable on its own, and a standard key
/// cannot manage the account), or the account's auth token.
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
/// signed, which of its numbers are ours, and what purchases send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwilioAccount {
    /// `AC` and 32 hex digits: the account the auth token belongs to.
    pub account_sid: String,
    pub auth: TwilioAuth,
    /// A sub-account reserved for this deployment: numbers are listed and bought there, and
    /// every one of them is ours. Its own API key signs, or the owner's auth token.
    pub subaccount_sid: Option<String>,
    /// Our voice webhook: a number Twilio sends calls to here is ours.
    pub voice_url: Option<Url>,
    /// `https://api.twilio.com`; a local fake in tests.
    pub base: Url,
    pub number_type: TwilioNumberType,
    /// Sent with purchases, for countries whose regulations require an address or a bundle.
    pub address_sid: Option<String>,
    pub bundle_sid: Option<String>,
}

pub struct Twilio {
    api: ApiClient,
    /// The account listed and bought in: the sub-account, if one is reserved.
    account_sid: String,
    subaccount_sid: Option<String>,
    voice_url: Option<Url>,
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
            account_sid: account
                .subaccount_sid
                .clone()
                .unwrap_or_else(|| account.account_sid.clone()),
            subaccount_sid: account.subaccount_sid.clone(),
            voice_url: account.voice_url.clone(),
            number_type: account.number_type,
            address_sid: account.address_sid.clone(),
            bundle_sid: account.bundle_sid.clone(),
        }
    }

    fn account_path(&self, rest: &str) -> String {
        format!("/2010-04-01/Accounts/{}/{rest}", self.account_sid)
    }

    /// Whether Twilio hands this number's calls to us.
    fn points_at_us(&self, n: &TwilioNumber) -> bool {
        let reserved = self
            .subaccount_sid
            .as_ref()
            .is_some_and(|sid| n.account_sid.as_ref() == Some(sid));
        let unset = |v: &Option<String>| v.as_deref().is_none_or(str::is_empty);
        // An application or a trunk takes the calls instead of the voice URL.
        let ours_by_url = unset(&n.voice_application_sid)
            && unset(&n.trunk_sid)
            && n.voice_url
                .as_deref()
                .and_then(|u| Url::parse(u.trim()).ok())
                .is_some_and(|u| Some(&u) == self.voice_url.as_ref());
        reserved || ours_by_url
    }

    fn read_entry(&self, entry: serde_json::Value) -> Entry {
        let Ok(n) = serde_json::from_value::<TwilioNumber>(entry) else {
            return Entry::Unreadable;
        };
        if !self.points_at_us(&n) {
            return Entry::Foreign;
        }
        match VirtualNumber::parse(&n.phone_number) {
            Ok(number) => Entry::Ours(ListedNumber {
                number,
                capabilities: n.capabilities.into(),
                country: None,
                in_service: n.in_service(),
            }),
            Err(_) => Entry::Unreadable,
        }
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
    #[serde(default)]
    account_sid: Option<String>,
    #[serde(default)]
    voice_url: Option<String>,
    #[serde(default)]
    voice_application_sid: Option<String>,
    #[serde(default)]
    trunk_sid: Option<String>,
    /// `in-use` for a number in service; any other word means Twilio holds it (suspended,
    /// being ported, …). Absent: in service.
    #[serde(default)]
    status: Option<String>,
}

impl TwilioNumber {
    fn in_service(&self) -> bool {
        self.status.as_deref().is_none_or(|s| s == "in-use")
    }
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

/// A number as Twilio describes it, wherever it points (the answer to our own purchase).
fn read_number(entry: serde_json::Value) -> Option<ListedNumber> {
    let n: TwilioNumber = serde_json::from_value(entry).ok()?;
    Some(ListedNumber {
        number: VirtualNumber::parse(&n.phone_number).ok()?,
        capabilities: n.capabilities.into(),
        country: None,
        in_service: n.in_service(),
    })
}

#[async_trait]
impl Inventory for Twilio {
    fn provider(&self) -> &Provider {
        self.api.provider()
    }

    async fn list_numbers(&self) -> Result<AccountNumbers, ProviderError> {
        let first = self.account_path(&format!("IncomingPhoneNumbers.json?PageSize={PAGE_SIZE}"));
        let mut numbers = AccountNumbers::default();
        self.api
            .follow_pages(LIST, &first, MAX_PAGES, |page: NumbersPage| {
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
                in_service: true,
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
            .filter_map(|e| match self.read_entry(e) {
                Entry::Ours(n) => Some(n),
                Entry::Foreign | Entry::Unreadable => None,
            })
            .find(|n| &n.number == number))
    }
}
