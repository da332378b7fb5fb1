//! The fallback: no session yet, so the order comes from the Orders service (a wiremock
//! server on 127.0.0.1) and is assigned on the spot by the same code the assign function runs.

use crate::common;

use std::time::{Duration, Instant};

use common::{assignment, completion, config, fixture, jwt_event, Fx};
use http::StatusCode;
use serde_json::{json, Value};
use vnmask::assignment::Outcome;
use vnmask::domain::Participant;
use vnmask::routing::live_route;
use vnmask_tests::now;
use vnmask_tests::people::{customer, driver, merchant};
use wiremock::matchers::{header, method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

fn order_json(order: &str, state: &str, version: u64, people: &[Participant]) -> Value {
    json!({
        "order_id": order,
        "market": "IN",
        "state": state,
        "version": version,
        "participants": people.iter().map(|p| json!({
            "role": p.role.as_str(),
            "user_id": p.user_id.as_str(),
            "phone": p.phone.expose(),
        })).collect::<Vec<_>>(),
        "created_at": "2026-11-24T10:14:00Z",
    })
}

async fn with_orders_service(server: &MockServer) -> Fx {
    fixture(
        4,
        config(&[
            ("ORDERS_API_URL", &server.uri()),
            ("ORDERS_API_AUTH_HEADER", "x-api-key"),
            ("ORDERS_API_AUTH_VALUE", "orders-test-key"),
        ]),
    )
    .await
}

async fn serve_order(server: &MockServer, order: &str, body: Value) {
    Mock::given(method("GET"))
        .and(path(format!("/orders/{order}")))
        .and(header("x-api-key", "orders-test-key"))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(server)
        .await;
}

#[tokio::test]
async fn late_event_order_is_assigned_and_answered() {
    // GIVEN an order the assignment event has not brought yet
    let server = MockServer::start().await;
    let fx = with_orders_service(&server).await;
    let (c, d) = (customer(1), driver(1));
    serve_order(
        &server,
        "ord-1",
        order_json("ord-1", "active", 7, &[c.clone(), d.clone()]),
    )
    .await;

    // WHEN the customer asks
    fx.dynamo.calls.reset();
    let answer = fx.ask("c1", "ord-1").await;
    let calls = fx.dynamo.calls.snapshot();
    println!("DynamoDB calls for a fallback lookup that assigns: {calls:?}");

    // THEN the order is assigned here and the answer is the stored assignment
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body["version"], 7);
    let session = fx
        .store
        .session(&"ord-1".parse().unwrap())
        .await
        .unwrap()
        .expect("the fallback stored the session");
    assert_eq!(session.version, 7);
    let number = session.contacts[0].number.as_str().to_owned();
    assert_eq!(answer.numbers(), vec![("d1".to_owned(), number.clone())]);
    let route = live_route(
        fx.store.as_ref(),
        &c.phone,
        &session.contacts[0].number,
        now(),
    )
    .await
    .unwrap()
    .expect("route");
    assert_eq!(route.callee, d.phone);
    assert_eq!(server.received_requests().await.unwrap().len(), 1);

    // AND the late event itself is now a no-op, and the driver reads the same number from the session
    assert!(matches!(
        fx.event(&assignment("ord-1", 7, &[c, d]), now()).await,
        Outcome::Stale { stored_version: 7 }
    ));
    fx.dynamo.calls.reset();
    assert_eq!(
        fx.ask("d1", "ord-1").await.numbers(),
        vec![("c1".to_owned(), number)]
    );
    assert_eq!(
        fx.dynamo.calls.snapshot(),
        [("GetItem".to_owned(), 1)].into()
    );
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        1,
        "no second fallback"
    );
}

#[tokio::test]
async fn a_fallback_keeps_the_orders_recording_choice_as_its_event_would() {
    let server = MockServer::start().await;
    let fx = with_orders_service(&server).await;
    let (c, d) = (customer(1), driver(1));
    let mut order = order_json("ord-1", "active", 7, &[c.clone(), d.clone()]);
    order["record"] = true.into();
    serve_order(&server, "ord-1", order).await;

    assert_eq!(fx.ask("c1", "ord-1").await.status, StatusCode::OK);

    let session = fx
        .store
        .session(&"ord-1".parse().unwrap())
        .await
        .unwrap()
        .expect("the fallback stored the session");
    assert!(session.record);
    for (from, to) in [(&c, &d), (&d, &c)] {
        let route = live_route(
            fx.store.as_ref(),
            &from.phone,
            &session.contacts[0].number,
            now(),
        )
        .await
        .unwrap()
        .expect("route");
        assert_eq!(&route.callee, &to.phone);
        assert!(route.record, "both directions record");
    }
}

