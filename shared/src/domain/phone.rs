//! Phone numbers: E.164 parsing for real (private) and virtual (public) numbers, and the
//! national forms some providers send instead (see [`E164::parse_national`]).

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::OnceLock;

use phonenumber::country;
use serde::{Deserialize, Serialize};

/// Why a string is not an acceptable phone number. Never carries the number itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("phone number is not in E.164 form (+ then 8 to 15 digits)")]
    NotE164,
    #[error("phone number is not a valid number for its country")]
    Invalid,
    #[error("unknown market `{0}`: expected an ISO 3166-1 alpha-2 country code")]
    UnknownMarket(String),
}

/// An ISO 3166-1 alpha-2 country code naming a market, e.g. `IN`. Held inline: every number
/// carries its country, and cloning one allocates nothing.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Market(Ascii<2>);

impl Market {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl FromStr for Market {
    type Err = PhoneError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.trim().to_ascii_uppercase();
        let unknown = || PhoneError::UnknownMarket(s.chars().take(8).collect());
        if upper.len() != 2 || country::Id::from_str(&upper).is_err() {
            return Err(unknown());
        }
        Ascii::new(&upper).map(Market).ok_or_else(unknown)
    }
}

impl fmt::Debug for Market {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Market").field(&self.as_str()).finish()
    }
}

