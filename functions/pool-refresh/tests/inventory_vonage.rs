//! Vonage's inventory client against a wiremock fake of its Numbers API, answering with bodies
//! shaped like Vonage's API reference and its SDKs' test data (tests/fixtures/vonage).

use crate::common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::*;
use pool_refresh::inventory::{
    HttpPolicy, Inventory, PostError, ProviderError, Vendor, Vonage, VonageAccount,
};
use reqwest::Url;
use serde_json::json;
use vnmask::config::Secret;
use vnmask::domain::{Capabilities, VirtualNumber};
use vnmask::pool::{ListedNumber, Listing};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const API_KEY: &str = "a1b2c3d4";
const API_SECRET: &str = "vonage-api-secret-not-real";
/// Our application, as the fixtures' numbers are linked to it.
const APP_ID: &str = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab";
/// Another application of the account, not ours.
const OTHER_APP_ID: &str = "29f769u7-7ce1-46c9-ade3-f2dedee4fr4t";

fn account(server: &MockServer) -> VonageAccount {
    VonageAccount {
        api_key: API_KEY.into(),
        api_secret: Secret::new(API_SECRET),
        base: Url::parse(&server.uri()).unwrap(),
        app_id: APP_ID.into(),
        other_app_ids: BTreeSet::new(),
    }
}

fn vonage_with(account: &VonageAccount, policy: HttpPolicy) -> Arc<Vonage> {
    Arc::new(Vonage::new(account, policy.client().unwrap(), policy))
}

fn vonage(server: &MockServer) -> Arc<Vonage> {
    vonage_with(&account(server), fast_policy())
}

fn basic_auth() -> String {
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{API_KEY}:{API_SECRET}"));
    format!("Basic {token}")
}

fn numbers(listing: &Listing) -> Vec<&str> {
    listing.numbers.iter().map(|n| n.number.as_str()).collect()
}

fn vn(number: &str) -> VirtualNumber {
    VirtualNumber::parse(number).unwrap()
}

/// The account's numbers on two pages (short pages keep the fixtures readable: Vonage's client
/// reads pages until it has as many numbers as the count says, however many each holds).
async fn lists_two_pages(server: &MockServer) {
    for index in [1, 2] {
        Mock::given(method("GET"))
            .and(path("/account/numbers"))
            .and(query_param("index", index.to_string()))
            .and(query_param("size", "100"))
            .and(header("authorization", basic_auth().as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_string(fixture(&format!(
                "vonage/account_numbers_index{index}.json"
            ))))
            .expect(1)
            .mount(server)
            .await;
    }
}

#[tokio::test]
async fn listing_reads_every_page_until_the_count_and_takes_only_numbers_linked_to_us() {
    let server = MockServer::start().await;
    lists_two_pages(&server).await;

    let listed = vonage(&server).list_numbers().await.unwrap();

    // Linked by app_id; linked the older way (voiceCallbackValue); linked on the second page.
    assert_eq!(
        numbers(&listed.ours),
        ["+14155551000", "+442039050911", "+447400123456"]
    );
    // Another application's, and one of ours whose calls are forwarded to a phone (`tel`).
    assert_eq!(listed.foreign, 2);
    assert_eq!(listed.ours.unreadable, 0);
    let by_number = |n: &str| -> &ListedNumber {
        listed
            .ours
            .numbers
            .iter()
            .find(|l| l.number.as_str() == n)
            .unwrap()
    };
    // Vonage's SMS feature is not routed by vnmask: its numbers carry calls only.
    let voice_only = Capabilities {
        voice: true,
        sms: false,
    };
    let mobile = by_number("+447400123456");
    assert_eq!(mobile.capabilities, voice_only);
    assert_eq!(mobile.country.as_ref().unwrap().as_str(), "GB");
    assert!(mobile.in_service);
    let landline = by_number("+442039050911");
    assert_eq!(
        landline.capabilities,
        Capabilities {
            voice: true,
            sms: false
        }
    );
    let us = by_number("+14155551000");
    assert_eq!(us.capabilities, voice_only);
    assert_eq!(us.market().unwrap().as_str(), "US");
}

#[tokio::test]
async fn credentials_go_in_the_authorization_header_never_in_the_url() {
    let server = MockServer::start().await;
    lists_two_pages(&server).await;

    vonage(&server).list_numbers().await.unwrap();

    for request in server.received_requests().await.unwrap() {
        assert_eq!(
            request.headers.get("authorization").unwrap(),
            basic_auth().as_str()
        );
        let url = request.url.as_str();
        assert!(
            !url.contains(API_SECRET) && !url.contains(API_KEY) && !url.contains("api_"),
            "{url}"
        );
    }
}

#[tokio::test]
async fn numbers_of_our_other_applications_are_ours_too() {
    let server = MockServer::start().await;
    lists_two_pages(&server).await;
    let mut moving = account(&server);
    moving.other_app_ids = BTreeSet::from([OTHER_APP_ID.to_owned()]);

    let listed = vonage_with(&moving, fast_policy())
        .list_numbers()
        .await
        .unwrap();

    assert!(numbers(&listed.ours).contains(&"+447400123457"));
    assert_eq!(listed.foreign, 1);
}

#[tokio::test]
async fn unreadable_entries_are_counted_not_guessed() {
    let server = MockServer::start().await;
    let mut page = json_fixture("vonage/account_numbers_index1.json");
    page["count"] = json!(3);
    // Not digits; a country that is none; no features at all.
    page["numbers"][0]["msisdn"] = json!("+44 7400 123456");
    page["numbers"][1]["app_id"] = json!(APP_ID);
    page["numbers"][1]["voiceCallbackValue"] = json!(APP_ID);
    page["numbers"][1]["country"] = json!("XX");
    page["numbers"][2]
        .as_object_mut()
        .unwrap()
        .remove("features");
    Mock::given(method("GET"))
        .and(path("/account/numbers"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page))
        .mount(&server)
        .await;

    let listed = vonage(&server).list_numbers().await.unwrap();

    assert!(listed.ours.numbers.is_empty());
    assert_eq!(listed.ours.unreadable, 3);
    assert_eq!(listed.foreign, 0);
}

#[tokio::test]
async fn an_account_without_numbers_lists_nothing_from_one_page() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/account/numbers"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string(fixture("vonage/account_numbers_empty.json")),
        )
        .expect(1)
        .mount(&server)
        .await;

    let listed = vonage(&server).list_numbers().await.unwrap();

    assert!(listed.ours.numbers.is_empty());
    assert_eq!((listed.foreign, listed.ours.unreadable), (0, 0));
}

