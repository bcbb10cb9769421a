//! The answer of a registration endpoint (RFC 7591 §3.2.1, §3.2.2), and the client made of it.
//!
//! Everything in it is the server's text, checked before it is stored, used or logged: the
//! `client_id` and `client_secret` are RFC 6749 text (no control character can reach a log
//! line, a header or an error message through them), the redirect URIs registered include the
//! one asked for, and a secret is not already expired.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use super::client_store::{
    MAX_CLIENT_ID, RegisteredClient, is_client_id, is_vschar, secret_expired,
};
use crate::resource::shorten;

#[derive(Deserialize)]
pub(super) struct RegistrationResponse {
    client_id: String,
    #[serde(default)]
    client_secret: Option<SecretString>,
    #[serde(default)]
    client_secret_expires_at: Option<u64>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
    /// RFC 7591 §3.2.1: the response holds all the metadata registered; `None` when the server
    /// left it out.
    #[serde(default)]
    redirect_uris: Option<Vec<String>>,
}

/// Where, for what, and when a client was registered.
pub(super) struct Registered<'a> {
    pub(super) issuer: &'a str,
    /// The registration endpoint.
    pub(super) endpoint: &'a Url,
    /// The redirect URI asked for.
    pub(super) redirect_uri: &'a Url,
    /// Unix time.
    pub(super) now: u64,
}

#[derive(Deserialize)]
pub(super) struct RegistrationError {
    pub(super) error: String,
    #[serde(default)]
    pub(super) error_description: Option<String>,
}

