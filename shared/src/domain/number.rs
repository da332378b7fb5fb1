//! Virtual numbers: the pool's members.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::phone::{Market, VirtualNumber};

/// The telecom provider a virtual number is rented from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Provider(String);

impl Provider {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Provider {
    type Err = NumberError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Provider(s.to_owned()))
        } else {
            Err(NumberError::BadProvider)
        }
    }
}

impl TryFrom<String> for Provider {
    type Error = NumberError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Provider> for String {
    fn from(p: Provider) -> String {
        p.0
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    #[error("provider name must be 1-32 characters of a-z, 0-9 and -")]
    BadProvider,
    #[error("unknown number state `{0}`")]
    BadState(String),
    #[error("unknown capability `{0}`")]
    BadCapability(String),
}

/// What a virtual number can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    Voice,
    Sms,
}

impl Capability {
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Voice => "voice",
            Capability::Sms => "sms",
        }
    }
}

impl FromStr for Capability {
    type Err = NumberError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "voice" => Ok(Capability::Voice),
            "sms" => Ok(Capability::Sms),
            other => Err(NumberError::BadCapability(other.chars().take(16).collect())),
        }
    }
}

/// A set of capabilities, small enough to be `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capabilities {
    pub voice: bool,
    pub sms: bool,
}

impl Capabilities {
    pub const VOICE_AND_SMS: Capabilities = Capabilities {
        voice: true,
        sms: true,
    };

    pub fn contains(self, other: Capabilities) -> bool {
        (self.voice || !other.voice) && (self.sms || !other.sms)
    }

    pub fn iter(self) -> impl Iterator<Item = Capability> {
        [(self.voice, Capability::Voice), (self.sms, Capability::Sms)]
            .into_iter()
            .filter_map(|(on, c)| on.then_some(c))
    }
}

impl FromIterator<Capability> for Capabilities {
    fn from_iter<I: IntoIterator<Item = Capability>>(iter: I) -> Self {
        let mut caps = Capabilities::default();
        for c in iter {
            match c {
                Capability::Voice => caps.voice = true,
                Capability::Sms => caps.sms = true,
            }
        }
        caps
    }
}

/// Lifecycle of a pool number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NumberState {
    /// Gets new contacts.
    Active,
    /// Keeps serving its live routes, gets no new ones.
    Draining,
    /// Serves nothing.
    Retired,
}

impl NumberState {
    pub fn as_str(self) -> &'static str {
        match self {
            NumberState::Active => "active",
            NumberState::Draining => "draining",
            NumberState::Retired => "retired",
        }
    }
}

impl FromStr for NumberState {
    type Err = NumberError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(NumberState::Active),
            "draining" => Ok(NumberState::Draining),
            "retired" => Ok(NumberState::Retired),
            other => Err(NumberError::BadState(other.chars().take(16).collect())),
        }
    }
}

impl fmt::Display for NumberState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An entry of a market's pool: a virtual number with where it comes from, what it can carry
/// and whether it takes new contacts. The number itself is a [`VirtualNumber`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolNumber {
    pub number: VirtualNumber,
    pub provider: Provider,
    pub market: Market,
    pub capabilities: Capabilities,
    pub state: NumberState,
}

impl PoolNumber {
    /// May this number be given to a new contact pair in `market` needing `needs`?
    pub fn eligible_for(&self, market: &Market, needs: Capabilities) -> bool {
        self.state == NumberState::Active
            && &self.market == market
            && self.capabilities.contains(needs)
    }
}
