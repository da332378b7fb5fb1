//! The lookup endpoint on DynamoDB Local, through real API Gateway v2 events: who sees which
//! numbers, who sees nothing, and what each request costs.

use crate::common;

use common::{
    assignment, completion, config, fixture, fixture_json, jwt_event, set_path, Fx, FIXTURE_SUB,
};
use http::StatusCode;
use serde_json::json;
use vnmask::domain::{Participant, VirtualNumber};
use vnmask::routing::live_route;
use vnmask_tests::people::{customer, driver, merchant};
use vnmask_tests::{now, participant};

async fn fx() -> Fx {
    fixture(4, config(&[])).await
}

/// The number `from` dials for `to` in `order`, as the store holds it (checked against the routes).
async fn stored_number(fx: &Fx, order: &str, from: &Participant, to: &Participant) -> String {
    let session = fx
        .store
        .session(&order.parse().unwrap())
        .await
        .unwrap()
        .expect("session");
    let contact = session
        .contacts
        .iter()
        .find(|c| c.joins(&from.user_id, &to.user_id))
        .expect("contact");
    let route = live_route(fx.store.as_ref(), &from.phone, &contact.number, now())
        .await
        .unwrap()
        .expect("live route");
    assert_eq!(route.callee, to.phone);
    contact.number.as_str().to_owned()
}

#[tokio::test]
async fn participant_sees_exactly_the_other_parties_numbers() {
    // GIVEN a merchant order: customer, driver and merchant all reach each other.
    let fx = fx().await;
    let (c, d, m) = (customer(1), driver(1), merchant(1));
    fx.event(
        &assignment("ord-1", 3, &[c.clone(), d.clone(), m.clone()]),
        now(),
    )
    .await;

    for (me, others) in [(&c, [&d, &m]), (&d, [&c, &m]), (&m, [&c, &d])] {
        // WHEN each of them asks
        let answer = fx.ask(me.user_id.as_str(), "ord-1").await;
        // THEN they see one number per other party: the one that routes them to that party.
        assert_eq!(answer.status, StatusCode::OK);
        let mut seen = answer.numbers();
        seen.sort();
        let mut expected = Vec::new();
        for other in others {
            expected.push((
                other.user_id.as_str().to_owned(),
                stored_number(&fx, "ord-1", me, other).await,
            ));
        }
        expected.sort();
        assert_eq!(seen, expected, "{} sees the others' numbers", me.user_id);
        assert_eq!(answer.body["order_id"], "ord-1");
        assert_eq!(answer.body["version"], 3);
        for contact in answer.body["contacts"].as_array().unwrap() {
            assert_eq!(contact["capabilities"], json!(["voice", "sms"]));
            assert_eq!(contact["valid_until"], json!(null));
            let other = others
                .iter()
                .find(|o| o.user_id.as_str() == contact["user_id"])
                .unwrap();
            assert_eq!(contact["role"], other.role.as_str());
        }
    }
}

#[tokio::test]
async fn answer_never_contains_a_real_number() {
    let fx = fx().await;
    let (c, d) = (customer(1), driver(1));
    fx.event(&assignment("ord-1", 1, &[c.clone(), d.clone()]), now())
        .await;
    let answer = fx.ask("c1", "ord-1").await;
    let text = answer.body.to_string();
    for p in [&c, &d] {
        let digits = &p.phone.expose()[3..];
        assert!(!text.contains(digits), "{text}");
    }
}

#[tokio::test]
async fn driver_with_two_orders_sees_a_different_number_in_each() {
    // The seeds' scenario: customers C and N order at once, driver D takes both.
    let fx = fx().await;
    let (c, n, d) = (customer(1), customer(2), driver(1));
    fx.event(&assignment("ord-c", 1, &[c.clone(), d.clone()]), now())
        .await;
    fx.event(&assignment("ord-n", 1, &[n.clone(), d.clone()]), now())
        .await;

    let for_c = fx.ask("d1", "ord-c").await.numbers();
    let for_n = fx.ask("d1", "ord-n").await.numbers();
    assert_eq!(for_c.len(), 1);
    assert_eq!(for_n.len(), 1);
    assert_eq!(for_c[0].0, "c1");
    assert_eq!(for_n[0].0, "c2");
    assert_ne!(
        for_c[0].1, for_n[0].1,
        "D tells C and N apart by the number"
    );
    assert_eq!(for_c[0].1, stored_number(&fx, "ord-c", &d, &c).await);
    assert_eq!(for_n[0].1, stored_number(&fx, "ord-n", &d, &n).await);
    // And each customer sees the number that reaches D from them.
    assert_eq!(
        fx.ask("c1", "ord-c").await.numbers(),
        vec![("d1".to_owned(), stored_number(&fx, "ord-c", &c, &d).await)]
    );
}

