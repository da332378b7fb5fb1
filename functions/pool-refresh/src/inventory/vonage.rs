//! Vonage's numbers (Numbers API, `https://rest.nexmo.com`): the account's numbers by
//! `GET /account/numbers`, page after page by `index` (from 1) and `size` (at most 100) until
//! its `count` is read; `GET /number/search` for numbers on offer; `POST /number/buy` to buy
//! one, sent once, then `POST /number/update` to link it to our application; and
//! `GET /account/numbers?pattern=` to find one number. Requests carry the API key and secret as
//! HTTP Basic credentials, which Vonage takes as well as query parameters: URLs get logged.
//!
//! Vonage sends a number's calls to the `answer_url` of the application the number is linked
//! to, unless the number forwards them (`voiceCallbackType` `sip` or `tel`, which Vonage puts
//! first). A number is ours when its calls go to one of our applications: its `app_id`, or on
//! numbers linked the older way, `voiceCallbackValue` with `voiceCallbackType` `app`. The
//! others are counted, never pooled. Vonage does not say that a number is out of service: every
//! listed number is in service.

use std::collections::BTreeSet;

use async_trait::async_trait;
use reqwest::Url;
use serde::Deserialize;
use vnmask::config::Secret;
use vnmask::domain::{Capabilities, Market, Provider, VirtualNumber};
use vnmask::pool::ListedNumber;
use vnmask::providers::{digits_to_e164, e164_to_digits};

use super::http::{ApiClient, HttpPolicy, PostError};
use super::{
    exact_ours, AccountNumbers, Entry, Inventory, PageCounts, ProviderError, Vendor, Webhooks,
};

const LIST: &str = "account numbers list";
const SEARCH: &str = "number search";
const BUY: &str = "number buy";
const LINK: &str = "number update";
const FIND: &str = "account numbers lookup";

/// Vonage's largest page, for listings and searches alike.
const PAGE_SIZE: u32 = 100;
/// A million numbers at most: a listing longer than this is a provider bug, not an inventory.
const MAX_PAGES: u32 = 10_000;

/// The Vonage account whose numbers are listed and bought, and which of its applications are
/// this deployment's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VonageAccount {
    pub api_key: String,
    pub api_secret: Secret,
    /// `https://rest.nexmo.com`; a local fake in tests.
    pub base: Url,
    /// The application whose `answer_url` is our webhook: bought numbers are linked to it, and
    /// a number linked to it is ours.
    pub app_id: String,
    /// Other applications whose `answer_url` is our webhook too (one numbers are being moved
    /// from, say): their numbers are ours as well, but purchases are never linked to them.
    pub other_app_ids: BTreeSet<String>,
}

pub struct Vonage {
    api: ApiClient,
    app_id: String,
    other_app_ids: BTreeSet<String>,
}

impl Vonage {
    pub fn new(account: &VonageAccount, http: reqwest::Client, policy: HttpPolicy) -> Self {
        let provider: Provider = "vonage".parse().unwrap_or_else(|_| unreachable!());
        Vonage {
            api: ApiClient::new(
                http,
                provider,
                account.base.clone(),
                account.api_key.clone(),
                account.api_secret.clone(),
                policy,
            ),
            app_id: account.app_id.clone(),
            other_app_ids: account.other_app_ids.clone(),
        }
    }

    fn is_ours(&self, app: &str) -> bool {
        app == self.app_id || self.other_app_ids.contains(app)
    }

    fn read_entry(&self, entry: serde_json::Value) -> Entry {
        let Ok(n) = serde_json::from_value::<VonageNumber>(entry) else {
            return Entry::Unreadable;
        };
        if !n.calls_go_to().is_some_and(|app| self.is_ours(app)) {
            return Entry::Foreign;
        }
        n.listed().map_or(Entry::Unreadable, Entry::Ours)
    }

    /// `/account/numbers` with `query`, at most a page of them.
    fn numbers_url(
        &self,
        operation: &'static str,
        query: &[(&str, &str)],
    ) -> Result<Url, ProviderError> {
        let mut url = self.api.url(operation, "/account/numbers")?;
        url.query_pairs_mut()
            .extend_pairs(query)
            .append_pair("size", &PAGE_SIZE.to_string());
        Ok(url)
    }