#[tokio::test]
async fn orders_service_credential_is_sent() {
    let server = MockServer::start().await;
    let fx = with_orders_service(&server).await;
    serve_order(
        &server,
        "ord-1",
        order_json("ord-1", "active", 1, &[customer(1), driver(1)]),
    )
    .await;
    fx.ask("c1", "ord-1").await;
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].url.path(), "/orders/ord-1");
    assert_eq!(
        requests[0].headers.get("x-api-key").unwrap(),
        "orders-test-key"
    );
}

#[tokio::test]
async fn fallback_for_a_non_participant_is_404_and_assigns_nothing() {
    let server = MockServer::start().await;
    let fx = with_orders_service(&server).await;
    serve_order(
        &server,
        "ord-1",
        order_json("ord-1", "active", 1, &[customer(1), driver(1)]),
    )
    .await;
    let answer = fx.ask("d2", "ord-1").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.problem_type(), "urn:vnmask:problem:order-not-found");
    assert!(fx
        .store
        .session(&"ord-1".parse().unwrap())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn order_unknown_to_the_orders_service_is_404() {
    let server = MockServer::start().await;
    let fx = with_orders_service(&server).await;
    Mock::given(path_regex("^/orders/"))
        .respond_with(ResponseTemplate::new(404).set_body_string("{\"error\": \"no such order\"}"))
        .mount(&server)
        .await;
    let answer = fx.ask("c1", "ord-404").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.problem_type(), "urn:vnmask:problem:order-not-found");
}

#[tokio::test]
async fn order_that_is_not_active_is_404_and_assigns_nothing() {
    let server = MockServer::start().await;
    let fx = with_orders_service(&server).await;
    for (order, state) in [
        ("ord-done", "completed"),
        ("ord-x", "cancelled"),
        ("ord-p", "pending"),
    ] {
        serve_order(
            &server,
            order,
            order_json(order, state, 4, &[customer(1), driver(1)]),
        )
        .await;
        let answer = fx.ask("c1", order).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{state}");
        assert!(fx
            .store
            .session(&order.parse().unwrap())
            .await
            .unwrap()
            .is_none());
    }
}

#[tokio::test]
async fn orders_service_down_is_503_with_retry_after() {
    // Nothing listens on this port any more.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let fx = fixture(4, config(&[("ORDERS_API_URL", &url)])).await;
    let answer = fx.ask("c1", "ord-1").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        answer.problem_type(),
        "urn:vnmask:problem:orders-unavailable"
    );
    assert_eq!(answer.header("retry-after"), Some("2"));
    assert_eq!(answer.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn without_an_orders_service_an_order_without_session_is_404() {
    // Even for one of its participants: answering otherwise would tell strangers which orders
    // have a session (404) and which do not (something else).
    let fx = fixture(4, config(&[])).await;
    let answer = fx.ask("c1", "ord-1").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.problem_type(), "urn:vnmask:problem:order-not-found");
    assert!(answer.header("retry-after").is_none());
    assert_eq!(
        fx.dynamo.calls.snapshot(),
        [("GetItem".to_owned(), 1)].into(),
        "one read, nothing written"
    );
}

