//! pool-refresh: keeps each market's pool of virtual numbers in step with the numbers the
//! providers rent us, keeps it healthy, and grows it before it runs dry. The handler, testable
//! without a Lambda runtime: [`Refresher::handle`] takes the scheduler's payload,
//! [`Refresher::refresh`] a time.
//!
//! One run: list every provider's numbers (in parallel), keeping only those that point at this
//! deployment, sample live routes once (bounded), then per market reconcile the pool with
//! conditional writes (a pooled number that stops pointing at us is retired like one its
//! provider no longer lists), judge its numbers' health (quarantine, cooling off), judge its
//! headroom and buy or report what is missing, and last move the live pairs of numbers leaving
//! service to healthy ones, bounded per run. Overlapping runs are safe: every pool write is
//! conditioned on the version read, every move on the session's revision, purchases are
//! counted against the monthly cap before they are made, and one run at a time buys for a
//! market (a lease). A purchase request is sent once: one that may have gone through (a
//! timeout, a 5xx) is looked up in the account's numbers, and stays counted against the month
//! whether it shows up or not.

pub mod config;
pub mod inventory;
pub mod notify;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use vnmask::assignment::{AssignError, Assigner, Moved};
use vnmask::domain::{
    AnswerTally, Capabilities, Market, NumberState, OrderId, PoolNumber, Provider, UnixTime,
    VirtualNumber,
};
use vnmask::notification::NumbersAssigned;
use vnmask::pool::{
    self, CallCapacity, CallLoad, ChangeKind, Checkup, HealthRules, ListedNumber, Listing,
    PoolChange, PoolHealth, Reconcile,
};
use vnmask::store::{
    LeaseTake, PoolUpkeep, PoolWriteError, PurchaseCount, SampledRoute, StoreError,
};

use notify::Notify;
use vnmask::telemetry::{MetricSet, Unit};

use inventory::{AccountNumbers, Inventory, PostError, ProviderError, Vendor, Webhooks};

pub const FUNCTION: &str = "pool-refresh";

/// Reconciliation passes per market when concurrent writers change numbers underneath.
const MAX_PASSES: u32 = 3;
/// Pool writes in flight at once.
const WRITE_CONCURRENCY: usize = 16;
/// Moves in flight at once.
const MOVE_CONCURRENCY: usize = 8;
/// Beyond a run's moves, orders on a number leaving service are counted up to this many.
const WAITING_COUNT_CAP: usize = 10_000;
/// Pooled numbers a run looks up alone, per provider, when its listing lacks them and may have
/// skipped them; the rest wait, as they are, for the next run.
const ABSENCE_LOOKUPS_PER_RUN: usize = 100;
/// Look-ups of one provider in flight at once: gentle on its rate limits.
const LOOKUP_CONCURRENCY: usize = 4;
/// All of a run's look-ups end within this, well inside the function's 120 s beside the
/// listings and writes, however slowly a provider answers (each look-up retries on its own).
const LOOKUP_BUDGET: Duration = Duration::from_secs(20);
/// The `event_id` of a `NumbersAssigned` that a move (not an order event) caused.
pub const MOVE_EVENT_ID: &str = "vnmask-move";
/// How long a month's purchase count is kept.
const PURCHASE_COUNT_RETENTION: i64 = 400 * 24 * 3600;
const DAY: i64 = 24 * 3600;

/// What a run does, from configuration.
#[derive(Debug, Clone)]
pub struct RefreshSettings {
    /// Markets to refresh, each with what new contacts there need of a number (as the
    /// assignment policy sees it): a market's headroom counts and its purchases bring only
    /// numbers carrying those channels. Numbers the providers list in other countries are left
    /// alone.
    pub markets: BTreeMap<Market, Capabilities>,
    /// Numbers operators want drained.
    pub drain: HashSet<VirtualNumber>,
    /// Below this headroom a market needs more numbers.
    pub min_headroom: u32,
    /// `None`: buying is off, and a shortfall is only reported.
    pub buying: Option<Buying>,
    /// How many table items the route sample may read per run (0: no busiest-share figure).
    pub route_sample: usize,
    /// What makes a number unhealthy, and how long it stays out.
    pub health: HealthRules,
    /// Orders whose pairs a run moves off numbers leaving service, at most (the rest wait for
    /// the next run).
    pub moves_per_run: usize,
    /// How long after its retirement a retired number is still searched for live pairs: longer
    /// than any route on it can live (the session TTL and a grace).
    pub retired_lookback: i64,
    /// What one number may carry per market, and how the market's calls are read from its
    /// answer tallies: the capacity bound the headroom counts besides the person bound.
    pub capacity: CapacityRules,
}

/// The days a tally window of `days` UTC days up to `now`'s covers: the whole days before
/// today, and today so far (at least an hour of it, so that calls just after midnight are not
/// taken for a day's).
pub fn covered_days(days: u32, now: UnixTime) -> f64 {
    let today = (now.rem_euclid(86_400) as f64 / 86_400.0).max(1.0 / 24.0);
    f64::from(days.max(1) - 1) + today
}

/// How pool refresh sizes a market by its calls (issue 23).
#[derive(Debug, Clone, PartialEq)]
pub struct CapacityRules {
    /// Per market, what one number may carry (`VNMASK_CALL_CAPACITY`); a market without one has
    /// no capacity bound.
    pub per_market: HashMap<Market, CallCapacity>,
    /// The share of a day's calls its busiest hour carries (`VNMASK_PEAK_HOUR_SHARE`).
    pub peak_hour_share: f64,
    /// The mean length of a call in seconds (`VNMASK_MEAN_CALL_SECONDS`): tallies count calls,
    /// not their lengths.
    pub mean_call_seconds: f64,
}

