//! The sessions API on DynamoDB Local: a backend without an event stream creates, changes,
//! ends and reads an order's session with calls that share the events' versions and
//! transaction, so that the two interleave safely.

use crate::common;

use common::{assignment, config, fixture, send_request, Answer, Fx};
use http::StatusCode;
use serde_json::{json, Value};
use vnmask::domain::{CallId, Channel, Participant, VirtualNumber};
use vnmask::routing::{decide, live_route, Decision, Refusal, RouteQuery};
use vnmask::store::audit;
use vnmask_tests::now;
use vnmask_tests::people::{customer, driver};

fn people_json(people: &[Participant]) -> Value {
    json!(people
        .iter()
        .map(|p| json!({"role": p.role.as_str(), "user_id": p.user_id.as_str(), "phone": p.phone.expose()}))
        .collect::<Vec<_>>())
}

fn request(method: &str, path: &str, body: &str) -> lambda_http::Request {
    http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(lambda_http::Body::from(body.to_owned()))
        .unwrap()
}

async fn put(fx: &Fx, order: &str, version: u64, people: &[Participant]) -> Answer {
    let body = json!({"market": "IN", "version": version, "participants": people_json(people)});
    send_request(
        &fx.router,
        request("PUT", &format!("/v1/sessions/{order}"), &body.to_string()),
    )
    .await
}

async fn end(fx: &Fx, order: &str, version: u64) -> Answer {
    let body = json!({"market": "IN", "version": version});
    send_request(
        &fx.router,
        request(
            "POST",
            &format!("/v1/sessions/{order}/end"),
            &body.to_string(),
        ),
    )
    .await
}

async fn get(fx: &Fx, order: &str) -> Answer {
    send_request(
        &fx.router,
        request("GET", &format!("/v1/sessions/{order}"), ""),
    )
    .await
}

/// The number `user` was given for their contact in a contacts answer.
fn number_of(answer: &Answer, user: &str) -> String {
    answer.body["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["user_id"] == user)
        .map(|p| p["contacts"][0]["number"].as_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("{user} in {:?}", answer.body))
}

fn no_real_number(answer: &Answer, people: &[Participant]) {
    let text = String::from_utf8_lossy(&answer.bytes);
    for p in people {
        assert!(!text.contains(&p.phone.expose()[3..]), "{text}");
    }
}

#[tokio::test]
async fn a_put_assigns_and_answers_every_participants_contacts_and_a_repeat_answers_the_same() {
    let fx = fixture(4, config(&[])).await;
    let (c, d) = (customer(1), driver(1));

    let first = put(&fx, "ord-1", 1, &[c.clone(), d.clone()]).await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    assert_eq!(first.body["version"], 1);
    assert_eq!(first.body["revision"], 1);
    let vn = number_of(&first, "c1");
    assert_eq!(
        number_of(&first, "d1"),
        vn,
        "one number per pair, both ways"
    );
    no_real_number(&first, &[c.clone(), d.clone()]);
    let route = live_route(
        fx.store.as_ref(),
        &c.phone,
        &VirtualNumber::parse(&vn).unwrap(),
        now(),
    )
    .await
    .unwrap()
    .expect("the customer's route");
    assert_eq!(route.callee, d.phone);

    // The same request again: the same answer, nothing written.
    let again = put(&fx, "ord-1", 1, &[c.clone(), d.clone()]).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, first.body);

    // GET shows the session as stored, never a real number.
    let shown = get(&fx, "ord-1").await;
    assert_eq!(shown.status, StatusCode::OK, "{:?}", shown.body);
    assert_eq!(shown.body["state"], "active");
    assert_eq!(shown.body["participants"][0]["user_id"], "c1");
    assert_eq!(shown.body["contacts"][0]["number"], vn.as_str());
    no_real_number(&shown, &[c, d]);
    assert!(shown.body["valid_until"].as_str().unwrap().ends_with('Z'));
    assert_eq!(audit(fx.store.as_ref(), now()).await.unwrap(), vec![]);
}

