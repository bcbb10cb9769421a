//! What an [`AuthorizationServer`](super::AuthorizationServer) does, changeable while it runs.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

/// The authorization server's behaviour. Every field has a documented default (what
/// [`Script::default`] gives), which is a well-behaved RFC 6749 / RFC 8707 server.
///
/// Change it on a running server with
/// [`AuthorizationServer::script`](super::AuthorizationServer::script). Each request follows the
/// script as it was when the request arrived, so one already waiting out its
/// [`latency`](Self::latency) is not affected by a later change.
///
/// ```
/// use std::time::Duration;
/// use audience_cache::testing::{AudienceStyle, AuthorizationServer, Failure, TokenFormat};
///
/// let server = AuthorizationServer::builder().in_process();
/// server.script(|s| {
///     s.token_format = TokenFormat::Opaque;
///     s.audience = AudienceStyle::Missing;
///     s.expires_in = None;
///     s.latency = Duration::from_millis(200);
///     s.fail_next(2, Failure::ServiceUnavailable);
/// });
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Script {
    /// How access tokens look. Default: [`TokenFormat::Jwt`].
    pub token_format: TokenFormat,
    /// What goes in the `aud` claim. Default: [`AudienceStyle::Resource`].
    pub audience: AudienceStyle,
    /// The audience of a token requested with no `resource` (RFC 9068 §3 asks the server to
    /// pick one). Default: `urn:audience-cache:default-audience`, which no
    /// [`ResourceServer`](super::ResourceServer) accepts.
    pub default_audience: String,
    /// `expires_in` in token responses, and the token's lifetime; `None` omits `expires_in`
    /// and `exp` and the token never expires. Default: one hour.
    pub expires_in: Option<Duration>,
    /// Time the token endpoint waits before answering, with `tokio::time::sleep`, so a test on
    /// paused time controls it with `tokio::time::advance`. Default: zero.
    pub latency: Duration,
    /// Failures for the next token requests, one per request, in order; see
    /// [`Script::fail_next`]. Default: empty.
    pub failures: VecDeque<Failure>,
    /// A failure for every token request once [`failures`](Self::failures) is empty.
    /// Default: `None`.
    pub fail_always: Option<Failure>,
    /// The `scope` member of token responses. Default: [`ScopeField::Echo`].
    pub scope_field: ScopeField,
    /// The `resource` member of token responses (draft-mcguinness-oauth-resource-token-resp).
    /// Default: [`ResourceField::Omit`].
    pub resource_field: ResourceField,
    /// Which `resource` values token and authorization requests may name. Default:
    /// [`ResourcePolicy::any_http`].
    pub resources: ResourcePolicy,
    /// Also issue a refresh token on the `client_credentials` grant. Default: `false` (refresh
    /// tokens come with the `authorization_code` grant and from rotation).
    pub refresh_on_client_credentials: bool,
    /// Rotate refresh tokens: each refresh returns a new one and the one presented becomes
    /// invalid. Presenting a rotated token again also revokes the token that replaced it
    /// (reuse detection, RFC 9700 §4.14.2), so both are `invalid_grant` from then on.
    /// When off, a refresh token stays valid and no new one is returned. Default: `true`.
    pub rotate_refresh_tokens: bool,
    /// What `/authorize` does with a valid request. Default: [`AuthorizeOutcome::Approve`].
    pub authorize: AuthorizeOutcome,
    /// The RFC 9207 `iss` parameter of `/authorize` redirects. Default: [`IssParameter::Correct`].
    pub iss_parameter: IssParameter,
    /// An `issuer` to serve in the RFC 8414 metadata instead of the real one (endpoints stay
    /// correct), to test the RFC 8414 §3.3 issuer check. Default: `None`.
    pub metadata_issuer: Option<String>,
    /// List `code_challenge_methods_supported: ["S256"]` in the metadata; MCP clients must refuse
    /// to proceed without it (MCP-2025-11-25 §11.4). Default: `true`.
    pub advertise_pkce: bool,
    /// The nonce DPoP proofs must carry (RFC 9449 §8): a token request with a proof without
    /// it is answered `400 use_dpop_nonce` with `DPoP-Nonce: <this>`, and every token
    /// response carries it in `DPoP-Nonce`. Default: `None` (no nonce asked for).
    pub dpop_nonce: Option<String>,
    /// Binds tokens requested with a valid DPoP proof to its key (`token_type: DPoP`,
    /// `cnf.jkt`; a public client's refresh tokens too, RFC 9449 §5). `false` answers such
    /// requests with a bearer token, like a server without DPoP. Default: `true`.
    pub bind_dpop: bool,
    /// Every token response carries a new [`dpop_nonce`](Self::dpop_nonce), which the next
    /// proof must have (a server that rotates nonces at each answer, RFC 9449 §8.2).
    /// Default: `false`.
    pub rotate_dpop_nonce: bool,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            token_format: TokenFormat::Jwt,
            audience: AudienceStyle::Resource,
            default_audience: "urn:audience-cache:default-audience".to_owned(),
            expires_in: Some(Duration::from_secs(3600)),
            latency: Duration::ZERO,
            failures: VecDeque::new(),
            fail_always: None,
            scope_field: ScopeField::Echo,
            resource_field: ResourceField::Omit,
            resources: ResourcePolicy::any_http(),
            refresh_on_client_credentials: false,
            rotate_refresh_tokens: true,
            authorize: AuthorizeOutcome::Approve,
            iss_parameter: IssParameter::Correct,
            metadata_issuer: None,
            advertise_pkce: true,
            dpop_nonce: None,
            bind_dpop: true,
            rotate_dpop_nonce: false,
        }
    }
}