#[tokio::test]
async fn slow_orders_service_is_503_within_the_timeout() {
    let server = MockServer::start().await;
    let fx = fixture(
        4,
        config(&[
            ("ORDERS_API_URL", &server.uri()),
            ("ORDERS_API_TIMEOUT_MS", "300"),
        ]),
    )
    .await;
    Mock::given(path("/orders/ord-1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(order_json("ord-1", "active", 1, &[customer(1), driver(1)]))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    let started = Instant::now();
    let answer = fx.ask("c1", "ord-1").await;
    let waited = started.elapsed();
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.header("retry-after").is_some());
    assert!(
        waited < Duration::from_millis(1500),
        "answered after {waited:?}"
    );
    assert!(fx
        .store
        .session(&"ord-1".parse().unwrap())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn default_timeout_is_one_second() {
    let server = MockServer::start().await;
    let fx = fixture(4, config(&[("ORDERS_API_URL", &server.uri())])).await;
    Mock::given(path("/orders/ord-1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(order_json("ord-1", "active", 1, &[customer(1), driver(1)]))
                .set_delay(Duration::from_millis(1400)),
        )
        .mount(&server)
        .await;
    let started = Instant::now();
    let answer = fx.ask("c1", "ord-1").await;
    let waited = started.elapsed();
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        waited >= Duration::from_millis(900),
        "gave up after {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(1400),
        "answered after {waited:?}"
    );
}

#[tokio::test]
async fn orders_service_failures_are_503_unless_only_an_existing_order_causes_them() {
    let (c, d) = (customer(1), driver(1));
    let mut wrong_order = order_json("ord-2", "active", 1, &[c.clone(), d.clone()]);
    wrong_order["order_id"] = json!("ord-other");
    let mut bad_phone = order_json("ord-3", "active", 1, &[c.clone(), d.clone()]);
    bad_phone["participants"][1]["phone"] = json!("98100 00001");
    let twice = order_json("ord-4", "active", 1, &[c.clone(), c.clone(), d.clone()]);
    let (unavailable, not_found) = (StatusCode::SERVICE_UNAVAILABLE, StatusCode::NOT_FOUND);
    let cases: Vec<(&str, ResponseTemplate, StatusCode)> = vec![
        // Outages an unknown order meets as well: 503, retry.
        ("ord-5", ResponseTemplate::new(500), unavailable),
        ("ord-6", ResponseTemplate::new(401), unavailable),
        (
            "ord-7",
            ResponseTemplate::new(302).insert_header("location", "http://127.0.0.1:9/"),
            unavailable,
        ),
        // A 200 that is no usable order, but still lists the caller: they know it exists.
        (
            "ord-3",
            ResponseTemplate::new(200).set_body_json(bad_phone),
            unavailable,
        ),
        (
            "ord-4",
            ResponseTemplate::new(200).set_body_json(twice),
            unavailable,
        ),
        // Answers only an existing order gets, that do not show the caller in it: 404.
        (
            "ord-1",
            ResponseTemplate::new(200).set_body_string("<html>upstream error</html>"),
            not_found,
        ),
        (
            "ord-2",
            ResponseTemplate::new(200).set_body_json(wrong_order),
            not_found,
        ),
        (
            "ord-8",
            ResponseTemplate::new(200).set_body_string("x".repeat(100_000)),
            not_found,
        ),
        ("ord-9", ResponseTemplate::new(403), not_found),
    ];
    let server = MockServer::start().await;
    let fx = fixture(4, config(&[("ORDERS_API_URL", &server.uri())])).await;
    for (order, response, status) in cases {
        Mock::given(path(format!("/orders/{order}")))
            .respond_with(response)
            .mount(&server)
            .await;
        let answer = fx.ask("c1", order).await;
        assert_eq!(answer.status, status, "{order}");
        let problem = if status == not_found {
            "urn:vnmask:problem:order-not-found"
        } else {
            "urn:vnmask:problem:orders-unavailable"
        };
        assert_eq!(answer.problem_type(), problem, "{order}");
        assert_eq!(
            answer.header("retry-after").is_some(),
            status == unavailable
        );
        assert!(!answer.body.to_string().contains("98100"));
        assert!(fx
            .store
            .session(&order.parse().unwrap())
            .await
            .unwrap()
            .is_none());
    }
    // The unusable orders that list c1 are none of a stranger's business.
    for order in ["ord-3", "ord-4"] {
        assert_eq!(fx.ask("d2", order).await.status, not_found, "{order}");
    }
}

/// Ids that are not one order id: dot segments (plain and encoded), encoded `/`, `?`, `%`,
/// spaces, and one character too many.
fn refused_ids() -> Vec<String> {
    let mut ids: Vec<String> = [
        ".",
        "..",
        "%2E",
        "%2e%2E",
        "ord%2F1",
        "..%2Fadmin",
        "%2F..%2F..%2Fadmin",
        "ord%201",
        "ord%3F1",
        "ord%251",
    ]
    .map(String::from)
    .to_vec();
    ids.push("o".repeat(129));
    ids
}

fn is_dot_segment(raw: &str) -> bool {
    matches!(
        raw.to_ascii_lowercase().as_str(),
        "." | ".." | "%2e" | "%2e%2e"
    )
}

#[tokio::test]
async fn dot_and_malformed_ids_are_refused_before_anything_is_asked() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    let fx = with_orders_service(&server).await;
    for id in refused_ids() {
        let answer = fx
            .send(jwt_event(&format!("/v1/orders/{id}/contacts"), "c1"))
            .await;
        if is_dot_segment(&id) {
            // lambda_http resolves dot segments (`/v1/orders/../contacts` is `/v1/contacts`):
            // no such endpoint, and never an order.
            assert_eq!(answer.status, StatusCode::NOT_FOUND, "{id}");
            assert_eq!(
                answer.problem_type(),
                "urn:vnmask:problem:no-such-endpoint",
                "{id}"
            );
        } else {
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{id}");
            assert_eq!(
                answer.problem_type(),
                "urn:vnmask:problem:invalid-order-id",
                "{id}"
            );
        }
    }
    // A `/` that is not encoded is another path altogether.
    let answer = fx.send(jwt_event("/v1/orders/ord/1/contacts", "c1")).await;
    assert_eq!(answer.problem_type(), "urn:vnmask:problem:no-such-endpoint");
    assert!(server.received_requests().await.unwrap().is_empty());
    assert_eq!(
        fx.dynamo.calls.total(),
        0,
        "nothing is read for a refused id"
    );
}

#[tokio::test]
async fn dot_ids_are_refused_by_the_handler_itself() {
    // GIVEN a front that hands paths to the router untouched, and a caller it identifies
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    let header = "x-vnmask-local-claims";
    let fx = fixture(
        4,
        config(&[
            ("ORDERS_API_URL", &server.uri()),
            ("VNMASK_LOCAL_CLAIMS_HEADER", header),
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9000/.rt"),
        ]),
    )
    .await;
    for id in refused_ids() {
        let request = http::Request::builder()
            .uri(format!("/v1/orders/{id}/contacts"))
            .header(header, r#"{"sub": "c1"}"#)
            .body(lambda_http::Body::Empty)
            .unwrap();
        // WHEN the request reaches the handler
        let answer = common::send_request(&fx.router, request).await;
        // THEN the id is refused, and the answer says why
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{id}");
        assert_eq!(answer.problem_type(), "urn:vnmask:problem:invalid-order-id");
        let detail = answer.body["detail"].as_str().unwrap();
        assert!(detail.contains("not '.' or '..'"), "{detail}");
    }
    // AND nothing was asked of the Orders service or the store
    assert!(server.received_requests().await.unwrap().is_empty());
    assert_eq!(fx.dynamo.calls.total(), 0);
}

#[tokio::test]
async fn order_id_reaches_the_orders_service_as_one_exact_segment() {
    // Under a base URL with a path of its own, ids with every punctuation the alphabet allows.
    let server = MockServer::start().await;
    let base = format!("{}/api/v2/", server.uri());
    let fx = fixture(4, config(&[("ORDERS_API_URL", &base)])).await;
    let ids = ["ord:2026.11_A-b", "...", ".hidden", "a..b", "ord-1"];
    for (i, id) in ids.into_iter().enumerate() {
        // Each order its own people: a person holds one number per order.
        let people = [customer(i), driver(i)];
        Mock::given(method("GET"))
            .and(path(format!("/api/v2/orders/{id}")))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(order_json(id, "active", 1, &people)),
            )
            .expect(1)
            .mount(&server)
            .await;
        let answer = fx.ask(people[0].user_id.as_str(), id).await;
        assert_eq!(answer.status, StatusCode::OK, "{id}: {:?}", answer.body);
        assert_eq!(answer.body["order_id"], id);
    }
    let seen: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.url.path().to_owned())
        .collect();
    let expected: Vec<String> = ids
        .iter()
        .map(|id| format!("/api/v2/orders/{id}"))
        .collect();
    assert_eq!(seen, expected);
}

#[test]
fn order_url_encodes_the_id_as_one_segment() {
    let orders = config(&[("ORDERS_API_URL", "https://orders.example/api/")])
        .orders
        .unwrap();
    let api = lookup::orders::OrdersApi::new(orders).unwrap();
    let url = api.order_url(&"ord:1.a_B-2".parse().unwrap());
    assert_eq!(url, "https://orders.example/api/orders/ord:1.a_B-2");
    // Anything outside the alphabet would be encoded, should the alphabet ever widen.
    let mut raw = String::from("https://orders.example/api/orders/");
    lookup::orders::push_segment(&mut raw, "a/../b c");
    assert_eq!(raw, "https://orders.example/api/orders/a%2F..%2Fb%20c");
}

#[tokio::test]
async fn session_that_exists_is_never_refetched() {
    // An ended order's session answers by itself, even if the Orders service would disagree.
    let server = MockServer::start().await;
    let fx = with_orders_service(&server).await;
    fx.event(&assignment("ord-1", 1, &[customer(1), driver(1)]), now())
        .await;
    fx.event(&completion("ord-1", 2), now()).await;
    assert_eq!(fx.ask("c1", "ord-1").await.status, StatusCode::OK);
    assert!(server.received_requests().await.unwrap().is_empty());
}

/// Answers `GET /orders/{id}` for any `ord-race-N`: customer N, driver N and merchant N, version 1.
struct RaceOrders;

impl Respond for RaceOrders {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let id = request.url.path().trim_start_matches("/orders/");
        let n: usize = id.trim_start_matches("ord-race-").parse().unwrap();
        ResponseTemplate::new(200).set_body_json(order_json(
            id,
            "active",
            1,
            &[customer(n), driver(n), merchant(n)],
        ))
    }
}

