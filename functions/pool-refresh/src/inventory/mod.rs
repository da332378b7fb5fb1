//! The telecom providers' inventory APIs behind one trait: which of the account's numbers are
//! this deployment's, and (for providers that sell them) buying more. Adding Vonage, Plivo or
//! Telnyx is a new file here.
//!
//! An account may rent numbers that are not ours to hand out (a support line, another product's
//! numbers): each provider takes only those that point at this deployment (Twilio: our voice URL,
//! or a sub-account reserved for it; Exotel: our flows) and counts the others, never naming them.

mod exotel;
mod http;
mod plivo;
mod static_list;
mod telnyx;
mod twilio;
mod vonage;

pub use exotel::{Exotel, ExotelAccount};
pub use http::{ApiAuth, ApiClient, HttpPolicy, PostError};
pub use plivo::{Plivo, PlivoAccount, PlivoNumberType};
pub use static_list::StaticList;
pub use telnyx::{Telnyx, TelnyxAccount};
pub use twilio::{Twilio, TwilioAccount, TwilioAuth, TwilioNumberType};
pub use vonage::{Vonage, VonageAccount};

use std::sync::Arc;

use async_trait::async_trait;
use vnmask::domain::{Capabilities, Market, Provider, VirtualNumber};
use vnmask::pool::{ListedNumber, Listing};

/// Why a provider could not be asked. Never carries credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("{provider}: {operation} answered HTTP {status}")]
    Status {
        provider: Provider,
        operation: &'static str,
        status: u16,
    },
    #[error("{provider}: {operation} did not answer within the timeout")]
    Timeout {
        provider: Provider,
        operation: &'static str,
    },
    #[error("{provider}: {operation} could not be reached: {reason}")]
    Transport {
        provider: Provider,
        operation: &'static str,
        reason: String,
    },
    #[error("{provider}: malformed {operation} response: {reason}")]
    Malformed {
        provider: Provider,
        operation: &'static str,
        reason: String,
    },
}

/// One provider's inventory of the numbers it rents us.
#[async_trait]
pub trait Inventory: Send + Sync {
    fn provider(&self) -> &Provider;

    /// Every number the account rents, all pages, sorted into ours and the others; an error if
    /// any page could not be read.
    async fn list_numbers(&self) -> Result<AccountNumbers, ProviderError>;

    /// Where a pooled number this provider's listing lacks is looked up alone before it is
    /// retired: for listings paged by position, which skip a number when one before it is
    /// released while they are read (the totals need not change: another may be bought
    /// meanwhile). `None` where the listing's absence is proof enough.
    fn confirms_absence_with(&self) -> Option<&dyn Vendor> {
        None
    }
}

/// What a provider's account rents: the numbers that point at this deployment, and how many
/// others it holds. A number that stops pointing at us is missing from `ours` as if the
/// provider no longer listed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountNumbers {
    pub ours: Listing,
    /// Numbers that point elsewhere: never pooled, only counted.
    pub foreign: usize,
}

/// One entry of a provider's listing, as its reader made it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Ours(ListedNumber),
    /// The account's, pointing elsewhere.
    Foreign,
    /// Not readable: counted in [`Listing::unreadable`], which keeps the listing from retiring
    /// anything, never guessed.
    Unreadable,
}

impl Extend<Entry> for AccountNumbers {
    fn extend<I: IntoIterator<Item = Entry>>(&mut self, entries: I) {
        for entry in entries {
            match entry {
                Entry::Ours(number) => self.ours.numbers.push(number),
                Entry::Foreign => self.foreign += 1,
                Entry::Unreadable => self.ours.unreadable += 1,
            }
        }
    }
}

/// The entry that is exactly `number` and ours, of those a provider's search found: searches
/// also match numbers that merely start with its digits, and one pointing elsewhere is not ours.
/// When it is not among them, an entry that cannot be read may be it: then nothing is proven
/// either way (an error: the number is neither taken as bought nor as gone).
fn exact_ours(
    entries: impl IntoIterator<Item = Entry>,
    number: &VirtualNumber,
) -> Result<Option<ListedNumber>, &'static str> {
    let mut unreadable = false;
    for entry in entries {
        match entry {
            Entry::Ours(n) if &n.number == number => return Ok(Some(n)),
            Entry::Unreadable => unreadable = true,
            Entry::Ours(_) | Entry::Foreign => {}
        }
    }
    if unreadable {
        Err("an entry of the answer could not be read")
    } else {
        Ok(None)
    }
}

/// What a listing read page by page has seen of the total each page states. Pages cut by
/// offset or by page number shift when a number is bought or released between two of them, so
/// one of ours may be read twice or never: a listing whose totals moved, or do not add up to
/// what was read, proves no absence. It retires nothing (counted unreadable) and pools what it
/// read, for every provider alike.
#[derive(Debug, Default)]
struct PageCounts {
    read: usize,
    totals: std::collections::BTreeSet<usize>,
    /// The number of pages each page states, where the provider states no total.
    pages: std::collections::BTreeSet<u32>,
}

