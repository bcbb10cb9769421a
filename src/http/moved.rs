//! The request loop's side of a resource whose authorization server changed (RFC 9728 §5.2):
//! after a 401 to one of its tokens, one recheck of its metadata, in the resource's turn so
//! that concurrent requests answered 401 together make one move (one registration, one
//! authorization) between them.

use http::HeaderMap;
use url::Url;

use super::Policy;
use super::attach::Retries;
use crate::authorization::Recheck;
use crate::cache::BearerToken;
use crate::error::Error;

/// Whether the resource of `token`, answered 401 at `url`, moved to another authorization
/// server (and the move was made): the request is then sent again.
pub(super) async fn recheck(
    policy: &Policy,
    (url, headers): (&Url, &HeaderMap),
    token: &BearerToken,
    retries: &Retries,
) -> Result<bool, Error> {
    let Some((discovery, clients)) = &policy.discovery else {
        return Ok(false);
    };
    let turn = policy.authorization_turn(token.resource());
    let _turn = turn.lock().await;
    let recheck = policy
        .cache
        .recheck_authorization_server(
            (discovery, clients),
            policy.handler.as_ref().map(|h| h.redirect_uri()),
            (url, headers),
            token,
            retries.moves,
        )
        .await?;
    Ok(recheck == Recheck::Moved)
}