#[tokio::test]
async fn fallback_racing_the_event_ends_in_one_assignment() {
    let server = MockServer::start().await;
    Mock::given(path_regex("^/orders/ord-race-[0-9]+$"))
        .respond_with(RaceOrders)
        .mount(&server)
        .await;
    // Enough numbers that the two sides could pick differently if they both wrote.
    let fx = fixture(12, config(&[("ORDERS_API_URL", &server.uri())])).await;
    let rounds = 40;
    let (mut event_won, mut fallback_won) = (0, 0);
    for i in 0..rounds {
        let order = format!("ord-race-{i}");
        let people = [customer(i), driver(i), merchant(i)];
        let update = assignment(&order, 1, &people);
        // Stagger the event from 0 to ~20 ms so that either side may get there first.
        let delay = Duration::from_micros((i as u64 % 10) * 2_000);
        let asker = people[0].user_id.as_str();
        let (answer, outcome) = tokio::join!(fx.ask(asker, &order), async {
            tokio::time::sleep(delay).await;
            fx.assign.apply(&update, now()).await
        });
        let outcome = outcome.expect("the event applies or is stale");
        let session = fx
            .store
            .session(&order.parse().unwrap())
            .await
            .unwrap()
            .expect("one session");
        assert_eq!(session.version, 1);
        match outcome {
            Outcome::Applied {
                session: written, ..
            } => {
                event_won += 1;
                assert_eq!(written.contacts, session.contacts, "round {i}");
            }
            Outcome::Stale { stored_version } => {
                fallback_won += 1;
                assert_eq!(stored_version, 1);
            }
        }
        // The app saw the stored numbers, and they route where they say.
        let mut seen = answer.numbers();
        seen.sort();
        let me = &people[0];
        let mut stored: Vec<(String, String)> = session
            .contacts
            .iter()
            .filter_map(|c| {
                c.other(&me.user_id)
                    .map(|o| (o.as_str().to_owned(), c.number.as_str().to_owned()))
            })
            .collect();
        stored.sort();
        assert_eq!(seen, stored, "round {i}");
        for contact in &session.contacts {
            let a = people.iter().find(|p| p.user_id == contact.a).unwrap();
            let b = people.iter().find(|p| p.user_id == contact.b).unwrap();
            for (from, to) in [(a, b), (b, a)] {
                let route = live_route(fx.store.as_ref(), &from.phone, &contact.number, now())
                    .await
                    .unwrap()
                    .expect("route");
                assert_eq!(route.callee, to.phone, "round {i}");
                assert_eq!(route.order_id.as_str(), order);
            }
        }
        // Each person holds exactly one live route per contact of theirs in this order.
        for p in &people {
            let live = fx.store.live_contacts(&p.phone, now()).await.unwrap();
            let mine = live.iter().filter(|l| l.order_id.as_str() == order).count();
            assert_eq!(
                mine, 2,
                "round {i}: {} has one route per other party",
                p.user_id
            );
        }
    }
    println!("race: the event won {event_won}, the fallback won {fallback_won} of {rounds}");
    assert_eq!(event_won + fallback_won, rounds);
}
