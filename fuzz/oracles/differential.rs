//! The oracle of the `differential` fuzz target: the crate's match key and coverage decision
//! against fluent-uri, an RFC 3986 implementation written apart from this crate and from `url`.
//!
//! Shared by `fuzz/fuzz_targets/differential.rs` and the stable corpus replay
//! (`tests/fuzz_corpus.rs`, where fluent-uri is a dev-dependency), so that `cargo fuzz` and
//! `cargo test` assert exactly the same thing.
//!
//! Input: a resource identifier, optionally followed by a newline and a request URL.
//!
//! - **Key.** For any resource `ResourceUri::parse_with` accepts (strict, or http on loopback),
//!   fluent-uri must accept it too, and its `normalize()` (RFC 3986 §6.2.2, RFC 5952 IPv6,
//!   default port removed), after the exceptions below, must equal `key()` byte for byte.
//! - **Coverage.** For a request URL that both parse, where the crate does not refuse the
//!   request: the crate covers it exactly when a path-prefix decision over fluent-uri's
//!   normalized forms does (same scheme, host and port; the resource's path segments a prefix
//!   of the request's, a resource path ending in `/` needing a segment below it; a resource with
//!   a query naming exactly its path and query).
//!
//! Every deliberate difference is an [`Exception`], written once in `docs/rules.md` (the section
//! "Exceptions to syntax-based normalization") under the same name, and applied here by the
//! function of that name. Nothing else is filtered: an input that reaches a comparison is
//! compared.

use audience_cache::{Coverage, ParseOptions, ResourceUri};
use fluent_uri::{Iri, Uri};
use url::Url;

/// Where the crate deliberately differs from fluent-uri's normalization, by the names
/// `docs/rules.md` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exception {
    /// `empty-path-is-root`: an empty path is `/` (RFC 3986 §6.2.3 for http(s)).
    EmptyPathIsRoot,
    /// `port-as-number`: a port with leading zeros is the number it spells (`:0442` is `:442`).
    PortAsNumber,
    /// `host-as-a-label`: a non-ASCII host is compared as its UTS-46 A-label (compared through
    /// fluent-uri's `Iri`, which keeps the Unicode host).
    HostAsALabel,
    /// `request-as-parsed`: `covers` takes a `url::Url`, so the request compared is what `url`
    /// made of the string (what an HTTP client sends), not the string as typed.
    RequestAsParsed,
}

impl Exception {
    /// Every exception.
    pub const ALL: [Exception; 4] = [
        Self::EmptyPathIsRoot,
        Self::PortAsNumber,
        Self::HostAsALabel,
        Self::RequestAsParsed,
    ];

    /// The name `docs/rules.md` gives it.
    pub fn name(self) -> &'static str {
        match self {
            Self::EmptyPathIsRoot => "empty-path-is-root",
            Self::PortAsNumber => "port-as-number",
            Self::HostAsALabel => "host-as-a-label",
            Self::RequestAsParsed => "request-as-parsed",
        }
    }
}

/// A URI with an authority, in components, as fluent-uri normalized it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parts {
    scheme: String,
    host: String,
    /// Without the `:`; `None` when absent or empty.
    port: Option<String>,
    path: String,
    query: Option<String>,
    /// The exceptions that changed fluent-uri's form, shown when the comparison fails.
    applied: Vec<Exception>,
}

impl Parts {
    fn assemble(&self) -> String {
        let mut out = format!("{}://{}", self.scheme, self.host);
        if let Some(port) = &self.port {
            out.push(':');
            out.push_str(port);
        }
        out.push_str(&self.path);
        if let Some(query) = &self.query {
            out.push('?');
            out.push_str(query);
        }
        out
    }

    fn applied(&self) -> String {
        let names: Vec<&str> = self.applied.iter().map(|e| e.name()).collect();
        if names.is_empty() {
            "no exception applied".to_owned()
        } else {
            format!("after exceptions {}", names.join(", "))
        }
    }
}

/// The target: see the module documentation.
pub fn differential(data: &[u8]) {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (resource, request) = match input.split_once('\n') {
        Some((resource, request)) => (resource, Some(request)),
        None => (input, None),
    };
    for options in [
        ParseOptions::strict(),
        ParseOptions::strict().allow_insecure_http_on_loopback(true),
    ] {
        let Ok(ours) = ResourceUri::parse_with(resource, &options) else {
            continue;
        };
        let theirs = match rfc3986_key(resource) {
            Ok(theirs) => theirs,
            Err(why) => panic!(
                "{resource:?} is a resource (key {:?}) but fluent-uri refuses it: {why}",
                ours.key()
            ),
        };
        if theirs.assemble() != ours.key() {
            panic!(
                "the key of {resource:?} is {:?}; fluent-uri normalizes it to {:?} ({})",
                ours.key(),
                theirs.assemble(),
                theirs.applied()
            );
        }
        if let Some(request) = request {
            compare_coverage(&ours, &theirs, request);
        }
    }
}