#[tokio::test]
async fn an_older_version_or_a_changed_repeat_is_a_conflict_and_an_exhausted_pool_a_retry() {
    let fx = fixture(2, config(&[])).await;
    let (c, d, e) = (customer(1), driver(1), driver(2));
    assert_eq!(
        put(&fx, "ord-1", 2, &[c.clone(), d.clone()]).await.status,
        StatusCode::OK
    );
    for (version, people) in [
        (1, vec![c.clone(), d.clone()]),
        (2, vec![c.clone(), e.clone()]),
    ] {
        let stale = put(&fx, "ord-1", version, &people).await;
        assert_eq!(stale.status, StatusCode::CONFLICT, "{:?}", stale.body);
        assert_eq!(stale.problem_type(), "urn:vnmask:problem:stale-version");
        assert!(stale.content_type().starts_with("application/problem+json"));
    }
    // The customer holds both numbers of the pool: another order of theirs cannot be served.
    assert_eq!(
        put(&fx, "ord-2", 1, &[c.clone(), e.clone()]).await.status,
        StatusCode::OK
    );
    let exhausted = put(&fx, "ord-3", 1, &[c.clone(), driver(3)]).await;
    assert_eq!(
        exhausted.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        exhausted.body
    );
    assert_eq!(
        exhausted.problem_type(),
        "urn:vnmask:problem:pool-exhausted"
    );
    assert!(exhausted.header("retry-after").is_some());
    assert_eq!(get(&fx, "ord-3").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_bad_request_names_the_field_never_the_value_and_changes_nothing() {
    let fx = fixture(2, config(&[])).await;
    let c = customer(1);
    let bad_phone = json!({"market": "IN", "version": 1, "participants": [
        {"role": "customer", "user_id": "c1", "phone": c.phone.expose()},
        {"role": "driver", "user_id": "d1", "phone": "+91000"},
    ]});
    let answer = send_request(
        &fx.router,
        request("PUT", "/v1/sessions/ord-1", &bad_phone.to_string()),
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        answer.body
    );
    assert_eq!(answer.problem_type(), "urn:vnmask:problem:invalid-session");
    let detail = answer.body["detail"].as_str().unwrap();
    assert!(detail.contains("participants[1].phone"), "{detail}");
    assert!(!String::from_utf8_lossy(&answer.bytes).contains("+91000"));
    for (body, status) in [
        ("{not json", StatusCode::BAD_REQUEST),
        ("[1]", StatusCode::BAD_REQUEST),
        (
            r#"{"market": "IN", "version": 1}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"market": "XX", "version": 1, "participants": []}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"market": "IN", "version": 1, "participants": [], "event_id": "x"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let answer = send_request(&fx.router, request("PUT", "/v1/sessions/ord-1", body)).await;
        assert_eq!(answer.status, status, "{body}: {:?}", answer.body);
    }
    let bad_id = send_request(&fx.router, request("PUT", "/v1/sessions/..", "{}")).await;
    assert_eq!(bad_id.status, StatusCode::BAD_REQUEST);
    // A method the path does not answer: 405, whose Allow lists the ones it does.
    let delete = send_request(&fx.router, request("DELETE", "/v1/sessions/ord-1", "")).await;
    assert_eq!(delete.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(delete.header("allow"), Some("GET,HEAD,PUT"));
    assert_eq!(delete.body["type"], "urn:vnmask:problem:method-not-allowed");
    assert_eq!(
        get(&fx, "ord-1").await.status,
        StatusCode::NOT_FOUND,
        "nothing written"
    );
}

#[tokio::test]
async fn an_end_lets_the_pair_connect_through_the_grace_and_repeats_answer_the_same() {
    let fx = fixture(2, config(&[])).await;
    let (c, d) = (customer(1), driver(1));
    let started = put(&fx, "ord-1", 1, &[c.clone(), d.clone()]).await;
    let vn = number_of(&started, "c1");
    let ended = end(&fx, "ord-1", 2).await;
    assert_eq!(ended.status, StatusCode::OK, "{:?}", ended.body);
    assert_eq!(
        end(&fx, "ord-1", 2).await.body,
        ended.body,
        "a repeated end"
    );
    assert_eq!(end(&fx, "ord-1", 1).await.status, StatusCode::CONFLICT);
    let shown = get(&fx, "ord-1").await;
    assert_eq!(shown.body["state"], "ended");
    let t = now();
    let grace = common::settings().grace.as_secs() as i64;
    let vn = VirtualNumber::parse(&vn).unwrap();
    assert!(live_route(fx.store.as_ref(), &c.phone, &vn, t + grace - 5)
        .await
        .unwrap()
        .is_some());
    assert!(live_route(fx.store.as_ref(), &c.phone, &vn, t + grace + 5)
        .await
        .unwrap()
        .is_none());
    let unknown = json!({"market": "IN", "version": 1, "when": "now"}).to_string();
    let answer = send_request(
        &fx.router,
        request("POST", "/v1/sessions/ord-1/end", &unknown),
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn events_and_calls_in_any_interleaving_end_where_events_alone_do() {
    let (c, d1, d2) = (customer(1), driver(1), driver(2));
    // Three changes of one order: v1 (C, D1), v2 (C, D2), v3 (C, D1 again).
    let changes = [
        (1, vec![c.clone(), d1.clone()]),
        (2, vec![c.clone(), d2.clone()]),
        (3, vec![c.clone(), d1.clone()]),
    ];
    // Which of them come through the API (the others as events), in which order.
    let orders: [[usize; 3]; 4] = [[0, 1, 2], [2, 1, 0], [1, 0, 2], [0, 2, 1]];
    let mut ends = Vec::new();
    for (run, order) in orders.iter().enumerate() {
        let fx = fixture(3, config(&[])).await;
        for (i, &k) in order.iter().enumerate() {
            let (version, people) = &changes[k];
            if (run + i) % 2 == 0 {
                let answer = put(&fx, "ord-1", *version, people).await;
                assert!(
                    matches!(answer.status, StatusCode::OK | StatusCode::CONFLICT),
                    "{:?}",
                    answer.body
                );
            } else {
                fx.event(&assignment("ord-1", *version, people), now())
                    .await;
            }
        }
        let session = fx
            .store
            .session(&"ord-1".parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            audit(fx.store.as_ref(), now()).await.unwrap(),
            vec![],
            "run {run}"
        );
        let user_ids: Vec<String> = session
            .participants
            .iter()
            .map(|p| p.user_id.to_string())
            .collect();
        ends.push((session.version, user_ids, session.contacts.len()));
    }
    for e in &ends {
        assert_eq!(e, &(3, vec!["c1".to_owned(), "d1".to_owned()], 1));
    }
}

#[tokio::test]
async fn an_end_may_ask_a_grace_of_its_own_within_the_configured_bound() {
    let fx = fixture(2, config(&[])).await;
    let (c, d) = (customer(1), driver(1));
    let started = put(&fx, "ord-1", 1, &[c.clone(), d]).await;
    let vn = VirtualNumber::parse(&number_of(&started, "c1")).unwrap();
    let too_long = json!({"market": "IN", "version": 2, "grace_seconds": 2 * 86_400}).to_string();
    let refused = send_request(
        &fx.router,
        request("POST", "/v1/sessions/ord-1/end", &too_long),
    )
    .await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        refused.body
    );
    assert!(refused.body["detail"]
        .as_str()
        .unwrap()
        .contains("grace_seconds"));
    let short = json!({"market": "IN", "version": 2, "grace_seconds": 60}).to_string();
    let t = now();
    let ended = send_request(
        &fx.router,
        request("POST", "/v1/sessions/ord-1/end", &short),
    )
    .await;
    assert_eq!(ended.status, StatusCode::OK, "{:?}", ended.body);
    assert!(live_route(fx.store.as_ref(), &c.phone, &vn, t + 55)
        .await
        .unwrap()
        .is_some());
    assert!(live_route(fx.store.as_ref(), &c.phone, &vn, t + 65)
        .await
        .unwrap()
        .is_none());
    assert_eq!(audit(fx.store.as_ref(), t + 30).await.unwrap(), vec![]);
    // The same end again answers the same.
    let again = send_request(
        &fx.router,
        request("POST", "/v1/sessions/ord-1/end", &short),
    )
    .await;
    assert_eq!(again.body, ended.body);
}

#[tokio::test]
async fn a_persons_live_sessions_are_listed_from_their_entries() {
    let fx = fixture(4, config(&[])).await;
    let (c1, c2, d, e) = (customer(1), customer(2), driver(1), driver(2));
    assert_eq!(
        put(&fx, "ord-1", 1, &[c1.clone(), d.clone()]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        put(&fx, "ord-2", 1, &[c2.clone(), d.clone()]).await.status,
        StatusCode::OK
    );
    let list = |user: &str| {
        send_request(
            &fx.router,
            request("GET", &format!("/v1/sessions?user_id={user}"), ""),
        )
    };
    let listed = list("d1").await;
    assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.body);
    let orders: Vec<&str> = listed.body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["order_id"].as_str().unwrap())
        .collect();
    assert_eq!(orders.len(), 2, "{orders:?}");
    assert!(orders.contains(&"ord-1") && orders.contains(&"ord-2"));
    no_real_number(&listed, &[c1.clone(), c2.clone(), d.clone()]);
    // D is replaced in ord-2 (an event, as the API would do): its entry goes with its routes.
    fx.event(&assignment("ord-2", 2, &[c2.clone(), e.clone()]), now())
        .await;
    let listed = list("d1").await;
    assert_eq!(listed.body["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(listed.body["sessions"][0]["order_id"], "ord-1");
    assert_eq!(list("d2").await.body["sessions"][0]["order_id"], "ord-2");
    assert_eq!(list("nobody").await.body["sessions"], json!([]));
    let missing = send_request(&fx.router, request("GET", "/v1/sessions", "")).await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(audit(fx.store.as_ref(), now()).await.unwrap(), vec![]);
}

/// Per direction after the end: the customer may still call the driver for the grace, the
/// driver may no longer call the customer. Both route items live out the grace together; the
/// closed one refuses. The driver's contacts no longer show the customer, the customer's still
/// show the driver; GET says what was closed; a repeat answers the same, other terms at the
/// same version are a conflict, and a role the order does not have is refused, changing nothing.
#[tokio::test]
async fn an_end_may_close_one_direction_and_only_that_one() {
    let fx = fixture(2, config(&[])).await;
    let (c, d) = (customer(1), driver(1));
    let started = put(&fx, "ord-1", 1, &[c.clone(), d.clone()]).await;
    let vn = VirtualNumber::parse(&number_of(&started, "c1")).unwrap();
    let post_end = |body: Value| {
        let router = fx.router.clone();
        async move {
            send_request(
                &router,
                request("POST", "/v1/sessions/ord-1/end", &body.to_string()),
            )
            .await
        }
    };
    let typo = post_end(json!({"market": "IN", "version": 2,
        "closed_after_end": [{"from": "driver", "to": "cutsomer"}]}))
    .await;
    assert_eq!(
        typo.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        typo.body
    );
    assert!(typo.body["detail"]
        .as_str()
        .unwrap()
        .contains("closed_after_end[0].to"));
    for bad in [
        json!("driver->customer"),
        json!([{"from": "driver"}]),
        json!([{"from": "Driver", "to": "customer"}]),
    ] {
        let answer = post_end(json!({"market": "IN", "version": 2, "closed_after_end": bad})).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{:?}",
            answer.body
        );
    }
    assert_eq!(
        get(&fx, "ord-1").await.body["state"],
        "active",
        "nothing was written"
    );

    let terms = json!({"market": "IN", "version": 2, "grace_seconds": 3600,
        "closed_after_end": [{"from": "driver", "to": "customer"}]});
    let t = now();
    let ended = post_end(terms.clone()).await;
    assert_eq!(ended.status, StatusCode::OK, "{:?}", ended.body);
    let contacts_of = |user: &str| {
        ended.body["participants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["user_id"] == user)
            .unwrap()["contacts"]
            .clone()
    };
    assert_eq!(contacts_of("d1"), json!([]), "the driver's way is closed");
    assert_eq!(contacts_of("c1")[0]["number"], vn.as_str());
    let ask = |from: &vnmask::domain::Participant| {
        RouteQuery::new(
            Channel::Voice,
            CallId::parse("CA1").unwrap(),
            from.phone.expose(),
            vn.as_str(),
            None,
        )
    };
    let budget = std::time::Duration::from_secs(1);
    assert!(matches!(
        decide(fx.store.as_ref(), &ask(&c), t + 3500, budget).await,
        Decision::Connect(route) if route.callee == d.phone
    ));
    assert_eq!(
        decide(fx.store.as_ref(), &ask(&d), t + 10, budget).await,
        Decision::Refuse(Refusal::ClosedAfterEnd)
    );
    for from in [&c, &d] {
        assert_eq!(
            decide(fx.store.as_ref(), &ask(from), t + 3605, budget).await,
            Decision::Refuse(Refusal::NoRoute),
            "both ways end with the grace"
        );
    }
    assert_eq!(audit(fx.store.as_ref(), t + 10).await.unwrap(), vec![]);
    let shown = get(&fx, "ord-1").await;
    assert_eq!(
        shown.body["closed_after_end"],
        json!([{"from": "driver", "to": "customer"}])
    );
    // The same end again answers the same, and so does one closing less; closing another
    // direction at that version is a conflict.
    assert_eq!(post_end(terms).await.body, ended.body);
    assert_eq!(
        post_end(json!({"market": "IN", "version": 2})).await.body,
        ended.body
    );
    let other = post_end(json!({"market": "IN", "version": 2,
        "closed_after_end": [{"from": "customer", "to": "driver"}]}))
    .await;
    assert_eq!(other.status, StatusCode::CONFLICT, "{:?}", other.body);
    // A later end (a cancellation after the completion) may close more, never reopen: the
    // pair keeps the first end's grace, and now neither way connects.
    let both = post_end(json!({"market": "IN", "version": 3,
        "closed_after_end": [{"from": "customer", "to": "driver"}]}))
    .await;
    assert_eq!(both.status, StatusCode::OK, "{:?}", both.body);
    assert_eq!(
        decide(fx.store.as_ref(), &ask(&c), t + 20, budget).await,
        Decision::Refuse(Refusal::ClosedAfterEnd)
    );
    assert_eq!(
        decide(fx.store.as_ref(), &ask(&d), t + 20, budget).await,
        Decision::Refuse(Refusal::ClosedAfterEnd)
    );
    let route = live_route(fx.store.as_ref(), &c.phone, &vn, t + 20)
        .await
        .unwrap()
        .unwrap();
    assert!(
        route.expires_at <= t + 3601,
        "the first end's grace is kept"
    );
    assert_eq!(
        get(&fx, "ord-1").await.body["closed_after_end"],
        json!([{"from": "customer", "to": "driver"}, {"from": "driver", "to": "customer"}])
    );
    assert_eq!(audit(fx.store.as_ref(), t + 20).await.unwrap(), vec![]);
    let reopen = post_end(json!({"market": "IN", "version": 4})).await;
    assert_eq!(reopen.status, StatusCode::OK);
    assert_eq!(
        decide(fx.store.as_ref(), &ask(&c), t + 20, budget).await,
        Decision::Refuse(Refusal::ClosedAfterEnd),
        "a plain end after it reopens nothing"
    );
    let same = post_end(json!({"market": "IN", "version": 5,
        "closed_after_end": [{"from": "driver", "to": "driver"}]}))
    .await;
    assert_eq!(same.status, StatusCode::UNPROCESSABLE_ENTITY);
    let phone_key = post_end(json!({"market": "IN", "version": 5, "+919810000001": 1})).await;
    assert_eq!(phone_key.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!phone_key.body.to_string().contains("9810000001"));
}