impl TryFrom<String> for Market {
    type Error = PhoneError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Market> for String {
    fn from(m: Market) -> String {
        m.as_str().to_owned()
    }
}

impl fmt::Display for Market {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Short ASCII text of at most `N` bytes, held inline (no allocation, `Copy`). Ordered, compared
/// and hashed as its text.
#[derive(Clone, Copy)]
struct Ascii<const N: usize> {
    len: u8,
    bytes: [u8; N],
}

impl<const N: usize> Ascii<N> {
    /// `None` unless `s` is ASCII and at most `N` bytes long.
    fn new(s: &str) -> Option<Self> {
        if !s.is_ascii() || s.len() > N {
            return None;
        }
        let mut bytes = [0; N];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Some(Ascii {
            len: s.len() as u8,
            bytes,
        })
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    fn as_str(&self) -> &str {
        // Only ASCII is ever stored (see `new`), so this never falls back.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

impl<const N: usize> PartialEq for Ascii<N> {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl<const N: usize> Eq for Ascii<N> {}

impl<const N: usize> Hash for Ascii<N> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl<const N: usize> PartialOrd for Ascii<N> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<const N: usize> Ord for Ascii<N> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

/// An E.164 number and the country it belongs to. Both are held inline: numbers are copied
/// into every route and query, and copying one allocates nothing.
#[derive(Clone)]
pub struct E164 {
    /// `+` and 8–15 digits.
    digits: Ascii<16>,
    /// Looked up in the numbering plan when first asked, for numbers that were only checked
    /// for form ([`E164::parse_form`]).
    country: OnceLock<Option<Market>>,
}

// A number is its digits: the country follows from them.
impl PartialEq for E164 {
    fn eq(&self, other: &Self) -> bool {
        self.digits == other.digits
    }
}

impl Eq for E164 {}

impl Hash for E164 {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.digits.hash(state)
    }
}

impl PartialOrd for E164 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for E164 {
    fn cmp(&self, other: &Self) -> Ordering {
        self.digits.cmp(&other.digits)
    }
}

impl E164 {
    /// Parses strictly: `+`, 8–15 digits, canonical, and valid for its country.
    pub fn parse(s: &str) -> Result<Self, PhoneError> {
        Self::check_form(s)?;
        let parsed = phonenumber::parse(None, s).map_err(|_| PhoneError::Invalid)?;
        if !phonenumber::is_valid(&parsed) {
            return Err(PhoneError::Invalid);
        }
        let canonical = parsed.format().mode(phonenumber::Mode::E164).to_string();
        if canonical != s {
            return Err(PhoneError::NotE164);
        }
        Ok(E164 {
            digits: Self::inline(s)?,
            country: OnceLock::from(country_of(&parsed)),
        })
    }

    /// Checks the E.164 form only (`+`, then 8–15 digits, the first not 0), not the numbering
    /// plan. For numbers that are only ever matched against numbers [`E164::parse`] accepted
    /// (a provider's caller and dialled number: one the plan would refuse has no route) and
    /// for numbers read back from storage, which were parsed strictly when written. Loading the
    /// plan's metadata takes tens of milliseconds, which the webhook's cold start and every
    /// routed call need not pay.
    pub fn parse_form(s: &str) -> Result<Self, PhoneError> {
        Self::check_form(s)?;
        Ok(E164 {
            digits: Self::inline(s)?,
            country: OnceLock::new(),
        })
    }

    /// A number as a provider in `market` may write it: E.164 (form only, as
    /// [`E164::parse_form`]), or one of the market's unambiguous national forms, turned into
    /// E.164 by its digits alone (no numbering-plan load, so it is as cheap as the form check).
    ///
    /// India (`IN`), where every number has a 10-digit national number that never starts with 0:
    /// - `0` + the 10 digits (trunk prefix; mobiles and landlines with their STD code, e.g.
    ///   `09810000001`, `08047113155`);
    /// - the 10 digits alone, only for a mobile (first digit 6-9): a landline without its
    ///   trunk prefix is a local number whose area is not known;
    /// - `91` + the 10 digits.
    ///
    /// Anything else is refused ([`PhoneError::NotE164`]): spaces or dashes, `00`
    /// international prefixes, too few or too many digits, words such as `anonymous`. Other
    /// markets take E.164 only.
    pub fn parse_national(s: &str, market: &Market) -> Result<Self, PhoneError> {
        if s.starts_with('+') {
            return Self::parse_form(s);
        }
        let national = match market.as_str() {
            "IN" => india_national_number(s),
            _ => None,
        }
        .ok_or(PhoneError::NotE164)?;
        // `+91` and 10 digits: 13 bytes, well within the inline 16.
        let mut e164 = [0u8; 13];
        e164[..3].copy_from_slice(b"+91");
        e164[3..].copy_from_slice(national);
        let text = std::str::from_utf8(&e164).map_err(|_| PhoneError::NotE164)?;
        Self::parse_form(text)
    }

    /// `s`, which has the E.164 form, held inline.
    fn inline(s: &str) -> Result<Ascii<16>, PhoneError> {
        Ascii::new(s).ok_or(PhoneError::NotE164)
    }

    fn check_form(s: &str) -> Result<(), PhoneError> {
        let digits = s.strip_prefix('+').ok_or(PhoneError::NotE164)?;
        if !(8..=15).contains(&digits.len())
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || digits.starts_with('0')
        {
            return Err(PhoneError::NotE164);
        }
        Ok(())
    }

    pub fn as_str(&self) -> &str {
        self.digits.as_str()
    }

    /// The number's country, when the numbering plan names one (non-geographic numbers have none).
    pub fn country(&self) -> Option<&Market> {
        self.country
            .get_or_init(|| {
                phonenumber::parse(None, self.as_str())
                    .ok()
                    .and_then(|p| country_of(&p))
            })
            .as_ref()
    }
}

/// The 10-digit national number of an Indian number in one of its national forms, if `s` is one.
fn india_national_number(s: &str) -> Option<&[u8]> {
    let digits = s.as_bytes();
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let national = match digits.len() {
        10 if matches!(digits[0], b'6'..=b'9') => digits,
        11 => digits.strip_prefix(b"0")?,
        12 => digits.strip_prefix(b"91")?,
        _ => return None,
    };
    // No Indian national number starts with 0: `00…` is an international prefix.
    (national[0] != b'0').then_some(national)
}

fn country_of(parsed: &phonenumber::PhoneNumber) -> Option<Market> {
    parsed
        .country()
        .id()
        .and_then(|id| id.as_ref().parse().ok())
}

/// A person's real number. It must never be shown, logged or put in a key:
/// `Debug` and `Display` redact it; only [`RealNumber::expose`] gives the digits,
/// for the provider response that connects a call and for encryption.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RealNumber(E164);

impl RealNumber {
    pub fn parse(s: &str) -> Result<Self, PhoneError> {
        E164::parse(s).map(RealNumber)
    }

    /// The E.164 form only: see [`E164::parse_form`] for when that is enough.
    pub fn parse_form(s: &str) -> Result<Self, PhoneError> {
        E164::parse_form(s).map(RealNumber)
    }

    /// E.164 or one of `market`'s national forms: see [`E164::parse_national`].
    pub fn parse_national(s: &str, market: &Market) -> Result<Self, PhoneError> {
        E164::parse_national(s, market).map(RealNumber)
    }

    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    pub fn country(&self) -> Option<&Market> {
        self.0.country()
    }
}

impl fmt::Debug for RealNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RealNumber(<redacted>)")
    }
}

impl fmt::Display for RealNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for RealNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RealNumber::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A virtual number (VN): the E.164 value of a number of ours that parties dial instead of each
/// other's real numbers. Public, safe to log. Its pool entry is a [`super::PoolNumber`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VirtualNumber(E164);

impl VirtualNumber {
    pub fn parse(s: &str) -> Result<Self, PhoneError> {
        E164::parse(s).map(VirtualNumber)
    }

