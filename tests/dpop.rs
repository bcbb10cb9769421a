//! DPoP (RFC 9449) at the token endpoint: which requests carry a proof, what the proof says,
//! what a bound answer becomes, nonces, and the key in the cache key; against the embedded
//! authorization server, in process, on paused time, with counts from its records.

mod dpop_support;
mod support;

use audience_cache::testing::{DpopProofRecord, Failure, TokenRequestRecord};
use audience_cache::{
    BuildError, DpopKey, Error, ResourceConfig, ScopeSet, SubjectToken, TokenCache,
    TokenCacheBuilder,
};
use support::*;

fn empty() -> ScopeSet {
    ScopeSet::empty()
}

/// The proof a token request carried; panics when it carried none.
fn proof(record: &TokenRequestRecord) -> &DpopProofRecord {
    record
        .dpop
        .as_ref()
        .expect("the request carried a DPoP proof")
}

/// A cache for `svc` with `key`, DPoP used for `API` only.
fn dpop_cache(
    server: &audience_cache::testing::AuthorizationServer,
    key: &DpopKey,
) -> TokenCacheBuilder {
    builder(server, confidential())
        .resource(config(API))
        .resource(config(MCP))
        .dpop_key(key.clone())
        .use_dpop_for(resource(API))
}

#[tokio::test(start_paused = true)]
async fn a_dpop_resources_token_request_carries_a_proof_and_its_answer_is_bound() {
    let server = new_server();
    let key = DpopKey::generate();
    let cache = dpop_cache(&server, &key).build().unwrap();

    let token = cache.token(&resource(API), &empty()).await.unwrap();
    assert!(token.is_dpop_bound());
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let seen = proof(&requests[0]);
    assert!(seen.valid, "{:?}", seen.problem);
    assert_eq!(seen.htm, "POST");
    assert_eq!(seen.htu, format!("{ISSUER}/token"));
    assert_eq!(seen.ath, None);
    assert_eq!(seen.nonce, None);
    assert_eq!(seen.jkt, key.thumbprint());
    // The server bound the token to the key (cnf.jkt, RFC 9449 §6.1).
    let info = server.validate(token.expose_secret()).unwrap();
    assert_eq!(info.jkt.as_deref(), Some(key.thumbprint()));
    // The key is part of the cache key.
    assert_eq!(token.key().dpop_thumbprint(), Some(key.thumbprint()));

    // A resource that does not use DPoP: no proof, a bearer token.
    let plain = cache.token(&resource(MCP), &empty()).await.unwrap();
    assert!(!plain.is_dpop_bound());
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].dpop, None);
    assert_eq!(server.validate(plain.expose_secret()).unwrap().jkt, None);

    // A hit makes no request.
    cache.token(&resource(API), &empty()).await.unwrap();
    assert_eq!(server.token_requests(), 2);
}

#[tokio::test(start_paused = true)]
async fn every_grant_carries_a_fresh_proof_and_a_public_client_refreshes_with_its_key() {
    let server = new_server();
    let key = DpopKey::generate();
    let svc = dpop_cache(&server, &key).build().unwrap();
    let token = svc.token(&resource(API), &empty()).await.unwrap();
    let subject = SubjectToken::access_token(secret(token.expose_secret()));
    let exchanged = svc
        .exchange_token(&resource(API), &empty(), subject, "alice")
        .await
        .unwrap();
    assert!(exchanged.is_dpop_bound());

    let app = builder(&server, public_app())
        .resource(config(API))
        .dpop_key(key.clone())
        .use_dpop_for(resource(API))
        .build()
        .unwrap();
    let pending = app.begin_authorization(&resource(API), &empty()).unwrap();
    let redirect = approve(&server, &pending).await;
    let coded = app
        .complete_authorization(pending, &redirect)
        .await
        .unwrap();
    assert!(coded.is_dpop_bound());
    tokio::time::advance(USABLE).await;
    // The refresh token is bound to the key (RFC 9449 §5): the refresh carries its proof.
    let refreshed = app.token(&resource(API), &empty()).await.unwrap();
    assert!(refreshed.is_dpop_bound());
    assert!(!refreshed.same_token_as(&coded));

    let requests = server.requests();
    let grants: Vec<&str> = requests
        .iter()
        .map(|r| r.grant_type.as_deref().unwrap_or_default())
        .collect();
    assert_eq!(
        grants,
        [
            "client_credentials",
            "urn:ietf:params:oauth:grant-type:token-exchange",
            "authorization_code",
            "refresh_token"
        ]
    );
    // Each proof valid: the server refuses a jti it saw before (RFC 9449 §11.1).
    for record in &requests {
        let seen = proof(record);
        assert!(seen.valid, "{:?}: {:?}", record.grant_type, seen.problem);
        assert_eq!(seen.jkt, key.thumbprint());
        assert_eq!(seen.htm, "POST");
        assert_eq!(seen.htu, format!("{ISSUER}/token"));
        assert_eq!(record.status, Some(http::StatusCode::OK));
    }
}