/// The first page as the fixture has it, and `second` for the second.
async fn first_page_then(server: &MockServer, second: ResponseTemplate) {
    Mock::given(method("GET"))
        .and(path("/account/numbers"))
        .and(query_param("index", "1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string(fixture("vonage/account_numbers_index1.json")),
        )
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/account/numbers"))
        .and(query_param("index", "2"))
        .respond_with(second)
        .mount(server)
        .await;
}

#[tokio::test]
async fn a_second_page_failing_throughout_fails_the_listing() {
    let server = MockServer::start().await;
    first_page_then(&server, ResponseTemplate::new(503)).await;

    let err = vonage(&server).list_numbers().await.unwrap_err();

    assert!(
        matches!(err, ProviderError::Status { status: 503, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "vonage: account numbers list answered HTTP 503"
    );
    // Reads are retried: the first page once, the second as often as the policy allows.
    assert_eq!(server.received_requests().await.unwrap().len(), 4);
}

#[tokio::test]
async fn a_second_page_that_never_answers_fails_the_listing() {
    let server = MockServer::start().await;
    first_page_then(
        &server,
        ResponseTemplate::new(200)
            .set_body_string(fixture("vonage/account_numbers_index2.json"))
            .set_delay(LATE),
    )
    .await;

    let err = vonage_with(&account(&server), short_timeout())
        .list_numbers()
        .await
        .unwrap_err();

    assert!(matches!(err, ProviderError::Timeout { .. }), "{err:?}");
}

#[tokio::test]
async fn a_garbled_page_fails_the_listing() {
    let server = MockServer::start().await;
    first_page_then(
        &server,
        ResponseTemplate::new(200)
            .set_body_raw(r#"{"count": 5, "numbers": [{"#, "application/json"),
    )
    .await;

    let err = vonage(&server).list_numbers().await.unwrap_err();

    assert!(matches!(err, ProviderError::Malformed { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("vonage: malformed account numbers list response: EOF while parsing"),
        "{err}"
    );
}

#[tokio::test]
async fn a_page_without_its_count_is_malformed() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "numbers": [] })))
        .mount(&server)
        .await;

    let err = vonage(&server).list_numbers().await.unwrap_err();

    assert!(err.to_string().contains("missing field `count`"), "{err}");
}

/// Numbered pages may skip a number bought or cancelled while paging: a count that moves, or
/// pages that end short of it, pool what was read and retire nothing.
#[tokio::test]
async fn a_listing_that_may_have_skipped_numbers_proves_no_absence() {
    let mut moved = json_fixture("vonage/account_numbers_index2.json");
    moved["count"] = json!(6);
    let mut short = json_fixture("vonage/account_numbers_index2.json");
    short["numbers"].as_array_mut().unwrap().pop();
    let empty = json!({ "count": 5, "numbers": [] });
    for second in [moved, short, empty] {
        let server = MockServer::start().await;
        // Whatever follows the second page is empty.
        Mock::given(method("GET"))
            .and(query_param("index", "3"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({ "count": 5, "numbers": [] })),
            )
            .mount(&server)
            .await;
        first_page_then(&server, ResponseTemplate::new(200).set_body_json(second)).await;

        let listed = vonage(&server).list_numbers().await.unwrap();

        assert!(!listed.ours.is_complete());
        let pooled = numbers(&listed.ours);
        assert!(
            ["+442039050911", "+447400123456"]
                .iter()
                .all(|first_page| pooled.contains(first_page)),
            "the first page's numbers of ours are pooled: {pooled:?}"
        );
    }
}

#[tokio::test]
async fn a_401_is_not_retried_and_the_error_holds_no_credential() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_string(fixture("vonage/error_401.json")))
        .expect(1)
        .mount(&server)
        .await;

    let err = vonage(&server).list_numbers().await.unwrap_err();

    assert!(matches!(err, ProviderError::Status { status: 401, .. }));
    assert!(!format!("{err} {err:?}").contains(API_SECRET));
}

