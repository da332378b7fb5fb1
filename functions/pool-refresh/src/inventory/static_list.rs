//! Numbers of carriers without an API, listed in configuration as JSON (all of them ours):
//! `[{"number": "+911140001000", "capabilities": ["voice", "sms"], "market": "IN"}]`
//! (`capabilities` defaults to voice and SMS, `market` to the number's country).

use async_trait::async_trait;
use serde::Deserialize;
use vnmask::domain::{Capabilities, Capability, Market, Provider, VirtualNumber};
use vnmask::pool::{ListedNumber, Listing};

use super::{AccountNumbers, Inventory, ProviderError};

#[derive(Clone)]
pub struct StaticList {
    provider: Provider,
    numbers: Vec<ListedNumber>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    number: VirtualNumber,
    #[serde(default)]
    capabilities: Option<Vec<Capability>>,
    #[serde(default)]
    market: Option<Market>,
}

impl StaticList {
    /// Parses the configured list; the error says what is wrong and where.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let entries: Vec<Entry> = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let numbers = entries
            .into_iter()
            .map(|e| ListedNumber {
                number: e.number,
                capabilities: e
                    .capabilities
                    .map(|c| c.into_iter().collect())
                    .unwrap_or(Capabilities::VOICE_AND_SMS),
                country: e.market,
                in_service: true,
            })
            .collect();
        Ok(StaticList {
            provider: "static".parse().unwrap_or_else(|_| unreachable!()),
            numbers,
        })
    }
}

#[async_trait]
impl Inventory for StaticList {
    fn provider(&self) -> &Provider {
        &self.provider
    }

    async fn list_numbers(&self) -> Result<AccountNumbers, ProviderError> {
        Ok(AccountNumbers {
            ours: Listing {
                numbers: self.numbers.clone(),
                ..Listing::default()
            },
            foreign: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_list_defaults_to_voice_and_sms_in_the_numbers_country() {
        let list = StaticList::from_json(
            r#"[{"number": "+911140001000"}, {"number": "+14155551000", "capabilities": ["voice"], "market": "US"}]"#,
        )
        .unwrap();
        let listing = list.list_numbers().await.unwrap().ours;
        assert_eq!(listing.numbers.len(), 2);
        assert_eq!(listing.numbers[0].capabilities, Capabilities::VOICE_AND_SMS);
        assert_eq!(listing.numbers[0].market().unwrap().as_str(), "IN");
        assert!(!listing.numbers[1].capabilities.sms);
        assert_eq!(listing.numbers[1].market().unwrap().as_str(), "US");
    }

    #[test]
    fn malformed_static_list_is_refused_with_a_reason() {
        let err = StaticList::from_json(r#"[{"number": "911140001000"}]"#)
            .err()
            .unwrap();
        assert!(err.contains("E.164"), "{err}");
        assert!(StaticList::from_json(r#"[{"numbr": "+911140001000"}]"#).is_err());
    }
}
