//! The file store (feature `file-store`): credentials in one directory, each record sealed.

mod disk;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

use super::seal::{Sealer, SealingKey};
use super::{ClientRecord, CredentialStore, GrantId, GrantLock, StoreFuture, StoredRefreshToken};
use crate::scope::ScopeSet;

/// The longest record read: a refresh token and a registered client are far smaller.
const MAX_RECORD: u64 = 64 * 1024;

/// How long a refresh waits for another process's refresh of the same grant (one token
/// request, itself bounded by the cache's request timeout) before it goes on without the lock.
const LOCK_WAIT: Duration = Duration::from_secs(60);

/// The key file a store opened with [`FileStore::open`] keeps next to its records.
const KEY_FILE: &str = "key";

/// Credentials in one directory, for command-line tools: a grant's refresh token and an
/// issuer's registered client each in a file of their own, sealed with XChaCha20-Poly1305, and
/// an advisory file lock per grant so that two processes (two terminals running the same
/// tool) take turns refreshing it. Cloning is cheap and clones share the store.
///
/// **The directory** is the caller's, or [`FileStore::default_dir`]: `$XDG_STATE_HOME/audience-cache`,
/// else `~/.local/state/audience-cache`. It is created with mode 0700; an existing one that
/// group or others can access is refused ([`FileStoreError::Permissions`], which names the
/// `chmod 700` that fixes it).
///
/// **Records** are named by a keyed hash of their identity (the file names say nothing about
/// issuers, clients or accounts to someone without the key) and sealed with the identity as
/// associated data: a record copied under another grant's or issuer's name does not open.
/// Writes are atomic (temporary file, fsync, rename, fsync of the directory). A record that
/// does not open (torn, changed, moved, sealed under another key) is ignored as if it were
/// absent, logged (`tracing` warning) and counted ([`FileStoreStats::unreadable`]); it never
/// panics. The next write of that grant replaces it.
///
/// **The key** is the caller's ([`with_key`](Self::with_key): from a keychain or a secret
/// manager), or generated on first use into the file `key` in the directory, mode 0600
/// ([`open`](Self::open)). With a key file, sealing protects the records against being read,
/// changed or moved on their own: a record pasted into a bug report, swept up by a backup
/// or sync tool that skips the key, or copied under another grant's name. It does not protect
/// against anyone who can read the user's files (they read the key as well), nor against
/// the user's own processes. A key held elsewhere (a keychain) raises that bar to whoever can
/// read that.
///
/// ```no_run
/// use std::sync::Arc;
/// use audience_cache::{DynamicRegistration, FileStore, TokenCache};
///
/// # fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let store = Arc::new(FileStore::open(FileStore::default_dir()?)?);
/// let cache = TokenCache::builder().credential_store(store.clone()).build()?;
/// let registration = DynamicRegistration::new("my tool").store(store);
/// # let _ = (cache, registration);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    sealer: Sealer,
    unreadable: AtomicU64,
}

/// A file store's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct FileStoreStats {
    /// Records found that did not open (torn, changed, moved under another identity, sealed
    /// under another key, or not a record at all) and were ignored.
    pub unreadable: u64,
}