#[tokio::test]
async fn offers_voice_numbers_of_the_market_and_none_where_texts_are_needed() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/number/search"))
        .and(query_param("country", "GB"))
        .and(query_param("features", "VOICE"))
        .and(query_param("size", "5"))
        .and(header("authorization", basic_auth().as_str()))
        .respond_with(
            ResponseTemplate::new(200).set_body_string(fixture("vonage/number_search_gb.json")),
        )
        .expect(1)
        .mount(&server)
        .await;
    let voice = Capabilities {
        voice: true,
        sms: false,
    };

    let offered = vonage(&server)
        .offered_numbers(&market("GB"), voice, 5)
        .await
        .unwrap();
    // The SMS-only mobile is left out, whatever the filter let by.
    assert!(offered.contains(&vn("+447400123460")) && !offered.is_empty());

    // A market whose pairs need texts gets no Vonage number, and Vonage is not asked.
    let none = vonage(&server)
        .offered_numbers(&market("GB"), Capabilities::VOICE_AND_SMS, 5)
        .await
        .unwrap();
    assert!(none.is_empty());
}

#[tokio::test]
async fn an_offer_of_another_country_is_left_out() {
    let server = MockServer::start().await;
    let mut page = json_fixture("vonage/number_search_gb.json");
    page["numbers"][1]["country"] = json!("US");
    Mock::given(method("GET"))
        .and(path("/number/search"))
        .and(query_param("features", "VOICE"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page))
        .mount(&server)
        .await;

    let voice = Capabilities {
        voice: true,
        sms: false,
    };
    let offered = vonage(&server)
        .offered_numbers(&market("GB"), voice, 2)
        .await
        .unwrap();

    assert_eq!(offered, [vn("+442039050911"), vn("+447400123461")]);
}

fn buys() -> wiremock::MockBuilder {
    Mock::given(method("POST")).and(path("/number/buy"))
}

fn links() -> wiremock::MockBuilder {
    Mock::given(method("POST")).and(path("/number/update"))
}

fn success() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_string(fixture("vonage/number_success.json"))
}

/// Lists `number` (digits) linked to our application, as `/account/numbers?pattern=` does once
/// a purchase went through.
async fn finds(server: &MockServer, number: &str) {
    Mock::given(method("GET"))
        .and(path("/account/numbers"))
        .and(query_param("pattern", number))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "count": 1,
            "numbers": [{
                "country": "GB",
                "msisdn": number,
                "type": "mobile-lvn",
                "features": ["VOICE", "SMS"],
                "app_id": APP_ID,
            }],
        })))
        .mount(server)
        .await;
}

async fn buy(vonage: &dyn Vendor, number: &str) -> Result<ListedNumber, PostError> {
    vonage.buy_number(&vn(number), &buying(1, 1).webhooks).await
}

fn form(request: &Request) -> Vec<(String, String)> {
    serde_urlencoded_pairs(&request.body)
}

