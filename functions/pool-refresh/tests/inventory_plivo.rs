//! Plivo's inventory client against a wiremock fake of its REST API, answering with bodies
//! shaped like Plivo's API reference (tests/fixtures/plivo).

use crate::common;

use std::collections::BTreeSet;

use common::*;
use pool_refresh::inventory::{
    HttpPolicy, Inventory, Plivo, PlivoAccount, PlivoNumberType, PostError, ProviderError, Vendor,
};
use reqwest::Url;
use serde_json::{json, Value};
use vnmask::config::Secret;
use vnmask::domain::{Capabilities, VirtualNumber};
use vnmask::pool::Listing;
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const AUTH_ID: &str = "MANWVLYTK4ZWU1YTY4ZT";
const AUTH_TOKEN: &str = "plivo-auth-token-not-real";
/// Our application, as the fixtures' numbers are attached to it.
const APP_ID: &str = "29986316244302815";
/// Another application of ours.
const OTHER_APP_ID: &str = "20372631212782799";

fn account(server: &MockServer) -> PlivoAccount {
    PlivoAccount {
        auth_id: AUTH_ID.into(),
        auth_token: Secret::new(AUTH_TOKEN),
        base: Url::parse(&server.uri()).unwrap(),
        app_id: APP_ID.into(),
        other_app_ids: BTreeSet::from([OTHER_APP_ID.to_owned()]),
        number_type: None,
    }
}

fn plivo(server: &MockServer) -> Plivo {
    plivo_with(account(server), fast_policy())
}

fn plivo_with(account: PlivoAccount, policy: HttpPolicy) -> Plivo {
    Plivo::new(&account, policy.client().unwrap(), policy)
}

fn plivo_path(rest: &str) -> String {
    format!("/v1/Account/{AUTH_ID}/{rest}")
}

fn basic_auth() -> String {
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{AUTH_ID}:{AUTH_TOKEN}"));
    format!("Basic {token}")
}

fn numbers(listing: &Listing) -> Vec<&str> {
    listing.numbers.iter().map(|n| n.number.as_str()).collect()
}

fn vn(number: &str) -> VirtualNumber {
    VirtualNumber::parse(number).unwrap()
}

/// One listing page (the documented shape, from the first fixture page) holding `objects`
/// and no next page.
fn page(objects: Vec<Value>) -> Value {
    let mut page = json_fixture("plivo/numbers_page0.json");
    page["meta"]["next"] = Value::Null;
    page["meta"]["total_count"] = json!(objects.len());
    page["objects"] = json!(objects);
    page
}

/// The documented `AccountPhoneNumber` with `changes` made to it.
fn number_object(changes: Value) -> Value {
    let mut number = json_fixture("plivo/number.json");
    if let (Some(number), Some(changes)) = (number.as_object_mut(), changes.as_object()) {
        for (k, v) in changes {
            number.insert(k.clone(), v.clone());
        }
    }
    number
}

fn application(id: &str) -> Value {
    json!(format!("/v1/Account/{AUTH_ID}/Application/{id}/"))
}

async fn lists(server: &MockServer, body: Value) {
    Mock::given(method("GET"))
        .and(path(plivo_path("Number/")))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(server)
        .await;
}

#[tokio::test]
async fn listing_follows_meta_next_across_pages_with_credentials_in_basic_auth() {
    let server = MockServer::start().await;
    for (page, offset) in [(0, "0"), (1, "3")] {
        Mock::given(method("GET"))
            .and(path(plivo_path("Number/")))
            .and(query_param("offset", offset))
            .and(header("authorization", basic_auth().as_str()))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_string(fixture(&format!("plivo/numbers_page{page}.json"))),
            )
            .expect(1)
            .mount(&server)
            .await;
    }

    let listed = plivo(&server).list_numbers().await.unwrap();

    // GIVEN five numbers: two on our application, one on our other application, one on
    // another application, one on our application but routed to a SIP trunk.
    assert_eq!(
        numbers(&listed.ours),
        ["+14155551000", "+14155551002", "+14155551003"]
    );
    assert_eq!(listed.foreign, 2);
    assert_eq!(listed.ours.unreadable, 0);
    let capabilities: Vec<_> = listed.ours.numbers.iter().map(|n| n.capabilities).collect();
    assert_eq!(
        capabilities,
        [
            Capabilities::VOICE_AND_SMS,
            Capabilities {
                voice: true,
                sms: false
            },
            Capabilities::VOICE_AND_SMS,
        ]
    );
    // `active: false`: Plivo holds it.
    let in_service: Vec<_> = listed.ours.numbers.iter().map(|n| n.in_service).collect();
    assert_eq!(in_service, [true, true, false]);
    assert!(listed
        .ours
        .numbers
        .iter()
        .all(|n| n.country.is_none() && n.market().unwrap().as_str() == "US"));
    let first = &server.received_requests().await.unwrap()[0];
    assert_eq!(first.url.query(), Some("limit=20&offset=0"));
}