impl PageCounts {
    /// A page of `entries`, stating `total` for the whole listing where the provider does.
    fn page(&mut self, entries: usize, total: Option<usize>) {
        self.read += entries;
        self.totals.extend(total);
    }

    /// How many pages the listing has, as a page states it: a count that moves shows a shift
    /// where the provider states no total of numbers.
    fn pages(&mut self, pages: u32) {
        self.pages.insert(pages);
    }

    fn read(&self) -> usize {
        self.read
    }

    /// Counts the listing unreadable if its pages did not add up, and keeps one of each number.
    fn settle(self, provider: &Provider, numbers: &mut AccountNumbers) {
        let adds_up = match self.totals.len() {
            0 => true,
            1 => self.totals.first() == Some(&self.read),
            _ => false,
        } && self.pages.len() <= 1;
        if !adds_up {
            tracing::warn!(
                provider = %provider,
                read = self.read,
                "the account's numbers changed while listed; none is retired this run"
            );
            numbers.ours.unreadable += 1;
        }
        // A number the shift showed twice is pooled once.
        let ours = &mut numbers.ours.numbers;
        ours.sort_unstable_by(|a, b| a.number.cmp(&b.number));
        ours.dedup_by(|a, b| a.number == b.number);
    }
}

/// Where providers send calls and messages to our numbers: the webhook function's endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhooks {
    pub voice_url: reqwest::Url,
    pub sms_url: reqwest::Url,
}

/// A provider numbers can be bought from.
#[async_trait]
pub trait Vendor: Send + Sync {
    fn provider(&self) -> &Provider;

    /// Up to `limit` numbers on offer in `market` that can carry `needs`.
    async fn offered_numbers(
        &self,
        market: &Market,
        needs: Capabilities,
        limit: u32,
    ) -> Result<Vec<VirtualNumber>, ProviderError>;

    /// Buys `number` with its voice and SMS webhooks pointed at ours; returns it as now listed.
    /// Sent once: a purchase that may have gone through is [`PostError::Unconfirmed`], never
    /// sent again (it could buy a second number, or fail on the first one's success).
    async fn buy_number(
        &self,
        number: &VirtualNumber,
        webhooks: &Webhooks,
    ) -> Result<ListedNumber, PostError>;

    /// `number` as the account lists it now, if it does and it points at us: how an
    /// unconfirmed purchase is settled.
    async fn find_number(
        &self,
        number: &VirtualNumber,
    ) -> Result<Option<ListedNumber>, ProviderError>;
}

/// Every configured provider's inventory, and the providers that sell numbers, by name.
pub struct Configured {
    pub inventories: Vec<Arc<dyn Inventory>>,
    pub vendors: std::collections::BTreeMap<String, Arc<dyn Vendor>>,
}

/// The configured providers: every one lists numbers; Twilio, Plivo, Vonage and Telnyx also
/// sell them.
pub fn from_config(config: &crate::config::Config, http: &reqwest::Client) -> Configured {
    let mut inventories: Vec<Arc<dyn Inventory>> = Vec::new();
    let mut vendors: std::collections::BTreeMap<String, Arc<dyn Vendor>> = Default::default();
    if let Some(t) = &config.twilio {
        if matches!(t.auth, TwilioAuth::AuthToken(_)) {
            tracing::warn!(
                provider = "twilio",
                "signing with the account's auth token; an API key (VNMASK_TWILIO_API_KEY_SID and _SECRET) is preferred"
            );
        }
        let twilio = Arc::new(Twilio::new(t, http.clone(), config.http));
        inventories.push(twilio.clone());
        vendors.insert("twilio".into(), twilio);
    }
    if let Some(p) = &config.plivo {
        let plivo = Arc::new(Plivo::new(p, http.clone(), config.http));
        inventories.push(plivo.clone());
        vendors.insert("plivo".into(), plivo);
    }
    if let Some(v) = &config.vonage {
        let vonage = Arc::new(Vonage::new(v, http.clone(), config.http));
        inventories.push(vonage.clone());
        vendors.insert("vonage".into(), vonage);
    }
    if let Some(t) = &config.telnyx {
        let telnyx = Arc::new(Telnyx::new(t, http.clone(), config.http));
        inventories.push(telnyx.clone());
        vendors.insert("telnyx".into(), telnyx);
    }
    if let Some(e) = &config.exotel {
        inventories.push(Arc::new(Exotel::new(e, http.clone(), config.http)));
    }
    if let Some(s) = &config.static_list {
        inventories.push(Arc::new(s.clone()));
    }
    Configured {
        inventories,
        vendors,
    }
}