#[tokio::test]
async fn shared_ride_customers_do_not_see_each_other() {
    let fx = fx().await;
    let (c1, c2, d) = (customer(1), customer(2), driver(1));
    fx.event(
        &assignment("ord-s", 5, &[c1.clone(), d.clone(), c2.clone()]),
        now(),
    )
    .await;
    assert_eq!(
        fx.ask("c1", "ord-s").await.numbers(),
        vec![("d1".to_owned(), stored_number(&fx, "ord-s", &c1, &d).await)]
    );
    let mut driver_sees = fx.ask("d1", "ord-s").await.numbers();
    driver_sees.sort();
    assert_eq!(driver_sees.len(), 2);
    assert_eq!(driver_sees[0].0, "c1");
    assert_eq!(driver_sees[1].0, "c2");
}

#[tokio::test]
async fn fast_path_is_one_get_item() {
    let fx = fx().await;
    fx.event(&assignment("ord-1", 1, &[customer(1), driver(1)]), now())
        .await;
    fx.dynamo.calls.reset();
    let answer = fx.ask("c1", "ord-1").await;
    assert_eq!(answer.status, StatusCode::OK);
    let calls = fx.dynamo.calls.snapshot();
    println!("DynamoDB calls for a lookup with a session: {calls:?}");
    assert_eq!(calls, [("GetItem".to_owned(), 1)].into());

    // A refusal costs the same single read, and the missing-identity one costs none.
    fx.dynamo.calls.reset();
    assert_eq!(
        fx.ask("stranger", "ord-1").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        fx.dynamo.calls.snapshot(),
        [("GetItem".to_owned(), 1)].into()
    );
    fx.dynamo.calls.reset();
    let mut anonymous = jwt_event("/v1/orders/ord-1/contacts", "c1");
    anonymous["requestContext"]
        .as_object_mut()
        .unwrap()
        .remove("authorizer");
    assert_eq!(fx.send(anonymous).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(fx.dynamo.calls.total(), 0);
}

#[tokio::test]
async fn success_is_privately_cacheable_for_the_configured_time() {
    let fx = fixture(4, config(&[("VNMASK_LOOKUP_MAX_AGE_SECONDS", "15")])).await;
    fx.event(&assignment("ord-1", 1, &[customer(1), driver(1)]), now())
        .await;
    let answer = fx.ask("c1", "ord-1").await;
    assert_eq!(answer.header("cache-control"), Some("private, max-age=15"));
    assert_eq!(answer.header("vary"), Some("authorization"));
    assert_eq!(answer.content_type(), "application/json");
}

/// Serves, for any `GET /orders/{id}`, what the Orders service would say of each order below.
async fn orders_service() -> wiremock::MockServer {
    use wiremock::matchers::path;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    let order = |id: &str, state: &str, people: &[&Participant]| {
        json!({
            "order_id": id, "market": "IN", "state": state, "version": 1,
            "participants": people.iter().map(|p| json!({
                "role": p.role.as_str(), "user_id": p.user_id.as_str(), "phone": p.phone.expose(),
            })).collect::<Vec<_>>(),
        })
    };
    let (c3, d3) = (customer(3), driver(3));
    let mut broken = order("ord-broken", "active", &[&c3, &d3]);
    broken["participants"][1]["phone"] = json!("98100 00003");
    let answers = [
        ("ord-404", ResponseTemplate::new(404)),
        ("ord-410", ResponseTemplate::new(410)),
        ("ord-403", ResponseTemplate::new(403)),
        (
            "ord-theirs",
            ResponseTemplate::new(200).set_body_json(order("ord-theirs", "active", &[&c3, &d3])),
        ),
        (
            "ord-broken",
            ResponseTemplate::new(200).set_body_json(broken),
        ),
        (
            "ord-html",
            ResponseTemplate::new(200).set_body_string("<html>not an order</html>"),
        ),
        (
            "ord-done",
            ResponseTemplate::new(200).set_body_json(order(
                "ord-done",
                "completed",
                &[&customer(2), &driver(2)],
            )),
        ),
    ];
    for (id, answer) in answers {
        Mock::given(path(format!("/orders/{id}")))
            .respond_with(answer)
            .mount(&server)
            .await;
    }
    server
}

#[tokio::test]
async fn every_way_of_not_seeing_an_order_is_the_same_404() {
    // GIVEN an order with a session, a tombstone, and an Orders service that knows some orders
    let orders = orders_service().await;
    let with_orders = fixture(4, config(&[("ORDERS_API_URL", &orders.uri())])).await;
    let without_orders = fixture(4, config(&[])).await;
    for fx in [&with_orders, &without_orders] {
        fx.event(&assignment("ord-1", 1, &[customer(1), driver(1)]), now())
            .await;
        fx.event(&completion("ord-gone", 5), now()).await;
    }

    // WHEN people ask for orders they may not see, every way there is
    let cases = [
        ("session, caller not in it", &with_orders, "d2", "ord-1"),
        ("session, no Orders service", &without_orders, "d2", "ord-1"),
        (
            "tombstone without participants",
            &with_orders,
            "c1",
            "ord-gone",
        ),
        ("no session, Orders says 404", &with_orders, "d2", "ord-404"),
        ("no session, Orders says 410", &with_orders, "d2", "ord-410"),
        ("no session, Orders says 403", &with_orders, "d2", "ord-403"),
        (
            "no session, caller not in the order",
            &with_orders,
            "d2",
            "ord-theirs",
        ),
        (
            "no session, unusable order without the caller",
            &with_orders,
            "d2",
            "ord-broken",
        ),
        (
            "no session, 200 that is no order",
            &with_orders,
            "d2",
            "ord-html",
        ),
        (
            "no session, order no longer active",
            &with_orders,
            "c2",
            "ord-done",
        ),
        (
            "no session, no Orders service",
            &without_orders,
            "d2",
            "ord-404",
        ),
        (
            "no session, no Orders service, real order",
            &without_orders,
            "c3",
            "ord-theirs",
        ),
    ];
    let mut answers = Vec::new();
    for (what, fx, user, order) in cases {
        answers.push((what, fx.ask(user, order).await));
    }

    // THEN they all get one answer: the same status, headers and body, byte for byte
    let (_, first) = &answers[0];
    assert_eq!(first.status, StatusCode::NOT_FOUND);
    assert_eq!(first.content_type(), "application/problem+json");
    assert_eq!(first.problem_type(), "urn:vnmask:problem:order-not-found");
    assert_eq!(first.header("cache-control"), Some("no-store"));
    assert!(first.header("retry-after").is_none());
    for (what, answer) in &answers {
        assert_eq!(answer.status, first.status, "{what}: {:?}", answer.body);
        assert_eq!(answer.headers, first.headers, "{what}");
        assert_eq!(answer.bytes, first.bytes, "{what}");
    }
    // AND none of them assigned anything
    for order in ["ord-theirs", "ord-broken", "ord-done"] {
        assert!(with_orders
            .store
            .session(&order.parse().unwrap())
            .await
            .unwrap()
            .is_none());
    }
}

#[tokio::test]
async fn replaced_driver_no_longer_sees_the_order() {
    let fx = fx().await;
    let (c, d1, d2) = (customer(1), driver(1), driver(2));
    fx.event(&assignment("ord-1", 1, &[c.clone(), d1.clone()]), now())
        .await;
    let before = fx.ask("c1", "ord-1").await.numbers();
    fx.event(&assignment("ord-1", 2, &[c.clone(), d2.clone()]), now())
        .await;
    assert_eq!(fx.ask("d1", "ord-1").await.status, StatusCode::NOT_FOUND);
    let after = fx.ask("c1", "ord-1").await.numbers();
    assert_eq!(after[0].0, "d2");
    assert_eq!(
        after[0].1, before[0].1,
        "the customer keeps the number for the driver"
    );
}

#[tokio::test]
async fn malformed_order_id_is_a_400() {
    let fx = fx().await;
    for raw in [
        "/v1/orders/ord%231/contacts",
        "/v1/orders/ord%201/contacts",
        "/v1/orders/%FF%FE/contacts",
        "/v1/orders/%2B919810000001%3Cscript%3E/contacts",
    ] {
        let answer = fx.send(jwt_event(raw, "c1")).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{raw}");
        assert_eq!(answer.problem_type(), "urn:vnmask:problem:invalid-order-id");
        assert!(
            !answer.body.to_string().contains("9198100"),
            "input is not echoed"
        );
    }
    let long = format!("/v1/orders/{}/contacts", "x".repeat(129));
    assert_eq!(
        fx.send(jwt_event(&long, "c1")).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        fx.dynamo.calls.total(),
        0,
        "nothing is read for a malformed id"
    );
}

#[tokio::test]
async fn missing_or_wrong_claims_are_a_401() {
    let fx = fx().await;
    fx.event(&assignment("ord-1", 1, &[customer(1), driver(1)]), now())
        .await;
    let path = "/v1/orders/ord-1/contacts";

    let mut no_authorizer = jwt_event(path, "c1");
    no_authorizer["requestContext"]
        .as_object_mut()
        .unwrap()
        .remove("authorizer");
    let mut no_sub = jwt_event(path, "c1");
    no_sub["requestContext"]["authorizer"]["jwt"]["claims"]
        .as_object_mut()
        .unwrap()
        .remove("sub");
    let mut empty_claims = jwt_event(path, "c1");
    empty_claims["requestContext"]["authorizer"]["jwt"]["claims"] = json!({});
    let bad_sub = jwt_event(path, "c1 OR 1=1");
    let mut lambda_authorizer = jwt_event(path, "c1");
    lambda_authorizer["requestContext"]["authorizer"] = json!({"lambda": {"sub": "c1"}});

    for (what, event) in [
        ("no authorizer", no_authorizer),
        ("no sub claim", no_sub),
        ("empty claims", empty_claims),
        ("sub is not a user id", bad_sub),
        ("lambda authorizer context", lambda_authorizer),
    ] {
        let answer = fx.send(event).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(answer.problem_type(), "urn:vnmask:problem:unauthenticated");
        assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
    }
}

#[tokio::test]
async fn identity_comes_from_the_configured_claim() {
    let fx = fixture(4, config(&[("VNMASK_USER_CLAIM", "custom:user_id")])).await;
    fx.event(&assignment("ord-1", 1, &[customer(1), driver(1)]), now())
        .await;
    let path = "/v1/orders/ord-1/contacts";
    // `sub` names the customer, but the configured claim is what counts.
    let answer = fx.send(jwt_event(path, "c1")).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let mut event = jwt_event(path, "c1");
    event["requestContext"]["authorizer"]["jwt"]["claims"]["custom:user_id"] = json!("d1");
    assert_eq!(fx.send(event).await.numbers()[0].0, "c1");
}

#[tokio::test]
async fn real_api_gateway_event_is_answered_for_its_jwt_subject() {
    // GIVEN the order of the fixture, whose driver is the JWT's subject
    let fx = fx().await;
    let c = participant("customer", "u-c", "+919812345678");
    let d = participant("driver", FIXTURE_SUB, "+919898765432");
    fx.event(&assignment("ord-1001", 3, &[c.clone(), d.clone()]), now())
        .await;
    // WHEN the fixture event arrives unchanged
    let answer = fx.send(fixture_json("apigw_v2_jwt.json")).await;
    // THEN the driver sees the customer's number
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(
        answer.numbers(),
        vec![(
            "u-c".to_owned(),
            stored_number(&fx, "ord-1001", &d, &c).await
        )]
    );
    assert!(VirtualNumber::parse(&answer.numbers()[0].1).is_ok());
}

#[tokio::test]
async fn client_set_identity_headers_and_parameters_are_ignored() {
    // The event names the driver in a header, the local-claims header and the query string,
    // but carries no authorizer claims: it is anonymous.
    let fx = fx().await;
    let c = participant("customer", "u-c", "+919812345678");
    let d = participant("driver", FIXTURE_SUB, "+919898765432");
    fx.event(&assignment("ord-1001", 3, &[c, d]), now()).await;
    let answer = fx.send(fixture_json("apigw_v2_no_authorizer.json")).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn local_claims_header_works_only_where_enabled() {
    let c = participant("customer", "u-c", "+919812345678");
    let d = participant("driver", FIXTURE_SUB, "+919898765432");
    let local = [("VNMASK_LOCAL_CLAIMS_HEADER", "x-vnmask-local-claims")];
    // Enabled, outside AWS (what `cargo lambda watch` looks like): the header is the identity.
    let watch = fixture(
        4,
        config(&[local[0], ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9000/.rt")]),
    )
    .await;
    watch
        .event(&assignment("ord-1001", 3, &[c.clone(), d.clone()]), now())
        .await;
    let answer = watch.send(fixture_json("cargo_lambda_watch.json")).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.numbers()[0].0, "u-c");

    // Malformed local claims are no identity.
    let mut garbled = fixture_json("cargo_lambda_watch.json");
    garbled["headers"]["x-vnmask-local-claims"] = json!("sub=u-c");
    assert_eq!(watch.send(garbled).await.status, StatusCode::UNAUTHORIZED);

    // Real authorizer claims win over the header.
    let mut both = jwt_event("/v1/orders/ord-1001/contacts", "u-c");
    both["headers"]["x-vnmask-local-claims"] = json!(format!("{{\"sub\": \"{FIXTURE_SUB}\"}}"));
    assert_eq!(watch.send(both).await.numbers()[0].0, FIXTURE_SUB);

    // The same flag in a real Lambda environment (the guard fails): the header is ignored.
    for lambda_env in [
        config(&[local[0], ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")]),
        config(&[
            local[0],
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9000/.rt"),
            ("LAMBDA_TASK_ROOT", "/var/task"),
        ]),
        config(&[
            local[0],
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9000/.rt"),
            ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/vnmask-lookup"),
        ]),
    ] {
        let deployed = fixture(4, lambda_env).await;
        deployed
            .event(&assignment("ord-1001", 3, &[c.clone(), d.clone()]), now())
            .await;
        let answer = deployed.send(fixture_json("cargo_lambda_watch.json")).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }

    // Not enabled at all: ignored too.
    let plain = fixture(
        4,
        config(&[("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9000/.rt")]),
    )
    .await;
    plain
        .event(&assignment("ord-1001", 3, &[c, d]), now())
        .await;
    assert_eq!(
        plain
            .send(fixture_json("cargo_lambda_watch.json"))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

#[test]
fn deployment_template_never_enables_local_claims() {
    let template = std::fs::read_to_string(vnmask_tests::template_path()).unwrap();
    assert!(!template.contains("VNMASK_LOCAL_CLAIMS_HEADER"));
}

#[tokio::test]
async fn ended_order_shows_grace_end_then_nothing() {
    let fx = fx().await;
    let (c, d) = (customer(1), driver(1));
    let t = now();
    // Ended a minute ago: 29 minutes of grace left.
    fx.event(&assignment("ord-1", 1, &[c.clone(), d.clone()]), t - 600)
        .await;
    fx.event(&completion("ord-1", 2), t - 60).await;
    let during = fx.ask("c1", "ord-1").await;
    assert_eq!(during.status, StatusCode::OK);
    let grace_end = time::OffsetDateTime::from_unix_timestamp(t - 60 + 1800)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    assert_eq!(during.body["contacts"][0]["valid_until"], json!(grace_end));
    assert_eq!(during.body["version"], 2);

    // Ended an hour ago: the grace period is over, the participant sees no contacts.
    fx.event(&assignment("ord-2", 1, &[c.clone(), d.clone()]), t - 7200)
        .await;
    fx.event(&completion("ord-2", 2), t - 3600).await;
    let after = fx.ask("c1", "ord-2").await;
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(after.body["contacts"], json!([]));
    // ... and a stranger still learns nothing.
    assert_eq!(fx.ask("c2", "ord-2").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn completion_before_assignment_is_not_found() {
    // The completion overtook the assignment: the tombstone has no participants.
    let fx = fx().await;
    fx.event(&completion("ord-1", 5), now()).await;
    assert_eq!(fx.ask("c1", "ord-1").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn other_paths_and_methods_are_problems_too() {
    let fx = fx().await;
    let mut event = jwt_event("/v1/orders/ord-1", "c1");
    let answer = fx.send(event.clone()).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.problem_type(), "urn:vnmask:problem:no-such-endpoint");
    set_path(&mut event, "/v1/orders/ord-1/contacts");
    event["requestContext"]["http"]["method"] = json!("DELETE");
    let answer = fx.send(event).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.header("allow"), Some("GET,HEAD"));
    assert_eq!(answer.content_type(), "application/problem+json");
}
