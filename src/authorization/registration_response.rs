//! The answer of a registration endpoint (RFC 7591 §3.2.1, §3.2.2), and the client made of it.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use super::client_store::RegisteredClient;
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
}

#[derive(Deserialize)]
pub(super) struct RegistrationError {
    pub(super) error: String,
    #[serde(default)]
    pub(super) error_description: Option<String>,
}

impl RegistrationResponse {
    /// The registered client, with the authentication method the response names (RFC 7591
    /// §3.2.1: the server may change what was asked for), else the one asked for.
    pub(super) fn into_client(
        self,
        requested: &str,
        redirect_uri: &Url,
    ) -> Result<RegisteredClient, String> {
        if self.client_id.is_empty() {
            return Err("the registration response has an empty client_id".to_owned());
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
        Ok(RegisteredClient {
            client_id: self.client_id,
            client_secret: secret,
            token_endpoint_auth_method: method,
            redirect_uri: redirect_uri.clone(),
            client_secret_expires_at: self.client_secret_expires_at.filter(|&t| t != 0),
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

    #[test]
    fn the_registered_method_wins_and_needs_its_secret() {
        let response = |method: Option<&str>, secret: Option<&str>| RegistrationResponse {
            client_id: "c".to_owned(),
            client_secret: secret.map(|s| s.into()),
            client_secret_expires_at: Some(0),
            token_endpoint_auth_method: method.map(str::to_owned),
        };
        let redirect = url("http://127.0.0.1/callback");
        let client = response(Some("client_secret_post"), Some("s"))
            .into_client("client_secret_basic", &redirect)
            .unwrap();
        assert!(matches!(client.auth(), ClientAuth::Post(_)));
        assert_eq!(client.client_secret_expires_at(), None);
        // Asked for none, got a secret anyway: stays public, the secret is not kept.
        let client = response(None, Some("s"))
            .into_client("none", &redirect)
            .unwrap();
        assert!(matches!(client.auth(), ClientAuth::None));
        assert!(!client.has_secret());
        let error = response(None, None)
            .into_client("client_secret_basic", &redirect)
            .unwrap_err();
        assert!(error.contains("sent no client_secret"), "{error}");
        let error = response(Some("private_key_jwt"), None)
            .into_client("client_secret_basic", &redirect)
            .unwrap_err();
        assert!(error.contains("private_key_jwt"), "{error}");
    }
}