impl Default for CapacityRules {
    fn default() -> Self {
        CapacityRules {
            per_market: HashMap::new(),
            // A day peaking at twice its mean rate puts about a tenth of its calls in its
            // busiest hour (BENCHMARKS.md's simulated day: 0.08).
            peak_hour_share: 0.1,
            mean_call_seconds: 90.0,
        }
    }
}

impl CapacityRules {
    /// The numbers `market`'s calls need, from its numbers' tallies over the `days` UTC days up
    /// to `now`'s: 0 without a capacity for the market or without calls.
    pub fn bound(
        &self,
        market: &Market,
        tallies: &HashMap<VirtualNumber, AnswerTally>,
        days: u32,
        now: UnixTime,
    ) -> u32 {
        let Some(cap) = self.per_market.get(market) else {
            return 0;
        };
        let calls: u64 = tallies.values().map(|t| t.attempted).sum();
        let load = CallLoad {
            calls_per_day: calls as f64 / covered_days(days, now),
            peak_hour_share: self.peak_hour_share,
            mean_call_seconds: self.mean_call_seconds,
        };
        pool::capacity_bound(&load, *cap)
    }
}

/// Moves live pairs off numbers leaving service: the assignment service, and where apps hear
/// of their new numbers.
pub struct Mover {
    pub assigner: Assigner,
    pub notify: Option<Arc<dyn Notify>>,
}

#[derive(Debug, Clone)]
pub struct Buying {
    pub per_run: u32,
    pub per_month: u32,
    pub webhooks: Webhooks,
    /// How long a run may hold a market's buying lease: longer than a run can last.
    pub lease: Duration,
}

/// What a run did, returned to the invoker and logged. Errors are typed here and written out
/// as their messages.
#[derive(Debug, Default, Serialize)]
pub struct RefreshSummary {
    pub providers: Vec<ProviderSummary>,
    pub markets: Vec<MarketSummary>,
}

#[derive(Debug, Serialize)]
pub struct ProviderSummary {
    pub provider: String,
    /// The account's numbers that point at this deployment.
    pub listed: usize,
    pub unreadable: usize,
    /// Pooled numbers the listing lacked that a look-up could not prove gone this run (beyond
    /// the run's look-ups, or a look-up failed): left as they are.
    pub unconfirmed: usize,
    /// The account's other numbers, left out.
    pub foreign: usize,
    /// Why the provider could not be asked; its numbers were left as they were.
    #[serde(serialize_with = "as_message")]
    pub error: Option<ProviderError>,
}

#[derive(Debug, Default, Serialize)]
pub struct MarketSummary {
    pub market: String,
    pub added: usize,
    pub restored: usize,
    pub drained: usize,
    pub retired: usize,
    pub updated: usize,
    /// Writes that lost to a concurrent writer (decided again from a fresh read).
    pub conflicts: usize,
    pub numbers_active: usize,
    pub numbers_draining: usize,
    pub numbers_quarantined: usize,
    pub numbers_cooling_off: usize,
    pub numbers_retired: usize,
    /// Numbers number health took out of service this run, set cooling off, and let serve again.
    pub quarantined: usize,
    pub cooling_off: usize,
    pub reactivated: usize,
    /// Numbers that look unhealthy but stayed in service: the share cap was reached.
    pub quarantines_held_back: usize,
    /// Answered ÷ attempted over the market's answer tallies, when there are enough calls.
    pub answer_rate: Option<f64>,
    /// Contacts moved off numbers leaving service this run, in how many orders.
    pub pairs_moved: usize,
    pub orders_moved: usize,
    /// Orders still holding pairs on numbers leaving service after this run (at least: the
    /// count stops at the index read's cap).
    pub orders_waiting: usize,
    /// Moves that failed this run (pool exhausted, contention, store): they are tried again.
    pub moves_failed: usize,
    /// `NumbersAssigned` notifications of moves that could not be sent.
    pub notify_failed: usize,
    pub eligible: usize,
    pub peak_live_contacts: u32,
    /// The numbers the market's calls need (0: no capacity configured, or no calls known).
    pub capacity_bound: u32,
    pub headroom: i64,
    /// The busiest number's share of the sampled live routes, 0..1.
    pub busiest_share: Option<f64>,
    pub routes_sampled: usize,
    /// Numbers missing to reach the minimum headroom.
    pub needed: u32,
    pub bought: u32,
    /// Purchases that may have gone through but that the account did not list yet: counted
    /// against the month; the next run's listing takes them in if they were made.
    pub unconfirmed: u32,
    /// Why buying stopped short, if it did.
    #[serde(serialize_with = "as_message")]
    pub buying_stopped: Option<BuyingStopped>,
    /// Why the market could not be refreshed.
    #[serde(serialize_with = "as_message")]
    pub error: Option<StoreError>,
}

/// Why a market bought fewer numbers than it needed, or none.
#[derive(Debug, thiserror::Error)]
pub enum BuyingStopped {
    /// This run bought as many as `VNMASK_POOL_BUY_PER_RUN` allows.
    #[error("per-run cap reached")]
    RunCap,
    /// This month's purchases reached `VNMASK_POOL_BUY_PER_MONTH`.
    #[error("monthly cap reached")]
    MonthlyCap,
    /// Another run holds the market's buying lease.
    #[error("another run is buying")]
    AnotherRunBuying,
    #[error("too few numbers on offer")]
    TooFewOnOffer,
    /// Searching for numbers on offer failed, or the provider refused a purchase.
    #[error(transparent)]
    Provider(ProviderError),
    /// A purchase may have gone through, and the account's numbers do not show it (yet).
    #[error("purchase unconfirmed: {0}")]
    PurchaseUnconfirmed(ProviderError),
}

/// An error of the summary as its message, the way invokers and logs read it.
fn as_message<E: std::fmt::Display, S: serde::Serializer>(
    error: &Option<E>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    error
        .as_ref()
        .map(ToString::to_string)
        .serialize(serializer)
}

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// The store failed for these markets; the others were refreshed.
    #[error("markets not refreshed: {}", .0.join(", "))]
    Markets(Vec<String>),
}