#[tokio::test]
async fn unreadable_entries_are_counted_not_guessed() {
    let server = MockServer::start().await;
    let mut no_capabilities = number_object(json!({ "number": "14155551010" }));
    no_capabilities
        .as_object_mut()
        .unwrap()
        .remove("voice_enabled");
    lists(
        &server,
        page(vec![
            number_object(json!({ "number": "14155551011" })),
            no_capabilities,
            number_object(json!({ "number": "12345" })),
            number_object(json!({ "number": 14155551012u64 })),
            // Not ours: what its number is does not matter.
            number_object(json!({ "number": "12345", "application": application("1") })),
            number_object(json!({ "number": "14155551013", "application": null })),
        ]),
    )
    .await;

    let listed = plivo(&server).list_numbers().await.unwrap();

    assert_eq!(numbers(&listed.ours), ["+14155551011"]);
    assert_eq!(listed.ours.unreadable, 3);
    assert_eq!(listed.foreign, 2);
    assert!(!listed.ours.is_complete());
}

#[tokio::test]
async fn a_listing_that_changed_between_pages_proves_no_absence() {
    let server = MockServer::start().await;
    // The first page counts five numbers; by the second, one was released and the rest
    // shifted: the second page holds one number only.
    Mock::given(method("GET"))
        .and(query_param("offset", "0"))
        .respond_with(
            ResponseTemplate::new(200).set_body_string(fixture("plivo/numbers_page0.json")),
        )
        .mount(&server)
        .await;
    let mut second = json_fixture("plivo/numbers_page1.json");
    second["meta"]["total_count"] = json!(4);
    second["objects"].as_array_mut().unwrap().remove(0);
    Mock::given(method("GET"))
        .and(query_param("offset", "3"))
        .respond_with(ResponseTemplate::new(200).set_body_json(second))
        .mount(&server)
        .await;

    let listed = plivo(&server).list_numbers().await.unwrap();

    assert_eq!(numbers(&listed.ours), ["+14155551000", "+14155551002"]);
    assert!(!listed.ours.is_complete());
}

#[tokio::test]
async fn a_failing_page_fails_the_whole_listing() {
    let first_page = || {
        Mock::given(method("GET"))
            .and(query_param("offset", "0"))
            .respond_with(
                ResponseTemplate::new(200).set_body_string(fixture("plivo/numbers_page0.json")),
            )
    };
    let second_page = || Mock::given(method("GET")).and(query_param("offset", "3"));

    // An error status, throughout the allowed attempts.
    let server = MockServer::start().await;
    first_page().mount(&server).await;
    second_page()
        .respond_with(ResponseTemplate::new(503))
        .expect(3)
        .mount(&server)
        .await;
    let err = plivo(&server).list_numbers().await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Status { status: 503, .. }),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "plivo: Number list answered HTTP 503");

    // Garbled JSON.
    let server = MockServer::start().await;
    first_page().mount(&server).await;
    second_page()
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"meta": {"next": null}, "objects": [{"#,
            "application/json",
        ))
        .mount(&server)
        .await;
    let err = plivo(&server).list_numbers().await.unwrap_err();
    assert!(matches!(err, ProviderError::Malformed { .. }), "{err:?}");

    // A page without its objects.
    let server = MockServer::start().await;
    first_page().mount(&server).await;
    second_page()
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "meta": { "next": null } })))
        .mount(&server)
        .await;
    let err = plivo(&server).list_numbers().await.unwrap_err();
    assert!(matches!(err, ProviderError::Malformed { .. }), "{err:?}");

    // No answer in time.
    let server = MockServer::start().await;
    first_page().mount(&server).await;
    second_page()
        .respond_with(Late(
            ResponseTemplate::new(200).set_body_string(fixture("plivo/numbers_page1.json")),
        ))
        .mount(&server)
        .await;
    let err = plivo_with(account(&server), short_timeout())
        .list_numbers()
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Timeout { .. }), "{err:?}");
}

#[tokio::test]
async fn a_401_is_not_retried_and_the_error_holds_no_credential() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_string("Could not verify your access level for that URL."),
        )
        .expect(1)
        .mount(&server)
        .await;

    let err = plivo(&server).list_numbers().await.unwrap_err();

    assert!(matches!(err, ProviderError::Status { status: 401, .. }));
    assert!(!format!("{err} {err:?}").contains(AUTH_TOKEN));
}

#[tokio::test]
async fn offers_only_numbers_of_the_market_with_the_needed_capabilities() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(plivo_path("PhoneNumber/")))
        .and(query_param("country_iso", "US"))
        .and(query_param("services", "voice,sms"))
        .and(query_param("type", "fixed"))
        .and(query_param("limit", "3"))
        .and(header("authorization", basic_auth().as_str()))
        .respond_with(
            ResponseTemplate::new(200).set_body_string(fixture("plivo/phone_numbers_us.json")),
        )
        .expect(1)
        .mount(&server)
        .await;
    let plivo = plivo_with(
        PlivoAccount {
            number_type: Some(PlivoNumberType::Fixed),
            ..account(&server)
        },
        fast_policy(),
    );

    let offered = plivo
        .offered_numbers(&market("US"), Capabilities::VOICE_AND_SMS, 3)
        .await
        .unwrap();

    // The voice-only number and the British one are left out.
    let offered: Vec<&str> = offered.iter().map(VirtualNumber::as_str).collect();
    assert_eq!(offered, ["+14155552001", "+14155552003", "+14155552004"]);
}

