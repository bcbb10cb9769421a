//! Whether a resource's authorization server changed (RFC 9728 §5.2): the protected resource
//! metadata fetched again, past the cache of documents, and validated as at first contact.

use http::HeaderMap;
use url::Url;

use super::{Discovered, Discovery, DiscoveryError};
use crate::error::Error;
use crate::resource::ResourceUri;

impl Discovery {
    /// The resource's authorization server as its metadata names it now, if that is no longer
    /// `issuer`: `None` while the metadata still lists `issuer` (or no longer exists where
    /// none was named: a server without metadata names only its own origin, and has nothing
    /// to move).
    ///
    /// The metadata is fetched again, not taken from the cache of documents (a 401 is when a
    /// server that moved says so), from the challenge's `resource_metadata` or the well-known
    /// URLs, with the checks of first contact: the URL (RFC 9728 §7.7), the location and the
    /// `resource` against the requested URL (RFC 9728 §3.3), and then `resource` must be
    /// exactly `resource`, the one the client uses. The new authorization server is chosen and
    /// its metadata validated as [`discover_from`](Self::discover_from) does (RFC 8414 §3.3),
    /// preferring issuers for which `usable` is true.
    pub(crate) async fn recheck(
        &self,
        server_url: &Url,
        headers: &HeaderMap,
        (resource, issuer): (&ResourceUri, &str),
        usable: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Option<Discovered>, Error> {
        let (candidates, named, challenge_scope) = self.metadata_candidates(server_url, headers)?;
        self.forget_documents(&candidates).await;
        let found = match self
            .protected_resource(server_url, &candidates, named)
            .await
        {
            Ok(found) => found,
            Err(Error::Discovery(DiscoveryError::NotFound { .. })) if !named => return Ok(None),
            Err(error) => return Err(error),
        };
        if found.resource() != resource {
            return Err(Error::Discovery(DiscoveryError::ResourceChanged {
                resource: resource.wire().to_owned(),
                metadata_resource: found.resource().wire().to_owned(),
            }));
        }
        // RFC 8414 §2 / RFC 9728 §2: issuers compare as strings.
        if found
            .authorization_servers()
            .iter()
            .any(|listed| listed.as_str() == issuer)
        {
            return Ok(None);
        }
        let authorization_server = self.authorization_server(&found, usable).await?;
        let scopes = challenge_scope
            .or_else(|| found.scopes_supported().cloned())
            .unwrap_or_default();
        Ok(Some(Discovered {
            protected_resource: found,
            authorization_server,
            scopes,
            fallback: false,
        }))
    }
}
