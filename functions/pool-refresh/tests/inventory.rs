//! The providers' inventory clients against wiremock fakes of their APIs, answering with bodies
//! shaped like the providers' documented examples (tests/fixtures).

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use pool_refresh::inventory::{Inventory, PostError, ProviderError, Vendor};
use vnmask::domain::{Capabilities, VirtualNumber};
use vnmask::pool::Listing;
use wiremock::matchers::{
    body_string_contains, header, method, path, query_param, query_param_is_missing,
};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn numbers(listing: &Listing) -> Vec<&str> {
    listing.numbers.iter().map(|n| n.number.as_str()).collect()
}

#[tokio::test]
async fn twilio_listing_follows_next_page_uri_across_three_pages() {
    let server = MockServer::start().await;
    for (page, matcher) in [
        (0, None),
        (1, Some("PAb5b4d0f5c4e1a7c2a1b2c3d4e5f60001")),
        (2, Some("PAb5b4d0f5c4e1a7c2a1b2c3d4e5f60002")),
    ] {
        let mock = Mock::given(method("GET")).and(path(twilio_path("IncomingPhoneNumbers.json")));
        let mock = match matcher {
            None => mock.and(query_param_is_missing("PageToken")),
            Some(token) => mock.and(query_param("PageToken", token)),
        };
        mock.and(header(
            "authorization",
            basic_auth(TWILIO_SID, TWILIO_TOKEN).as_str(),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_string(fixture(&format!(
            "twilio/incoming_phone_numbers_page{page}.json"
        ))))
        .expect(1)
        .mount(&server)
        .await;
    }

    let listing = twilio(&server).list_numbers().await.unwrap().ours;

    assert_eq!(
        numbers(&listing),
        [
            "+14155551000",
            "+14155551001",
            "+14155551002",
            "+14155551003",
            "+14155551004"
        ]
    );
    assert_eq!(listing.unreadable, 0);
    assert!(listing
        .numbers
        .iter()
        .all(|n| n.capabilities == Capabilities::VOICE_AND_SMS
            && n.market().unwrap().as_str() == "US"));
    let first = &server.received_requests().await.unwrap()[0];
    assert_eq!(first.url.query(), Some("PageSize=1000"));
}

#[tokio::test]
async fn twilio_429_is_retried_after_the_time_retry_after_asks() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    twilio_lists(&server, &[("+14155551000", true, true)]).await;

    let started = Instant::now();
    let listing = twilio(&server).list_numbers().await.unwrap().ours;

    assert_eq!(numbers(&listing), ["+14155551000"]);
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited {:?}, Retry-After asked for 1 s",
        started.elapsed()
    );
}

#[tokio::test]
async fn twilio_500_throughout_fails_after_the_allowed_attempts() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500))
        .expect(3)
        .mount(&server)
        .await;

    let err = twilio(&server).list_numbers().await.unwrap_err();

    assert!(
        matches!(err, ProviderError::Status { status: 500, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "twilio: IncomingPhoneNumbers list answered HTTP 500"
    );
}

#[tokio::test]
async fn twilio_401_is_not_retried_and_the_error_holds_no_credential() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_string(fixture("twilio/error_401.json")))
        .expect(1)
        .mount(&server)
        .await;

    let err = twilio(&server).list_numbers().await.unwrap_err();

    assert!(matches!(err, ProviderError::Status { status: 401, .. }));
    assert!(!format!("{err} {err:?}").contains(TWILIO_TOKEN));
}

#[tokio::test]
async fn twilio_malformed_json_is_a_clear_error() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(r#"{"incoming_phone_numbers": [{"#, "application/json"),
        )
        .mount(&server)
        .await;

    let err = twilio(&server).list_numbers().await.unwrap_err();

    assert!(matches!(err, ProviderError::Malformed { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message
            .starts_with("twilio: malformed IncomingPhoneNumbers list response: EOF while parsing"),
        "{message}"
    );
}

#[tokio::test]
async fn twilio_page_without_its_list_is_malformed() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"page": 0})))
        .mount(&server)
        .await;

    let err = twilio(&server).list_numbers().await.unwrap_err();

    assert!(
        err.to_string()
            .contains("missing field `incoming_phone_numbers`"),
        "{err}"
    );
}