impl From<RefreshError> for lambda_runtime::Diagnostic {
    fn from(e: RefreshError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: "PoolRefreshFailed".into(),
            error_message: e.to_string(),
        }
    }
}

pub struct Refresher {
    store: Arc<dyn PoolUpkeep>,
    inventories: Vec<Arc<dyn Inventory>>,
    /// Where every market's numbers are bought, unless `market_vendors` names another.
    vendor: Option<Arc<dyn Vendor>>,
    market_vendors: BTreeMap<Market, Arc<dyn Vendor>>,
    settings: RefreshSettings,
    mover: Option<Mover>,
}

impl Refresher {
    pub fn new(
        store: Arc<dyn PoolUpkeep>,
        inventories: Vec<Arc<dyn Inventory>>,
        vendor: Option<Arc<dyn Vendor>>,
        settings: RefreshSettings,
    ) -> Self {
        Refresher {
            store,
            inventories,
            vendor,
            market_vendors: BTreeMap::new(),
            settings,
            mover: None,
        }
    }

    /// This refresher, buying `market`'s numbers from `vendor`.
    pub fn with_vendor_for(mut self, market: Market, vendor: Arc<dyn Vendor>) -> Self {
        self.market_vendors.insert(market, vendor);
        self
    }

    /// This refresher, moving live pairs off numbers leaving service with `mover` (without
    /// one, numbers are still quarantined, and their pairs lapse on their own).
    pub fn with_mover(mut self, mover: Mover) -> Self {
        self.mover = Some(mover);
        self
    }

    /// The scheduled invocation. EventBridge Scheduler sends the schedule's input (any JSON, a
    /// plain `{}` by default) or, through an EventBridge rule, a `Scheduled Event`: the payload
    /// only names the trigger in the log, the run is the same.
    pub async fn handle(&self, payload: serde_json::Value) -> Result<RefreshSummary, RefreshError> {
        let field = |name: &str| payload.get(name).and_then(|v| v.as_str()).unwrap_or("-");
        tracing::info!(
            trigger_id = field("id"),
            source = field("source"),
            "pool refresh starts"
        );
        let summary = self.refresh(vnmask::domain::now()).await;
        for p in &summary.providers {
            p.metrics().emit();
        }
        for m in &summary.markets {
            m.metrics().emit();
        }
        // One figure for one alarm: markets whose healthy numbers are fewer than their busiest
        // person's live contacts (the policy's bound).
        let below = summary
            .markets
            .iter()
            .filter(|m| m.error.is_none() && m.headroom < 0)
            .count();
        MetricSet::new(FUNCTION)
            .count("MarketsBelowBound", below as u64)
            .emit();
        tracing::info!(summary = %serde_json::to_string(&summary).unwrap_or_default(), "pool refresh done");
        let failed: Vec<String> = summary
            .markets
            .iter()
            .filter(|m| m.error.is_some())
            .map(|m| m.market.clone())
            .collect();
        if failed.is_empty() {
            Ok(summary)
        } else {
            Err(RefreshError::Markets(failed))
        }
    }

    /// One run at time `now`. Store failures are reported per market in the summary.
    pub async fn refresh(&self, now: UnixTime) -> RefreshSummary {
        let answers = join_all(
            self.inventories
                .iter()
                .map(|p| async move { (p.provider().clone(), p.list_numbers().await) }),
        )
        .await;
        let mut summary = RefreshSummary {
            providers: answers.iter().map(provider_summary).collect(),
            markets: Vec::new(),
        };
        // A provider that failed has no listing: nothing changes for its numbers. Nor when
        // none of an account's numbers points here but some point elsewhere: a mistyped voice
        // URL is far likelier than a whole pool to retire at once.
        let mut listings: BTreeMap<Provider, Listing> = answers
            .into_iter()
            .filter_map(|(provider, answer)| match answer {
                Ok(a) if a.ours.numbers.is_empty() && a.foreign > 0 => None,
                Ok(a) => Some((provider, a.ours)),
                Err(_) => None,
            })
            .collect();
        self.confirm_absences(&mut listings, &mut summary.providers)
            .await;
        let mut run = Run {
            now,
            id: format!("{:016x}", rand::random::<u64>()),
            sample: self.sample_routes(now).await,
            buy_left: self.settings.buying.as_ref().map_or(0, |b| b.per_run),
            moves_left: self.settings.moves_per_run,
        };
        for (market, &needs) in &self.settings.markets {
            let mut m = MarketSummary {
                market: market.to_string(),
                ..MarketSummary::default()
            };
            let refreshed = self
                .refresh_market(&mut run, market, needs, &listings, &mut m)
                .await;
            if let Err(e) = refreshed {
                tracing::error!(market = %market, error = %e, "market not refreshed");
                m.error = Some(e);
            }
            summary.markets.push(m);
        }
        summary
    }