#[tokio::test(start_paused = true)]
async fn a_public_clients_refresh_token_is_bound_to_its_key() {
    // The server's rule, driven by hand with proofs made outside the crate: the code
    // exchange with key A binds the refresh token; a refresh with key B's proof is refused,
    // one with key A's is not.
    let server = new_server();
    let verifier = "v".repeat(43);
    let challenge = {
        use base64::Engine as _;
        use sha2::Digest as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&verifier))
    };
    let authorize = format!(
        "{ISSUER}/authorize?response_type=code&client_id={APP}&redirect_uri={}&code_challenge={challenge}&code_challenge_method=S256&resource={}&state=s",
        url::form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>(),
        url::form_urlencoded::byte_serialize(API.as_bytes()).collect::<String>(),
    );
    let response = server
        .handle(http::Request::get(authorize).body(Vec::new()).unwrap())
        .await;
    let location = url(response.headers()["location"].to_str().unwrap());
    let code = param(&location, "code").unwrap();
    let htu = format!("{ISSUER}/token");
    let post = |body: String, proof: String| {
        http::Request::post(format!("{ISSUER}/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("dpop", proof)
            .body(body.into_bytes())
            .unwrap()
    };
    let (a, b) = (dpop_support::key_a(), dpop_support::other_key());
    let body = format!(
        "grant_type=authorization_code&client_id={APP}&code={code}&code_verifier={verifier}&redirect_uri={}",
        url::form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>()
    );
    let response = server
        .handle(post(
            body,
            dpop_support::proof(&a, "POST", &htu, None, None),
        ))
        .await;
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(answer["token_type"], "DPoP");
    let refresh = answer["refresh_token"].as_str().unwrap().to_owned();
    let body = format!("grant_type=refresh_token&client_id={APP}&refresh_token={refresh}");
    let refused = server
        .handle(post(
            body.clone(),
            dpop_support::proof(&b, "POST", &htu, None, None),
        ))
        .await;
    assert_eq!(refused.status(), 400);
    let refused: serde_json::Value = serde_json::from_slice(refused.body()).unwrap();
    assert_eq!(refused["error"], "invalid_grant");
    let accepted = server
        .handle(post(
            body,
            dpop_support::proof(&a, "POST", &htu, None, None),
        ))
        .await;
    assert_eq!(accepted.status(), 200);
    assert_eq!(server.token_requests(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_nonce_challenge_is_retried_once_with_the_nonce_and_remembered() {
    let server = new_server();
    server.script(|s| s.dpop_nonce = Some("nonce-1".to_owned()));
    let key = DpopKey::generate();
    let cache = dpop_cache(&server, &key).build().unwrap();

    cache.token(&resource(API), &empty()).await.unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "one request, one retry");
    assert_eq!(requests[0].error.as_deref(), Some("use_dpop_nonce"));
    assert_eq!(proof(&requests[0]).nonce, None);
    assert_eq!(requests[1].status, Some(http::StatusCode::OK));
    assert_eq!(proof(&requests[1]).nonce.as_deref(), Some("nonce-1"));

    // The nonce is remembered for the server's origin: the next request carries it at once.
    cache.token(&resource(API), &scopes("more")).await.unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(proof(&requests[2]).nonce.as_deref(), Some("nonce-1"));

    // A new nonce: one retry again.
    server.script(|s| s.dpop_nonce = Some("nonce-2".to_owned()));
    cache.token(&resource(API), &scopes("other")).await.unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 5);
    assert_eq!(requests[3].error.as_deref(), Some("use_dpop_nonce"));
    assert_eq!(proof(&requests[4]).nonce.as_deref(), Some("nonce-2"));
}

#[tokio::test(start_paused = true)]
async fn a_second_nonce_failure_is_an_error_not_a_loop() {
    let server = new_server();
    let key = DpopKey::generate();
    let cache = dpop_cache(&server, &key).build().unwrap();
    server.script(|s| {
        s.dpop_nonce = Some("nonce-1".to_owned());
        // Refused for the nonce whatever the proof says, twice.
        s.fail_next(
            3,
            Failure::OAuth {
                status: 400,
                error: "use_dpop_nonce".to_owned(),
            },
        );
    });
    let error = cache.token(&resource(API), &empty()).await.unwrap_err();
    match &error {
        Error::OAuth { error, .. } => assert_eq!(error.code, "use_dpop_nonce"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        server.token_requests(),
        2,
        "one request and one retry, no more"
    );

    // A server whose every answer has a new nonce: still one retry.
    server.reset_counts();
    server.script(|s| {
        s.rotate_dpop_nonce = true;
        s.fail_next(
            3,
            Failure::OAuth {
                status: 400,
                error: "use_dpop_nonce".to_owned(),
            },
        );
    });
    let error = cache.token(&resource(API), &scopes("x")).await.unwrap_err();
    assert!(matches!(&error, Error::OAuth { error, .. } if error.code == "use_dpop_nonce"));
    assert_eq!(
        server.token_requests(),
        2,
        "one request and one retry, no more"
    );
}

#[tokio::test(start_paused = true)]
async fn a_bearer_answer_is_kept_where_dpop_is_asked_and_refused_where_it_is_required() {
    let server = new_server();
    server.script(|s| s.bind_dpop = false);
    let key = DpopKey::generate();
    let cache = dpop_cache(&server, &key)
        .require_dpop_for(resource(MCP))
        .build()
        .unwrap();
    let kept = cache.token(&resource(API), &empty()).await.unwrap();
    assert!(!kept.is_dpop_bound());
    assert!(proof(&server.requests()[0]).valid);
    // Said in the counters, not only in the log.
    assert_eq!(cache.stats().dpop_declined, 1);

    let error = cache.token(&resource(MCP), &empty()).await.unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, Error::Protocol { .. }), "{error:?}");
    assert!(
        message.contains("requires DPoP-bound tokens") && message.contains(MCP),
        "{message}"
    );
    assert_eq!(server.token_requests(), 2);
    // The refused answer is an error, not a declined DPoP.
    assert_eq!(cache.stats().dpop_declined, 1);
}

#[tokio::test(start_paused = true)]
async fn a_resource_named_for_dpop_without_a_key_fails_the_build_naming_the_setting() {
    let server = new_server();
    for named in [
        builder(&server, confidential()).require_dpop_for(resource(MCP)),
        builder(&server, confidential()).use_dpop_for(resource(MCP)),
    ] {
        let error = named.resource(config(MCP)).build().unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, BuildError::Setting { .. }), "{error:?}");
        assert!(
            message.contains("TokenCacheBuilder::dpop_key") && message.contains(MCP),
            "{message}"
        );
    }
    assert_eq!(server.token_requests(), 0);
}