#[tokio::test]
async fn a_page_linking_to_itself_is_malformed() {
    let server = MockServer::start().await;
    let mut page = twilio_page(&[("+14155551000", true, true)]);
    page["next_page_uri"] =
        serde_json::json!(twilio_path("IncomingPhoneNumbers.json?PageSize=1000"));
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page))
        .expect(1)
        .mount(&server)
        .await;

    let err = twilio(&server).list_numbers().await.unwrap_err();

    assert!(matches!(err, ProviderError::Malformed { .. }), "{err:?}");
}

#[tokio::test]
async fn unreadable_entries_are_counted_not_guessed() {
    let server = MockServer::start().await;
    let mut page = twilio_page(&[("+14155551000", true, true), ("+14155551001", true, true)]);
    page["incoming_phone_numbers"][1]["phone_number"] = serde_json::json!("(415) 555-1001");
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page))
        .mount(&server)
        .await;

    let listing = twilio(&server).list_numbers().await.unwrap().ours;

    assert_eq!(numbers(&listing), ["+14155551000"]);
    assert_eq!(listing.unreadable, 1);
}

#[tokio::test]
async fn twilio_takes_only_the_numbers_whose_calls_come_to_our_voice_url() {
    let server = MockServer::start().await;
    let mut page = twilio_page_at(&[
        ("+14155551000", TWILIO_VOICE_URL),
        // The same URL as Twilio may write it back: scheme and host are case-insensitive.
        (
            "+14155551001",
            "HTTPS://Hooks.Example.com/webhook/twilio/voice",
        ),
        ("+14155551002", "https://support.example.com/ivr"),
        ("+14155551003", TWILIO_VOICE_URL),
        ("+14155551004", TWILIO_VOICE_URL),
        ("+14155551005", ""),
        (
            "+14155551006",
            "https://hooks.example.com/webhook/twilio/voice/",
        ),
    ]);
    // A TwiML application, or a SIP trunk, takes the calls instead of the voice URL.
    page["incoming_phone_numbers"][3]["voice_application_sid"] =
        serde_json::json!("AP0123456789abcdef0123456789abcdef");
    page["incoming_phone_numbers"][4]["trunk_sid"] =
        serde_json::json!("TK0123456789abcdef0123456789abcdef");
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page))
        .mount(&server)
        .await;

    let listed = twilio(&server).list_numbers().await.unwrap();

    assert_eq!(numbers(&listed.ours), ["+14155551000", "+14155551001"]);
    assert_eq!((listed.foreign, listed.ours.unreadable), (5, 0));
}

#[tokio::test]
async fn a_reserved_twilio_subaccount_is_listed_and_all_its_numbers_are_ours() {
    const SUB_SID: &str = "ACfedcba9876543210fedcba9876543210";
    let server = MockServer::start().await;
    let mut page = twilio_page_at(&[
        ("+14155551000", TWILIO_VOICE_URL),
        ("+14155551001", "https://elsewhere.example.com/voice"),
    ]);
    for entry in page["incoming_phone_numbers"].as_array_mut().unwrap() {
        entry["account_sid"] = serde_json::json!(SUB_SID);
    }
    Mock::given(method("GET"))
        .and(path(format!(
            "/2010-04-01/Accounts/{SUB_SID}/IncomingPhoneNumbers.json"
        )))
        // The owner's auth token signs for its sub-accounts.
        .and(header(
            "authorization",
            basic_auth(TWILIO_SID, TWILIO_TOKEN).as_str(),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(page))
        .expect(1)
        .mount(&server)
        .await;
    let mut account = twilio_account(&server);
    account.subaccount_sid = Some(SUB_SID.into());
    account.voice_url = None;
    let twilio = pool_refresh::inventory::Twilio::new(
        &account,
        fast_policy().client().unwrap(),
        fast_policy(),
    );

    let listed = twilio.list_numbers().await.unwrap();

    assert_eq!(numbers(&listed.ours), ["+14155551000", "+14155551001"]);
    assert_eq!(listed.foreign, 0);
}

#[tokio::test]
async fn exotel_takes_only_the_exophones_connected_to_our_flows() {
    let server = MockServer::start().await;
    let mut page = json_fixture("exotel/incoming_phone_numbers_page0.json");
    page["next_page_uri"] = serde_json::Value::Null;
    page["incoming_phone_numbers"][1]["voice_url"] =
        serde_json::json!("http://my.exotel.com/vnmask1/exoml/start_voice/999001");
    let mut third = page["incoming_phone_numbers"][0].clone();
    third["phone_number"] = serde_json::json!("+911140001009");
    third["voice_url"] = serde_json::Value::Null;
    page["incoming_phone_numbers"]
        .as_array_mut()
        .unwrap()
        .push(third);
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page))
        .mount(&server)
        .await;

    let listed = exotel(&server).list_numbers().await.unwrap();

    assert_eq!(numbers(&listed.ours), ["+911140001000"]);
    assert_eq!((listed.foreign, listed.ours.unreadable), (2, 0));
}