    /// Looks up alone each pooled number that a listing whose absences prove nothing lacks:
    /// one still ours joins the listing, one not found is proven gone (retired by the
    /// reconciliation), and any other (beyond the run's look-ups, failed, or out of time) is
    /// left as it is. Every provider's look-ups run at once, within one time budget.
    async fn confirm_absences(
        &self,
        listings: &mut BTreeMap<Provider, Listing>,
        summaries: &mut [ProviderSummary],
    ) {
        let confirming: Vec<(&Provider, &dyn Vendor)> = self
            .inventories
            .iter()
            .filter_map(|i| Some((i.provider(), i.confirms_absence_with()?)))
            .filter(|(p, _)| listings.contains_key(*p))
            .collect();
        // Their absences prove nothing until looked up, whatever happens below.
        for (provider, _) in &confirming {
            if let Some(listing) = listings.get_mut(*provider) {
                listing.proven_gone = Some(BTreeSet::new());
            }
        }
        let confirming: Vec<_> = confirming
            .into_iter()
            .filter(|(p, _)| listings.get(*p).is_some_and(Listing::is_complete))
            .collect();
        if confirming.is_empty() {
            return;
        }
        let mut pooled = Vec::new();
        for market in self.settings.markets.keys() {
            match self.store.pool_entries(market).await {
                Ok(entries) => pooled.extend(entries.into_iter().map(|e| e.number)),
                Err(e) => {
                    tracing::warn!(market = %market, error = %e, "pool unreadable; no absence is looked up, none is retired this run");
                    for (provider, _) in &confirming {
                        if let Some(listing) = listings.get_mut(*provider) {
                            listing.unreadable += 1;
                        }
                        if let Some(s) = summary_of(summaries, provider) {
                            s.unreadable += 1;
                        }
                    }
                    return;
                }
            }
        }
        let deadline = tokio::time::Instant::now() + LOOKUP_BUDGET;
        let lookups = confirming.iter().map(|&(provider, vendor)| {
            let listed: HashSet<&VirtualNumber> = listings[provider]
                .numbers
                .iter()
                .map(|n| &n.number)
                .collect();
            let mut absent: Vec<&VirtualNumber> = pooled
                .iter()
                .filter(|n| &n.provider == provider && n.state != NumberState::Retired)
                .map(|n| &n.number)
                .filter(|n| !listed.contains(n))
                .collect();
            absent.sort_unstable();
            absent.dedup();
            // A different first number each run: look-ups that fail run after run cannot keep
            // the others from their turn.
            if !absent.is_empty() {
                let first = rand::random::<u64>() % absent.len() as u64;
                absent.rotate_left(first as usize);
            }
            let beyond = absent.split_off(absent.len().min(ABSENCE_LOOKUPS_PER_RUN));
            async move {
                let answers: Vec<_> = stream::iter(absent)
                    .map(|number| async move {
                        // Out of time: not even sent.
                        let answer = if tokio::time::Instant::now() < deadline {
                            tokio::time::timeout_at(deadline, vendor.find_number(number))
                                .await
                                .ok()
                        } else {
                            None
                        };
                        (number, answer)
                    })
                    .buffer_unordered(LOOKUP_CONCURRENCY)
                    .collect()
                    .await;
                (provider, answers, beyond.len())
            }
        });
        for (provider, answers, mut unconfirmed) in join_all(lookups).await {
            let Some(listing) = listings.get_mut(provider) else {
                continue;
            };
            let mut gone = BTreeSet::new();
            for (number, answer) in answers {
                match answer {
                    Some(Ok(Some(found))) => {
                        tracing::info!(provider = %provider, number = %number, "a number the listing skipped is still ours");
                        listing.numbers.push(found);
                    }
                    Some(Ok(None)) => {
                        gone.insert(number.clone());
                    }
                    Some(Err(e)) => {
                        tracing::warn!(provider = %provider, number = %number, error = %e, "absence not proven; the number is left as it is");
                        unconfirmed += 1;
                    }
                    None => {
                        tracing::warn!(provider = %provider, number = %number, "absence not proven within the run's look-up time; the number is left as it is");
                        unconfirmed += 1;
                    }
                }
            }
            listing.proven_gone = Some(gone);
            if let Some(s) = summary_of(summaries, provider) {
                s.unconfirmed = unconfirmed;
            }
        }
    }

    async fn sample_routes(&self, now: UnixTime) -> Option<Vec<SampledRoute>> {
        if self.settings.route_sample == 0 {
            return None;
        }
        match self
            .store
            .sample_routes(now, self.settings.route_sample)
            .await
        {
            Ok(sample) => Some(sample),
            Err(e) => {
                tracing::warn!(error = %e, "route sample failed; no busiest-share figure this run");
                None
            }
        }
    }

    async fn refresh_market(
        &self,
        run: &mut Run,
        market: &Market,
        needs: Capabilities,
        listings: &BTreeMap<Provider, Listing>,
        summary: &mut MarketSummary,
    ) -> Result<(), StoreError> {
        self.reconcile(market, listings, run.now, summary).await?;
        let (numbers, tallies) = self
            .check_health(market, listings, run.now, summary)
            .await?;
        let peak = self.live_peak(market, run.now).await?;
        let capacity = tallies.as_ref().map_or(0, |t| {
            self.settings
                .capacity
                .bound(market, t, self.settings.health.answer_days, run.now)
        });
        let health = pool::health(market, &numbers, needs, peak, capacity);
        summary.record_health(&health);
        if let Some(sample) = &run.sample {
            let routes: Vec<&VirtualNumber> = sample
                .iter()
                .filter(|r| &r.market == market)
                .map(|r| &r.number)
                .collect();
            summary.routes_sampled = routes.len();
            summary.busiest_share = pool::busiest_share(routes).map(|b| b.share());
        }
        summary.needed = pool::purchases_wanted(
            health.headroom,
            self.settings.min_headroom,
            u32::MAX,
            u32::MAX,
        );
        if summary.needed > 0 {
            let vendor = self.market_vendors.get(market).or(self.vendor.as_ref());
            match (&self.settings.buying, vendor) {
                (Some(buying), Some(vendor)) => {
                    let demand = Demand {
                        needs,
                        peak,
                        capacity,
                    };
                    self.buy(run, market, demand, vendor.as_ref(), buying, summary)
                        .await?;
                }
                _ => {
                    tracing::warn!(market = %market, headroom = health.headroom, min_headroom = self.settings.min_headroom, needed = summary.needed, "pool needs more numbers; buying is off");
                }
            }
        }
        // Last, so that numbers bought this run can take the pairs.
        if let Some(mover) = &self.mover {
            self.move_off(mover, run, market, &numbers, summary).await;
        }
        Ok(())
    }

