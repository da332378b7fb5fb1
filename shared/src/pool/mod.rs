//! The pool's upkeep, pure: keeping the stored pool in step with what the providers say we own,
//! and judging whether a market's pool has room for the next contacts. Nothing of AWS or HTTP.
//!
//! - [`reconcile`]: provider listings + stored pool → the writes that bring the pool in step
//! - [`health`]: numbers by state, headroom against the policy's bound, the busiest number's share
//! - [`judge`]: number health, which numbers leave service (quarantine) and come back
//! - [`capacity_bound`]: how many numbers a market's calls need, by what carriers let one carry

mod capacity;
mod condition;
mod health;
mod reconcile;

pub use capacity::{
    capacity_bound, parse_capacities, safe_mean_concurrent, CallCapacity, CallLoad, CapacityError,
};
pub use condition::{
    judge, quarantine_by_operator, quarantined, release, Checkup, HealthRules, HoldError, Verdict,
};
pub use health::{busiest_share, health, purchases_wanted, PoolHealth, RouteShare};
pub use reconcile::{reconcile, ChangeKind, ListedNumber, Listing, PoolChange, Reconcile};

use crate::domain::UnixTime;

/// The UTC calendar day of `now` as `yyyy-mm-dd`: the key of a day's statistics.
pub fn day_key(now: UnixTime) -> String {
    let (y, m, d) = civil_date(now);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The UTC calendar month of `now` as `yyyy-mm`: the key of a month's purchase count.
pub fn month_key(now: UnixTime) -> String {
    let (y, m, _) = civil_date(now);
    format!("{y:04}-{m:02}")
}

/// (year, month, day) of a Unix time in UTC, by Howard Hinnant's `civil_from_days`
/// (proleptic Gregorian calendar, exact for every `i64` second we can meet).
fn civil_date(now: UnixTime) -> (i64, u32, u32) {
    let z = now.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_and_month_keys_are_utc_calendar_dates() {
        assert_eq!(day_key(0), "1970-01-01");
        assert_eq!(day_key(951_782_400), "2000-02-29");
        assert_eq!(day_key(1_780_012_799), "2026-05-28");
        assert_eq!(day_key(1_780_012_800), "2026-05-29");
        assert_eq!(month_key(1_780_012_800), "2026-05");
        assert_eq!(day_key(-1), "1969-12-31");
    }
}