#[tokio::test]
async fn exotel_listing_follows_absolute_links_on_the_configured_host_only() {
    let server = MockServer::start().await;
    let list = format!("/v2_beta/Accounts/{EXOTEL_SID}/IncomingPhoneNumbers");
    Mock::given(method("GET"))
        .and(path(list.as_str()))
        .and(query_param("Page", "0"))
        .and(header(
            "authorization",
            basic_auth("exotel-key", "exotel-token-not-real").as_str(),
        ))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string(fixture("exotel/incoming_phone_numbers_page0.json")),
        )
        .expect(1)
        .mount(&server)
        .await;
    // The fixture links to twilix.exotel.com; the client asks the configured host instead.
    Mock::given(method("GET"))
        .and(path(list.as_str()))
        .and(query_param("Page", "1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string(fixture("exotel/incoming_phone_numbers_page1.json")),
        )
        .expect(1)
        .mount(&server)
        .await;

    let listing = exotel(&server).list_numbers().await.unwrap().ours;

    assert_eq!(
        numbers(&listing),
        ["+911140001000", "+911140001001", "+911140001002"]
    );
    assert!(listing
        .numbers
        .iter()
        .all(|n| n.market().unwrap().as_str() == "IN"
            && n.capabilities == Capabilities::VOICE_AND_SMS));
}

#[tokio::test]
async fn twilio_offers_only_numbers_of_the_market_with_the_needed_capabilities() {
    let server = MockServer::start().await;
    let mut offer = json_fixture("twilio/available_phone_numbers_us_local.json");
    offer["available_phone_numbers"][0]["capabilities"]["SMS"] = serde_json::json!(false);
    Mock::given(method("GET"))
        .and(path(twilio_path("AvailablePhoneNumbers/US/Local.json")))
        .and(query_param("VoiceEnabled", "true"))
        .and(query_param("SmsEnabled", "true"))
        .and(query_param("PageSize", "3"))
        .respond_with(ResponseTemplate::new(200).set_body_json(offer))
        .expect(1)
        .mount(&server)
        .await;

    let offered = twilio(&server)
        .offered_numbers(&market("US"), Capabilities::VOICE_AND_SMS, 3)
        .await
        .unwrap();

    let offered: Vec<&str> = offered.iter().map(VirtualNumber::as_str).collect();
    assert_eq!(offered, ["+14155552001", "+14155552002", "+14155552003"]);
}

#[tokio::test]
async fn twilio_purchase_points_the_number_at_our_webhooks() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(twilio_path("IncomingPhoneNumbers.json")))
        .and(body_string_contains("PhoneNumber=%2B14155552000"))
        .respond_with(TwilioCreates)
        .expect(1)
        .mount(&server)
        .await;
    let hooks = buying(1, 1).webhooks;

    let bought = twilio(&server)
        .buy_number(&VirtualNumber::parse("+14155552000").unwrap(), &hooks)
        .await
        .unwrap();

    assert_eq!(bought.number.as_str(), "+14155552000");
    assert_eq!(bought.capabilities, Capabilities::VOICE_AND_SMS);
    let requests = server.received_requests().await.unwrap();
    let form = serde_urlencoded_pairs(&requests[0].body);
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(
        get("VoiceUrl"),
        Some("https://hooks.example.com/webhook/twilio/voice")
    );
    assert_eq!(get("VoiceMethod"), Some("POST"));
    assert_eq!(
        get("SmsUrl"),
        Some("https://hooks.example.com/webhook/twilio/sms")
    );
    assert_eq!(get("SmsMethod"), Some("POST"));
}