    /// Judges the market's numbers' health and writes what changes, each over the version
    /// read (one that changed underneath is judged again next run). Returns the pool as it
    /// now stands, and the answer tallies of its numbers in service (which also size the pool
    /// by its calls; `None` when they could not be read).
    async fn check_health(
        &self,
        market: &Market,
        listings: &BTreeMap<Provider, Listing>,
        now: UnixTime,
        summary: &mut MarketSummary,
    ) -> Result<(Vec<PoolNumber>, Option<HashMap<VirtualNumber, AnswerTally>>), StoreError> {
        let entries = self.store.pool_entries(market).await?;
        let numbers: Vec<PoolNumber> = entries.iter().map(|e| e.number.clone()).collect();
        let out_of_service: HashSet<VirtualNumber> = listings
            .values()
            .flat_map(|l| &l.numbers)
            .filter(|n| !n.in_service && n.market().as_ref() == Some(market))
            .map(|n| n.number.clone())
            .collect();
        // Every number still carrying calls counts for the capacity; health judges the active.
        let tallies = self.answer_tallies(market, &numbers, now).await;
        let active_tallies: HashMap<VirtualNumber, AnswerTally> = tallies
            .iter()
            .flatten()
            .filter(|(n, _)| {
                numbers
                    .iter()
                    .any(|p| &p.number == *n && p.state == NumberState::Active)
            })
            .map(|(n, t)| (n.clone(), *t))
            .collect();
        let verdict = pool::judge(&Checkup {
            numbers: &numbers,
            out_of_service: &out_of_service,
            tallies: &active_tallies,
            now,
            rules: &self.settings.health,
        });
        summary.answer_rate = verdict.market_answer_rate;
        summary.quarantines_held_back = verdict.held_back;
        if verdict.held_back > 0 {
            tracing::error!(market = %market, held_back = verdict.held_back, "more numbers look unhealthy than the share cap lets quarantine at once; check the providers and carriers");
        }
        let versions: HashMap<&VirtualNumber, u64> = entries
            .iter()
            .map(|e| (&e.number.number, e.version))
            .collect();
        let mut written: HashMap<VirtualNumber, PoolNumber> = HashMap::new();
        for change in &verdict.changes {
            if let Some(after) = self
                .write_change(market, change, &versions, summary)
                .await?
            {
                written.insert(after.number.clone(), after);
            }
        }
        let numbers = numbers
            .into_iter()
            .map(|n| written.remove(&n.number).unwrap_or(n))
            .collect();
        Ok((numbers, tallies))
    }

    async fn write_change(
        &self,
        market: &Market,
        change: &PoolChange,
        versions: &HashMap<&VirtualNumber, u64>,
        summary: &mut MarketSummary,
    ) -> Result<Option<PoolNumber>, StoreError> {
        let expected = change
            .before
            .as_ref()
            .map(|b| versions.get(&b.number).copied().unwrap_or(0));
        match self.store.put_number_if(&change.after, expected).await {
            Ok(_) => {
                summary.count(change.kind);
                let reason = change.after.hold.as_ref().map(|h| h.reason.as_str());
                tracing::info!(market = %market, number = %change.after.number, change = change.kind.as_str(), state = %change.after.state, reason, "pool number changed");
                Ok(Some(change.after.clone()))
            }
            Err(PoolWriteError::NumberChanged(_)) => {
                summary.conflicts += 1;
                Ok(None)
            }
            Err(PoolWriteError::Store(e)) => Err(e),
        }
    }

    /// The answer tallies of the market's numbers not retired, over the rules' window; `None`
    /// (the answer-rate signal and the capacity bound off this run) if they cannot be read.
    async fn answer_tallies(
        &self,
        market: &Market,
        numbers: &[PoolNumber],
        now: UnixTime,
    ) -> Option<HashMap<VirtualNumber, AnswerTally>> {
        let days = self.settings.health.answer_days;
        let reads = stream::iter(
            numbers
                .iter()
                .filter(|n| n.state != NumberState::Retired)
                .map(|n| async move {
                    let tally = self.store.answer_tally(&n.number, now, days).await;
                    (n.number.clone(), tally)
                }),
        )
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
        let mut tallies = HashMap::new();
        for (number, tally) in reads {
            match tally {
                Ok(t) if t.attempted > 0 => {
                    tallies.insert(number, t);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(market = %market, error = %e, "answer tallies unreadable; no answer-rate signal and no capacity bound this run");
                    return None;
                }
            }
        }
        Some(tallies)
    }