    /// Posts `form` to `path` as [`ApiClient::post_form`] does (never again once it may have
    /// arrived). Vonage may answer a 200 whose `error-code` says it refused: a refusal all the
    /// same.
    async fn post(
        &self,
        operation: &'static str,
        path: &str,
        form: &[(&str, &str)],
    ) -> Result<(), PostError> {
        let url = self.api.url(operation, path).map_err(PostError::Refused)?;
        let body = self.api.post_form(operation, &url, form).await?;
        match serde_json::from_slice::<NumbersStatus>(&body) {
            Ok(status) if status.code != "200" => {
                Err(PostError::Refused(match status.code.parse() {
                    Ok(code) => ProviderError::Status {
                        provider: self.api.provider().clone(),
                        operation,
                        status: code,
                    },
                    Err(_) => self.api.malformed(operation, "unreadable error-code"),
                }))
            }
            // A success, or an answer that does not say otherwise: the request was taken.
            _ => Ok(()),
        }
    }
}

/// A page of `/account/numbers` or `/number/search`. A page of nothing may leave `numbers` out.
#[derive(Deserialize)]
struct NumbersPage {
    count: usize,
    #[serde(default)]
    numbers: Vec<serde_json::Value>,
}

/// A number as `/account/numbers` and `/number/search` describe it.
#[derive(Deserialize)]
struct VonageNumber {
    /// E.164 digits, without the `+`.
    msisdn: String,
    #[serde(default)]
    country: Option<String>,
    /// `VOICE`, `SMS`, `MMS`.
    features: Vec<String>,
    #[serde(default)]
    app_id: Option<String>,
    #[serde(default, rename = "voiceCallbackType")]
    voice_callback_type: Option<String>,
    #[serde(default, rename = "voiceCallbackValue")]
    voice_callback_value: Option<String>,
}

impl VonageNumber {
    /// The application that takes this number's calls: none when they are forwarded (`sip`,
    /// `tel`, or a kind of forwarding we do not know).
    fn calls_go_to(&self) -> Option<&str> {
        match set(&self.voice_callback_type) {
            None => set(&self.app_id),
            Some("app") => set(&self.app_id).or_else(|| set(&self.voice_callback_value)),
            Some(_) => None,
        }
    }

    fn capabilities(&self) -> Capabilities {
        let has = |feature: &str| {
            self.features
                .iter()
                .any(|f| f.eq_ignore_ascii_case(feature))
        };
        // vnmask routes no Vonage text (its SMS webhooks are not served): a Vonage number
        // carries calls only, so that no pair on one is told it carries texts.
        Capabilities {
            voice: has("VOICE"),
            sms: false,
        }
    }

    /// The number as listed; `None` when its digits or its country cannot be read.
    fn listed(&self) -> Option<ListedNumber> {
        let country = match self.country.as_deref() {
            Some(code) => Some(code.parse::<Market>().ok()?),
            None => None,
        };
        Some(ListedNumber {
            number: VirtualNumber::parse(&digits_to_e164(&self.msisdn)).ok()?,
            capabilities: self.capabilities(),
            country,
            in_service: true,
        })
    }
}