fn purchase() -> wiremock::MockBuilder {
    Mock::given(method("POST")).and(path(twilio_path("IncomingPhoneNumbers.json")))
}

async fn buy(twilio: &dyn Vendor, number: &str) -> Result<String, PostError> {
    twilio
        .buy_number(
            &VirtualNumber::parse(number).unwrap(),
            &buying(1, 1).webhooks,
        )
        .await
        .map(|n| n.number.as_str().to_owned())
}

fn posts(requests: &[wiremock::Request]) -> usize {
    requests
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .count()
}

#[tokio::test]
async fn a_purchase_that_times_out_is_sent_once_and_may_have_gone_through() {
    let server = MockServer::start().await;
    purchase()
        .respond_with(Late(TwilioCreates))
        .mount(&server)
        .await;

    let bought = buy(
        twilio_with(&server, short_timeout()).as_ref(),
        "+14155552000",
    )
    .await;

    assert!(
        matches!(
            bought,
            Err(PostError::Unconfirmed(ProviderError::Timeout {
                operation: "IncomingPhoneNumbers create",
                ..
            }))
        ),
        "{bought:?}"
    );
    assert_eq!(posts(&server.received_requests().await.unwrap()), 1);
}

#[tokio::test]
async fn a_purchase_answered_with_a_5xx_is_not_sent_again() {
    let server = MockServer::start().await;
    purchase()
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;

    let bought = buy(twilio(&server).as_ref(), "+14155552000").await;

    assert!(
        matches!(
            bought,
            Err(PostError::Unconfirmed(ProviderError::Status {
                status: 503,
                ..
            }))
        ),
        "{bought:?}"
    );
    assert_eq!(posts(&server.received_requests().await.unwrap()), 1);
}

#[tokio::test]
async fn a_purchase_refused_with_429_is_sent_again_after_the_wait() {
    let server = MockServer::start().await;
    purchase()
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "0"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    purchase().respond_with(TwilioCreates).mount(&server).await;

    let bought = buy(twilio(&server).as_ref(), "+14155552000").await;

    assert_eq!(bought.unwrap(), "+14155552000");
    assert_eq!(posts(&server.received_requests().await.unwrap()), 2);
}

#[tokio::test]
async fn a_purchase_that_never_connected_is_refused_not_unconfirmed() {
    // A port nothing listens on: each attempt fails before anything is sent.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut account = twilio_account(&MockServer::start().await);
    account.base = reqwest::Url::parse(&base).unwrap();
    let twilio = pool_refresh::inventory::Twilio::new(
        &account,
        fast_policy().client().unwrap(),
        fast_policy(),
    );

    let bought = buy(&twilio, "+14155552000").await;

    assert!(
        matches!(
            bought,
            Err(PostError::Refused(ProviderError::Transport { .. }))
        ),
        "{bought:?}"
    );
}

#[tokio::test]
async fn twilio_finds_a_number_by_its_exact_phone_number() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(twilio_path("IncomingPhoneNumbers.json")))
        .and(query_param("PhoneNumber", "+14155552000"))
        .respond_with(ResponseTemplate::new(200).set_body_json(twilio_page(&[
            // Only the exact number counts, whatever else the filter lets through.
            ("+14155552001", true, true),
            ("+14155552000", true, false),
        ])))
        .expect(1)
        .mount(&server)
        .await;

    let found = twilio(&server)
        .find_number(&VirtualNumber::parse("+14155552000").unwrap())
        .await
        .unwrap()
        .expect("listed");

    assert_eq!(found.number.as_str(), "+14155552000");
    assert!(!found.capabilities.sms);
}

fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}
