//! The seam between one `WWW-Authenticate` field value and `http_auth`'s challenge parser.
//!
//! `http_auth::parse_challenges` parses RFC 7235 auth-params, quoted strings and escapes, and we
//! let it parse every parameter. It leaves gaps that this wrapper covers (each is a test in
//! `tests/challenge.rs`):
//!
//! - it does not accept `token68` challenges (`Negotiate abc==`, `NTLM TlRM...`), and one of them
//!   anywhere in a field makes it fail the whole field;
//! - it requires exactly one space after the auth-scheme, where RFC 9110 §11.6.1 allows `1*SP`;
//! - it refuses an empty field, or one that ends in `, ` (RFC 9110 §5.6.1 asks recipients to
//!   accept empty list elements);
//! - it keeps a repeated parameter twice, leaving "which one wins" to the reader (the caller
//!   drops such challenges, rules §14);
//! - it reports errors with byte offsets and the whole input, which we shorten.
//!
//! So a field is first split at the commas outside quoted strings, the elements are grouped into
//! challenges (an element `token 1*SP ...` starts one, an element `token BWS = ...` is a parameter
//! of the current one), token68 challenges are taken as opaque, and every other challenge is
//! rebuilt as `scheme SP param, param, ...` from its own elements, untouched, and handed to
//! `http_auth` alone, which must read it as exactly one challenge.

use super::error::ChallengeError;
use super::{Body, Challenge, Challenges};
use crate::resource::shorten;

/// One challenge of a field, or the reason it was dropped.
pub(super) type Entry = Result<Challenge, ChallengeError>;

/// Parses one field value (visible ASCII, space and tab) and appends its challenges to `out`.
/// `field` is the 1-based index used in errors.
pub(super) fn parse_field(
    field: &str,
    index: usize,
    out: &mut Vec<Entry>,
) -> Result<(), ChallengeError> {
    let syntax = |near: &str, reason: &str| ChallengeError::Syntax {
        field: index,
        near: shorten(near),
        reason: reason.to_owned(),
    };
    let mut groups: Vec<Group<'_>> = Vec::new();
    for element in elements(field) {
        match classify(element).map_err(|reason| syntax(element, reason))? {
            Element::Start { scheme, rest } => {
                if out.len() + groups.len() >= Challenges::MAX_CHALLENGES {
                    return Err(ChallengeError::TooManyChallenges {
                        max: Challenges::MAX_CHALLENGES,
                    });
                }
                let token68 = rest.filter(|rest| is_token68(rest));
                groups.push(Group {
                    scheme,
                    first: rest,
                    params: Vec::new(),
                    token68,
                });
            }
            Element::Param(param) => {
                let Some(group) = groups.last_mut() else {
                    return Err(syntax(param, "a parameter comes before any auth-scheme"));
                };
                if group.token68.is_some() {
                    return Err(syntax(param, "a parameter follows a token68 challenge"));
                }
                if group.first.is_none() {
                    return Err(syntax(
                        param,
                        "a parameter follows a comma right after the auth-scheme",
                    ));
                }
                if group.params.len() + 1 >= Challenges::MAX_PARAMS {
                    return Err(ChallengeError::TooManyParameters {
                        scheme: shorten(group.scheme),
                        max: Challenges::MAX_PARAMS,
                    });
                }
                group.params.push(param);
            }
        }
    }
    for group in groups {
        out.push(group.parse(index)?);
    }
    Ok(())
}

/// The elements of a comma-separated list: split at commas outside quoted strings, trimmed of
/// optional whitespace, empty elements skipped (RFC 9110 §5.6.1).
fn elements(field: &str) -> impl Iterator<Item = &str> {
    let bytes = field.as_bytes();
    let mut pieces = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, &b) in bytes.iter().enumerate() {
        if quoted {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => quoted = false,
                _ => {}
            }
        } else if b == b'"' {
            quoted = true;
        } else if b == b',' {
            pieces.push(&field[start..i]);
            start = i + 1;
        }
    }
    // An unterminated quoted string stays in the last element; `http_auth` reports it.
    pieces.push(&field[start..]);
    pieces
        .into_iter()
        .map(|piece| piece.trim_matches([' ', '\t']))
        .filter(|piece| !piece.is_empty())
}

enum Element<'a> {
    /// `scheme`, or `scheme 1*SP rest` (rest: a token68 or the first parameter).
    Start {
        scheme: &'a str,
        rest: Option<&'a str>,
    },
    /// `name BWS = BWS value`.
    Param(&'a str),
}

fn classify(element: &str) -> Result<Element<'_>, &'static str> {
    let token_len = element.bytes().take_while(|&b| is_tchar(b)).count();
    if token_len == 0 {
        return Err("expected an auth-scheme or a parameter name");
    }
    let (token, rest) = element.split_at(token_len);
    let after = rest.trim_start_matches([' ', '\t']);
    if after.is_empty() {
        return Ok(Element::Start {
            scheme: token,
            rest: None,
        });
    }
    if after.starts_with('=') {
        return Ok(Element::Param(element));
    }
    let separator = &rest[..rest.len() - after.len()];
    if separator.is_empty() {
        return Err("unexpected character after a token");
    }
    if separator.contains('\t') {
        // RFC 9110 §11.6.1: auth-scheme [ 1*SP ( token68 / #auth-param ) ]
        return Err("the auth-scheme must be followed by spaces, not a tab");
    }
    Ok(Element::Start {
        scheme: token,
        rest: Some(after),
    })
}

