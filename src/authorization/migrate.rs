//! A discovered resource whose authorization server changed (RFC 9728 §5.2, MCP SEP-2352):
//! when a 401 answers one of its tokens, its protected resource metadata is fetched again; if
//! it no longer lists the issuer the client uses, the client gets a client at the issuer it
//! lists now, by the rules of first contact, the resource moves there, and the old issuer's
//! tokens and refresh tokens for it are dropped, never to be sent again.
//!
//! A resource server can only move itself to an authorization server the client would have
//! accepted had it named that server first: the new metadata is validated as at first contact
//! (and must describe the same resource), and the client there is obtained by the one trust
//! rule ([`TokenCache::trust`]): a pre-registered client is used only at the issuers it is
//! registered at, and its secret goes nowhere else. Resources whose client the user configured
//! on the cache are never moved by a server. Nothing is dropped unless the move succeeds.

use http::HeaderMap;
use url::Url;

use super::ClientRegistrar;
use super::onboard::Trust;
use crate::cache::{BearerToken, TokenCache};
use crate::discovery::{Discovery, DiscoveryError};
use crate::error::Error;

/// The most authorization server moves one request follows (RFC 9728 §5.2). A move is
/// followed once; metadata that moves the resource again within the same request is a server
/// switching between authorization servers, and an error rather than a loop.
pub(crate) const MAX_MOVES: usize = 1;

/// What a 401 said about the authorization server of the token's resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Recheck {
    /// The metadata still lists the token's issuer (or the resource is not one that moves).
    Same,
    /// The resource is at another issuer now (moved by this call, or by a concurrent one):
    /// the request may be sent again with a token from there.
    Moved,
}

impl TokenCache {
    /// Whether the authorization server of `token`'s resource changed, as the resource's
    /// metadata says after the 401 that answered `url` with `headers`; if it did, the move is
    /// made (a client at the new issuer, the resource re-pointed, the old issuer's tokens and
    /// refresh tokens for the resource dropped). `moves` is how many moves this request has
    /// followed: at [`MAX_MOVES`] a further one is
    /// [`DiscoveryError::AuthorizationServerMovedAgain`].
    ///
    /// Only resources whose client a [`ClientRegistrar`] obtained are rechecked: a client the
    /// user configured on the cache is the user's word for the issuer.
    pub(crate) async fn recheck_authorization_server(
        &self,
        (discovery, clients): (&Discovery, &ClientRegistrar),
        redirect_uri: Option<Url>,
        (url, headers): (&Url, &HeaderMap),
        token: &BearerToken,
        moves: usize,
    ) -> Result<Recheck, Error> {
        let resource = token.resource();
        let issuer = token.key().issuer();
        if self.client_was_discovered(issuer) != Some(true) {
            return Ok(Recheck::Same);
        }
        match self.issuer_of(resource) {
            Some(current) if current == issuer => {}
            // Another request moved it meanwhile.
            Some(_) => return Ok(Recheck::Moved),
            None => return Ok(Recheck::Same),
        }
        let usable = |candidate: &str| self.trust(candidate, clients) != Trust::Untrusted;
        let Some(discovered) = discovery
            .recheck(url, headers, (resource, issuer), &usable)
            .await?
        else {
            return Ok(Recheck::Same);
        };
        let to = discovered.authorization_server().issuer().as_str();
        if moves >= MAX_MOVES {
            return Err(Error::Discovery(
                DiscoveryError::AuthorizationServerMovedAgain {
                    resource: resource.wire().to_owned(),
                    from: issuer.to_owned(),
                    to: to.to_owned(),
                    limit: MAX_MOVES,
                },
            ));
        }
        // The client at the new issuer, exactly as at first contact; nothing changes until
        // there is one.
        let registration = self
            .obtain_client(&discovered, discovery, clients, redirect_uri)
            .await?;
        self.install_client(&discovered, || {
            registration.ok_or_else(|| Error::Registration {
                issuer: to.to_owned(),
                detail: "a client registration appeared concurrently".to_owned(),
            })
        })?;
        let from = self.move_resource(discovered.resource_config()).await?;
        tracing::warn!(
            resource = resource.wire(),
            from = from.as_str(),
            to,
            "the resource's metadata no longer lists its authorization server (RFC 9728 §5.2): \
             moved to the one it lists now; the old server's tokens and refresh tokens for it \
             were dropped"
        );
        Ok(Recheck::Moved)
    }
}