    /// Moves the live pairs of the market's numbers leaving service (quarantined, cooling off,
    /// or retired lately) to healthy numbers, at most `moves_per_run` orders a run: the rest,
    /// and whatever failed, wait for the next run. Each order's move is one transaction.
    async fn move_off(
        &self,
        mover: &Mover,
        run: &mut Run,
        market: &Market,
        numbers: &[PoolNumber],
        summary: &mut MarketSummary,
    ) {
        let leaving = numbers.iter().filter(|n| match n.state {
            NumberState::Quarantined | NumberState::CoolingOff => true,
            // Retired lately (by its provider or an operator): routes on it may still live.
            NumberState::Retired => n
                .hold
                .as_ref()
                .is_some_and(|h| h.since + self.settings.retired_lookback > run.now),
            NumberState::Active | NumberState::Draining => false,
        });
        // Each order once, however many of its numbers leave: a move plans all of them.
        let mut orders: Vec<OrderId> = Vec::new();
        let mut seen: HashSet<OrderId> = HashSet::new();
        for n in leaving {
            let room = run.moves_left.saturating_sub(orders.len());
            match self
                .store
                .orders_on(&n.number, run.now, room + WAITING_COUNT_CAP)
                .await
            {
                Ok(found) => {
                    for order in found.orders {
                        if !seen.insert(order.clone()) {
                            continue;
                        }
                        if orders.len() < run.moves_left {
                            orders.push(order);
                        } else {
                            summary.orders_waiting += 1;
                        }
                    }
                }
                Err(e) => {
                    summary.moves_failed += 1;
                    tracing::warn!(market = %market, number = %n.number, error = %e, "orders on a number leaving service not read; tried again next run");
                }
            }
        }
        run.moves_left = run.moves_left.saturating_sub(orders.len());
        let now = run.now;
        let moves = stream::iter(
            orders
                .iter()
                .map(|order| async move { (order, mover.assigner.move_off(order, now).await) }),
        )
        .buffer_unordered(MOVE_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
        for (order, moved) in moves {
            match moved {
                Ok(Moved::Moved { session, pairs, .. }) => {
                    summary.orders_moved += 1;
                    summary.pairs_moved += pairs;
                    tracing::info!(market = %market, order_id = %order, pairs, revision = session.revision, "pairs moved off numbers leaving service");
                    if let Some(notify) = &mover.notify {
                        let note = NumbersAssigned::new(MOVE_EVENT_ID, &session);
                        if let Err(e) = notify.notify(&note).await {
                            summary.notify_failed += 1;
                            tracing::warn!(order_id = %order, error = %e, "NumbersAssigned of a move not sent; apps can still ask lookup");
                        }
                    }
                }
                Ok(Moved::Nothing) => {}
                Err(e) => {
                    summary.moves_failed += 1;
                    summary.orders_waiting += 1;
                    let level_error = !matches!(
                        e,
                        AssignError::PoolExhausted(_) | AssignError::Contention { .. }
                    );
                    if level_error {
                        tracing::error!(market = %market, order_id = %order, error = %e, "pairs not moved; tried again next run");
                    } else {
                        tracing::warn!(market = %market, order_id = %order, error = %e, "pairs not moved; tried again next run");
                    }
                }
            }
        }
    }

    /// Brings the market's pool in step, re-reading and deciding again whatever lost a race.
    /// Returns the pool as it now stands: the last read with this run's writes applied.
    async fn reconcile(
        &self,
        market: &Market,
        listings: &BTreeMap<Provider, Listing>,
        now: UnixTime,
        summary: &mut MarketSummary,
    ) -> Result<Vec<PoolNumber>, StoreError> {
        let mut current = Vec::new();
        for pass in 1..=MAX_PASSES {
            let entries = self.store.pool_entries(market).await?;
            let versions: HashMap<&VirtualNumber, u64> = entries
                .iter()
                .map(|e| (&e.number.number, e.version))
                .collect();
            let stored: Vec<PoolNumber> = entries.iter().map(|e| e.number.clone()).collect();
            let changes = pool::reconcile(&Reconcile {
                market,
                stored: &stored,
                listings,
                marked: &self.settings.drain,
                now,
            });
            let results: Vec<_> = stream::iter(changes.iter().map(|change| {
                let expected = change
                    .before
                    .as_ref()
                    .map(|b| versions.get(&b.number).copied().unwrap_or(0));
                async move {
                    (
                        change,
                        self.store.put_number_if(&change.after, expected).await,
                    )
                }
            }))
            .buffer_unordered(WRITE_CONCURRENCY)
            .collect()
            .await;
            let mut written: HashMap<&VirtualNumber, &PoolNumber> = HashMap::new();
            let mut lost = 0;
            for (change, result) in results {
                match result {
                    Ok(_) => {
                        written.insert(&change.after.number, &change.after);
                        summary.count(change.kind);
                        tracing::info!(market = %market, number = %change.after.number, provider = %change.after.provider, change = change.kind.as_str(), state = %change.after.state, "pool number changed");
                    }
                    Err(PoolWriteError::NumberChanged(_)) => lost += 1,
                    Err(PoolWriteError::Store(e)) => return Err(e),
                }
            }
            summary.conflicts += lost;
            // The read, with what this run wrote in place of what it replaced, and the additions.
            current = stored
                .iter()
                .map(|v| written.remove(&v.number).unwrap_or(v).clone())
                .collect();
            current.extend(written.into_values().cloned());
            if lost == 0 {
                return Ok(current);
            }
            tracing::info!(market = %market, pass, lost, "pool numbers changed underneath, reading again");
        }
        tracing::warn!(market = %market, "pool still changing underneath; the rest is left to the next run");
        Ok(current)
    }

    /// The most live contacts one person held today or yesterday (UTC), so that the figure
    /// does not fall to nothing at midnight.
    async fn live_peak(&self, market: &Market, now: UnixTime) -> Result<u32, StoreError> {
        let (today, yesterday) = (pool::day_key(now), pool::day_key(now - DAY));
        let (today, yesterday) = tokio::try_join!(
            self.store.live_peak(market, &today),
            self.store.live_peak(market, &yesterday),
        )?;
        Ok(today.unwrap_or(0).max(yesterday.unwrap_or(0)))
    }

    async fn numbers(&self, market: &Market) -> Result<Vec<PoolNumber>, StoreError> {
        Ok(self
            .store
            .pool_entries(market)
            .await?
            .into_iter()
            .map(|e| e.number)
            .collect())
    }

    /// Buys what the market is short, under the market's buying lease.
    async fn buy(
        &self,
        run: &mut Run,
        market: &Market,
        demand: Demand,
        vendor: &dyn Vendor,
        buying: &Buying,
        summary: &mut MarketSummary,
    ) -> Result<(), StoreError> {
        if run.buy_left == 0 {
            summary.buying_stopped = Some(BuyingStopped::RunCap);
            return Ok(());
        }
        let lease = format!("pool-buy-{market}");
        let until = run.now + i64::try_from(buying.lease.as_secs()).unwrap_or(DAY);
        if self
            .store
            .take_lease(&lease, &run.id, run.now, until)
            .await?
            == LeaseTake::Held
        {
            tracing::info!(market = %market, "another run is buying for this market");
            summary.buying_stopped = Some(BuyingStopped::AnotherRunBuying);
            return Ok(());
        }
        let bought = self
            .buy_under_lease(run, market, demand, vendor, buying, summary)
            .await;
        if let Err(e) = self.store.release_lease(&lease, &run.id).await {
            tracing::warn!(market = %market, error = %e, "buying lease not released; it expires on its own");
        }
        bought
    }

    async fn buy_under_lease(
        &self,
        run: &mut Run,
        market: &Market,
        demand: Demand,
        vendor: &dyn Vendor,
        buying: &Buying,
        summary: &mut MarketSummary,
    ) -> Result<(), StoreError> {
        let now = run.now;
        // Read again under the lease: a run that held it before may have filled the need.
        let numbers = self.numbers(market).await?;
        let health = pool::health(market, &numbers, demand.needs, demand.peak, demand.capacity);
        let want = pool::purchases_wanted(
            health.headroom,
            self.settings.min_headroom,
            run.buy_left,
            u32::MAX,
        );
        if want == 0 {
            return Ok(());
        }
        let ours: HashSet<&VirtualNumber> = numbers.iter().map(|v| &v.number).collect();
        let offered = match vendor
            .offered_numbers(market, demand.needs, want.saturating_mul(2).max(5))
            .await
        {
            Ok(offered) => offered,
            Err(e) => {
                tracing::warn!(market = %market, error = %e, "no numbers on offer");
                summary.buying_stopped = Some(BuyingStopped::Provider(e));
                return Ok(());
            }
        };
        let month = pool::month_key(now);
        for number in offered.into_iter().filter(|n| !ours.contains(n)) {
            if summary.bought == want {
                break;
            }
            if self
                .store
                .count_purchase(&month, buying.per_month, now + PURCHASE_COUNT_RETENTION)
                .await?
                == PurchaseCount::AtCap
            {
                tracing::warn!(market = %market, per_month = buying.per_month, "monthly purchase cap reached");
                summary.buying_stopped = Some(BuyingStopped::MonthlyCap);
                break;
            }
            let listed = match vendor.buy_number(&number, &buying.webhooks).await {
                Ok(listed) => listed,
                Err(PostError::Refused(e)) => {
                    if let Err(e) = self.store.uncount_purchase(&month).await {
                        tracing::warn!(error = %e, "failed purchase still counted this month");
                    }
                    tracing::warn!(market = %market, number = %number, error = %e, "purchase failed");
                    summary.buying_stopped = Some(BuyingStopped::Provider(e));
                    break;
                }
                // Never sent again, and never taken back from the month's count.
                Err(PostError::Unconfirmed(e)) => match self.settle(vendor, &number).await {
                    Some(listed) => {
                        tracing::info!(market = %market, number = %number, error = %e, "unanswered purchase found in the account's numbers");
                        listed
                    }
                    None => {
                        run.buy_left = run.buy_left.saturating_sub(1);
                        summary.unconfirmed += 1;
                        tracing::warn!(market = %market, number = %number, error = %e, "purchase may have gone through; counted this month, the next listing takes the number in if it did");
                        summary.buying_stopped = Some(BuyingStopped::PurchaseUnconfirmed(e));
                        break;
                    }
                },
            };
            summary.bought += 1;
            run.buy_left -= 1;
            tracing::info!(market = %market, number = %number, provider = %vendor.provider(), "bought a number");
            let vn = PoolNumber {
                number,
                provider: vendor.provider().clone(),
                market: market.clone(),
                capabilities: listed.capabilities,
                state: NumberState::Active,
                hold: None,
            };
            match self.store.put_number_if(&vn, None).await {
                // Already added by a concurrent refresh that listed it.
                Ok(_) | Err(PoolWriteError::NumberChanged(_)) => {}
                Err(PoolWriteError::Store(e)) => return Err(e),
            }
        }
        if summary.buying_stopped.is_none() {
            if summary.bought < want {
                summary.buying_stopped = Some(BuyingStopped::TooFewOnOffer);
            } else if run.buy_left == 0 {
                summary.buying_stopped = Some(BuyingStopped::RunCap);
            }
        }
        Ok(())
    }

    /// Looks for `number` in the account after its purchase went unanswered: the number as
    /// listed if the purchase went through and the account shows it already.
    async fn settle(&self, vendor: &dyn Vendor, number: &VirtualNumber) -> Option<ListedNumber> {
        match vendor.find_number(number).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(provider = %vendor.provider(), error = %e, "could not look for an unanswered purchase");
                None
            }
        }
    }
}

