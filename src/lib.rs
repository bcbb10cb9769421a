//! placeholder

/// Embedded OAuth 2.0 authorization and resource servers on 127.0.0.1 (or in process, with no
/// socket) for testing code that uses this crate; enabled by the `testing` feature.
#[cfg(feature = "testing")]
pub mod testing;