/// One challenge's elements, before `http_auth` reads them.
struct Group<'a> {
    scheme: &'a str,
    first: Option<&'a str>,
    params: Vec<&'a str>,
    token68: Option<&'a str>,
}

impl Group<'_> {
    /// Parses the challenge. A size or syntax problem refuses the whole header (`Err`); a
    /// repeated parameter drops only this challenge (`Ok(Err(..))`).
    fn parse(self, field: usize) -> Result<Entry, ChallengeError> {
        let scheme = self.scheme;
        let too_long = |name: &str, len: usize| ChallengeError::ValueTooLong {
            scheme: shorten(scheme),
            name: shorten(name),
            len,
            max: Challenges::MAX_VALUE_BYTES,
        };
        if let Some(token68) = self.token68 {
            if token68.len() > Challenges::MAX_VALUE_BYTES {
                return Err(too_long("token68", token68.len()));
            }
            return Ok(Ok(Challenge {
                scheme: scheme.into(),
                body: Body::Token68(token68.into()),
            }));
        }
        let mut text = String::from(scheme);
        for (i, element) in self.first.iter().chain(&self.params).enumerate() {
            text.push_str(if i == 0 { " " } else { ", " });
            text.push_str(element);
        }
        let parsed = http_auth::parse_challenges(&text).map_err(|e| ChallengeError::Syntax {
            field,
            near: shorten(&text),
            reason: describe(&e),
        })?;
        let [parsed] = parsed.as_slice() else {
            // Cannot happen if the grouping above matches the grammar; fail closed if it does not.
            return Err(ChallengeError::Syntax {
                field,
                near: shorten(&text),
                reason: format!("reads as {} challenges instead of one", parsed.len()),
            });
        };
        let mut params: Vec<(Box<str>, Box<str>)> = Vec::with_capacity(parsed.params.len());
        for (name, value) in &parsed.params {
            let len = value.as_escaped().len();
            if len > Challenges::MAX_VALUE_BYTES {
                return Err(too_long(name, len));
            }
            if params
                .iter()
                .any(|(seen, _)| seen.eq_ignore_ascii_case(name))
            {
                return Ok(Err(ChallengeError::DuplicateParameter {
                    scheme: shorten(scheme),
                    name: shorten(name),
                }));
            }
            params.push(((*name).into(), value.to_unescaped().into()));
        }
        Ok(Ok(Challenge {
            scheme: parsed.scheme.into(),
            body: Body::Params(params),
        }))
    }
}

/// `http_auth`'s message without its byte offset (which counts in the rebuilt challenge, not the
/// field) and without its copy of the input.
fn describe(error: &http_auth::parser::Error<'_>) -> String {
    let text = error.to_string();
    match text.split_once(" at byte ") {
        Some((reason, _)) => reason.to_owned(),
        None => shorten(&text),
    }
}

/// RFC 9110 §5.6.2 tchar.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// RFC 9110 §11.2: token68 = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
fn is_token68(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(field: &str) -> Vec<&str> {
        elements(field).collect()
    }

    #[test]
    fn commas_inside_quotes_do_not_split() {
        assert_eq!(
            split(r#"Bearer realm="a, b", scope="x\", y", Basic"#),
            [r#"Bearer realm="a, b""#, r#"scope="x\", y""#, "Basic"]
        );
        assert_eq!(split(" , ,, "), Vec::<&str>::new());
        assert_eq!(
            split(r#"a="unterminated, b=c"#),
            [r#"a="unterminated, b=c"#]
        );
    }

    #[test]
    fn elements_are_classified_by_the_first_token() {
        assert!(matches!(
            classify("Bearer"),
            Ok(Element::Start { rest: None, .. })
        ));
        assert!(matches!(
            classify("Bearer  realm=x"),
            Ok(Element::Start {
                rest: Some("realm=x"),
                ..
            })
        ));
        assert!(matches!(classify("realm = x"), Ok(Element::Param(_))));
        assert!(matches!(classify("realm=\"x\""), Ok(Element::Param(_))));
        assert!(classify("=x").is_err());
        assert!(classify("Bearer\trealm=x").is_err());
        assert!(classify("Bearer\"x\"").is_err());
    }

    #[test]
    fn token68_grammar() {
        for yes in ["abc", "abc==", "a+b/c-d.e_f~g=", "realm="] {
            assert!(is_token68(yes), "{yes}");
        }
        for no in ["", "==", "a=b", "realm=x", "a b", "a\"b", "a,b"] {
            assert!(!is_token68(no), "{no}");
        }
    }
}