impl Script {
    /// Makes the next `n` token requests (after any already queued) fail with `failure`.
    /// A failing request is still recorded and counted, and changes no server state: no code
    /// is used up and no refresh token rotated.
    pub fn fail_next(&mut self, n: usize, failure: Failure) {
        self.failures.extend(std::iter::repeat_n(failure, n));
    }

    /// The failure for the request that just arrived, if any.
    pub(crate) fn take_failure(&mut self) -> Option<Failure> {
        self.failures
            .pop_front()
            .or_else(|| self.fail_always.clone())
    }
}

/// The format of access tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TokenFormat {
    /// An RFC 9068 JWT: header `{"alg":"HS256","typ":"at+jwt"}`, claims `iss`, `sub`, `aud`,
    /// `client_id`, `scope`, `iat`, `exp`, `jti`, signed with the server's random key.
    #[default]
    Jwt,
    /// 32 random bytes, base64url: the server remembers what each one means.
    Opaque,
}

/// What the server puts in a token's `aud` claim.
///
/// A single value is a JSON string and several are an array (RFC 7519 §4.1.3), except with
/// [`AudienceStyle::Array`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum AudienceStyle {
    /// The requested `resource` value(s), byte for byte (RFC 9068 §3); with no `resource`,
    /// [`Script::default_audience`].
    Resource,
    /// These values, whatever was requested.
    Fixed(Vec<String>),
    /// Always a JSON array: the requested resource(s) followed by these extra values (a
    /// multi-audience token; `Array(vec![])` is a one-element array).
    Array(Vec<String>),
    /// No `aud` claim at all.
    Missing,
    /// This JSON value verbatim, for malformed audiences such as `42`, `[]` or `[1]`.
    Raw(Value),
}

