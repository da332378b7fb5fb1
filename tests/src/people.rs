//! Valid, distinct Indian mobile numbers for test people (tests only).

use vnmask::domain::Participant;

/// The `i`-th customer: `+9198100NNNNN`.
pub fn customer(i: usize) -> Participant {
    crate::participant("customer", &format!("c{i}"), &format!("+9198100{:05}", i))
}

/// The `i`-th driver: `+9197100NNNNN`.
pub fn driver(i: usize) -> Participant {
    crate::participant("driver", &format!("d{i}"), &format!("+9197100{:05}", i))
}

/// The `i`-th merchant: `+9196100NNNNN`.
pub fn merchant(i: usize) -> Participant {
    crate::participant("merchant", &format!("m{i}"), &format!("+9196100{:05}", i))
}