/// What a market's numbers must cover: the channels its pairs need, and the most live contacts
/// one person held there lately.
#[derive(Debug, Clone, Copy)]
struct Demand {
    needs: Capabilities,
    peak: u32,
    /// The numbers the market's calls need.
    capacity: u32,
}

/// What one run carries from market to market.
struct Run {
    now: UnixTime,
    /// The holder name of the buying leases this run takes.
    id: String,
    /// Live routes sampled once for all markets.
    sample: Option<Vec<SampledRoute>>,
    /// Numbers this run may still buy (the per-run cap).
    buy_left: u32,
    /// Orders this run may still move.
    moves_left: usize,
}

fn summary_of<'a>(
    summaries: &'a mut [ProviderSummary],
    provider: &Provider,
) -> Option<&'a mut ProviderSummary> {
    summaries
        .iter_mut()
        .find(|s| s.provider == provider.as_str())
}

fn provider_summary(
    (provider, listing): &(Provider, Result<AccountNumbers, ProviderError>),
) -> ProviderSummary {
    match listing {
        Ok(AccountNumbers { ours: l, foreign }) => {
            if l.unreadable > 0 {
                tracing::warn!(provider = %provider, unreadable = l.unreadable, "provider listed entries we cannot read; none of its numbers is retired this run");
            }
            if *foreign > 0 {
                // Counts only: which numbers is the provider console's business.
                tracing::info!(provider = %provider, foreign, ours = l.numbers.len(), "account numbers that do not point at this deployment left out");
            }
            if l.numbers.is_empty() && *foreign > 0 {
                tracing::warn!(provider = %provider, foreign, "none of the account's numbers points at this deployment: check the voice URL or flows configured; none of its numbers is retired this run");
            }
            ProviderSummary {
                provider: provider.as_str().to_owned(),
                listed: l.numbers.len(),
                unreadable: l.unreadable,
                unconfirmed: 0,
                foreign: *foreign,
                error: None,
            }
        }
        Err(e) => {
            tracing::error!(provider = %provider, error = %e, "provider not listed; its numbers are left as they are");
            ProviderSummary {
                provider: provider.as_str().to_owned(),
                listed: 0,
                unreadable: 0,
                unconfirmed: 0,
                foreign: 0,
                error: Some(e.clone()),
            }
        }
    }
}

