//! The resource server, in process and over sockets, and socket lifecycle.

use std::time::Duration;

use http::{Method, Request, StatusCode};
use serde_json::json;

use super::*;
use crate::testing::{AudienceStyle, Redirect, ResourceServer, fingerprint};

fn get(uri: &str, token: Option<&str>) -> Request<Vec<u8>> {
    let mut request = Request::get(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request.body(Vec::new()).unwrap()
}

fn challenge(response: &http::Response<Vec<u8>>) -> String {
    response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn challenges_follow_rfc_6750_and_rfc_9728() {
    let auth = server();
    let rs = ResourceServer::builder(&auth)
        .scopes_required(["read", "write"])
        .in_process();
    assert_eq!(rs.resource(), "https://rs.in-process.test/mcp");
    assert_eq!(
        rs.metadata_url(),
        "https://rs.in-process.test/.well-known/oauth-protected-resource/mcp"
    );
    let metadata = format!(r#"resource_metadata="{}""#, rs.metadata_url());

    let none = rs.handle(get("/mcp", None)).await;
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge(&none),
        format!(r#"Bearer {metadata}, scope="read write""#)
    );

    let bogus = rs.handle(get("/mcp", Some("bogus"))).await;
    assert_eq!(bogus.status(), StatusCode::UNAUTHORIZED);
    assert!(challenge(&bogus).starts_with(r#"Bearer error="invalid_token""#));
    assert!(challenge(&bogus).contains(&metadata));

    let elsewhere =
        access_token(&client_credentials(&auth, "https://other.example/mcp", "read write").await)
            .to_owned();
    let wrong_aud = rs.handle(get("/mcp", Some(&elsewhere))).await;
    assert_eq!(wrong_aud.status(), StatusCode::UNAUTHORIZED);
    assert!(challenge(&wrong_aud).contains(r#"error="invalid_token""#));

    let narrow = access_token(&client_credentials(&auth, rs.resource(), "read").await).to_owned();
    let forbidden = rs.handle(get("/mcp", Some(&narrow))).await;
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    assert!(challenge(&forbidden).starts_with(r#"Bearer error="insufficient_scope""#));
    assert!(challenge(&forbidden).ends_with(&format!(r#"{metadata}, scope="read write""#)));

    let good = access_token(&client_credentials(&auth, rs.resource(), "write read extra").await)
        .to_owned();
    let ok = rs.handle(get("/mcp/tools/list", Some(&good))).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(
        json(&ok),
        json!({
            "path": "/mcp/tools/list",
            "resource": rs.resource(),
            "scope": ["write", "read", "extra"],
            "sub": "svc",
            "client_id": "svc",
        })
    );

    let records = rs.requests();
    let summary: Vec<_> = records
        .iter()
        .map(|r| (r.bearer_presented, r.token_fingerprint.clone(), r.status))
        .collect();
    assert_eq!(
        summary,
        [
            (false, None, StatusCode::UNAUTHORIZED),
            (true, Some(fingerprint("bogus")), StatusCode::UNAUTHORIZED),
            (
                true,
                Some(fingerprint(&elsewhere)),
                StatusCode::UNAUTHORIZED
            ),
            (true, Some(fingerprint(&narrow)), StatusCode::FORBIDDEN),
            (true, Some(fingerprint(&good)), StatusCode::OK),
        ]
    );
    assert_eq!(records[2].token_audiences, ["https://other.example/mcp"]);
    assert!(records[1].token_audiences.is_empty());
    let debug = format!("{records:?}");
    assert!(
        ![&elsewhere, &narrow, &good]
            .iter()
            .any(|t| debug.contains(t.as_str()))
    );
}

#[tokio::test]
async fn only_the_path_and_segments_below_it_are_protected() {
    let auth = server();
    let rs = ResourceServer::builder(&auth).path("mcp").in_process();
    assert_eq!(rs.url(), "https://rs.in-process.test/mcp");
    for (path, status) in [
        ("/mcp", StatusCode::UNAUTHORIZED),
        ("/mcp/", StatusCode::UNAUTHORIZED),
        ("/mcp/x", StatusCode::UNAUTHORIZED),
        ("/mcpx", StatusCode::NOT_FOUND),
        ("/mcp-admin", StatusCode::NOT_FOUND),
        ("/", StatusCode::NOT_FOUND),
        (
            "/.well-known/oauth-protected-resource",
            StatusCode::NOT_FOUND,
        ),
    ] {
        assert_eq!(rs.handle(get(path, None)).await.status(), status, "{path}");
    }
    assert_eq!(rs.requests().len(), 7);
}

#[tokio::test]
async fn metadata_at_the_path_inserted_and_optional_root_url() {
    let auth = server();
    let rs = ResourceServer::builder(&auth)
        .scopes_required(["read"])
        .scopes_supported(["read", "write"])
        .root_metadata(true)
        .in_process();
    let expected = json!({
        "resource": rs.resource(),
        "authorization_servers": [auth.issuer()],
        "scopes_supported": ["read", "write"],
        "bearer_methods_supported": ["header"],
    });
    for url in [
        rs.metadata_url(),
        format!("{}/.well-known/oauth-protected-resource", rs.origin()),
    ] {
        let response = rs.handle(get(&url, None)).await;
        assert_eq!(
            (response.status(), json(&response)),
            (StatusCode::OK, expected.clone()),
            "{url}"
        );
    }
    rs.script(|s| {
        s.metadata_resource = Some("https://evil.example/mcp".into());
        s.authorization_servers = vec!["https://as2.example".into()];
        s.scopes_supported.clear();
    });
    let metadata = json(&rs.handle(get(&rs.metadata_url(), None)).await);
    assert_eq!(
        metadata,
        json!({
            "resource": "https://evil.example/mcp",
            "authorization_servers": ["https://as2.example"],
            "bearer_methods_supported": ["header"],
        })
    );
}

#[tokio::test]
async fn root_path_and_custom_resource_identifiers() {
    let auth = server();
    let root = ResourceServer::builder(&auth)
        .path("/")
        .in_process_at("https://api.example");
    assert_eq!(root.resource(), "https://api.example");
    assert_eq!(
        root.metadata_url(),
        "https://api.example/.well-known/oauth-protected-resource"
    );
    assert_eq!(
        root.handle(get("/anything", None)).await.status(),
        StatusCode::UNAUTHORIZED
    );

    let slash = ResourceServer::builder(&auth)
        .resource(|origin| format!("{origin}/mcp/"))
        .in_process();
    assert_eq!(slash.resource(), "https://rs.in-process.test/mcp/");
    // aud is compared exactly: the slash-less spelling is another audience.
    let without =
        access_token(&client_credentials(&auth, "https://rs.in-process.test/mcp", "").await)
            .to_owned();
    let with = access_token(&client_credentials(&auth, slash.resource(), "").await).to_owned();
    assert_eq!(
        slash.handle(get("/mcp", Some(&without))).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        slash.handle(get("/mcp", Some(&with))).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn multi_audience_tokens_are_accepted_and_malformed_aud_is_not() {
    let auth = server();
    let rs = ResourceServer::builder(&auth).in_process();
    auth.script(|s| s.audience = AudienceStyle::Array(vec!["https://other.example".into()]));
    let multi = access_token(&client_credentials(&auth, rs.resource(), "").await).to_owned();
    assert_eq!(
        rs.handle(get("/mcp", Some(&multi))).await.status(),
        StatusCode::OK
    );
    auth.script(|s| s.audience = AudienceStyle::Raw(json!([rs.resource(), 42])));
    let malformed = access_token(&client_credentials(&auth, rs.resource(), "").await).to_owned();
    assert_eq!(
        rs.handle(get("/mcp", Some(&malformed))).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(start_paused = true)]
async fn expired_and_foreign_tokens_are_invalid_token() {
    let auth = server();
    let rs = ResourceServer::builder(&auth).in_process();
    auth.script(|s| s.expires_in = Some(Duration::from_secs(30)));
    let token = access_token(&client_credentials(&auth, rs.resource(), "").await).to_owned();
    assert_eq!(
        rs.handle(get("/mcp", Some(&token))).await.status(),
        StatusCode::OK
    );
    tokio::time::advance(Duration::from_secs(30)).await;
    let expired = rs.handle(get("/mcp", Some(&token))).await;
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
    assert!(challenge(&expired).contains("invalid_token"));

    let foreign_as = super::server();
    let foreign =
        access_token(&client_credentials(&foreign_as, rs.resource(), "").await).to_owned();
    assert_eq!(
        rs.handle(get("/mcp", Some(&foreign))).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn scripted_redirects_come_before_the_token_check_and_are_recorded() {
    let auth = server();
    let rs = ResourceServer::builder(&auth).in_process();
    rs.script(|s| {
        s.redirects
            .push(Redirect::temporary("/mcp", "/tenant-b/mcp"));
        s.redirects.push(Redirect::permanent(
            "/mcp/old",
            "https://elsewhere.example/mcp",
        ));
    });
    let token = access_token(&client_credentials(&auth, rs.resource(), "").await).to_owned();
    let temporary = rs.handle(get("/mcp", Some(&token))).await;
    assert_eq!(temporary.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(temporary.headers()["location"], "/tenant-b/mcp");
    let permanent = rs.handle(get("/mcp/old", None)).await;
    assert_eq!(permanent.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        permanent.headers()["location"],
        "https://elsewhere.example/mcp"
    );
    // A client that follows the first redirect with its token attached shows up here.
    let followed = rs.handle(get("/tenant-b/mcp", Some(&token))).await;
    assert_eq!(followed.status(), StatusCode::NOT_FOUND);
    let record = rs.requests().pop().unwrap();
    assert_eq!(
        (record.path.as_str(), record.token_fingerprint),
        ("/tenant-b/mcp", Some(fingerprint(&token)))
    );
    assert_eq!(record.method, Method::GET);
}

#[tokio::test]
async fn over_sockets_reqwest_keeps_the_token_on_same_origin_redirects_only() {
    let auth = AuthorizationServer::builder()
        .client(Client::confidential("svc", "s3cret"))
        .start()
        .await
        .unwrap();
    let a = ResourceServer::builder(&auth)
        .path("/tenant-a/mcp")
        .start()
        .await
        .unwrap();
    let b = ResourceServer::builder(&auth)
        .path("/mcp")
        .start()
        .await
        .unwrap();
    assert!(auth.issuer().starts_with("http://127.0.0.1:") && !auth.issuer().ends_with('/'));
    assert_eq!(
        a.resource(),
        format!("http://{}/tenant-a/mcp", a.local_addr().unwrap())
    );
    a.script(|s| {
        s.redirects
            .push(Redirect::temporary("/tenant-a/mcp", "/tenant-b/mcp"));
        s.redirects
            .push(Redirect::temporary("/tenant-a/mcp/cross", b.url()));
    });
    let http = reqwest::Client::new();
    let body: Value = http
        .post(auth.token_endpoint())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "svc"),
            ("client_secret", "s3cret"),
            ("resource", a.resource()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = access_token(&body);
    let same = http.get(a.url()).bearer_auth(token).send().await.unwrap();
    assert_eq!(same.status(), StatusCode::NOT_FOUND);
    let cross = http
        .get(format!("{}/cross", a.url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), StatusCode::UNAUTHORIZED);

    let leaked = a
        .requests()
        .into_iter()
        .find(|r| r.path == "/tenant-b/mcp")
        .unwrap();
    assert_eq!(leaked.token_fingerprint, Some(fingerprint(token)));
    assert_eq!(leaked.token_audiences, [a.resource()]);
    assert!(b.requests().iter().all(|r| !r.bearer_presented));
    assert_eq!(auth.token_requests(), 1);
}

#[tokio::test]
async fn shutdown_and_drop_stop_the_socket_servers() {
    let auth = AuthorizationServer::builder().start().await.unwrap();
    let rs = ResourceServer::builder(&auth).start().await.unwrap();
    let (metadata, rs_url) = (auth.metadata_url(), rs.url());
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(&metadata).send().await.unwrap().status(),
        StatusCode::OK
    );
    // In-process calls reach a started server too.
    assert_eq!(
        auth.handle(get(&metadata, None)).await.status(),
        StatusCode::OK
    );
    assert_eq!(auth.metadata_requests(), 2);
    auth.shutdown().await;
    assert!(http.get(&metadata).send().await.is_err());
    drop(rs);
    let mut stopped = false;
    for _ in 0..50 {
        if reqwest::Client::new().get(&rs_url).send().await.is_err() {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(stopped);
}