fn posts_to(requests: &[Request], to: &str) -> usize {
    requests
        .iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path() == to)
        .count()
}

#[tokio::test]
async fn a_purchase_buys_the_number_and_links_it_to_our_application() {
    let server = MockServer::start().await;
    buys()
        .and(header("authorization", basic_auth().as_str()))
        .respond_with(success())
        .expect(1)
        .mount(&server)
        .await;
    links()
        .and(header("authorization", basic_auth().as_str()))
        .respond_with(success())
        .expect(1)
        .mount(&server)
        .await;
    finds(&server, "447400123460").await;

    let bought = buy(vonage(&server).as_ref(), "+447400123460")
        .await
        .unwrap();

    assert_eq!(bought.number.as_str(), "+447400123460");
    assert_eq!(
        bought.capabilities,
        Capabilities {
            voice: true,
            sms: false
        }
    );
    assert_eq!(bought.market().unwrap().as_str(), "GB");
    let requests = server.received_requests().await.unwrap();
    let strs = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        form(&requests[0]),
        strs(&[("country", "GB"), ("msisdn", "447400123460")])
    );
    assert_eq!(requests[1].url.path(), "/number/update");
    assert_eq!(
        form(&requests[1]),
        strs(&[
            ("country", "GB"),
            ("msisdn", "447400123460"),
            ("app_id", APP_ID)
        ])
    );
    for request in &requests {
        let sent = format!("{} {}", request.url, String::from_utf8_lossy(&request.body));
        assert!(!sent.contains(API_SECRET), "{sent}");
    }
}

#[tokio::test]
async fn a_purchase_refused_with_a_4xx_is_refused_and_nothing_is_linked() {
    let server = MockServer::start().await;
    buys()
        .respond_with(
            ResponseTemplate::new(420).set_body_string(fixture("vonage/number_method_failed.json")),
        )
        .expect(1)
        .mount(&server)
        .await;
    links()
        .respond_with(success())
        .expect(0)
        .mount(&server)
        .await;

    let bought = buy(vonage(&server).as_ref(), "+447400123460").await;

    assert!(
        matches!(
            bought,
            Err(PostError::Refused(ProviderError::Status {
                status: 420,
                ..
            }))
        ),
        "{bought:?}"
    );
}

#[tokio::test]
async fn a_purchase_answered_200_with_an_error_code_is_refused() {
    let server = MockServer::start().await;
    buys()
        .respond_with(
            ResponseTemplate::new(200).set_body_string(fixture("vonage/number_method_failed.json")),
        )
        .expect(1)
        .mount(&server)
        .await;
    links()
        .respond_with(success())
        .expect(0)
        .mount(&server)
        .await;

    let bought = buy(vonage(&server).as_ref(), "+447400123460").await;

    assert!(
        matches!(
            bought,
            Err(PostError::Refused(ProviderError::Status {
                status: 420,
                operation: "number buy",
                ..
            }))
        ),
        "{bought:?}"
    );
}

#[tokio::test]
async fn a_purchase_that_times_out_is_sent_once_and_may_have_gone_through() {
    let server = MockServer::start().await;
    buys()
        .respond_with(success().set_delay(LATE))
        .mount(&server)
        .await;

    let bought = buy(
        vonage_with(&account(&server), short_timeout()).as_ref(),
        "+447400123460",
    )
    .await;

    assert!(
        matches!(
            bought,
            Err(PostError::Unconfirmed(ProviderError::Timeout {
                operation: "number buy",
                ..
            }))
        ),
        "{bought:?}"
    );
    let requests = server.received_requests().await.unwrap();
    assert_eq!(posts_to(&requests, "/number/buy"), 1);
    assert_eq!(posts_to(&requests, "/number/update"), 0);
}

#[tokio::test]
async fn a_purchase_answered_with_a_5xx_is_not_sent_again() {
    let server = MockServer::start().await;
    buys()
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;

    let bought = buy(vonage(&server).as_ref(), "+447400123460").await;

    assert!(
        matches!(
            bought,
            Err(PostError::Unconfirmed(ProviderError::Status {
                status: 500,
                ..
            }))
        ),
        "{bought:?}"
    );
    assert_eq!(
        posts_to(&server.received_requests().await.unwrap(), "/number/buy"),
        1
    );
}

