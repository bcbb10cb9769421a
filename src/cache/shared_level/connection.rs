//! The Redis operations the shared level uses, each bounded by a timeout. Errors are reported
//! to the caller, which degrades to the in-memory behaviour; the connection itself is a
//! [`ConnectionManager`] that reconnects on its own when Redis comes back.
//!
//! A call that finds the connection gone is sent once more (see [`Connection::call`]). After a
//! timeout, or a connection still lost on that second try, calls are skipped for
//! [`PAUSE_AFTER_OUTAGE`]: while Redis is unreachable, a miss costs no Redis timeout, and the
//! log gets one warning per pause rather than one per call. The first call after the pause
//! tries again (and makes the manager reconnect).

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands as _, Script};

/// Deletes `KEYS[1]` only if it still holds `ARGV[1]`: releasing a lock with its token, or
/// dropping a value that was read, without touching whatever another process wrote since.
const COMPARE_AND_DELETE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Takes the lock `KEYS[1]` for the token `ARGV[1]` and `ARGV[2]` ms: 1 if it is this
/// token's now (taken here, or by an earlier try whose answer was lost), 0 if another's.
const TAKE_LOCK: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  return 1
end
if holder then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// Writes a value under its generation record. `KEYS[1]` the record, `KEYS[2]` the value;
/// `ARGV[1]` the record as the writer read it (empty: none), `ARGV[2]` a new record (empty:
/// keep it), `ARGV[3]` the value, `ARGV[4]` its TTL in ms. Nothing is written, and 0
/// returned, if the record changed since it was read (the key was invalidated meanwhile). A
/// kept record is made to live at least as long as the value.
const WRITE_UNDER_GENERATION: &str = r"
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then
  return 0
end
local ttl = tonumber(ARGV[4])
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
elseif redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
redis.call('SET', KEYS[2], ARGV[3], 'PX', ttl)
return 1
";

/// Moves a key to a new generation. `KEYS[1]` the record, `KEYS[2]` the value; `ARGV[1]`
/// and `ARGV[2]` them as read (empty: none), `ARGV[3]` the new record, `ARGV[4]` the value
/// sealed again under it (empty: delete the value), `ARGV[5]` the least TTL of the record in
/// ms (it also outlives a kept value). 0, and nothing changed, if either changed since read.
const SUPERSEDE: &str = r"
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then
  return 0
end
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[2] then
  return 0
end
local ttl = tonumber(ARGV[5])
local left = redis.call('PTTL', KEYS[2])
if left > ttl then
  ttl = left
end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ttl)
if ARGV[4] ~= '' then
  redis.call('SET', KEYS[2], ARGV[4], 'KEEPTTL')
else
  redis.call('DEL', KEYS[2])
end
return 1
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
    take_lock: Script,
    write_under_generation: Script,
    supersede: Script,
}

