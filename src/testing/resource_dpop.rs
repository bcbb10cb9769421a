//! The resource server's DPoP checks (RFC 9449 §7): which scheme a token came with, whether
//! a request passes the DPoP rules before the audience and scope checks, and the `DPoP`
//! challenge of a refusal.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};

use super::records::TokenInfo;
use super::resource_server::{ResourceScript, quote};

/// The scheme an access token was presented with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scheme {
    Bearer,
    DPoP,
}

/// The token of an `Authorization: Bearer` or `Authorization: DPoP` header (schemes
/// case-insensitive, RFC 6750 §2.1, RFC 9449 §7.1).
pub(super) fn presented_token(headers: &HeaderMap) -> Option<(Scheme, &str)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Scheme::DPoP
    } else {
        return None;
    };
    (!token.is_empty()).then_some((scheme, token))
}

/// Why a request fails the DPoP checks (RFC 9449 §7).
pub(super) enum DpopRefusal {
    /// A `DPoP` challenge with `invalid_token` and this description.
    InvalidToken(&'static str),
    /// A `DPoP` challenge with `invalid_dpop_proof`.
    InvalidProof(String),
    /// A `DPoP` challenge with `use_dpop_nonce` and the nonce.
    UseNonce(String),
    /// The resource requires DPoP and the request has no bound token: a `DPoP` challenge
    /// (with the `Bearer` one for discovery), no error code when no token came.
    Required { token_presented: bool },
}

/// The DPoP checks of a request to a protected path, before the audience and scope checks:
/// `None` when they pass (or do not apply).
pub(super) fn dpop_refusal(
    script: &ResourceScript,
    scheme: Option<Scheme>,
    info: Option<&TokenInfo>,
    proof: Option<&super::DpopProofRecord>,
) -> Option<DpopRefusal> {
    let bound = info.and_then(|info| info.jkt.as_deref());
    match (scheme, bound) {
        (Some(Scheme::DPoP), Some(jkt)) => {
            let Some(proof) = proof else {
                return Some(DpopRefusal::InvalidProof("no DPoP proof".to_owned()));
            };
            if let Some(problem) = &proof.problem {
                return Some(DpopRefusal::InvalidProof(problem.clone()));
            }
            if proof.jkt != jkt {
                return Some(DpopRefusal::InvalidToken(
                    "the token is bound to another DPoP key",
                ));
            }
            match &script.dpop_nonce {
                Some(nonce) if proof.nonce.as_ref() != Some(nonce) => {
                    Some(DpopRefusal::UseNonce(nonce.clone()))
                }
                _ => None,
            }
        }
        (Some(Scheme::DPoP), None) if info.is_some() => {
            Some(DpopRefusal::InvalidToken("the token is not DPoP-bound"))
        }
        (Some(Scheme::Bearer), Some(_)) => Some(DpopRefusal::InvalidToken(
            "a DPoP-bound token was presented as a bearer token",
        )),
        (scheme, None) if script.dpop_required => Some(DpopRefusal::Required {
            token_presented: scheme.is_some(),
        }),
        _ => None,
    }
}

impl DpopRefusal {
    /// The `401` answer, its challenge naming the metadata at `metadata_url`.
    pub(super) fn response(&self, metadata_url: &str) -> Response {
        let resource_metadata = format!("resource_metadata=\"{}\"", quote(metadata_url));
        let dpop = |error: Option<(&str, &str)>| {
            let mut params = vec!["algs=\"ES256\"".to_owned()];
            if let Some((code, description)) = error {
                params.push(format!("error=\"{code}\""));
                params.push(format!("error_description=\"{}\"", quote(description)));
            }
            params.push(resource_metadata.clone());
            format!("DPoP {}", params.join(", "))
        };
        let (value, nonce) = match self {
            Self::InvalidToken(why) => (dpop(Some(("invalid_token", why))), None),
            Self::InvalidProof(why) => (dpop(Some(("invalid_dpop_proof", why))), None),
            Self::UseNonce(nonce) => (
                dpop(Some((
                    "use_dpop_nonce",
                    "the resource server requires a nonce in DPoP proofs",
                ))),
                Some(nonce.as_str()),
            ),
            Self::Required { token_presented } => {
                let error = token_presented
                    .then_some(("invalid_token", "this resource requires DPoP-bound tokens"));
                (dpop(error), None)
            }
        };
        let mut response = StatusCode::UNAUTHORIZED.into_response();
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        if let Some(nonce) = nonce.and_then(|n| HeaderValue::from_str(n).ok()) {
            headers.insert("dpop-nonce", nonce);
        }
        response
    }
}
