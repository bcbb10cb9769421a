//! Scope sets (RFC 6749 §3.3): unordered, case-sensitive, space-delimited.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The scope that asks for a refresh token (OpenID Connect Core §11; MCP SEP-2207).
pub(crate) const OFFLINE_ACCESS: &str = "offline_access";

/// Why a scope string or item was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScopeError {
    /// A character outside the RFC 6749 §3.3 scope-token set (visible ASCII except `"` and
    /// `\`) appears; tabs, line breaks and non-ASCII are not delimiters.
    #[error(
        "scope contains {character:?} at byte {position}; a scope is visible ASCII except '\"' and '\\', separated by single spaces"
    )]
    InvalidCharacter {
        /// Byte offset of the character (in the string, or in the item for item lists).
        position: usize,
        /// The character.
        character: char,
    },
    /// An item given to [`ScopeSet::from_items`] is empty or contains a space.
    #[error(
        "scope item {item:?} is not a single scope; pass one scope per item, or parse a space-delimited string with ScopeSet::parse"
    )]
    NotASingleScope {
        /// The item (shortened when long).
        item: String,
    },
}

/// A set of OAuth scopes in canonical form (rules §12): duplicates dropped, byte-sorted, case kept.
///
/// Two sets with the same scopes are equal however they were written, and
/// [`Display`](fmt::Display) gives the canonical space-delimited string used in cache keys.
/// The empty set means "send no `scope`". Cloning is cheap.
///
/// ```
/// use audience_cache::ScopeSet;
///
/// let a = ScopeSet::parse("  files:write files:read files:read ")?;
/// let b = ScopeSet::from_items(["files:read", "files:write"])?;
/// assert_eq!(a, b);
/// assert_eq!(a.to_string(), "files:read files:write");
/// assert!(a.is_superset_of(&ScopeSet::parse("files:read")?));
/// # Ok::<(), audience_cache::ScopeError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ScopeSet {
    /// The canonical string. Scopes contain no space, so it represents the set exactly.
    canonical: Arc<str>,
}

impl ScopeSet {
    /// The empty set.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Parses a space-delimited scope string. Runs of spaces separate scopes; leading and
    /// trailing spaces are ignored; any other whitespace is an error.
    pub fn parse(s: &str) -> Result<Self, ScopeError> {
        check_characters(s, true)?;
        Ok(Self::from_checked(
            s.split(' ').filter(|item| !item.is_empty()),
        ))
    }

    /// Builds a set from individual scopes, each of which must be one scope-token.
    pub fn from_items<I, S>(items: I) -> Result<Self, ScopeError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let items: Vec<S> = items.into_iter().collect();
        for item in &items {
            let item = item.as_ref();
            if item.is_empty() || item.contains(' ') {
                return Err(ScopeError::NotASingleScope {
                    item: crate::resource::shorten(item),
                });
            }
            check_characters(item, false)?;
        }
        Ok(Self::from_checked(items.iter().map(AsRef::as_ref)))
    }

    fn from_checked<'a>(items: impl Iterator<Item = &'a str>) -> Self {
        let mut items: Vec<&str> = items.collect();
        items.sort_unstable();
        items.dedup();
        Self {
            canonical: items.join(" ").into(),
        }
    }

    /// The scopes, in byte order.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        self.canonical.split(' ').filter(|s| !s.is_empty())
    }

    /// The number of scopes.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether the set is empty (send no `scope`).
    pub fn is_empty(&self) -> bool {
        self.canonical.is_empty()
    }

    /// Whether `scope` is in the set (case-sensitive).
    pub fn contains(&self, scope: &str) -> bool {
        self.iter().any(|s| s == scope)
    }

    /// Whether every scope of `other` is in this set.
    pub fn is_superset_of(&self, other: &ScopeSet) -> bool {
        let mut mine = self.iter().peekable();
        'theirs: for wanted in other.iter() {
            while let Some(&have) = mine.peek() {
                match have.cmp(wanted) {
                    std::cmp::Ordering::Less => {
                        mine.next();
                    }
                    std::cmp::Ordering::Equal => {
                        mine.next();
                        continue 'theirs;
                    }
                    std::cmp::Ordering::Greater => return false,
                }
            }
            return false;
        }
        true
    }

    /// The union of two sets (for step-up: what was granted plus what a challenge asks for).
    pub fn union(&self, other: &ScopeSet) -> ScopeSet {
        // The common case on every hand-out (no extra scopes) costs a reference count.
        if other.is_empty() || self == other {
            return self.clone();
        }
        if self.is_empty() {
            return other.clone();
        }
        Self::from_checked(self.iter().chain(other.iter()))
    }

    /// The canonical string: scopes in byte order, joined by single spaces.
    pub fn as_str(&self) -> &str {
        &self.canonical
    }
}

/// RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ), delimited by %x20.
fn check_characters(s: &str, spaces_allowed: bool) -> Result<(), ScopeError> {
    for (position, character) in s.char_indices() {
        let allowed = matches!(character, '\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e')
            || (spaces_allowed && character == ' ');
        if !allowed {
            return Err(ScopeError::InvalidCharacter {
                position,
                character,
            });
        }
    }
    Ok(())
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScopeSet({:?})", &*self.canonical)
    }
}

impl FromStr for ScopeSet {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superset_walks_both_sorted_lists() {
        let big = ScopeSet::parse("a b c e").unwrap();
        assert!(big.is_superset_of(&ScopeSet::parse("a c").unwrap()));
        assert!(big.is_superset_of(&ScopeSet::empty()));
        assert!(!big.is_superset_of(&ScopeSet::parse("d").unwrap()));
        assert!(!big.is_superset_of(&ScopeSet::parse("a f").unwrap()));
        assert!(!ScopeSet::empty().is_superset_of(&big));
    }

    #[test]
    fn union_is_canonical() {
        let u = ScopeSet::parse("b a")
            .unwrap()
            .union(&ScopeSet::parse("c a").unwrap());
        assert_eq!(u.as_str(), "a b c");
        assert_eq!(u.len(), 3);
    }
}
