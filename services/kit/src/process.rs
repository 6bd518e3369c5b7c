//! Facts about this process that replicas announce: the host it runs on and
//! when it started, read once.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// This machine's hostname (in a container, the container's): `HOSTNAME`
/// when set, else the kernel's, else empty.
pub fn host() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|h| h.trim().to_owned())
            .unwrap_or_default()
    })
}

/// When this process first asked, in milliseconds since the Unix epoch: a
/// worker asks as it starts, so this is its start.
pub fn started_at_ms() -> u64 {
    static STARTED: OnceLock<u64> = OnceLock::new();
    *STARTED.get_or_init(now_ms)
}

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