impl Connection {
    pub(crate) fn new(client: redis::Client, timeout: Duration) -> Self {
        Self {
            client,
            manager: Mutex::new(None),
            paused_until: Mutex::new(None),
            timeout,
            compare_and_delete: Script::new(COMPARE_AND_DELETE),
            take_lock: Script::new(TAKE_LOCK),
            write_under_generation: Script::new(WRITE_UNDER_GENERATION),
            supersede: Script::new(SUPERSEDE),
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

    /// One Redis call, bounded by the timeout, and asked once more (bounded again) if the
    /// connection turned out to be gone. The manager notices a dead connection only when a
    /// command fails on it, and only then reconnects: after Redis restarted while this process
    /// asked nothing, the first command of every process would fail however long Redis had
    /// been back, costing a token request per process that writes nothing. The second try
    /// waits for that reconnection. Every call here is safe to send twice (reads, `SET`s of
    /// the same value, a lock that finds itself already taken by this token, and scripts that
    /// compare before they change anything).
    async fn call<T, F, Fut>(&self, op: &'static str, mut send: F) -> Result<T, Failure>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.manager(op)?;
        let first = tokio::time::timeout(self.timeout, send(conn.clone())).await;
        let result = match first {
            Ok(Err(error)) if connection_lost(&error) => {
                tracing::debug!("Redis {op}: the connection was gone; asking again once");
                tokio::time::timeout(self.timeout, send(conn)).await
            }
            first => first,
        };
        let failure = match result {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => Failure::Redis(op, error),
            Err(_) => Failure::Timeout(op),
        };
        let outage = match &failure {
            Failure::Timeout(_) => true,
            Failure::Redis(_, error) => connection_lost(error),
            Failure::Paused => false,
        };
        if outage {
            *self.paused_until.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(Instant::now() + PAUSE_AFTER_OUTAGE);
        }
        Err(failure)
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Failure> {
        self.call("GET", |mut conn| async move { conn.get(key).await })
            .await
    }

    /// `MGET keys…`: each key's value, in order.
    pub(crate) async fn get_all(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, Failure> {
        self.call("MGET", |mut conn| async move { conn.mget(keys).await })
            .await
    }

    /// Takes the lock `key` with `token` for `ttl` (`SET NX PX` in a script): whether this
    /// token holds it now, also when an earlier try whose answer was lost had taken it.
    pub(crate) async fn lock(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, Failure> {
        let taken: i64 = self
            .call("lock", |mut conn| {
                let mut invocation = self.take_lock.key(key);
                invocation.arg(token).arg(millis(ttl));
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        Ok(taken == 1)
    }

    /// Deletes `key` if it still holds `value` (a lock token, or an envelope that was read).
    pub(crate) async fn delete_if(&self, key: &str, value: &[u8]) -> Result<bool, Failure> {
        let deleted: i64 = self
            .call("compare-and-delete", |mut conn| {
                let mut invocation = self.compare_and_delete.key(key);
                invocation.arg(value);
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        Ok(deleted == 1)
    }

    /// Writes `value` at `name` under the generation record `record_name` (see
    /// [`WRITE_UNDER_GENERATION`]): whether it was written.
    pub(crate) async fn write_under_generation(
        &self,
        record_name: &str,
        name: &str,
        record_read: &[u8],
        new_record: &[u8],
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, Failure> {
        let written: i64 = self
            .call("write", |mut conn| {
                let mut invocation = self.write_under_generation.key(record_name);
                invocation
                    .key(name)
                    .arg(record_read)
                    .arg(new_record)
                    .arg(value)
                    .arg(millis(ttl));
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        Ok(written == 1)
    }

    /// Moves the key at `name` to the generation of `new_record` (see [`SUPERSEDE`]): whether
    /// it was done.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn supersede(
        &self,
        record_name: &str,
        name: &str,
        record_read: &[u8],
        value_read: &[u8],
        new_record: &[u8],
        kept_value: &[u8],
        lifetime: Duration,
    ) -> Result<bool, Failure> {
        let done: i64 = self
            .call("invalidate", |mut conn| {
                let mut invocation = self.supersede.key(record_name);
                invocation
                    .key(name)
                    .arg(record_read)
                    .arg(value_read)
                    .arg(new_record)
                    .arg(kept_value)
                    .arg(millis(lifetime));
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        Ok(done == 1)
    }
}

/// Whether `error` means the connection is gone (the manager reconnects after it).
fn connection_lost(error: &redis::RedisError) -> bool {
    error.is_io_error() || error.is_unrecoverable_error()
}

/// Milliseconds for `PX`, at least 1 (0 is an error in Redis).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_connection_is_asked_again_and_an_answer_is_not() {
        for kind in [
            std::io::ErrorKind::BrokenPipe,
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::UnexpectedEof,
        ] {
            let error = redis::RedisError::from(std::io::Error::from(kind));
            assert!(connection_lost(&error), "{kind:?}");
        }
        // Redis answered, or the client refused: asking again would get the same answer.
        for kind in [
            redis::ErrorKind::UnexpectedReturnType,
            redis::ErrorKind::Client,
        ] {
            let answered = redis::RedisError::from((kind, "answered"));
            assert!(!connection_lost(&answered), "{kind:?}");
        }
    }

    #[test]
    fn px_is_never_zero() {
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_micros(1500)), 1);
        assert_eq!(millis(Duration::from_secs(2)), 2000);
    }
}