/// A scripted failure of one token request. The request is answered without looking at it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// `500 Internal Server Error` with a plain-text body.
    InternalServerError,
    /// `503 Service Unavailable` with a plain-text body.
    ServiceUnavailable,
    /// `429 Too Many Requests` with `Retry-After` in whole seconds.
    TooManyRequests {
        /// The `Retry-After` value.
        retry_after: Duration,
    },
    /// `200` with `Content-Type: application/json` and a body cut off mid-object.
    MalformedJson,
    /// `200` with a syntactically valid token response of just over 1 MiB (the access token
    /// is 1 MiB of `A`), for testing response size limits.
    OversizedBody,
    /// `400 {"error":"invalid_target"}` (RFC 8707 §2).
    InvalidTarget,
    /// `400 {"error":"invalid_grant"}` (RFC 6749 §5.2).
    InvalidGrant,
    /// Any other OAuth error response: this status and `error` code.
    OAuth {
        /// The HTTP status, e.g. `400` or `401`.
        status: u16,
        /// The `error` code, e.g. `"temporarily_unavailable"`.
        error: String,
    },
    /// This answer verbatim, for answers a well-behaved server never gives: a token response
    /// as `text/html` or with no `Content-Type`, a `201`, a `200` holding only an `error`, a
    /// token exchange answer without `issued_token_type`.
    Answer {
        /// The HTTP status (an invalid one is `200`).
        status: u16,
        /// The `Content-Type` header; `None` sends none.
        content_type: Option<String>,
        /// The body.
        body: String,
    },
}

/// The `scope` member of successful token responses (RFC 6749 §5.1).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ScopeField {
    /// The granted scope, which is the requested one (or the original grant's on a refresh).
    #[default]
    Echo,
    /// No `scope` member; the token's `scope` claim is still the requested scope. RFC 6749
    /// §5.1 allows this when the granted scope equals the requested one.
    Omit,
    /// Grant exactly this scope instead (narrower, wider or different): it is both the
    /// response's `scope` member and the token's `scope` claim.
    Fixed(String),
}

/// The `resource` member of successful token responses, from
/// draft-mcguinness-oauth-resource-token-resp.
#[derive(Clone, Debug, PartialEq, Default)]
#[non_exhaustive]
pub enum ResourceField {
    /// No `resource` member (what RFC 8707 servers send).
    #[default]
    Omit,
    /// The resource(s) the token is for: a string for one, an array for several.
    Echo,
    /// This JSON value verbatim: a different resource, an array, or something malformed.
    Value(Value),
}

/// What `/authorize` answers to a request that passed its checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AuthorizeOutcome {
    /// Redirect with a `code` (the "user" approves at once).
    #[default]
    Approve,
    /// Redirect with `error=access_denied` (RFC 6749 §4.1.2.1).
    Deny,
}

/// The RFC 9207 `iss` parameter on `/authorize` redirects (success and error alike).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum IssParameter {
    /// The server's issuer, as its metadata announces with
    /// `authorization_response_iss_parameter_supported: true`.
    #[default]
    Correct,
    /// No `iss` parameter.
    Omit,
    /// This value instead (a mix-up attack, RFC 9700 §4.4).
    Wrong(String),
}

type DenyFn = dyn Fn(&str) -> bool + Send + Sync;

/// Which RFC 8707 `resource` values the server accepts. A refused value gets
/// `invalid_target` (400 at the token endpoint, an error redirect at `/authorize`).
///
/// Whatever the policy, refresh and authorization-code token requests may only name resources
/// of the original grant (RFC 8707 §2.2).
///
/// ```
/// use audience_cache::testing::ResourcePolicy;
///
/// let only_mcp = ResourcePolicy::allow_only(["https://rs.example/mcp"]).required();
/// let no_admin = ResourcePolicy::deny_if(|resource| resource.contains("/admin"));
/// # let _ = (only_mcp, no_admin);
/// ```
#[derive(Clone)]
pub struct ResourcePolicy {
    rule: Rule,
    required: bool,
}

#[derive(Clone)]
enum Rule {
    AnyHttp,
    AllowOnly(Vec<String>),
    DenyIf(Arc<DenyFn>),
}

impl ResourcePolicy {
    /// Accept any absolute `http` or `https` URI without a fragment (RFC 8707 §2). The default.
    pub fn any_http() -> Self {
        Self {
            rule: Rule::AnyHttp,
            required: false,
        }
    }

