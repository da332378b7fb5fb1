//! Telnyx's inventory client against a wiremock fake of its API v2, answering with bodies shaped
//! like Telnyx's API reference (`PhoneNumberDetailed`, `AvailablePhoneNumber`, `NumberOrder`) in
//! tests/fixtures/telnyx.

use crate::common;

use std::collections::BTreeSet;

use common::*;
use pool_refresh::inventory::{
    HttpPolicy, Inventory, PostError, ProviderError, Telnyx, TelnyxAccount, Vendor,
};
use reqwest::Url;
use serde_json::{json, Value};
use vnmask::config::Secret;
use vnmask::domain::{Capabilities, VirtualNumber};
use vnmask::pool::ListedNumber;
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const API_KEY: &str = "KEY0123456789ABCDEF_telnyx-key-not-real";
/// Our TeXML application, as the fixtures' numbers are on it.
const CONNECTION_ID: &str = "1684641123236054244";
/// The TeXML application numbers are being moved off, still ours.
const OLD_CONNECTION_ID: &str = "1293384261075731461";
/// Our messaging profile, as the fixtures' numbers are on it.
const PROFILE_ID: &str = "4001767e-ce0f-4cae-9d5f-0d5e636e7809";

const VOICE: Capabilities = Capabilities {
    voice: true,
    sms: false,
};
const SMS: Capabilities = Capabilities {
    voice: false,
    sms: true,
};

fn account(server: &MockServer) -> TelnyxAccount {
    TelnyxAccount {
        api_key: Secret::new(API_KEY),
        base: Url::parse(&server.uri()).unwrap(),
        connection_id: CONNECTION_ID.into(),
        other_connection_ids: BTreeSet::from([OLD_CONNECTION_ID.to_owned()]),
        messaging_profile_id: Some(PROFILE_ID.into()),
    }
}

fn telnyx_with(account: &TelnyxAccount, policy: HttpPolicy) -> Telnyx {
    Telnyx::new(account, policy.client().unwrap(), policy)
}

fn telnyx(server: &MockServer) -> Telnyx {
    telnyx_with(&account(server), fast_policy())
}

fn bearer() -> String {
    format!("Bearer {API_KEY}")
}

fn page(n: u32) -> Value {
    json_fixture(&format!("telnyx/phone_numbers_page{n}.json"))
}

