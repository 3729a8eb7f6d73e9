//! The container health check: the receive loop touches a file on every turn, and
//! `sluice-worker healthcheck` reports whether it did so recently.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// A loop turn takes at most one long poll (20 s) plus a little; allow three.
pub const STALE_AFTER: Duration = Duration::from_secs(75);

fn path() -> PathBuf {
    std::env::temp_dir().join("sluice-worker.alive")
}

/// Marks the receive loop alive.
pub fn beat() {
    let _ = std::fs::write(path(), b"");
}

/// Whether the receive loop turned within `STALE_AFTER`; the error says why not.
pub fn check() -> Result<(), String> {
    let p = path();
    let modified = std::fs::metadata(&p)
        .and_then(|m| m.modified())
        .map_err(|e| format!("{}: {e} (has the worker started?)", p.display()))?;
    let age = SystemTime::now()
        .duration_since(modified)
        .unwrap_or(Duration::ZERO);
    if age > STALE_AFTER {
        return Err(format!(
            "the receive loop last turned {} s ago",
            age.as_secs()
        ));
    }
    Ok(())
}