    /// The E.164 form only: see [`E164::parse_form`] for when that is enough.
    pub fn parse_form(s: &str) -> Result<Self, PhoneError> {
        E164::parse_form(s).map(VirtualNumber)
    }

    /// E.164 or one of `market`'s national forms: see [`E164::parse_national`].
    pub fn parse_national(s: &str, market: &Market) -> Result<Self, PhoneError> {
        E164::parse_national(s, market).map(VirtualNumber)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn country(&self) -> Option<&Market> {
        self.0.country()
    }
}

impl TryFrom<String> for VirtualNumber {
    type Error = PhoneError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        VirtualNumber::parse(&s)
    }
}

impl From<VirtualNumber> for String {
    fn from(v: VirtualNumber) -> String {
        v.as_str().to_owned()
    }
}

impl fmt::Debug for VirtualNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VirtualNumber({})", self.as_str())
    }
}

impl fmt::Display for VirtualNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_indian_mobile_parses_with_its_country() {
        let n = RealNumber::parse("+919812345678").unwrap();
        assert_eq!(n.expose(), "+919812345678");
        assert_eq!(n.country().unwrap().as_str(), "IN");
    }

    #[test]
    fn real_number_never_prints_its_digits() {
        let n = RealNumber::parse("+919812345678").unwrap();
        assert!(!format!("{n:?}").contains("9812"));
        assert!(!format!("{n}").contains("9812"));
        assert!(!format!("{:?}", Some(&n)).contains("9812"));
    }

    #[test]
    fn non_e164_forms_are_rejected() {
        for s in [
            "",
            "+",
            "919812345678",
            "+91 98123 45678",
            "+91-9812345678",
            "+0919812345678",
            "+9198123456789999",
            "+91981234567a",
            "++919812345678",
            " +919812345678",
            "+１２３",
        ] {
            assert!(RealNumber::parse(s).is_err(), "{s:?} must be rejected");
            assert_eq!(
                RealNumber::parse_form(s),
                Err(PhoneError::NotE164),
                "{s:?} must be rejected for its form"
            );
        }
    }

    #[test]
    fn form_only_numbers_equal_strict_ones_and_find_their_country_when_asked() {
        let strict = VirtualNumber::parse("+14155550100").unwrap();
        let form = VirtualNumber::parse_form("+14155550100").unwrap();
        assert_eq!(strict, form);
        assert_eq!(form.country().unwrap().as_str(), "US");
        // The plan is not consulted: a number it refuses passes the form check alone.
        assert_eq!(RealNumber::parse("+91123456789"), Err(PhoneError::Invalid));
        assert!(RealNumber::parse_form("+91123456789").is_ok());
    }

    #[test]
    fn invalid_number_for_country_is_rejected() {
        assert_eq!(RealNumber::parse("+9112345"), Err(PhoneError::NotE164));
        assert_eq!(RealNumber::parse("+91123456789"), Err(PhoneError::Invalid));
    }

    #[test]
    fn market_is_an_iso_country() {
        assert_eq!("in".parse::<Market>().unwrap().as_str(), "IN");
        assert!("XX".parse::<Market>().is_err());
        assert!("IND".parse::<Market>().is_err());
    }

    fn india() -> Market {
        "IN".parse().unwrap()
    }

    fn national(s: &str, market: &Market) -> Result<String, PhoneError> {
        RealNumber::parse_national(s, market).map(|n| n.expose().to_owned())
    }

