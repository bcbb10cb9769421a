//! Why a `WWW-Authenticate` header, or one challenge in it, was refused.

use crate::scope::ScopeError;

use super::TokenType;

/// Why `WWW-Authenticate` parsing or challenge selection failed.
///
/// Variants name the reason class and quote the offending part, shortened to 80 characters and
/// shown with Rust's string escaping, so a control character in a server's header cannot act on
/// a terminal or a log line. `WWW-Authenticate` never carries the client's token, but a `token68`
/// challenge may carry a server's own handshake data, so it is never quoted.
///
/// The size and syntax variants refuse the whole header ([`Challenges::parse`] returns them).
/// [`DuplicateParameter`](Self::DuplicateParameter) refuses one challenge, which is dropped and
/// listed by [`Challenges::rejected`]. The scope and `resource_metadata` variants come from the
/// typed accessors and from [`Challenges::select`].
///
/// [`Challenges::parse`]: crate::challenge::Challenges::parse
/// [`Challenges::rejected`]: crate::challenge::Challenges::rejected
/// [`Challenges::select`]: crate::challenge::Challenges::select
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChallengeError {
    /// More `WWW-Authenticate` header fields than [`Challenges::MAX_FIELDS`](crate::challenge::Challenges::MAX_FIELDS).
    #[error(
        "the response has more than {max} WWW-Authenticate header fields; refusing to read them"
    )]
    TooManyFields {
        /// The limit.
        max: usize,
    },

    /// The header fields together are longer than [`Challenges::MAX_BYTES`](crate::challenge::Challenges::MAX_BYTES).
    #[error(
        "the WWW-Authenticate header fields are at least {len} bytes long; the limit is {max} bytes"
    )]
    TooLarge {
        /// The bytes counted when the limit was crossed.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// More challenges than [`Challenges::MAX_CHALLENGES`](crate::challenge::Challenges::MAX_CHALLENGES),
    /// across all fields.
    #[error("WWW-Authenticate holds more than {max} challenges; refusing to read them")]
    TooManyChallenges {
        /// The limit.
        max: usize,
    },

    /// One challenge has more parameters than [`Challenges::MAX_PARAMS`](crate::challenge::Challenges::MAX_PARAMS).
    #[error("the {scheme:?} challenge has more than {max} parameters; refusing to read it")]
    TooManyParameters {
        /// The challenge's auth-scheme, as written.
        scheme: String,
        /// The limit.
        max: usize,
    },

    /// One parameter value (or token68) is longer than
    /// [`Challenges::MAX_VALUE_BYTES`](crate::challenge::Challenges::MAX_VALUE_BYTES) as written.
    #[error(
        "the {name:?} parameter of the {scheme:?} challenge is {len} bytes long; the limit is {max} bytes"
    )]
    ValueTooLong {
        /// The challenge's auth-scheme, as written.
        scheme: String,
        /// The parameter name as written (`token68` for a token68 challenge).
        name: String,
        /// The value's length in bytes, as written (escapes included).
        len: usize,
        /// The limit.
        max: usize,
    },

    /// A header field contains a byte outside visible ASCII, space and tab (obs-text). RFC 9110
    /// §5.5 gives such bytes no meaning, so the field is refused rather than guessed at.
    #[error(
        "WWW-Authenticate field {field} contains bytes outside visible ASCII; the header cannot be read"
    )]
    NotVisibleAscii {
        /// 1-based index of the field.
        field: usize,
    },

    /// A header field does not follow the RFC 9110 §11.6.1 challenge grammar.
    #[error("WWW-Authenticate field {field} cannot be parsed at {near:?}: {reason}")]
    Syntax {
        /// 1-based index of the field.
        field: usize,
        /// The part of the field where parsing failed (shortened).
        near: String,
        /// What was wrong.
        reason: String,
    },

    /// A parameter name appears twice in one challenge (names compare case-insensitively).
    /// RFC 9110 §11.2 allows each name once per challenge; rather than let either value win, the
    /// challenge is dropped (rules §14).
    #[error(
        "the {scheme:?} challenge repeats the parameter {name:?}; the challenge is ignored (RFC 9110 §11.2 allows each parameter once)"
    )]
    DuplicateParameter {
        /// The challenge's auth-scheme, as written.
        scheme: String,
        /// The repeated name, as written the second time.
        name: String,
    },

    /// The challenge's `scope` is not a valid scope list (RFC 6750 §3, RFC 6749 §3.3): for
    /// example it contains a tab, a line break, `"` or `\`.
    #[error("the {scheme:?} challenge has an invalid scope: {source}")]
    InvalidScope {
        /// The challenge's auth-scheme, as written.
        scheme: String,
        /// Why the scope string was refused.
        #[source]
        source: ScopeError,
    },

    /// The challenge's `resource_metadata` (RFC 9728 §5.1) cannot be resolved to an http(s) URL.
    #[error(
        "the {scheme:?} challenge has the resource_metadata {value:?}, which is refused: {reason}"
    )]
    InvalidResourceMetadata {
        /// The challenge's auth-scheme, as written.
        scheme: String,
        /// The value as sent (shortened).
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// No valid challenge has a scheme the client can act on.
    #[error(
        "no usable {wanted} challenge in WWW-Authenticate (offered: {offered}); the server does not say how to authorize"
    )]
    NoUsableChallenge {
        /// The token type the client uses.
        wanted: TokenType,
        /// The schemes of the valid challenges, comma-separated, or `none`.
        offered: String,
    },
}
