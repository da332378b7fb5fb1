//! Shared by pool-refresh's integration tests: fixtures, fakes of the providers' APIs on
//! wiremock, and a refresher wired to them.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use pool_refresh::inventory::{
    Exotel, ExotelAccount, HttpPolicy, Inventory, Twilio, TwilioAccount, TwilioAuth,
    TwilioNumberType, Vendor, Webhooks,
};
use pool_refresh::{Buying, RefreshSettings, Refresher};
use reqwest::Url;
use serde_json::{json, Value};
use vnmask::config::Secret;
use vnmask::domain::{Capabilities, Market, NumberState};
use vnmask::store::dynamodb::DynamoStore;
use vnmask::store::{PoolEntry, PoolUpkeep, Store};
use vnmask_tests::LocalDynamo;
use wiremock::matchers::{method, path, query_param_is_missing};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub const TWILIO_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const TWILIO_TOKEN: &str = "twilio-auth-token-not-real";
pub const EXOTEL_SID: &str = "vnmask1";
/// Our voice webhook, as the fixtures' numbers point at it.
pub const TWILIO_VOICE_URL: &str = "https://hooks.example.com/webhook/twilio/voice";
/// Our Exotel flow, as the fixtures' ExoPhones start it.
pub const EXOTEL_APP_ID: &str = "271829";

pub fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn json_fixture(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

/// Quick retries, so that tests of retrying take milliseconds.
pub fn fast_policy() -> HttpPolicy {
    HttpPolicy {
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        max_attempts: 3,
        backoff: Duration::from_millis(5),
        max_retry_after: Duration::from_secs(5),
    }
}

pub fn twilio_account(server: &MockServer) -> TwilioAccount {
    TwilioAccount {
        account_sid: TWILIO_SID.into(),
        auth: TwilioAuth::AuthToken(Secret::new(TWILIO_TOKEN)),
        subaccount_sid: None,
        voice_url: Some(Url::parse(TWILIO_VOICE_URL).unwrap()),
        base: Url::parse(&server.uri()).unwrap(),
        number_type: TwilioNumberType::Local,
        address_sid: None,
        bundle_sid: None,
    }
}

pub fn twilio(server: &MockServer) -> Arc<Twilio> {
    twilio_with(server, fast_policy())
}

/// Twilio asked with `policy` (e.g. a short timeout, for purchases that go unanswered).
pub fn twilio_with(server: &MockServer, policy: HttpPolicy) -> Arc<Twilio> {
    Arc::new(Twilio::new(
        &twilio_account(server),
        policy.client().unwrap(),
        policy,
    ))
}

/// [`fast_policy`] with a timeout that an answer [`LATE`] misses.
pub fn short_timeout() -> HttpPolicy {
    HttpPolicy {
        timeout: Duration::from_millis(500),
        ..fast_policy()
    }
}

/// Late enough to miss [`short_timeout`].
pub const LATE: Duration = Duration::from_secs(2);

pub fn exotel(server: &MockServer) -> Arc<Exotel> {
    Arc::new(Exotel::new(
        &ExotelAccount {
            account_sid: EXOTEL_SID.into(),
            api_key: "exotel-key".into(),
            api_token: Secret::new("exotel-token-not-real"),
            base: Url::parse(&server.uri()).unwrap(),
            app_ids: BTreeSet::from([EXOTEL_APP_ID.to_owned()]),
        },
        fast_policy().client().unwrap(),
        fast_policy(),
    ))
}

pub fn twilio_path(rest: &str) -> String {
    format!("/2010-04-01/Accounts/{TWILIO_SID}/{rest}")
}

/// One `IncomingPhoneNumbers` page (the documented shape) listing `numbers`: (E.164, voice, sms).
pub fn twilio_page(numbers: &[(&str, bool, bool)]) -> Value {
    let template = json_fixture("twilio/incoming_phone_number.json");
    let entries: Vec<Value> = numbers
        .iter()
        .map(|(n, voice, sms)| {
            let mut e = template.clone();
            e["phone_number"] = json!(n);
            e["friendly_name"] = json!(n);
            e["capabilities"]["voice"] = json!(voice);
            e["capabilities"]["sms"] = json!(sms);
            e
        })
        .collect();
    let mut page = json_fixture("twilio/incoming_phone_numbers_page2.json");
    page["incoming_phone_numbers"] = json!(entries);
    page["page"] = json!(0);
    page["next_page_uri"] = Value::Null;
    page
}

/// One `IncomingPhoneNumbers` page listing `numbers` (voice and SMS), each with its voice URL.
pub fn twilio_page_at(numbers: &[(&str, &str)]) -> Value {
    let mut page = twilio_page(
        &numbers
            .iter()
            .map(|(n, _)| (*n, true, true))
            .collect::<Vec<_>>(),
    );
    for (i, (_, voice_url)) in numbers.iter().enumerate() {
        page["incoming_phone_numbers"][i]["voice_url"] = json!(voice_url);
    }
    page
}

/// Twilio lists `numbers` in one page.
pub async fn twilio_lists(server: &MockServer, numbers: &[(&str, bool, bool)]) {
    Mock::given(method("GET"))
        .and(path(twilio_path("IncomingPhoneNumbers.json")))
        .and(query_param_is_missing("Page"))
        .respond_with(ResponseTemplate::new(200).set_body_json(twilio_page(numbers)))
        .mount(server)
        .await;
}

/// Twilio offers the numbers of the AvailablePhoneNumbers fixture.
pub async fn twilio_offers(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path(twilio_path("AvailablePhoneNumbers/US/Local.json")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string(fixture("twilio/available_phone_numbers_us_local.json")),
        )
        .mount(server)
        .await;
}

/// Answers an `IncomingPhoneNumbers` create as Twilio does: 201 and the new number's resource.
pub struct TwilioCreates;

impl Respond for TwilioCreates {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let form: Vec<(String, String)> = serde_urlencoded_pairs(&request.body);
        let get = |k: &str| {
            form.iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let mut e = json_fixture("twilio/incoming_phone_number.json");
        e["phone_number"] = json!(get("PhoneNumber"));
        e["voice_url"] = json!(get("VoiceUrl"));
        e["sms_url"] = json!(get("SmsUrl"));
        ResponseTemplate::new(201).set_body_json(e)
    }
}

/// Answers as `R` does, [`LATE`].
pub struct Late<R>(pub R);

impl<R: Respond> Respond for Late<R> {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        self.0.respond(request).set_delay(LATE)
    }
}