/// Bought, but not pointed at us: the purchase happened, so it must not read as refused (which
/// would take it back from the month's count), and the number must not be pooled.
#[tokio::test]
async fn a_bought_number_that_cannot_be_linked_is_unconfirmed() {
    for link_answer in [
        ResponseTemplate::new(420).set_body_string(fixture("vonage/number_method_failed.json")),
        ResponseTemplate::new(200).set_body_string(fixture("vonage/number_method_failed.json")),
        ResponseTemplate::new(503),
    ] {
        let server = MockServer::start().await;
        buys()
            .respond_with(success())
            .expect(1)
            .mount(&server)
            .await;
        links().respond_with(link_answer).mount(&server).await;

        let bought = buy(vonage(&server).as_ref(), "+447400123460").await;

        assert!(
            matches!(
                bought,
                Err(PostError::Unconfirmed(ProviderError::Status {
                    operation: "number update",
                    ..
                }))
            ),
            "{bought:?}"
        );
        assert_eq!(
            posts_to(&server.received_requests().await.unwrap(), "/number/update"),
            1
        );
    }
}

#[tokio::test]
async fn a_purchase_whose_number_is_not_listed_yet_is_still_bought() {
    let server = MockServer::start().await;
    buys().respond_with(success()).mount(&server).await;
    links().respond_with(success()).mount(&server).await;
    Mock::given(method("GET"))
        .and(path("/account/numbers"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string(fixture("vonage/account_numbers_empty.json")),
        )
        .mount(&server)
        .await;

    let bought = buy(vonage(&server).as_ref(), "+447400123460")
        .await
        .unwrap();

    assert_eq!(bought.number.as_str(), "+447400123460");
    assert_eq!(bought.market().unwrap().as_str(), "GB");
}

#[tokio::test]
async fn finds_a_number_by_its_exact_digits() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/account/numbers"))
        .and(query_param("pattern", "447400123456"))
        .and(query_param("search_pattern", "0"))
        .and(header("authorization", basic_auth().as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "count": 2,
            "numbers": [
                // Starts with the digits asked for, but is another number.
                {
                    "country": "GB",
                    "msisdn": "4474001234561",
                    "type": "mobile-lvn",
                    "features": ["VOICE", "SMS"],
                    "app_id": APP_ID,
                },
                {
                    "country": "GB",
                    "msisdn": "447400123456",
                    "type": "mobile-lvn",
                    "features": ["VOICE"],
                    "app_id": APP_ID,
                },
            ],
        })))
        .expect(1)
        .mount(&server)
        .await;

    let found = vonage(&server)
        .find_number(&vn("+447400123456"))
        .await
        .unwrap()
        .expect("listed");

    assert_eq!(found.number.as_str(), "+447400123456");
    assert!(found.capabilities.voice && !found.capabilities.sms);
}

/// An entry that cannot be read may be the number asked for: nothing is proven, so a number
/// is neither retired nor taken as bought on such an answer.
#[tokio::test]
async fn an_unreadable_entry_in_a_look_up_proves_nothing() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/account/numbers"))
        .and(query_param("pattern", "447400123456"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "count": 1,
            "numbers": [{ "country": "GB", "msisdn": "not a number", "features": ["VOICE"], "app_id": APP_ID }],
        })))
        .mount(&server)
        .await;

    let err = vonage(&server)
        .find_number(&vn("+447400123456"))
        .await
        .unwrap_err();

    assert!(matches!(err, ProviderError::Malformed { .. }), "{err:?}");
}

#[tokio::test]
async fn a_number_linked_elsewhere_is_not_found() {
    let server = MockServer::start().await;
    let mut page = json_fixture("vonage/account_numbers_index1.json");
    page["count"] = json!(1);
    page["numbers"] = json!([page["numbers"][1].clone()]);
    Mock::given(method("GET"))
        .and(path("/account/numbers"))
        .and(query_param("pattern", "447400123457"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page))
        .mount(&server)
        .await;

    let found = vonage(&server)
        .find_number(&vn("+447400123457"))
        .await
        .unwrap();

    assert_eq!(found, None);
}

/// A Vonage pool number of ours, calls only, as the listing reads it.
fn pooled(number: &str) -> vnmask::domain::PoolNumber {
    vnmask::domain::PoolNumber {
        number: vn(number),
        provider: "vonage".parse().unwrap(),
        market: market("GB"),
        capabilities: Capabilities {
            voice: true,
            sms: false,
        },
        state: vnmask::domain::NumberState::Active,
        hold: None,
    }
}