#[tokio::test(start_paused = true)]
async fn one_token_request_per_key_and_a_new_key_starts_clean() {
    let server = new_server();
    let (a, b) = (DpopKey::generate(), DpopKey::generate());
    let first = dpop_cache(&server, &a).build().unwrap();
    let second = dpop_cache(&server, &a).build().unwrap();
    let rotated = dpop_cache(&server, &b).build().unwrap();
    let plain = builder(&server, confidential())
        .resource(config(API))
        .build()
        .unwrap();
    let tokens = futures_join(&[&first, &first, &first]).await;
    assert_eq!(
        server.token_requests(),
        1,
        "concurrent misses share one request"
    );
    assert!(tokens[0].same_token_as(&tokens[2]));
    let t_second = second.token(&resource(API), &empty()).await.unwrap();
    let t_rotated = rotated.token(&resource(API), &empty()).await.unwrap();
    let t_plain = plain.token(&resource(API), &empty()).await.unwrap();
    // Same key, same cache key; another key or none, another cache key.
    assert_eq!(tokens[0].key(), t_second.key());
    assert_ne!(tokens[0].key(), t_rotated.key());
    assert_ne!(tokens[0].key(), t_plain.key());
    assert_eq!(t_rotated.key().dpop_thumbprint(), Some(b.thumbprint()));
    assert_eq!(t_plain.key().dpop_thumbprint(), None);
    let jkts: Vec<Option<String>> = server
        .requests()
        .iter()
        .map(|r| r.dpop.as_ref().map(|p| p.jkt.clone()))
        .collect();
    assert_eq!(
        jkts,
        [
            Some(a.thumbprint().to_owned()),
            Some(a.thumbprint().to_owned()),
            Some(b.thumbprint().to_owned()),
            None
        ]
    );
}

/// Three concurrent `token` calls on `caches`.
async fn futures_join(caches: &[&TokenCache; 3]) -> Vec<audience_cache::BearerToken> {
    let (api, none) = (resource(API), ScopeSet::empty());
    let (x, y, z) = tokio::join!(
        caches[0].token(&api, &none),
        caches[1].token(&api, &none),
        caches[2].token(&api, &none),
    );
    vec![x.unwrap(), y.unwrap(), z.unwrap()]
}

#[test]
fn the_key_shows_its_thumbprint_only() {
    let pem = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgXS5rZe1ng3AOXB+s
6fPj+OiyYW8Mke7ApcJ99ybzrQ6hRANCAARNMoNJhlu7atphNPfiJR2t+FfBNIIv
tj/zL5S3Xt9IvahWoa+z9o5GH7KaI4AnUZEo3VpcYspyulkNgKkbSMjS
-----END PRIVATE KEY-----";
    let key = DpopKey::from_pkcs8_pem(pem).unwrap();
    let shown = format!("{key:?}");
    assert!(shown.contains(key.thumbprint()), "{shown}");
    for secret in ["MIGHAgEA", "XS5rZe1ng3AOXB", "BEGIN"] {
        assert!(!shown.contains(secret), "{shown}");
    }
    let cache = TokenCache::builder().dpop_key(key.clone()).build().unwrap();
    let shown = format!("{cache:?}");
    assert!(!shown.contains("XS5rZe1ng3AOXB"), "{shown}");
    // The same PEM is the same key: a fleet sharing it shares its thumbprint.
    assert_eq!(
        DpopKey::from_pkcs8_pem(pem).unwrap().thumbprint(),
        key.thumbprint()
    );
    let _ = ResourceConfig::new(resource(API), ISSUER);
}