/// A field's text, when it has some.
fn set(field: &Option<String>) -> Option<&str> {
    field.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// The answer to a buy or an update: `error-code` `200` for a success.
#[derive(Deserialize)]
struct NumbersStatus {
    #[serde(rename = "error-code")]
    code: String,
}

#[async_trait]
impl Inventory for Vonage {
    fn provider(&self) -> &Provider {
        self.api.provider()
    }

    /// Every page, until as many numbers as the page counts are read or a page comes back
    /// empty.
    async fn list_numbers(&self) -> Result<AccountNumbers, ProviderError> {
        let mut numbers = AccountNumbers::default();
        let mut counts = PageCounts::default();
        for index in 1..=MAX_PAGES {
            let url = self.numbers_url(LIST, &[("index", &index.to_string())])?;
            let page: NumbersPage = self.api.get_json(LIST, &url).await?;
            let on_page = page.numbers.len();
            counts.page(on_page, Some(page.count));
            numbers.extend(page.numbers.into_iter().map(|e| self.read_entry(e)));
            if counts.read() >= page.count || on_page == 0 {
                counts.settle(self.api.provider(), &mut numbers);
                return Ok(numbers);
            }
        }
        Err(self
            .api
            .malformed(LIST, format!("more than {MAX_PAGES} pages")))
    }

    fn confirms_absence_with(&self) -> Option<&dyn Vendor> {
        Some(self)
    }
}

#[async_trait]
impl Vendor for Vonage {
    fn provider(&self) -> &Provider {
        self.api.provider()
    }

    async fn offered_numbers(
        &self,
        market: &Market,
        needs: Capabilities,
        limit: u32,
    ) -> Result<Vec<VirtualNumber>, ProviderError> {
        // Texts are not routed through Vonage (above): no Vonage number serves a pair needing them.
        if needs.sms {
            return Ok(Vec::new());
        }
        let mut url = self.api.url(SEARCH, "/number/search")?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("country", market.as_str());
            // Texts were ruled out above.
            if needs.voice {
                query.append_pair("features", "VOICE");
            }
            query.append_pair("size", &limit.clamp(1, PAGE_SIZE).to_string());
        }
        let page: NumbersPage = self.api.get_json(SEARCH, &url).await?;
        Ok(page
            .numbers
            .into_iter()
            .filter_map(|entry| serde_json::from_value::<VonageNumber>(entry).ok()?.listed())
            .filter(|n| n.capabilities.contains(needs) && n.market().as_ref() == Some(market))
            .map(|n| n.number)
            .take(limit as usize)
            .collect())
    }

    /// Buys the number, then links it to our application, where its calls reach our webhook
    /// (`webhooks` are the application's `answer_url`, set once with the application, not per
    /// number). A failed link leaves a bought number that points nowhere near us: it is
    /// [`PostError::Unconfirmed`], so that the purchase stays counted and buying stops; the
    /// number then lists as foreign until it is linked by hand.
    async fn buy_number(
        &self,
        number: &VirtualNumber,
        _webhooks: &Webhooks,
    ) -> Result<ListedNumber, PostError> {
        let country = number
            .country()
            .ok_or_else(|| {
                PostError::Refused(self.api.malformed(BUY, "the number's country is not known"))
            })?
            .as_str();
        let digits = e164_to_digits(number.as_str());
        self.post(
            BUY,
            "/number/buy",
            &[("country", country), ("msisdn", digits)],
        )
        .await?;
        let link = [
            ("country", country),
            ("msisdn", digits),
            ("app_id", self.app_id.as_str()),
        ];
        if let Err(e) = self.post(LINK, "/number/update", &link).await {
            let e = match e {
                PostError::Refused(e) | PostError::Unconfirmed(e) => e,
            };
            tracing::warn!(provider = "vonage", number = %number, error = %e, "bought, but not linked to our application");
            return Err(PostError::Unconfirmed(e));
        }
        match self.find_number(number).await {
            Ok(Some(listed)) => Ok(listed),
            // Bought and linked all the same; the next listing tells its capabilities.
            _ => {
                tracing::warn!(provider = "vonage", number = %number, "bought number not listed yet");
                Ok(ListedNumber {
                    number: number.clone(),
                    capabilities: Capabilities::default(),
                    country: number.country().cloned(),
                    in_service: true,
                })
            }
        }
    }

    async fn find_number(
        &self,
        number: &VirtualNumber,
    ) -> Result<Option<ListedNumber>, ProviderError> {
        let url = self.numbers_url(
            FIND,
            &[
                ("pattern", e164_to_digits(number.as_str())),
                ("search_pattern", "0"),
            ],
        )?;
        let page: NumbersPage = self.api.get_json(FIND, &url).await?;
        exact_ours(page.numbers.into_iter().map(|e| self.read_entry(e)), number)
            .map_err(|why| self.api.malformed(FIND, why))
    }
}
