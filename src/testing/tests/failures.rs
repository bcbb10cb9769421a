//! Scripted failures, latency on paused time, and request counting.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use super::*;
use crate::testing::Failure;

fn cc() -> http::Request<Vec<u8>> {
    token_request(&[
        ("grant_type", "client_credentials"),
        ("client_id", "svc"),
        ("client_secret", "s3cret"),
        ("resource", RS),
    ])
}

#[tokio::test]
async fn each_failure_mode_answers_as_documented() {
    let server = server();
    let oauth = |status: StatusCode, error: &str| (status, Some(error.to_owned()));
    let cases = [
        (
            Failure::InternalServerError,
            (StatusCode::INTERNAL_SERVER_ERROR, None),
        ),
        (
            Failure::ServiceUnavailable,
            (StatusCode::SERVICE_UNAVAILABLE, None),
        ),
        (
            Failure::TooManyRequests {
                retry_after: Duration::from_secs(7),
            },
            (StatusCode::TOO_MANY_REQUESTS, None),
        ),
        (Failure::MalformedJson, (StatusCode::OK, None)),
        (Failure::OversizedBody, (StatusCode::OK, None)),
        (
            Failure::InvalidTarget,
            oauth(StatusCode::BAD_REQUEST, "invalid_target"),
        ),
        (
            Failure::InvalidGrant,
            oauth(StatusCode::BAD_REQUEST, "invalid_grant"),
        ),
        (
            Failure::OAuth {
                status: 503,
                error: "temporarily_unavailable".into(),
            },
            oauth(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable"),
        ),
    ];
    for (failure, (status, error)) in cases.clone() {
        server.script(|s| s.fail_next(1, failure.clone()));
        let response = server.handle(cc()).await;
        assert_eq!(response.status(), status, "{failure:?}");
        let body: Result<Value, _> = serde_json::from_slice(response.body());
        match &failure {
            Failure::TooManyRequests { .. } => assert_eq!(response.headers()["retry-after"], "7"),
            Failure::MalformedJson => {
                assert_eq!(response.headers()["content-type"], "application/json");
                assert!(body.is_err());
            }
            Failure::OversizedBody => {
                assert!(response.body().len() > 1024 * 1024);
                assert_eq!(
                    body.ok()
                        .and_then(|b| b["access_token"].as_str().map(str::len)),
                    Some(1024 * 1024)
                );
            }
            _ => assert_eq!(
                body.ok()
                    .and_then(|b| b["error"].as_str().map(str::to_owned)),
                error
            ),
        }
        let record = server.requests().pop().unwrap();
        assert_eq!(
            (record.status, record.error),
            (Some(status), error),
            "{failure:?}"
        );
    }
    // The queue is drained: the next request succeeds.
    assert_eq!(server.handle(cc()).await.status(), StatusCode::OK);
    assert_eq!(server.token_requests(), cases.len() + 1);
}

#[tokio::test]
async fn fail_always_applies_until_cleared_after_the_queue() {
    let server = server();
    server.script(|s| {
        s.fail_next(1, Failure::InternalServerError);
        s.fail_always = Some(Failure::ServiceUnavailable);
    });
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(server.handle(cc()).await.status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::SERVICE_UNAVAILABLE
        ]
    );
    server.script(|s| s.fail_always = None);
    assert_eq!(server.handle(cc()).await.status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn latency_obeys_paused_time_and_requests_count_on_arrival() {
    let server = Arc::new(server());
    server.script(|s| s.latency = Duration::from_secs(10));
    let start = tokio::time::Instant::now();
    let in_flight = {
        let server = Arc::clone(&server);
        tokio::spawn(async move { server.handle(cc()).await })
    };
    // Let the request reach its sleep; paused time does not move while tasks can run.
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(server.token_requests(), 1);
    assert_eq!(server.requests()[0].status, None);
    assert!(!in_flight.is_finished());

    let response = in_flight.await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert_eq!(server.requests()[0].status, Some(StatusCode::OK));
}

#[tokio::test(start_paused = true)]
async fn a_request_keeps_the_script_it_arrived_with() {
    let server = Arc::new(server());
    server.script(|s| s.latency = Duration::from_secs(5));
    let slow = {
        let server = Arc::clone(&server);
        tokio::spawn(async move { server.handle(cc()).await })
    };
    tokio::task::yield_now().await;
    server.script(|s| {
        s.latency = Duration::ZERO;
        s.token_format = crate::testing::TokenFormat::Opaque;
        s.fail_always = Some(Failure::InternalServerError);
    });
    assert_eq!(
        server.handle(cc()).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let slow = slow.await.unwrap();
    assert_eq!(slow.status(), StatusCode::OK);
    // Still a JWT: the format changed while the request was waiting.
    assert_eq!(access_token(&json(&slow)).split('.').count(), 3);
}

#[tokio::test(start_paused = true)]
async fn reset_counts_forgets_in_flight_requests_too() {
    let server = Arc::new(server());
    server.script(|s| s.latency = Duration::from_secs(1));
    let in_flight = {
        let server = Arc::clone(&server);
        tokio::spawn(async move { server.handle(cc()).await })
    };
    tokio::task::yield_now().await;
    assert_eq!(server.token_requests(), 1);
    server.reset_counts();
    assert_eq!(in_flight.await.unwrap().status(), StatusCode::OK);
    assert_eq!(server.token_requests(), 0);
    assert!(server.requests().is_empty());
}
