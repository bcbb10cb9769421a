//! The file system side of the file store: the directory's permissions, the key file, atomic
//! writes and the per-grant lock files. Everything here blocks; the store runs it on tokio's
//! blocking threads.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::RngCore as _;
use secrecy::zeroize::Zeroizing;

use super::FileStoreError;

/// Creates `dir` (mode 0700) if it is missing, and refuses one that others can read, enter or
/// write: the records are sealed, but their names, sizes and times, and a key file kept next
/// to them, are the user's alone.
pub(super) fn open_dir(dir: &Path) -> Result<(), FileStoreError> {
    let io = |action: &'static str| {
        let path = dir.to_owned();
        move |source| FileStoreError::Io {
            action,
            path,
            source,
        }
    };
    if !dir.exists() {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(io("create the parent of"))?;
        }
        let mut builder = fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        match builder.create(dir) {
            Ok(()) => {}
            // Another process made it meanwhile: checked below like any other.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("create")(e)),
        }
    }
    let metadata = fs::metadata(dir).map_err(io("read the metadata of"))?;
    if !metadata.is_dir() {
        return Err(FileStoreError::NotADirectory {
            path: dir.to_owned(),
        });
    }
    check_private(dir, &metadata, "chmod 700")
}

/// Refuses a file or directory that group or others have any access to, naming the command
/// that fixes it.
fn check_private(path: &Path, metadata: &fs::Metadata, fix: &str) -> Result<(), FileStoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(FileStoreError::Permissions {
                path: path.to_owned(),
                mode,
                fix: format!("{fix} {}", path.display()),
            });
        }
    }
    #[cfg(not(unix))]
    let _ = (path, metadata, fix);
    Ok(())
}

/// The 32-byte key in `path` (64 hex digits), created from the operating system's CSPRNG with
/// mode 0600 if the file does not exist. Two processes starting at once agree on one key: each
/// writes its own to a temporary file and links it into place, which only the first does.
pub(super) fn key_file(path: &Path) -> Result<Zeroizing<[u8; 32]>, FileStoreError> {
    let io = |action: &'static str| {
        let path = path.to_owned();
        move |source| FileStoreError::Io {
            action,
            path,
            source,
        }
    };
    if !path.exists() {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::thread_rng().fill_bytes(key.as_mut_slice());
        let text = Zeroizing::new(hex(key.as_slice()));
        let dir = path.parent().unwrap_or(Path::new("."));
        let temporary = write_temporary(dir, text.as_bytes()).map_err(io("write a new key to"))?;
        let linked = fs::hard_link(&temporary, path);
        let _ = fs::remove_file(&temporary);
        match linked {
            Ok(()) => sync_dir(dir).map_err(io("sync the directory of"))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("create")(e)),
        }
    }
    let file = File::open(path).map_err(io("open"))?;
    let metadata = file.metadata().map_err(io("read the metadata of"))?;
    check_private(path, &metadata, "chmod 600")?;
    let mut text = Zeroizing::new(String::new());
    file.take(130)
        .read_to_string(&mut text)
        .map_err(io("read"))?;
    let bad = || FileStoreError::KeyFile {
        path: path.to_owned(),
    };
    let digits = text.trim();
    if digits.len() != 64 {
        return Err(bad());
    }
    let mut key = Zeroizing::new([0u8; 32]);
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(digits.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(key)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new file in `dir` (mode 0600, a random name starting with `.tmp-`) holding `contents`,
/// written and synced.
fn write_temporary(dir: &Path, contents: &[u8]) -> io::Result<PathBuf> {
    let mut name = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut name);
    let path = dir.join(format!(".tmp-{}", hex(&name)));
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&path).and_then(|mut file| {
        file.write_all(contents)?;
        file.sync_all()
    });
    match written {
        Ok(()) => Ok(path),
        Err(e) => {
            let _ = fs::remove_file(&path);
            Err(e)
        }
    }
}

/// Replaces `path` with `contents` atomically: a reader sees the old file or the new one,
/// never a part, and after a crash the new one is there once this returned (temporary file,
/// fsync, rename, fsync of the directory).
pub(super) fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let temporary = write_temporary(dir, contents)?;
    if let Err(e) = fs::rename(&temporary, path) {
        let _ = fs::remove_file(&temporary);
        return Err(e);
    }
    sync_dir(dir)
}

/// Removes `path` (already gone is fine), durably.
pub(super) fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(path.parent().unwrap_or(Path::new("."))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The contents of `path`, or `None` if there is no such file.
pub(super) fn read(path: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut contents = Vec::new();
    file.take(limit).read_to_end(&mut contents)?;
    Ok(Some(contents))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    // Windows cannot open a directory as a file; its rename is durable on its own terms.
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// The first and the longest pause between two tries of a lock another process holds.
const POLL_FIRST: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(100);

/// Takes the advisory lock on `path` (created, mode 0600, if missing), waiting at most `wait`
/// for another holder (another process, or another handle in this one). The lock is the
/// operating system's (`flock` on Unix): it goes away with the process that held it, so a
/// crashed process never leaves a grant locked.
pub(super) async fn lock(path: PathBuf, wait: Duration) -> io::Result<File> {
    let file = tokio::task::spawn_blocking(move || {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(path)
    })
    .await
    .map_err(io::Error::other)??;
    let deadline = tokio::time::Instant::now() + wait;
    let mut pause = POLL_FIRST;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(POLL_MAX);
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "another process held the grant's lock for more than {} s",
                        wait.as_secs()
                    ),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
    }
}