    /// Accept only these exact strings (no normalization: the server compares bytes).
    pub fn allow_only<I, S>(resources: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            rule: Rule::AllowOnly(resources.into_iter().map(Into::into).collect()),
            required: false,
        }
    }

    /// Like [`ResourcePolicy::any_http`], but refuse values for which `deny` returns `true`.
    pub fn deny_if(deny: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        Self {
            rule: Rule::DenyIf(Arc::new(deny)),
            required: false,
        }
    }

    /// Also refuse requests that send no `resource` at all (RFC 8707 §2 lets a server demand
    /// one). Refresh and authorization-code requests may still omit it when the original
    /// grant named resources: they then get a token for all of them.
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// `Err(description)` for the first refused value.
    pub(crate) fn check(&self, resources: &[String]) -> Result<(), String> {
        if resources.is_empty() && self.required {
            return Err("this server requires the resource parameter".to_owned());
        }
        for resource in resources {
            let allowed = match &self.rule {
                Rule::AnyHttp => is_absolute_http(resource),
                Rule::AllowOnly(list) => list.iter().any(|r| r == resource),
                Rule::DenyIf(deny) => is_absolute_http(resource) && !deny(resource),
            };
            if !allowed {
                return Err(format!("resource {resource:?} is not accepted"));
            }
        }
        Ok(())
    }
}

impl Default for ResourcePolicy {
    fn default() -> Self {
        Self::any_http()
    }
}

impl fmt::Debug for ResourcePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rule: &dyn fmt::Debug = match &self.rule {
            Rule::AnyHttp => &"any_http",
            Rule::AllowOnly(list) => list,
            Rule::DenyIf(_) => &"deny_if(..)",
        };
        f.debug_struct("ResourcePolicy")
            .field("rule", rule)
            .field("required", &self.required)
            .finish()
    }
}

/// An absolute `http(s)` URI with a host and no fragment (RFC 8707 §2).
fn is_absolute_http(resource: &str) -> bool {
    !resource.contains('#')
        && url::Url::parse(resource)
            .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn default_policy_accepts_absolute_http_only() {
        let policy = ResourcePolicy::default();
        assert!(policy.check(&[]).is_ok());
        assert!(
            policy
                .check(&owned(&["https://rs.test/mcp", "http://127.0.0.1:9/x?t=1"]))
                .is_ok()
        );
        for bad in [
            "/mcp",
            "rs.test",
            "urn:x:y",
            "https://rs.test/mcp#f",
            "ftp://rs.test/",
        ] {
            assert!(policy.check(&owned(&[bad])).is_err(), "{bad}");
        }
    }

    #[test]
    fn allow_list_deny_predicate_and_required() {
        let allow = ResourcePolicy::allow_only(["https://a.test"]).required();
        assert!(allow.check(&owned(&["https://a.test"])).is_ok());
        assert!(allow.check(&owned(&["https://a.test/"])).is_err());
        assert!(allow.check(&[]).is_err());
        let deny = ResourcePolicy::deny_if(|r| r.ends_with("/admin"));
        assert!(deny.check(&owned(&["https://a.test/mcp"])).is_ok());
        assert!(
            deny.check(&owned(&["https://a.test/mcp", "https://a.test/admin"]))
                .is_err()
        );
    }

    #[test]
    fn failures_queue_before_the_standing_one() {
        let mut script = Script::default();
        script.fail_next(2, Failure::ServiceUnavailable);
        script.fail_always = Some(Failure::InvalidGrant);
        assert_eq!(script.take_failure(), Some(Failure::ServiceUnavailable));
        assert_eq!(script.take_failure(), Some(Failure::ServiceUnavailable));
        assert_eq!(script.take_failure(), Some(Failure::InvalidGrant));
        assert_eq!(script.take_failure(), Some(Failure::InvalidGrant));
    }
}
