//! Virtual numbers: the pool's members.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::phone::{Market, VirtualNumber};
use super::session::UnixTime;

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
    #[error("unknown hold reason `{0}`")]
    BadReason(String),
    #[error("bad note: {0}")]
    BadNote(&'static str),
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

/// Lifecycle of a pool number (docs/data-model.md, "Number health").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NumberState {
    /// Gets new contacts.
    Active,
    /// Keeps serving its live routes, gets no new ones.
    Draining,
    /// Unhealthy: gets no new contacts, and its live pairs are moved to healthy numbers.
    Quarantined,
    /// Healthy again, but serves no new pair until its hold ends, so that someone who saved the
    /// number is not put through to a stranger at once.
    CoolingOff,
    /// Serves nothing; its live pairs are moved.
    Retired,
}

impl NumberState {
    pub fn as_str(self) -> &'static str {
        match self {
            NumberState::Active => "active",
            NumberState::Draining => "draining",
            NumberState::Quarantined => "quarantined",
            NumberState::CoolingOff => "cooling_off",
            NumberState::Retired => "retired",
        }
    }

    /// Whether the contacts it serves may stay on it when their order is planned again: a
    /// draining number keeps them until they end; any other but an active one sees them moved.
    pub fn keeps_contacts(self) -> bool {
        matches!(self, NumberState::Active | NumberState::Draining)
    }
}

impl FromStr for NumberState {
    type Err = NumberError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(NumberState::Active),
            "draining" => Ok(NumberState::Draining),
            "quarantined" => Ok(NumberState::Quarantined),
            "cooling_off" => Ok(NumberState::CoolingOff),
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

/// Why a number was taken out of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldReason {
    /// Its provider lists it as suspended (or otherwise not in service).
    ProviderSuspended,
    /// Its provider no longer lists it.
    ProviderGone,
    /// Its calls go unanswered far more often than the market's.
    LowAnswerRate,
    /// An operator quarantined it.
    Operator,
}

impl HoldReason {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::ProviderSuspended => "provider_suspended",
            HoldReason::ProviderGone => "provider_gone",
            HoldReason::LowAnswerRate => "low_answer_rate",
            HoldReason::Operator => "operator",
        }
    }
}

impl FromStr for HoldReason {
    type Err = NumberError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "provider_suspended" => Ok(HoldReason::ProviderSuspended),
            "provider_gone" => Ok(HoldReason::ProviderGone),
            "low_answer_rate" => Ok(HoldReason::LowAnswerRate),
            "operator" => Ok(HoldReason::Operator),
            other => Err(NumberError::BadReason(other.chars().take(24).collect())),
        }
    }
}

impl fmt::Display for HoldReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why and since when a number is quarantined, cooling off or retired, and when a cooling-off
/// ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub reason: HoldReason,
    /// When the number entered its state.
    pub since: UnixTime,
    /// When a cooling-off ends (`None` for the other states: they end on a signal).
    pub until: Option<UnixTime>,
    /// An operator's words, shown by `vnctl pool`; never a phone number ([`HoldNote`]).
    pub note: Option<HoldNote>,
}

/// An operator's note on a hold: at most 120 printable characters, and never anything that may
/// be a phone number (seven digits or more), since it is stored and shown in the clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldNote(String);

impl HoldNote {
    pub const MAX_CHARS: usize = 120;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for HoldNote {
    type Err = NumberError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() || s.chars().count() > Self::MAX_CHARS || s.chars().any(char::is_control) {
            return Err(NumberError::BadNote("1-120 printable characters"));
        }
        // Any script's digits: a number written in full-width or Arabic-Indic digits is one too.
        if s.chars().filter(|c| c.is_numeric()).count() >= 7 {
            return Err(NumberError::BadNote(
                "no phone numbers: seven digits or more are refused",
            ));
        }
        Ok(HoldNote(s.to_owned()))
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
    /// Why it is out of service, where it is (quarantined, cooling off, retired by health).
    pub hold: Option<Hold>,
}

impl PoolNumber {
    /// May this number be given to a new contact pair in `market` needing `needs`?
    pub fn eligible_for(&self, market: &Market, needs: Capabilities) -> bool {
        self.state == NumberState::Active
            && &self.market == market
            && self.capabilities.contains(needs)
    }
}
