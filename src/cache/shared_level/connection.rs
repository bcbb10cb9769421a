//! The Redis operations the shared level uses, each bounded by a timeout. Errors are reported
//! to the caller, which degrades to the in-memory behaviour; the connection itself is a
//! [`ConnectionManager`] that reconnects on its own when Redis comes back.
//!
//! After a timeout or a lost connection, calls are skipped for [`PAUSE_AFTER_OUTAGE`]: while
//! Redis is unreachable, a miss costs no Redis timeout, and the log gets one warning per pause
//! rather than one per call. The first call after the pause tries again (and makes the manager
//! reconnect).

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands as _, ExistenceCheck, Script, SetExpiry, SetOptions};

/// Deletes `KEYS[1]` only if it still holds `ARGV[1]`: releasing a lock with its token, or
/// dropping a value that was read, without touching whatever another process wrote since.
const COMPARE_AND_DELETE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// How long calls are skipped after Redis timed out or dropped the connection.
pub(crate) const PAUSE_AFTER_OUTAGE: Duration = Duration::from_secs(1);

/// Why a Redis operation gave no answer. Its `Display` names the operation and the cause,
/// never a value.
#[derive(Debug)]
pub(crate) enum Failure {
    Timeout(&'static str),
    Redis(&'static str, redis::RedisError),
    /// Not sent: Redis failed moments ago (see [`PAUSE_AFTER_OUTAGE`]).
    Paused,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout(op) => write!(f, "Redis {op} timed out"),
            Self::Redis(op, error) => write!(f, "Redis {op} failed ({:?})", error.kind()),
            Self::Paused => f.write_str("Redis failed moments ago; not asked"),
        }
    }
}

pub(crate) struct Connection {
    client: redis::Client,
    /// Made on first use, inside the runtime that will drive it.
    manager: Mutex<Option<ConnectionManager>>,
    /// Calls are skipped until then, after an outage.
    paused_until: Mutex<Option<Instant>>,
    timeout: Duration,
    compare_and_delete: Script,
}

impl Connection {
    pub(crate) fn new(client: redis::Client, timeout: Duration) -> Self {
        Self {
            client,
            manager: Mutex::new(None),
            paused_until: Mutex::new(None),
            timeout,
            compare_and_delete: Script::new(COMPARE_AND_DELETE),
        }
    }

    fn manager(&self, op: &'static str) -> Result<ConnectionManager, Failure> {
        let paused = *self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        if paused.is_some_and(|until| Instant::now() < until) {
            return Err(Failure::Paused);
        }
        let mut manager = self.manager.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(manager) = &*manager {
            return Ok(manager.clone());
        }
        // Reconnection is the manager's: a few quick tries per outage, each bounded, then the
        // next command starts another round. The crate's own timeout bounds every call.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(500));
        let made = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .map_err(|e| Failure::Redis(op, e))?;
        *manager = Some(made.clone());
        Ok(made)
    }

    async fn bounded<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Failure> {
        let failure = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => Failure::Redis(op, error),
            Err(_) => Failure::Timeout(op),
        };
        let outage = match &failure {
            Failure::Timeout(_) => true,
            Failure::Redis(_, error) => error.is_io_error() || error.is_unrecoverable_error(),
            Failure::Paused => false,
        };
        if outage {
            *self.paused_until.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(Instant::now() + PAUSE_AFTER_OUTAGE);
        }
        Err(failure)
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Failure> {
        let mut conn = self.manager("GET")?;
        self.bounded("GET", conn.get(key)).await
    }

    /// The first of `keys` that holds a value, with its name: one `GET`, or one `MGET` for
    /// several (during a key rotation).
    pub(crate) async fn get_first<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a str>,
    ) -> Result<Option<(&'a str, Vec<u8>)>, Failure> {
        let keys: Vec<&str> = keys.into_iter().collect();
        if let [key] = keys[..] {
            return Ok(self.get(key).await?.map(|value| (key, value)));
        }
        let mut conn = self.manager("MGET")?;
        let values: Vec<Option<Vec<u8>>> = self.bounded("MGET", conn.mget(&keys)).await?;
        Ok(keys
            .into_iter()
            .zip(values)
            .find_map(|(key, value)| value.map(|value| (key, value))))
    }

    /// `SET key value PX ttl`.
    pub(crate) async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), Failure> {
        let mut conn = self.manager("SET")?;
        let options = SetOptions::default().with_expiration(SetExpiry::PX(millis(ttl)));
        self.bounded("SET", conn.set_options(key, value, options))
            .await
    }

    /// `SET key token NX PX ttl`: whether the lock was taken.
    pub(crate) async fn lock(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, Failure> {
        let mut conn = self.manager("SET NX")?;
        let options = SetOptions::default()
            .conditional_set(ExistenceCheck::NX)
            .with_expiration(SetExpiry::PX(millis(ttl)));
        let reply: Option<String> = self
            .bounded("SET NX", conn.set_options(key, token, options))
            .await?;
        Ok(reply.is_some())
    }

    /// Deletes `key` if it still holds `value` (a lock token, or an envelope that was read).
    pub(crate) async fn delete_if(&self, key: &str, value: &[u8]) -> Result<bool, Failure> {
        let mut conn = self.manager("compare-and-delete")?;
        let mut invocation = self.compare_and_delete.key(key);
        invocation.arg(value);
        let deleted: i64 = self
            .bounded("compare-and-delete", invocation.invoke_async(&mut conn))
            .await?;
        Ok(deleted == 1)
    }

    /// `DEL key…`.
    pub(crate) async fn delete<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), Failure> {
        let keys: Vec<&str> = keys.into_iter().collect();
        let mut conn = self.manager("DEL")?;
        let _deleted: i64 = self.bounded("DEL", conn.del(&keys)).await?;
        Ok(())
    }
}

/// Milliseconds for `PX`, at least 1 (0 is an error in Redis).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