/// One page listing `digits` of ours, and nothing else.
async fn lists_only(server: &MockServer, digits: &[&str]) {
    let numbers: Vec<_> = digits
        .iter()
        .map(|d| json!({ "country": "GB", "msisdn": d, "type": "mobile-lvn", "features": ["VOICE"], "app_id": APP_ID }))
        .collect();
    Mock::given(method("GET"))
        .and(path("/account/numbers"))
        .and(query_param("index", "1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "count": numbers.len(), "numbers": numbers })),
        )
        .mount(server)
        .await;
}

/// Looking `digits` up alone answers `answer`.
async fn looked_up(server: &MockServer, digits: &str, answer: ResponseTemplate) {
    Mock::given(method("GET"))
        .and(path("/account/numbers"))
        .and(query_param("pattern", digits))
        .respond_with(answer)
        .with_priority(1)
        .mount(server)
        .await;
}

/// Pages read by position skip a number when one before it goes while they are read, with the
/// count unchanged if another was bought meanwhile: a pooled number the listing lacks is
/// looked up alone and retired only when that finds nothing.
#[tokio::test]
async fn a_pooled_number_the_listing_lacks_is_retired_only_once_looked_up_and_not_found() {
    use vnmask::domain::NumberState::{Active, Retired};
    use vnmask::store::PoolStore;
    let dynamo = vnmask_tests::local_dynamo().await;
    let (listed, skipped, gone, unknown) = (
        "447400123456",
        "447400123458",
        "447400123459",
        "447400123460",
    );
    for digits in [listed, skipped, gone, unknown] {
        dynamo
            .store
            .put_number(&pooled(&format!("+{digits}")))
            .await
            .unwrap();
    }
    let server = MockServer::start().await;
    lists_only(&server, &[listed]).await;
    finds(&server, skipped).await;
    looked_up(
        &server,
        gone,
        ResponseTemplate::new(200).set_body_json(json!({ "count": 0 })),
    )
    .await;
    looked_up(&server, unknown, ResponseTemplate::new(500)).await;
    let inventories: Vec<Arc<dyn Inventory>> = vec![vonage(&server)];

    let summary = refresher(keyless(&dynamo), inventories, None, settings(&["GB"]))
        .refresh(vnmask_tests::now())
        .await;

    let pool = pool_state(dynamo.store.as_ref(), "GB").await;
    let state = |digits: &str| state_of(&pool, &format!("+{digits}"));
    assert_eq!(state(listed), Active);
    assert_eq!(state(skipped), Active, "skipped, still ours");
    assert_eq!(state(gone), Retired, "looked up, not found");
    assert_eq!(state(unknown), Active, "its look-up failed");
    assert_eq!(summary.markets[0].retired, 1);
    assert_eq!(summary.providers[0].unconfirmed, 1);
    assert!(summary.providers[0].error.is_none());
}

/// A run looks up a bounded number of absences (100 a provider); a provider that released
/// more at once has them retired over the next runs, the others left as they are meanwhile.
#[tokio::test]
async fn many_absences_are_confirmed_over_several_runs() {
    use vnmask::domain::NumberState::Retired;
    use vnmask::store::PoolStore;
    let dynamo = vnmask_tests::local_dynamo().await;
    let released: Vec<String> = (0..105).map(|i| format!("+447400125{i:03}")).collect();
    for number in &released {
        dynamo.store.put_number(&pooled(number)).await.unwrap();
    }
    let server = MockServer::start().await;
    lists_only(&server, &["447400123456"]).await;
    Mock::given(method("GET"))
        .and(path("/account/numbers"))
        .and(query_param("search_pattern", "0"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "count": 0 })))
        .with_priority(1)
        .mount(&server)
        .await;
    let inventories: Vec<Arc<dyn Inventory>> = vec![vonage(&server)];
    let refresher = refresher(keyless(&dynamo), inventories, None, settings(&["GB"]));

    let first = refresher.refresh(vnmask_tests::now()).await;
    let retired_first = pool_state(dynamo.store.as_ref(), "GB")
        .await
        .values()
        .filter(|s| s.0 == Retired)
        .count();
    let second = refresher.refresh(vnmask_tests::now()).await;

    assert_eq!((first.markets[0].retired, retired_first), (100, 100));
    assert_eq!(first.providers[0].unconfirmed, 5);
    assert_eq!(second.markets[0].retired, 5);
    assert_eq!(second.providers[0].unconfirmed, 0);
    let pool = pool_state(dynamo.store.as_ref(), "GB").await;
    assert!(
        released.iter().all(|n| state_of(&pool, n) == Retired),
        "{pool:?}"
    );
}