/// Answers an `IncomingPhoneNumbers?PhoneNumber=` lookup listing the number asked for, as
/// Twilio does once a purchase went through.
pub struct TwilioFinds;

impl Respond for TwilioFinds {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let asked = request
            .url
            .query_pairs()
            .find(|(k, _)| k == "PhoneNumber")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        ResponseTemplate::new(200).set_body_json(twilio_page(&[(asked.as_str(), true, true)]))
    }
}

/// Whether a request is an `IncomingPhoneNumbers` lookup by number.
pub fn looks_up_a_number(request: &Request) -> bool {
    request.url.path() == twilio_path("IncomingPhoneNumbers.json")
        && request.url.query_pairs().any(|(k, _)| k == "PhoneNumber")
}

/// The pairs of an `application/x-www-form-urlencoded` body.
pub fn serde_urlencoded_pairs(body: &[u8]) -> Vec<(String, String)> {
    Url::parse(&format!("http://x/?{}", String::from_utf8_lossy(body)))
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub fn market(m: &str) -> Market {
    m.parse().unwrap()
}

pub fn settings(markets: &[&str]) -> RefreshSettings {
    RefreshSettings {
        markets: markets
            .iter()
            .map(|m| (market(m), Capabilities::VOICE_AND_SMS))
            .collect(),
        drain: HashSet::new(),
        min_headroom: 0,
        buying: None,
        route_sample: 1000,
        health: vnmask::pool::HealthRules::default(),
        moves_per_run: 500,
        retired_lookback: 2 * 24 * 3600,
        capacity: pool_refresh::CapacityRules::default(),
    }
}

pub fn buying(per_run: u32, per_month: u32) -> Buying {
    Buying {
        per_run,
        per_month,
        webhooks: Webhooks {
            voice_url: Url::parse("https://hooks.example.com/webhook/twilio/voice").unwrap(),
            sms_url: Url::parse("https://hooks.example.com/webhook/twilio/sms").unwrap(),
        },
        lease: Duration::from_secs(900),
    }
}

/// The store pool-refresh runs on in production: DynamoDB without keys, here over the test's
/// table (which tests seed through the keyed `dynamo.store`).
pub fn keyless(dynamo: &LocalDynamo) -> Arc<DynamoStore> {
    Arc::new(DynamoStore::without_keys(
        dynamo.client.clone(),
        dynamo.table.clone(),
    ))
}

pub fn refresher(
    store: Arc<dyn PoolUpkeep>,
    inventories: Vec<Arc<dyn Inventory>>,
    vendor: Option<Arc<dyn Vendor>>,
    settings: RefreshSettings,
) -> Refresher {
    Refresher::new(store, inventories, vendor, settings)
}

/// The market's pool as stored: number → (state, capabilities, provider, version).
pub async fn pool_state(
    store: &dyn Store,
    m: &str,
) -> BTreeMap<String, (NumberState, Capabilities, String, u64)> {
    store
        .pool_entries(&market(m))
        .await
        .unwrap()
        .into_iter()
        .map(|PoolEntry { number: v, version }| {
            (
                v.number.as_str().to_owned(),
                (
                    v.state,
                    v.capabilities,
                    v.provider.as_str().to_owned(),
                    version,
                ),
            )
        })
        .collect()
}

pub fn state_of(
    pool: &BTreeMap<String, (NumberState, Capabilities, String, u64)>,
    n: &str,
) -> NumberState {
    pool.get(n).unwrap_or_else(|| panic!("{n} not pooled")).0
}