    #[test]
    fn indian_national_forms_become_e164() {
        let cases = [
            ("09494865411", "+919494865411"),
            ("9494865411", "+919494865411"),
            ("919494865411", "+919494865411"),
            ("+919494865411", "+919494865411"),
            // Landlines with their STD code: Bengaluru (80), Delhi (11).
            ("08047113155", "+918047113155"),
            ("918047113155", "+918047113155"),
            ("01140001000", "+911140001000"),
            // A bare 10-digit number starting 6-9 is a mobile.
            ("6000000000", "+916000000000"),
        ];
        for (form, e164) in cases {
            assert_eq!(national(form, &india()).as_deref(), Ok(e164), "{form}");
            assert_eq!(
                VirtualNumber::parse_national(form, &india()),
                VirtualNumber::parse(e164),
                "{form}"
            );
        }
    }

    #[test]
    fn ambiguous_or_malformed_national_forms_are_refused() {
        for s in [
            "",
            "anonymous",
            "Restricted",
            "0",
            // Too short, too long.
            "0949486541",
            "094948654111",
            "949486541",
            "9494865411 ",
            "91949486541",
            "9194948654111",
            // A landline without its trunk prefix: which area?
            "2247113155",
            "1140001000",
            "5494865411",
            // International prefixes and trunk-then-0: foreign-looking.
            "00919494865411",
            "0014155550100",
            "00494865411",
            "910494865411",
            "0919494865411",
            // Separators, signs and other scripts.
            "094948-65411",
            "0 9494865411",
            "+91 9494865411",
            "(0)9494865411",
            "９４９４８６５４１１",
            "0949486541a",
        ] {
            assert_eq!(
                RealNumber::parse_national(s, &india()),
                Err(PhoneError::NotE164),
                "{s:?} must be refused"
            );
        }
    }

    #[test]
    fn markets_without_national_rules_take_e164_only() {
        let us: Market = "US".parse().unwrap();
        assert_eq!(national("+14155550100", &us).as_deref(), Ok("+14155550100"));
        for s in ["4155550100", "14155550100", "09494865411", "9494865411"] {
            assert_eq!(national(s, &us), Err(PhoneError::NotE164), "{s}");
        }
        // E.164 of another country passes in India as it did before: form only.
        assert_eq!(
            national("+14155550100", &india()).as_deref(),
            Ok("+14155550100")
        );
    }

    /// Each accepted rendering of an Indian national number `n` (10 digits, the first not 0).
    fn indian_forms(n: &str) -> Vec<String> {
        let mut forms = vec![format!("0{n}"), format!("91{n}"), format!("+91{n}")];
        if matches!(n.as_bytes()[0], b'6'..=b'9') {
            forms.push(n.to_owned());
        }
        forms
    }

    proptest::proptest! {
        /// Every form of one number is that number; two numbers never meet in one.
        #[test]
        fn national_forms_never_merge_two_numbers(
            a in "[1-9][0-9]{9}",
            b in "[1-9][0-9]{9}",
        ) {
            for (n, other) in [(&a, &b), (&b, &a)] {
                let e164 = format!("+91{n}");
                for form in indian_forms(n) {
                    let got = national(&form, &india());
                    proptest::prop_assert_eq!(got.as_deref(), Ok(e164.as_str()), "{}", form);
                    if a != b {
                        for other_form in indian_forms(other) {
                            proptest::prop_assert_ne!(
                                national(&other_form, &india()),
                                Ok(e164.clone())
                            );
                        }
                    }
                }
            }
        }

        /// Whatever digits come in, an accepted one keeps its last 10 digits as the national
        /// number: normalising only ever adds or drops a known prefix.
        #[test]
        fn normalising_only_adds_or_drops_a_prefix(s in "\\+?[0-9]{0,14}") {
            if let Ok(e164) = national(&s, &india()) {
                if s.starts_with('+') {
                    proptest::prop_assert_eq!(&e164, &s);
                } else {
                    proptest::prop_assert!(e164.starts_with("+91") && e164.len() == 13);
                    proptest::prop_assert!(s.ends_with(&e164[3..]), "{}", s);
                    proptest::prop_assert!(s.len() == 10 || s.len() == 11 || s.len() == 12);
                }
            }
        }
    }

    #[test]
    fn error_messages_do_not_echo_the_number() {
        let e = RealNumber::parse("+9112345678901234").unwrap_err();
        assert!(!e.to_string().contains("12345"));
    }
}
