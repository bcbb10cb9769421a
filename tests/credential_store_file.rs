//! The file store (feature `file-store`): records that survive a new store on the same
//! directory, sealed (no token readable in any file), and each documented result for a
//! flipped byte, a truncated file, a record copied under another identity, a directory or key
//! file others can read, and a lock per grant that a second handle waits for.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use audience_cache::testing::AuthorizationServer;
use audience_cache::{
    ClientStore, CredentialStore, FileStore, FileStoreError, GrantId, RegisteredClient, ScopeSet,
    SealingKey, StoredRefreshToken, TokenCache,
};
use secrecy::ExposeSecret as _;
use support::*;

/// A fresh directory path under the system's temporary directory (not created).
fn fresh_dir(name: &str) -> PathBuf {
    let nonce: u64 = rand_u64();
    std::env::temp_dir().join(format!("audience-cache-test-{name}-{nonce:016x}"))
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher as _, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// Removes the directory when the test ends, however it ends.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn grant(account: &str) -> GrantId {
    GrantId::new(ISSUER, APP, Some(account), &resource(MCP))
}

fn token(value: &str) -> StoredRefreshToken {
    StoredRefreshToken::new(value.to_owned().into(), scopes("mcp:read offline_access"))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every file in `dir` (the records, the key file, the lock files).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    found.sort();
    found
}

/// The one record file whose name starts with `prefix`.
fn record(dir: &Path, prefix: &str, not: &[PathBuf]) -> PathBuf {
    let found: Vec<PathBuf> = files(dir)
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with(prefix) && !name.ends_with(".lock") && !not.contains(p)
        })
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].clone()
}

/// Whether any file in `dir` holds `needle`.
fn grep(dir: &Path, needle: &str) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|p| {
            let bytes = std::fs::read(p).unwrap();
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
        .collect()
}