/// Why a [`FileStore`] could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileStoreError {
    /// The directory, or the key file, can be accessed by group or others.
    #[error(
        "{path} can be accessed by group or others (mode {mode:o}), and it holds credentials; run `{fix}` and start again"
    )]
    Permissions {
        /// The directory or file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// The command that fixes it.
        fix: String,
    },
    /// The path given as the directory is something else.
    #[error("{path} is not a directory; give FileStore a directory of its own")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// The key file does not hold 64 hex digits.
    #[error(
        "the key file {path} does not hold a key (64 hex digits); remove it to have a new key made (the records sealed under the old one are then ignored, and users authorize again)"
    )]
    KeyFile {
        /// The key file.
        path: PathBuf,
    },
    /// The key given is all zero bytes (a buffer never filled).
    #[error("the file store's key is all zero bytes; give 32 random bytes")]
    ZeroKey,
    /// Neither `XDG_STATE_HOME` nor `HOME` is set, so there is no default directory.
    #[error(
        "neither XDG_STATE_HOME nor HOME is set, so there is no per-user state directory; give FileStore a directory"
    )]
    NoStateDir,
    /// The file system refused.
    #[error("could not {action} {path}: {source}")]
    Io {
        /// What the store was doing.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

impl FileStore {
    /// The per-user state directory: `$XDG_STATE_HOME/audience-cache` if `XDG_STATE_HOME` is
    /// set to an absolute path (XDG Base Directory Specification), else
    /// `$HOME/.local/state/audience-cache`.
    pub fn default_dir() -> Result<PathBuf, FileStoreError> {
        let var = |name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        if let Some(state) = var("XDG_STATE_HOME").filter(|p| p.is_absolute()) {
            return Ok(state.join("audience-cache"));
        }
        let home = var("HOME").ok_or(FileStoreError::NoStateDir)?;
        Ok(home.join(".local/state/audience-cache"))
    }

    /// The store in `dir`, with the key kept in the file `key` there (made, mode 0600, on
    /// first use). `dir` is created (mode 0700) if it is missing; one that group or others
    /// can access is refused, as is a key file they can.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, FileStoreError> {
        let dir = dir.into();
        disk::open_dir(&dir)?;
        let key = disk::key_file(&dir.join(KEY_FILE))?;
        Self::with_key(dir, SealingKey::new(1, *key))
    }

    /// The store in `dir`, sealing with `key` (from a keychain or a secret manager; the same
    /// key at every start, or the records do not open). `dir` is created and checked as for
    /// [`open`](Self::open).
    pub fn with_key(dir: impl Into<PathBuf>, key: SealingKey) -> Result<Self, FileStoreError> {
        let dir = dir.into();
        if key.is_all_zero() {
            return Err(FileStoreError::ZeroKey);
        }
        disk::open_dir(&dir)?;
        Ok(Self {
            inner: Arc::new(Inner {
                dir,
                sealer: Sealer::new(&[key]),
                unreadable: AtomicU64::new(0),
            }),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The counters so far.
    pub fn stats(&self) -> FileStoreStats {
        FileStoreStats {
            unreadable: self.inner.unreadable.load(Ordering::Relaxed),
        }
    }
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("dir", &self.inner.dir)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// What a record is: part of its file name and of its sealing context, so a refresh token
/// never opens as a client, nor the reverse.
#[derive(Clone, Copy)]
enum Kind {
    RefreshToken,
    Client,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Self::RefreshToken => "refresh-token",
            Self::Client => "client",
        }
    }
}

/// Where a record lives and what it is sealed for.
struct Place {
    path: PathBuf,
    lock: PathBuf,
    context: Vec<u8>,
}

impl Inner {
    /// The file of the record of `kind` for `identity` (a grant's encoding, an issuer), and
    /// its sealing context: length-prefixed, so no two (kind, identity) agree.
    fn place(&self, kind: Kind, identity: &[u8]) -> Place {
        let mut context = b"audience-cache file store v1\0".to_vec();
        for part in [kind.tag().as_bytes(), identity] {
            context.extend_from_slice(&(part.len() as u64).to_be_bytes());
            context.extend_from_slice(part);
        }
        let name = self
            .sealer
            .digests(&context)
            .into_iter()
            .next()
            .unwrap_or_default();
        Place {
            path: self.dir.join(format!("{}-{name}", kind.tag())),
            lock: self.dir.join(format!("{}-{name}.lock", kind.tag())),
            context,
        }
    }

    fn seal(&self, place: &Place, plaintext: &[u8]) -> Result<Vec<u8>, super::StoreError> {
        self.sealer
            .seal(&place.context, plaintext)
            .ok_or_else(|| "the record could not be sealed".into())
    }

    /// The opened record at `place`, or `None` when there is none or it does not open (then
    /// reported and counted).
    fn open(
        &self,
        place: &Place,
        what: &str,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, super::StoreError> {
        let Some(envelope) = disk::read(&place.path, MAX_RECORD)? else {
            return Ok(None);
        };
        match self.sealer.open(&place.context, &envelope) {
            Some(plaintext) => Ok(Some(plaintext)),
            None => Ok(self.unreadable(place, what)),
        }
    }

    fn unreadable<T>(&self, place: &Place, what: &str) -> Option<T> {
        self.unreadable.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            file = %place.path.display(),
            "a stored {what} did not open (torn, changed, copied from another record, or sealed \
             under another key); ignored, and replaced at the next write"
        );
        None
    }
}

/// A refresh token record's plaintext.
#[derive(Serialize, Deserialize)]
struct RefreshRecord {
    refresh_token: String,
    granted: String,
}

/// Runs blocking file work on tokio's blocking threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, super::StoreError> + Send + 'static,
) -> Result<T, super::StoreError> {
    tokio::task::spawn_blocking(work).await?
}

impl CredentialStore for FileStore {
    fn load_refresh_token<'a>(
        &'a self,
        grant: &'a GrantId,
    ) -> StoreFuture<'a, Option<StoredRefreshToken>> {
        let inner = self.inner.clone();
        let place = inner.place(Kind::RefreshToken, &grant.encoded());
        Box::pin(blocking(move || {
            let Some(plaintext) = inner.open(&place, "refresh token")? else {
                return Ok(None);
            };
            let read = serde_json::from_slice::<RefreshRecord>(&plaintext)
                .ok()
                .and_then(|record| {
                    let granted = ScopeSet::parse(&record.granted).ok()?;
                    let token = SecretString::from(record.refresh_token);
                    Some(StoredRefreshToken::new(token, granted))
                });
            Ok(read.or_else(|| inner.unreadable(&place, "refresh token")))
        }))
    }

    fn save_refresh_token<'a>(
        &'a self,
        grant: &'a GrantId,
        token: &'a StoredRefreshToken,
    ) -> StoreFuture<'a, ()> {
        let inner = self.inner.clone();
        let place = inner.place(Kind::RefreshToken, &grant.encoded());
        let plaintext = serde_json::to_vec(&RefreshRecord {
            refresh_token: token.token().expose_secret().to_owned(),
            granted: token.granted().as_str().to_owned(),
        })
        .map(Zeroizing::new);
        Box::pin(blocking(move || {
            let sealed = inner.seal(&place, &plaintext?)?;
            Ok(disk::write_atomically(&place.path, &sealed)?)
        }))
    }

    fn remove_refresh_token<'a>(&'a self, grant: &'a GrantId) -> StoreFuture<'a, ()> {
        let place = self.inner.place(Kind::RefreshToken, &grant.encoded());
        Box::pin(blocking(move || Ok(disk::remove(&place.path)?)))
    }

    fn lock_grant<'a>(&'a self, grant: &'a GrantId) -> StoreFuture<'a, GrantLock> {
        let place = self.inner.place(Kind::RefreshToken, &grant.encoded());
        Box::pin(async move {
            let file = disk::lock(place.lock, LOCK_WAIT).await?;
            Ok(GrantLock::new(file))
        })
    }

    fn load_client<'a>(&'a self, issuer: &'a str) -> StoreFuture<'a, Option<ClientRecord>> {
        let inner = self.inner.clone();
        let place = inner.place(Kind::Client, issuer.as_bytes());
        Box::pin(blocking(move || {
            let Some(plaintext) = inner.open(&place, "client")? else {
                return Ok(None);
            };
            let read = std::str::from_utf8(&plaintext)
                .ok()
                .map(|json| ClientRecord::new(json.to_owned().into()));
            Ok(read.or_else(|| inner.unreadable(&place, "client")))
        }))
    }

    fn save_client<'a>(&'a self, issuer: &'a str, client: &'a ClientRecord) -> StoreFuture<'a, ()> {
        let inner = self.inner.clone();
        let place = inner.place(Kind::Client, issuer.as_bytes());
        let plaintext = Zeroizing::new(client.json().expose_secret().as_bytes().to_vec());
        Box::pin(blocking(move || {
            let sealed = inner.seal(&place, &plaintext)?;
            Ok(disk::write_atomically(&place.path, &sealed)?)
        }))
    }
}