/// fluent-uri's normalization of a resource, with the key's exceptions applied.
fn rfc3986_key(input: &str) -> Result<Parts, String> {
    let ascii;
    let (input, a_label) = if input.is_ascii() {
        (input, false)
    } else {
        ascii = host_as_a_label(input)?;
        (ascii.as_str(), true)
    };
    let uri = Uri::parse(input).map_err(|e| e.to_string())?;
    let mut parts = normalized_parts(&uri)?;
    if a_label {
        parts.applied.push(Exception::HostAsALabel);
    }
    empty_path_is_root(&mut parts);
    port_as_number(&mut parts);
    Ok(parts)
}

fn normalized_parts(uri: &Uri<&str>) -> Result<Parts, String> {
    let normalized = uri.normalize();
    let Some(authority) = normalized.authority() else {
        return Err(format!("{normalized} has no authority"));
    };
    Ok(Parts {
        scheme: normalized.scheme().as_str().to_owned(),
        host: authority.host().to_owned(),
        port: authority
            .port()
            .map(|port| port.as_str().to_owned())
            .filter(|port| !port.is_empty()),
        path: normalized.path().as_str().to_owned(),
        query: normalized.query().map(|query| query.as_str().to_owned()),
        applied: Vec::new(),
    })
}

/// Exception `empty-path-is-root`.
fn empty_path_is_root(parts: &mut Parts) {
    if parts.path.is_empty() {
        parts.path.push('/');
        parts.applied.push(Exception::EmptyPathIsRoot);
    }
}

/// Exception `port-as-number`: only a port written with leading zeros is rewritten (fluent-uri
/// already drops a default port however it is written).
fn port_as_number(parts: &mut Parts) {
    if let Some(port) = &mut parts.port
        && port.len() > 1
        && port.starts_with('0')
    {
        let number = port.trim_start_matches('0');
        *port = if number.is_empty() { "0" } else { number }.to_owned();
        parts.applied.push(Exception::PortAsNumber);
    }
}

/// Exception `host-as-a-label`: fluent-uri's `Iri` reads the input (RFC 3987); its host, and
/// only its host, is replaced by its UTS-46 A-label, and the result must then be a URI.
fn host_as_a_label(input: &str) -> Result<String, String> {
    let iri = Iri::parse(input).map_err(|e| format!("as an IRI: {e}"))?;
    let Some(authority) = iri.authority() else {
        return Err("the IRI has no authority".to_owned());
    };
    let host = idna::domain_to_ascii(authority.host())
        .map_err(|e| format!("the IRI's host has no A-label: {e:?}"))?;
    let mut out = format!("{}://", iri.scheme().as_str());
    if let Some(userinfo) = authority.userinfo() {
        out.push_str(userinfo.as_str());
        out.push('@');
    }
    out.push_str(&host);
    if let Some(port) = authority.port() {
        out.push(':');
        out.push_str(port.as_str());
    }
    out.push_str(iri.path().as_str());
    if let Some(query) = iri.query() {
        out.push('?');
        out.push_str(query.as_str());
    }
    if let Some(fragment) = iri.fragment() {
        out.push('#');
        out.push_str(fragment.as_str());
    }
    Ok(out)
}

/// Exception `request-as-parsed`: the string fluent-uri reads for a request is `url`'s
/// serialization of it, the value `covers` is given.
fn request_as_parsed(request: &Url) -> &str {
    request.as_str()
}

fn compare_coverage(ours: &ResourceUri, theirs: &Parts, request: &str) {
    let Ok(url) = Url::parse(request) else {
        return;
    };
    let decision = ours.covers(&url);
    if matches!(decision, Coverage::Refused(_)) {
        return;
    }
    let Ok(their_request) = Uri::parse(request_as_parsed(&url)) else {
        return;
    };
    // A request without an authority (`mailto:x`) is on no resource's origin.
    let (their_decision, their_form) = match normalized_parts(&their_request) {
        Ok(mut parts) => {
            parts.applied.push(Exception::RequestAsParsed);
            empty_path_is_root(&mut parts);
            port_as_number(&mut parts);
            let form = format!("{}, {}", parts.assemble(), parts.applied());
            (path_prefix_covers(theirs, &parts), form)
        }
        Err(_) => (false, their_request.normalize().to_string()),
    };
    if decision.is_covered() != their_decision {
        panic!(
            "{} {} {url} (as fluent-uri normalizes it: {}); the path-prefix decision over \
             fluent-uri's forms (the resource as {}, {}) says {}",
            ours.key(),
            decision,
            their_form,
            theirs.assemble(),
            theirs.applied(),
            if their_decision {
                "covered"
            } else {
                "not covered"
            },
        );
    }
}

/// The coverage rule over normalized forms, by segments: the same scheme, host and port; with
/// a query, exactly the same path and query; without, the resource's segments a prefix of the
/// request's, and a resource path ending in `/` (an empty last segment) needs a segment below.
fn path_prefix_covers(resource: &Parts, request: &Parts) -> bool {
    let same_origin = resource.scheme == request.scheme
        && resource.host == request.host
        && resource.port == request.port;
    if !same_origin {
        return false;
    }
    if let Some(query) = &resource.query {
        return request.path == resource.path && request.query.as_ref() == Some(query);
    }
    let own: Vec<&str> = resource.path.split('/').collect();
    let theirs: Vec<&str> = request.path.split('/').collect();
    match own.split_last() {
        Some((&"", parent)) => theirs.len() > parent.len() && theirs.starts_with(parent),
        _ => theirs.starts_with(&own),
    }
}