impl MarketSummary {
    fn count(&mut self, kind: ChangeKind) {
        match kind {
            ChangeKind::Added => self.added += 1,
            ChangeKind::Restored => self.restored += 1,
            ChangeKind::Drained => self.drained += 1,
            ChangeKind::Retired => self.retired += 1,
            ChangeKind::Updated => self.updated += 1,
            ChangeKind::Quarantined => self.quarantined += 1,
            ChangeKind::CoolingOff => self.cooling_off += 1,
            ChangeKind::Reactivated => self.reactivated += 1,
        }
    }

    fn record_health(&mut self, h: &PoolHealth) {
        self.numbers_active = h.active;
        self.numbers_draining = h.draining;
        self.numbers_quarantined = h.quarantined;
        self.numbers_cooling_off = h.cooling_off;
        self.numbers_retired = h.retired;
        self.eligible = h.eligible;
        self.peak_live_contacts = h.peak_live_contacts;
        self.capacity_bound = h.capacity_bound;
        self.headroom = h.headroom;
    }

    /// The market's EMF record (see README: what the metrics mean).
    pub fn metrics(&self) -> MetricSet {
        let set = MetricSet::new(FUNCTION).dimension("Market", &self.market);
        if self.error.is_some() {
            return set.count("MarketFailed", 1);
        }
        let set = set
            .count("MarketFailed", 0)
            .count("NumbersActive", self.numbers_active as u64)
            .count("NumbersDraining", self.numbers_draining as u64)
            .count("NumbersQuarantined", self.numbers_quarantined as u64)
            .count("NumbersCoolingOff", self.numbers_cooling_off as u64)
            .count("NumbersRetired", self.numbers_retired as u64)
            .count("Quarantined", self.quarantined as u64)
            .count("QuarantinesHeldBack", self.quarantines_held_back as u64)
            .count("PairsMoved", self.pairs_moved as u64)
            .count("PairsWaiting", self.orders_waiting as u64)
            .count("MovesFailed", self.moves_failed as u64)
            .count("Added", (self.added + self.restored) as u64)
            .count("Drained", self.drained as u64)
            .count("Retired", self.retired as u64)
            .count("Bought", u64::from(self.bought))
            .count("PurchasesUnconfirmed", u64::from(self.unconfirmed))
            .count(
                "NumbersNeeded",
                u64::from(self.needed.saturating_sub(self.bought)),
            )
            .count("WriteConflicts", self.conflicts as u64)
            .value("Headroom", self.headroom as f64, Unit::Count)
            .count("PeakLiveContacts", u64::from(self.peak_live_contacts))
            .count("CapacityBound", u64::from(self.capacity_bound));
        let set = match self.answer_rate {
            Some(rate) => set.value("AnswerRate", rate * 100.0, Unit::Percent),
            None => set,
        };
        match self.busiest_share {
            Some(share) => set
                .value("BusiestShare", share * 100.0, Unit::Percent)
                .count("RoutesSampled", self.routes_sampled as u64),
            None => set,
        }
    }
}

impl ProviderSummary {
    pub fn metrics(&self) -> MetricSet {
        MetricSet::new(FUNCTION)
            .dimension("Provider", &self.provider)
            .count("ProviderFailed", u64::from(self.error.is_some()))
            .count("ProviderNumbers", self.listed as u64)
            .count("ProviderUnreadable", self.unreadable as u64)
            .count("ProviderUnconfirmed", self.unconfirmed as u64)
            .count("ProviderForeign", self.foreign as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_writes_its_errors_as_their_messages() {
        let summary = RefreshSummary {
            providers: vec![ProviderSummary {
                provider: "twilio".into(),
                listed: 0,
                unreadable: 0,
                unconfirmed: 0,
                foreign: 0,
                error: Some(ProviderError::Timeout {
                    provider: "twilio".parse().unwrap(),
                    operation: "IncomingPhoneNumbers list",
                }),
            }],
            markets: vec![MarketSummary {
                market: "US".into(),
                buying_stopped: Some(BuyingStopped::MonthlyCap),
                error: Some(StoreError::Throttled),
                ..MarketSummary::default()
            }],
        };

        let json = serde_json::to_value(&summary).unwrap();

        assert_eq!(
            json["providers"][0]["error"],
            "twilio: IncomingPhoneNumbers list did not answer within the timeout"
        );
        assert_eq!(json["markets"][0]["buying_stopped"], "monthly cap reached");
        assert_eq!(json["markets"][0]["error"], "store throttled the request");
        let healthy = serde_json::to_value(MarketSummary::default()).unwrap();
        assert!(healthy["error"].is_null() && healthy["buying_stopped"].is_null());
    }
}