/// Telnyx answers `page[number]={n}` with `body`.
async fn lists(server: &MockServer, n: u32, body: Value) {
    Mock::given(method("GET"))
        .and(path("/v2/phone_numbers"))
        .and(query_param("page[number]", n.to_string()))
        .and(query_param("page[size]", "250"))
        .and(header("authorization", bearer().as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .expect(1)
        .mount(server)
        .await;
}

fn summary(n: &ListedNumber) -> (&str, Capabilities, bool) {
    (n.number.as_str(), n.capabilities, n.in_service)
}

#[tokio::test]
async fn listing_reads_every_page_and_keeps_the_numbers_on_our_application_or_profile() {
    let server = MockServer::start().await;
    lists(&server, 1, page(1)).await;
    lists(&server, 2, page(2)).await;

    let numbers = telnyx(&server).list_numbers().await.unwrap();

    let ours: Vec<_> = numbers.ours.numbers.iter().map(summary).collect();
    assert_eq!(
        ours,
        [
            ("+13125550100", Capabilities::VOICE_AND_SMS, true),
            ("+13125550101", VOICE, true),
            // Being ported: Telnyx holds it.
            ("+13125550102", Capabilities::VOICE_AND_SMS, false),
            // On our messaging profile only: texts come to us, calls go elsewhere.
            ("+13125550104", SMS, true),
            // On the application being left, still ours.
            ("+13125550105", Capabilities::VOICE_AND_SMS, true),
        ]
    );
    // Another product's application and profile, and a number on neither.
    assert_eq!(numbers.foreign, 2);
    assert_eq!(numbers.ours.unreadable, 0);
    assert!(numbers
        .ours
        .numbers
        .iter()
        .all(|n| n.country.as_ref().map(|c| c.as_str()) == Some("US")));
}

/// Pages cut by number shift when a number is bought or released between two of them: a
/// listing whose totals moved pools what it read and retires nothing.
#[tokio::test]
async fn a_listing_that_changed_between_pages_proves_no_absence() {
    let server = MockServer::start().await;
    lists(&server, 1, page(1)).await;
    let mut second = page(2);
    second["meta"]["total_results"] = json!(6);
    lists(&server, 2, second).await;

    let numbers = telnyx(&server).list_numbers().await.unwrap();

    assert!(!numbers.ours.is_complete());
    assert_eq!(numbers.ours.numbers.len(), 5);
}

/// Older answers state no total of numbers: a count of pages that moves shows the shift.
#[tokio::test]
async fn without_totals_a_page_count_that_moved_proves_no_absence() {
    for moved in [false, true] {
        let server = MockServer::start().await;
        let mut first = page(1);
        let mut second = page(2);
        for p in [&mut first, &mut second] {
            p["meta"].as_object_mut().unwrap().remove("total_results");
        }
        if moved {
            second["meta"]["total_pages"] = json!(3);
            let mut third = page(2);
            third["data"] = json!([]);
            third["meta"] = json!({ "page_number": 3, "page_size": 4, "total_pages": 3 });
            lists(&server, 3, third).await;
        }
        lists(&server, 1, first).await;
        lists(&server, 2, second).await;

        let numbers = telnyx(&server).list_numbers().await.unwrap();

        assert_eq!(numbers.ours.is_complete(), !moved, "moved: {moved}");
        assert_eq!(numbers.ours.numbers.len(), 5);
    }
}

#[tokio::test]
async fn without_a_messaging_profile_numbers_carry_calls_only() {
    let server = MockServer::start().await;
    lists(&server, 1, page(1)).await;
    lists(&server, 2, page(2)).await;
    let account = TelnyxAccount {
        messaging_profile_id: None,
        ..account(&server)
    };

    let numbers = telnyx_with(&account, fast_policy())
        .list_numbers()
        .await
        .unwrap();

    let ours: Vec<_> = numbers.ours.numbers.iter().map(summary).collect();
    assert_eq!(
        ours,
        [
            ("+13125550100", VOICE, true),
            ("+13125550101", VOICE, true),
            ("+13125550102", VOICE, false),
            ("+13125550105", VOICE, true),
        ]
    );
    assert_eq!(numbers.foreign, 3);
}

#[tokio::test]
async fn unreadable_entries_are_counted_not_guessed() {
    let server = MockServer::start().await;
    let mut first = page(1);
    first["data"][0]["phone_number"] = json!("(312) 555-0100");
    first["data"][1]
        .as_object_mut()
        .unwrap()
        .remove("phone_number");
    first["meta"]["total_pages"] = json!(1);
    first["meta"]["total_results"] = json!(first["data"].as_array().unwrap().len());
    lists(&server, 1, first).await;

    let numbers = telnyx(&server).list_numbers().await.unwrap();

    let ours: Vec<&str> = numbers
        .ours
        .numbers
        .iter()
        .map(|n| n.number.as_str())
        .collect();
    assert_eq!(ours, ["+13125550102"]);
    assert_eq!(numbers.ours.unreadable, 2);
    assert_eq!(numbers.foreign, 1);
}

/// Page 1 answers; page 2 answers `second`.
async fn second_page_fails(second: ResponseTemplate, policy: HttpPolicy) -> ProviderError {
    let server = MockServer::start().await;
    lists(&server, 1, page(1)).await;
    Mock::given(method("GET"))
        .and(path("/v2/phone_numbers"))
        .and(query_param("page[number]", "2"))
        .respond_with(second)
        .mount(&server)
        .await;
    telnyx_with(&account(&server), policy)
        .list_numbers()
        .await
        .unwrap_err()
}

#[tokio::test]
async fn a_page_that_fails_throughout_fails_the_listing() {
    let err = second_page_fails(ResponseTemplate::new(500), fast_policy()).await;
    assert!(
        matches!(err, ProviderError::Status { status: 500, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "telnyx: phone_numbers list answered HTTP 500"
    );
}

#[tokio::test]
async fn a_garbled_page_fails_the_listing() {
    let err = second_page_fails(
        ResponseTemplate::new(200).set_body_raw(r#"{"data": [{"#, "application/json"),
        fast_policy(),
    )
    .await;
    assert!(matches!(err, ProviderError::Malformed { .. }), "{err:?}");
    let err = second_page_fails(
        ResponseTemplate::new(200).set_body_json(json!({"data": []})),
        fast_policy(),
    )
    .await;
    assert!(err.to_string().contains("missing field `meta`"), "{err}");
}

#[tokio::test]
async fn a_page_that_never_answers_fails_the_listing() {
    let err = second_page_fails(
        ResponseTemplate::new(200)
            .set_body_json(page(2))
            .set_delay(LATE),
        short_timeout(),
    )
    .await;
    assert!(matches!(err, ProviderError::Timeout { .. }), "{err:?}");
}

#[tokio::test]
async fn a_refused_key_is_not_retried_and_the_error_holds_no_credential() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_string(fixture("telnyx/error_401.json")))
        .expect(1)
        .mount(&server)
        .await;

    let err = telnyx(&server).list_numbers().await.unwrap_err();

    assert!(
        matches!(err, ProviderError::Status { status: 401, .. }),
        "{err:?}"
    );
    assert!(!format!("{err} {err:?}").contains(API_KEY));
}

#[tokio::test]
async fn offers_only_numbers_of_the_market_with_the_needed_features() {
    let server = MockServer::start().await;
    let mut offer = json_fixture("telnyx/available_phone_numbers_us.json");
    // Filed under another country, whatever its number looks like.
    offer["data"][2]["region_information"][0]["region_name"] = json!("CA");
    Mock::given(method("GET"))
        .and(path("/v2/available_phone_numbers"))
        .and(query_param("filter[country_code]", "US"))
        .and(query_param("filter[features][]", "voice"))
        .and(query_param("filter[features][]", "sms"))
        .and(query_param("filter[limit]", "3"))
        .and(header("authorization", bearer().as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(offer))
        .expect(1)
        .mount(&server)
        .await;

    let offered = telnyx(&server)
        .offered_numbers(&market("US"), Capabilities::VOICE_AND_SMS, 3)
        .await
        .unwrap();

    let offered: Vec<&str> = offered.iter().map(VirtualNumber::as_str).collect();
    // +13125552002 has no SMS; +13125552003 is filed under Canada.
    assert_eq!(offered, ["+13125552001", "+13125552004"]);
}

fn order() -> wiremock::MockBuilder {
    Mock::given(method("POST")).and(path("/v2/number_orders"))
}

async fn buy(telnyx: &Telnyx, number: &str) -> Result<ListedNumber, PostError> {
    telnyx
        .buy_number(
            &VirtualNumber::parse(number).unwrap(),
            &buying(1, 1).webhooks,
        )
        .await
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
async fn a_purchase_orders_the_number_onto_our_application_and_profile() {
    let server = MockServer::start().await;
    order()
        .and(header("authorization", bearer().as_str()))
        .and(body_json(json!({
            "phone_numbers": [{"phone_number": "+13125552001"}],
            "connection_id": CONNECTION_ID,
            "messaging_profile_id": PROFILE_ID,
        })))
        .respond_with(
            ResponseTemplate::new(200).set_body_string(fixture("telnyx/number_order.json")),
        )
        .expect(1)
        .mount(&server)
        .await;

    let bought = buy(&telnyx(&server), "+13125552001").await.unwrap();

    assert_eq!(bought.number.as_str(), "+13125552001");
    assert_eq!(bought.capabilities, Capabilities::VOICE_AND_SMS);
    assert_eq!(bought.country.unwrap().as_str(), "US");
    // The order is pending: Telnyx provisions the number afterwards.
    assert!(!bought.in_service);
}

#[tokio::test]
async fn a_purchase_without_a_messaging_profile_names_none() {
    let server = MockServer::start().await;
    let mut answer = json_fixture("telnyx/number_order.json");
    answer["data"]["messaging_profile_id"] = Value::Null;
    answer["data"]["status"] = json!("success");
    order()
        .and(body_json(json!({
            "phone_numbers": [{"phone_number": "+13125552001"}],
            "connection_id": CONNECTION_ID,
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .expect(1)
        .mount(&server)
        .await;
    let account = TelnyxAccount {
        messaging_profile_id: None,
        ..account(&server)
    };

    let bought = buy(&telnyx_with(&account, fast_policy()), "+13125552001")
        .await
        .unwrap();

    assert_eq!(bought.capabilities, VOICE);
    assert!(bought.in_service);
}

#[tokio::test]
async fn a_purchase_refused_with_a_4xx_is_refused_and_sent_once() {
    let server = MockServer::start().await;
    order()
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({
            "errors": [{"code": "10015", "title": "Bad Request", "detail": "The phone number is not available."}]
        })))
        .mount(&server)
        .await;

    let bought = buy(&telnyx(&server), "+13125552001").await;

    assert!(
        matches!(
            bought,
            Err(PostError::Refused(ProviderError::Status {
                status: 422,
                ..
            }))
        ),
        "{bought:?}"
    );
    assert_eq!(posts(&server).await, 1);
}

#[tokio::test]
async fn an_order_that_failed_is_refused() {
    let server = MockServer::start().await;
    let mut answer = json_fixture("telnyx/number_order.json");
    answer["data"]["status"] = json!("failure");
    answer["data"]["phone_numbers"][0]["status"] = json!("failure");
    order()
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .mount(&server)
        .await;

    let bought = buy(&telnyx(&server), "+13125552001").await;

    assert!(
        matches!(
            bought,
            Err(PostError::Refused(ProviderError::Malformed { .. }))
        ),
        "{bought:?}"
    );
}

#[tokio::test]
async fn a_purchase_that_times_out_is_sent_once_and_may_have_gone_through() {
    let server = MockServer::start().await;
    order()
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string(fixture("telnyx/number_order.json"))
                .set_delay(LATE),
        )
        .mount(&server)
        .await;

    let bought = buy(
        &telnyx_with(&account(&server), short_timeout()),
        "+13125552001",
    )
    .await;

    assert!(
        matches!(
            bought,
            Err(PostError::Unconfirmed(ProviderError::Timeout {
                operation: "number_orders create",
                ..
            }))
        ),
        "{bought:?}"
    );
    assert_eq!(posts(&server).await, 1);
}

#[tokio::test]
async fn a_purchase_answered_with_a_5xx_is_not_sent_again() {
    let server = MockServer::start().await;
    order()
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;

    let bought = buy(&telnyx(&server), "+13125552001").await;

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
    assert_eq!(posts(&server).await, 1);
}

#[tokio::test]
async fn finds_a_number_by_its_digits_and_only_the_exact_one() {
    let server = MockServer::start().await;
    let mut answer = page(1);
    answer["data"][0]["phone_number"] = json!("+131255501001");
    answer["data"][1]["phone_number"] = json!("+13125550100");
    answer["data"][1]["status"] = json!("purchase-pending");
    answer["meta"]["total_pages"] = json!(1);
    Mock::given(method("GET"))
        .and(path("/v2/phone_numbers"))
        .and(query_param("filter[phone_number]", "13125550100"))
        .and(header("authorization", bearer().as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .expect(1)
        .mount(&server)
        .await;

    let found = telnyx(&server)
        .find_number(&VirtualNumber::parse("+13125550100").unwrap())
        .await
        .unwrap()
        .expect("listed");

    assert_eq!(summary(&found), ("+13125550100", VOICE, false));
}

#[tokio::test]
async fn a_number_pointing_elsewhere_is_not_found() {
    let server = MockServer::start().await;
    let mut answer = page(1);
    answer["data"] = json!([answer["data"][3].clone()]);
    Mock::given(method("GET"))
        .and(path("/v2/phone_numbers"))
        .and(query_param("filter[phone_number]", "13125550103"))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .mount(&server)
        .await;

    let found = telnyx(&server)
        .find_number(&VirtualNumber::parse("+13125550103").unwrap())
        .await
        .unwrap();

    assert_eq!(found, None);
}

#[tokio::test]
async fn a_listing_whose_totals_move_between_pages_retires_nothing() {
    let server = MockServer::start().await;
    // A number was bought between the two pages: the second counts one more.
    let mut second = page(2);
    second["meta"]["total_results"] = json!(8);
    lists(&server, 1, page(1)).await;
    lists(&server, 2, second).await;

    let numbers = telnyx(&server).list_numbers().await.unwrap();

    assert!(!numbers.ours.is_complete(), "{numbers:?}");
}