#[tokio::test]
async fn a_record_survives_a_new_store_on_the_directory_and_no_file_reads_as_a_token() {
    let dir = fresh_dir("roundtrip");
    let _cleanup = Cleanup(dir.clone());
    let store = FileStore::open(&dir).unwrap();
    assert_eq!(mode(&dir), 0o700, "the directory is made for its user only");
    assert_eq!(mode(&dir.join("key")), 0o600, "so is the key file");
    store
        .save_refresh_token(&grant("alice"), &token("rt-alice-4f1e9c"))
        .await
        .unwrap();

    // A restart: a new store on the same directory reads it, with the same key.
    let reopened = FileStore::open(&dir).unwrap();
    let read = reopened
        .load_refresh_token(&grant("alice"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.token().expose_secret(), "rt-alice-4f1e9c");
    assert_eq!(read.granted(), &scopes("mcp:read offline_access"));
    assert!(
        reopened
            .load_refresh_token(&grant("bob"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(reopened.stats().unreadable, 0);

    let file = record(&dir, "refresh-token-", &[]);
    assert_eq!(mode(&file), 0o600);
    for needle in ["rt-alice-4f1e9c", "alice", "mcp.example.com", ISSUER, APP] {
        assert!(grep(&dir, needle).is_empty(), "{needle:?} is readable");
    }
    // No temporary file is left behind.
    assert!(files(&dir).iter().all(|p| {
        !p.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(".tmp-")
    }));

    reopened
        .remove_refresh_token(&grant("alice"))
        .await
        .unwrap();
    assert!(!file.exists());
    // Removing what is not there is no error.
    reopened
        .remove_refresh_token(&grant("alice"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_flipped_byte_or_a_truncated_file_is_ignored_and_counted() {
    let dir = fresh_dir("tamper");
    let _cleanup = Cleanup(dir.clone());
    let store = FileStore::open(&dir).unwrap();
    store
        .save_refresh_token(&grant("alice"), &token("rt-1"))
        .await
        .unwrap();
    let file = record(&dir, "refresh-token-", &[]);
    let sealed = std::fs::read(&file).unwrap();

    // Any byte: the header, the nonce, the ciphertext, the tag.
    for i in 0..sealed.len() {
        let mut flipped = sealed.clone();
        flipped[i] ^= 0x01;
        std::fs::write(&file, &flipped).unwrap();
        assert!(
            store
                .load_refresh_token(&grant("alice"))
                .await
                .unwrap()
                .is_none(),
            "byte {i}"
        );
    }
    let flips = sealed.len() as u64;
    assert_eq!(store.stats().unreadable, flips);

    for cut in [sealed.len() - 1, 26, 1, 0] {
        std::fs::write(&file, &sealed[..cut]).unwrap();
        assert!(
            store
                .load_refresh_token(&grant("alice"))
                .await
                .unwrap()
                .is_none(),
            "cut at {cut}"
        );
    }
    assert_eq!(store.stats().unreadable, flips + 4);

    // The next write replaces it.
    store
        .save_refresh_token(&grant("alice"), &token("rt-2"))
        .await
        .unwrap();
    let read = store.load_refresh_token(&grant("alice")).await.unwrap();
    assert_eq!(read.unwrap().token().expose_secret(), "rt-2");
}

#[tokio::test]
async fn a_record_copied_under_another_identity_does_not_open() {
    let dir = fresh_dir("moved");
    let _cleanup = Cleanup(dir.clone());
    let store = FileStore::open(&dir).unwrap();
    store
        .save_refresh_token(&grant("alice"), &token("rt-alice"))
        .await
        .unwrap();
    let alice = record(&dir, "refresh-token-", &[]);
    store
        .save_refresh_token(&grant("bob"), &token("rt-bob"))
        .await
        .unwrap();
    let bob = record(&dir, "refresh-token-", std::slice::from_ref(&alice));
    // Mallory puts Alice's record where Bob's is read.
    std::fs::copy(&alice, &bob).unwrap();
    assert!(
        store
            .load_refresh_token(&grant("bob"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.stats().unreadable, 1);
    let still = store.load_refresh_token(&grant("alice")).await.unwrap();
    assert_eq!(still.unwrap().token().expose_secret(), "rt-alice");

    // A refresh token's record does not open as a client's either.
    store
        .save_client(
            ISSUER,
            &audience_cache::ClientRecord::new(r#"{"client_id":"c"}"#.to_owned().into()),
        )
        .await
        .unwrap();
    let client = record(&dir, "client-", &[]);
    std::fs::copy(&alice, &client).unwrap();
    assert!(store.load_client(ISSUER).await.unwrap().is_none());
    assert_eq!(store.stats().unreadable, 2);
}

#[tokio::test]
async fn a_record_sealed_under_another_key_does_not_open() {
    let dir = fresh_dir("rekeyed");
    let _cleanup = Cleanup(dir.clone());
    let one = FileStore::with_key(&dir, SealingKey::new(1, [0x11; 32])).unwrap();
    one.save_refresh_token(&grant("alice"), &token("rt"))
        .await
        .unwrap();
    // Another key names records differently: the old record is not even found.
    let two = FileStore::with_key(&dir, SealingKey::new(1, [0x22; 32])).unwrap();
    assert!(
        two.load_refresh_token(&grant("alice"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        FileStore::with_key(&dir, SealingKey::new(1, [0; 32])),
        Err(FileStoreError::ZeroKey)
    ));
}

#[test]
fn a_directory_or_key_file_others_can_read_is_refused_with_the_fix() {
    let dir = fresh_dir("perms");
    let _cleanup = Cleanup(dir.clone());
    FileStore::open(&dir).unwrap();
    for open_mode in [0o755, 0o750, 0o701, 0o770] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(open_mode)).unwrap();
        let error = FileStore::open(&dir).unwrap_err();
        assert!(
            matches!(&error, FileStoreError::Permissions { mode, .. } if *mode == open_mode),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains(&format!("run `chmod 700 {}`", dir.display())),
            "{message}"
        );
        // The caller's key does not bypass the check.
        assert!(FileStore::with_key(&dir, SealingKey::new(1, [7; 32])).is_err());
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let key = dir.join("key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let message = FileStore::open(&dir).unwrap_err().to_string();
    assert!(
        message.contains(&format!("run `chmod 600 {}`", key.display())),
        "{message}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    FileStore::open(&dir).unwrap();

    // A key file that holds no key is refused, and says how to get a new one.
    std::fs::write(&key, "not a key").unwrap();
    let message = FileStore::open(&dir).unwrap_err().to_string();
    assert!(message.contains("remove it"), "{message}");

    // A file where the directory should be.
    let file = dir.join("key");
    assert!(matches!(
        FileStore::open(&file),
        Err(FileStoreError::NotADirectory { .. })
    ));
}

#[tokio::test]
async fn a_second_handle_waits_for_the_grants_lock() {
    let dir = fresh_dir("lock");
    let _cleanup = Cleanup(dir.clone());
    let one = FileStore::open(&dir).unwrap();
    let two = FileStore::open(&dir).unwrap();
    let held = one.lock_grant(&grant("alice")).await.unwrap();
    // Another grant is not held up.
    let other = two.lock_grant(&grant("bob")).await.unwrap();
    drop(other);
    let waiting = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let lock = two.lock_grant(&grant("alice")).await.unwrap();
        (started.elapsed(), lock)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the second handle waits");
    drop(held);
    let (waited, _lock) = waiting.await.unwrap();
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
}

/// One store serves the cache and dynamic registration: a registered client goes in sealed,
/// secret included, and comes back as it was.
#[tokio::test]
async fn a_registered_client_is_kept_sealed() {
    let dir = fresh_dir("client");
    let _cleanup = Cleanup(dir.clone());
    let store = Arc::new(FileStore::open(&dir).unwrap());
    let client: RegisteredClient = serde_json::from_value(serde_json::json!({
        "client_id": "dyn-7d1a",
        "client_secret": "cs-9b7e2f",
        "token_endpoint_auth_method": "client_secret_basic",
        "redirect_uri": "http://127.0.0.1:4000/callback",
        "issuer": ISSUER,
        "registration_endpoint": format!("{ISSUER}/register"),
    }))
    .unwrap();
    let clients: Arc<dyn ClientStore> = store.clone();
    clients.save(ISSUER, &client).await.unwrap();
    let back = clients.load(ISSUER).await.unwrap().unwrap();
    assert_eq!(back.client_id(), "dyn-7d1a");
    assert!(back.has_secret());
    assert!(
        clients
            .load("https://other.example")
            .await
            .unwrap()
            .is_none()
    );
    for needle in ["dyn-7d1a", "cs-9b7e2f"] {
        assert!(grep(&dir, needle).is_empty(), "{needle:?} is readable");
    }
}

fn cache_on(server: &AuthorizationServer, store: Arc<dyn CredentialStore>) -> TokenCache {
    builder(server, public_app())
        .resource(config(MCP).scopes(scopes("mcp:read")))
        .credential_store(store)
        .build()
        .unwrap()
}

/// The cache on a file store: a restart (a new cache on a new store on the same directory)
/// refreshes with the stored grant; the server's records show one authorization and one
/// refresh.
#[tokio::test]
async fn a_restarted_cache_on_the_directory_refreshes_instead_of_asking_the_user() {
    let dir = fresh_dir("cache");
    let _cleanup = Cleanup(dir.clone());
    let server = new_server();
    let first = cache_on(&server, Arc::new(FileStore::open(&dir).unwrap()));
    let pending = first
        .begin_authorization(&resource(MCP), &ScopeSet::empty())
        .unwrap();
    let redirect = approve(&server, &pending).await;
    let token = first
        .complete_authorization(pending, &redirect)
        .await
        .unwrap();
    let access = token.expose_secret().to_owned();
    drop((first, token));

    let second = cache_on(&server, Arc::new(FileStore::open(&dir).unwrap()));
    let refreshed = second
        .token(&resource(MCP), &ScopeSet::empty())
        .await
        .unwrap();
    assert_ne!(refreshed.expose_secret(), access);
    assert_eq!(server.authorization_requests().len(), 1);
    let grants: Vec<_> = server
        .requests()
        .into_iter()
        .map(|r| r.grant_type.unwrap_or_default())
        .collect();
    assert_eq!(grants, ["authorization_code", "refresh_token"]);
    assert!(grep(&dir, &access).is_empty());
    assert!(grep(&dir, refreshed.expose_secret()).is_empty());
}
