//! PINs: what a participant calling from a phone the platform does not know enters to stand in
//! for themselves on a contact's virtual number.
//!
//! Each direction of a contact has its own PIN, given to the participant who calls in with it:
//! entered on the contact's number, it reaches that participant's counterpart, exactly as a
//! call from the participant's registered phone would. A PIN is unique among the live PINs of its
//! number, stored only keyed (like routes) and sealed, and lives and dies with its pair.

use std::fmt;

use rand::Rng;

use super::phone::VirtualNumber;
use super::session::Route;

/// Digits in a PIN: a million per virtual number, against at most a few thousand live pairs
/// on a busy number and a handful of guesses per caller and hour.
pub const PIN_DIGITS: usize = 6;

/// A string that is not a PIN. Never carries the digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a PIN is exactly {PIN_DIGITS} digits")]
pub struct PinError;

/// A PIN. Its digits are shown only to the participant it belongs to: `Debug` hides them and
/// there is no `Display`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pin(String);

impl Pin {
    /// Exactly [`PIN_DIGITS`] ASCII digits, nothing around them.
    pub fn parse(s: &str) -> Result<Self, PinError> {
        if s.len() == PIN_DIGITS && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Pin(s.to_owned()))
        } else {
            Err(PinError)
        }
    }

    /// A PIN drawn uniformly at random (`rand::thread_rng()` is a CSPRNG: PINs must not be
    /// guessable from others).
    pub fn random(rng: &mut impl Rng) -> Self {
        let n = rng.gen_range(0..10u32.pow(PIN_DIGITS as u32));
        Pin(format!("{n:0width$}", width = PIN_DIGITS))
    }

    /// The digits, for the participant it belongs to (and the store, which keys and seals it).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(..)")
    }
}

/// A contact's two PINs: `a` is given to the contact's participant `a` (it reaches `b`), `b` to
/// participant `b` (it reaches `a`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactPins {
    pub a: Pin,
    pub b: Pin,
}

/// What identifies a PIN: the number it is entered on and its digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PinKey {
    pub number: VirtualNumber,
    pub pin: Pin,
}

/// A PIN and the route it stands for: the main route of the participant it was given to, whose
/// callee a caller entering it reaches, showing the route's number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinRoute {
    pub pin: Pin,
    pub route: Route,
}

impl PinRoute {
    pub fn key(&self) -> PinKey {
        PinKey {
            number: self.route.number.clone(),
            pin: self.pin.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_is_exactly_six_digits_and_never_shown_by_debug() {
        let pin = Pin::parse("048213").unwrap();
        assert_eq!(pin.expose(), "048213");
        assert_eq!(format!("{pin:?}"), "Pin(..)");
        for bad in [
            "",
            "48213",
            "0482135",
            "04821a",
            " 048213",
            "\"048213\"",
            "٠٤٨٢١٣",
        ] {
            assert_eq!(Pin::parse(bad), Err(PinError), "{bad:?}");
        }
        let mut rng = rand::thread_rng();
        for _ in 0..1000 {
            let p = Pin::random(&mut rng);
            assert!(Pin::parse(p.expose()).is_ok(), "{}", p.expose());
        }
    }
}