#[tokio::test]
async fn a_purchase_attaches_the_number_to_our_application_and_reads_it_back() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(plivo_path("PhoneNumber/14155552000/")))
        .and(header("authorization", basic_auth().as_str()))
        .and(body_json(json!({ "app_id": APP_ID })))
        .respond_with(ResponseTemplate::new(201).set_body_string(fixture("plivo/buy_number.json")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(plivo_path("Number/14155552000/")))
        .respond_with(ResponseTemplate::new(200).set_body_string(fixture("plivo/number.json")))
        .expect(1)
        .mount(&server)
        .await;

    let bought = plivo(&server)
        .buy_number(&vn("+14155552000"), &buying(1, 1).webhooks)
        .await
        .unwrap();

    assert_eq!(bought.number.as_str(), "+14155552000");
    assert_eq!(
        bought.capabilities,
        Capabilities {
            voice: true,
            sms: false
        }
    );
    assert!(bought.in_service);
}

#[tokio::test]
async fn a_purchase_not_read_back_is_bought_all_the_same() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(201).set_body_string(fixture("plivo/buy_number_pending.json")),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "api_id": "f5d7f2c0-1c88-11e4-a2d1-22000ac5040c",
            "error": "not found"
        })))
        .mount(&server)
        .await;

    let bought = plivo(&server)
        .buy_number(&vn("+14155552000"), &buying(1, 1).webhooks)
        .await
        .unwrap();

    assert_eq!(bought.number.as_str(), "+14155552000");
    assert_eq!(bought.capabilities, Capabilities::default());
    // Plivo holds it until the country's documents are accepted.
    assert!(!bought.in_service);
}

async fn buy(plivo: &Plivo, number: &str) -> Result<String, PostError> {
    plivo
        .buy_number(&vn(number), &buying(1, 1).webhooks)
        .await
        .map(|n| n.number.as_str().to_owned())
}

async fn posts(server: &MockServer) -> usize {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .count()
}

#[tokio::test]
async fn a_refused_purchase_is_refused() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "api_id": "aa52882c-1c88-11e4-bd8a-12313f016a39",
            "error": "number not available for purchase"
        })))
        .mount(&server)
        .await;

    let bought = buy(&plivo(&server), "+14155552000").await;

    assert!(
        matches!(
            bought,
            Err(PostError::Refused(ProviderError::Status {
                status: 400,
                ..
            }))
        ),
        "{bought:?}"
    );
    assert_eq!(posts(&server).await, 1);
}

#[tokio::test]
async fn an_unanswered_purchase_is_unconfirmed_and_never_sent_again() {
    // A 5xx.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(502))
        .mount(&server)
        .await;
    let bought = buy(&plivo(&server), "+14155552000").await;
    assert!(
        matches!(
            bought,
            Err(PostError::Unconfirmed(ProviderError::Status {
                status: 502,
                ..
            }))
        ),
        "{bought:?}"
    );
    assert_eq!(posts(&server).await, 1);

    // A timeout.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(Late(
            ResponseTemplate::new(201).set_body_string(fixture("plivo/buy_number.json")),
        ))
        .mount(&server)
        .await;
    let bought = buy(
        &plivo_with(account(&server), short_timeout()),
        "+14155552000",
    )
    .await;
    assert!(
        matches!(
            bought,
            Err(PostError::Unconfirmed(ProviderError::Timeout {
                operation: "PhoneNumber buy",
                ..
            }))
        ),
        "{bought:?}"
    );
    assert_eq!(posts(&server).await, 1);
}

#[tokio::test]
async fn find_number_reads_one_number_if_it_is_ours() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(plivo_path("Number/14155552000/")))
        .and(header("authorization", basic_auth().as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_string(fixture("plivo/number.json")))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(plivo_path("Number/14155552001/")))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(number_object(json!({
                "number": "14155552001",
                "application": application("16632559604105954"),
            }))),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(plivo_path("Number/14155552002/")))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({ "api_id": "x", "error": "not found" })),
        )
        .mount(&server)
        .await;
    let plivo = plivo(&server);

    let found = plivo.find_number(&vn("+14155552000")).await.unwrap();
    let elsewhere = plivo.find_number(&vn("+14155552001")).await.unwrap();
    let absent = plivo.find_number(&vn("+14155552002")).await.unwrap();

    let found = found.expect("ours");
    assert_eq!(found.number.as_str(), "+14155552000");
    assert!(found.capabilities.voice && !found.capabilities.sms);
    assert_eq!(elsewhere, None);
    assert_eq!(absent, None);
}

#[tokio::test]
async fn find_number_fails_when_plivo_fails() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;

    let err = plivo(&server)
        .find_number(&vn("+14155552000"))
        .await
        .unwrap_err();

    assert!(
        matches!(err, ProviderError::Status { status: 500, .. }),
        "{err:?}"
    );
}