impl RegistrationResponse {
    /// The registered client, with the authentication method the response names (RFC 7591
    /// §3.2.1: the server may change what was asked for), else the one asked for; or what is
    /// wrong with the response.
    pub(super) fn into_client(
        self,
        requested: &str,
        registered: &Registered<'_>,
    ) -> Result<RegisteredClient, String> {
        // RFC 6749 §A.1: client-id = *VSCHAR; an empty one identifies nothing.
        let id = &self.client_id;
        if !is_client_id(id) {
            return Err(format!(
                "the registration response's client_id {:?} is not a client_id (RFC 6749 §A.1: 1 to {MAX_CLIENT_ID} visible ASCII characters or spaces)",
                shorten(id)
            ));
        }
        let method = self
            .token_endpoint_auth_method
            .unwrap_or_else(|| requested.to_owned());
        let secret = match method.as_str() {
            "none" => None,
            "client_secret_basic" | "client_secret_post" => match self.client_secret {
                Some(secret) if !secret.expose_secret().is_empty() => Some(secret),
                _ => {
                    return Err(format!(
                        "the server registered the client for {method} but sent no client_secret"
                    ));
                }
            },
            other => {
                return Err(format!(
                    "the server registered the client for {:?}, which this crate does not support (it supports client_secret_basic, client_secret_post and none)",
                    shorten(other)
                ));
            }
        };
        if let Some(secret) = &secret
            && !secret.expose_secret().chars().all(is_vschar)
        {
            // RFC 6749 §A.2: client-secret = *VSCHAR. The secret itself is never shown.
            return Err(
                "the registration response's client_secret is not a client secret (RFC 6749 §A.2: visible ASCII characters or spaces)"
                    .to_owned(),
            );
        }
        if let Some(uris) = &self.redirect_uris {
            let ours = registered.redirect_uri;
            if !uris
                .iter()
                .any(|uri| Url::parse(uri).is_ok_and(|uri| uri == *ours))
            {
                let shown: Vec<String> = uris.iter().take(4).map(|uri| shorten(uri)).collect();
                return Err(format!(
                    "the server registered the client for the redirect URIs {shown:?}{}, which do not include {}, the one asked for",
                    if uris.len() > shown.len() {
                        " and more"
                    } else {
                        ""
                    },
                    crate::audience::redacted_url(ours)
                ));
            }
        }
        // RFC 7591 §3.2.1: 0 means the secret does not expire.
        let expires_at = self.client_secret_expires_at.filter(|&t| t != 0);
        if secret.is_some() && secret_expired(expires_at, registered.now) {
            return Err(format!(
                "the server registered a client whose secret expires at {} (Unix time), no later than a minute from now ({}), before it could be used",
                expires_at.unwrap_or_default(),
                registered.now
            ));
        }
        Ok(RegisteredClient {
            client_id: self.client_id,
            client_secret: secret,
            token_endpoint_auth_method: method,
            redirect_uri: registered.redirect_uri.clone(),
            client_secret_expires_at: expires_at,
            issuer: Some(registered.issuer.to_owned()),
            registration_endpoint: Some(registered.endpoint.clone()),
            dpop_key: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClientAuth;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn registered(redirect_uri: &Url) -> Registered<'_> {
        Registered {
            issuer: "https://as.example",
            endpoint: Box::leak(Box::new(url("https://as.example/register"))),
            redirect_uri,
            now: 1_000_000,
        }
    }

    fn response(method: Option<&str>, secret: Option<&str>) -> RegistrationResponse {
        RegistrationResponse {
            client_id: "c".to_owned(),
            client_secret: secret.map(|s| s.into()),
            client_secret_expires_at: Some(0),
            token_endpoint_auth_method: method.map(str::to_owned),
            redirect_uris: None,
        }
    }

    #[test]
    fn the_registered_method_wins_and_needs_its_secret() {
        let redirect = url("http://127.0.0.1/callback");
        let at = registered(&redirect);
        let client = response(Some("client_secret_post"), Some("s"))
            .into_client("client_secret_basic", &at)
            .unwrap();
        assert!(matches!(client.auth(), ClientAuth::Post(_)));
        assert_eq!(client.client_secret_expires_at(), None);
        assert_eq!(client.issuer(), Some("https://as.example"));
        assert_eq!(
            client.registration_endpoint().map(Url::as_str),
            Some("https://as.example/register")
        );
        // Asked for none, got a secret anyway: stays public, the secret is not kept.
        let client = response(None, Some("s")).into_client("none", &at).unwrap();
        assert!(matches!(client.auth(), ClientAuth::None));
        assert!(!client.has_secret());
        let error = response(None, None)
            .into_client("client_secret_basic", &at)
            .unwrap_err();
        assert!(error.contains("sent no client_secret"), "{error}");
        let error = response(Some("private_key_jwt"), None)
            .into_client("client_secret_basic", &at)
            .unwrap_err();
        assert!(error.contains("private_key_jwt"), "{error}");
    }

    #[test]
    fn client_ids_are_rfc_6749_text_of_a_bounded_length() {
        let redirect = url("http://127.0.0.1/callback");
        let at = registered(&redirect);
        let with_id = |id: &str| RegistrationResponse {
            client_id: id.to_owned(),
            ..response(Some("none"), None)
        };
        for ok in [
            "c",
            "a b~!",
            &"x".repeat(255),
            "https://app.example/client.json",
        ] {
            assert!(with_id(ok).into_client("none", &at).is_ok(), "{ok}");
        }
        for (bad, shown) in [
            ("", r#""""#),
            ("a\nb", r#""a\nb""#),
            ("a\rb", r#""a\rb""#),
            ("a\tb", r#""a\tb""#),
            ("a\u{7f}b", r#""a\u{7f}b""#),
            ("a\u{85}b", r#""a\u{85}b""#),
            ("a\u{2028}b", r#""a\u{2028}b""#),
            ("é", r#""é""#),
        ] {
            let error = with_id(bad).into_client("none", &at).unwrap_err();
            assert_eq!(
                error,
                format!(
                    "the registration response's client_id {shown} is not a client_id (RFC 6749 §A.1: 1 to 255 visible ASCII characters or spaces)"
                ),
                "{bad:?}"
            );
        }
        let long = with_id(&"x".repeat(256))
            .into_client("none", &at)
            .unwrap_err();
        assert!(long.contains(&format!("\"{}…\"", "x".repeat(80))), "{long}");
    }

    #[test]
    fn the_redirect_uri_asked_for_must_be_registered_and_the_secret_alive() {
        let redirect = url("http://127.0.0.1:4000/callback");
        let at = registered(&redirect);
        let with = |uris: Option<&[&str]>, expires: Option<u64>| RegistrationResponse {
            redirect_uris: uris.map(|u| u.iter().map(|s| (*s).to_owned()).collect()),
            client_secret_expires_at: expires,
            ..response(Some("client_secret_basic"), Some("s3cret"))
        };
        // Listed (in any spelling that parses to it), or not said at all.
        for uris in [
            Some(&["https://app.example/cb", "http://127.0.0.1:4000/callback"][..]),
            Some(&["HTTP://127.0.0.1:4000/callback"][..]),
            None,
        ] {
            assert!(
                with(uris, None).into_client("none", &at).is_ok(),
                "{uris:?}"
            );
        }
        for uris in [
            &[][..],
            &["http://127.0.0.1:4001/callback"][..],
            &["http://127.0.0.1:4000/callback?x=1"][..],
            &["not a url"][..],
        ] {
            let error = with(Some(uris), None)
                .into_client("client_secret_basic", &at)
                .unwrap_err();
            assert!(
                error.ends_with(
                    "which do not include http://127.0.0.1:4000/callback, the one asked for"
                ),
                "{error}"
            );
        }
        // Expired, or expiring within the minute; 0 is "never" (RFC 7591 §3.2.1).
        for (expires, ok) in [
            (Some(0), true),
            (None, true),
            (Some(1_000_061), true),
            (Some(1_000_060), false),
            (Some(1), false),
        ] {
            let result = with(None, expires).into_client("client_secret_basic", &at);
            assert_eq!(result.is_ok(), ok, "{expires:?}");
            if let Err(error) = result {
                assert!(!error.contains("s3cret"), "{error}");
                assert!(error.contains("before it could be used"), "{error}");
            }
        }
        // A public client has no secret to expire.
        let public = RegistrationResponse {
            client_secret_expires_at: Some(1),
            ..response(Some("none"), None)
        };
        assert!(public.into_client("none", &at).is_ok());
    }
}
