//! The worker as a subreaper. A handler's program may leave processes behind when it is killed
//! (what it started in the background, its own children): they are orphans, and on Linux they
//! go to the nearest ancestor that asked for them, or to PID 1. In a container the worker may be
//! PID 1 with no init, and an orphan nobody waits for stays a zombie, holding a PID until the task
//! ends. So the worker asks for its descendants' orphans and waits for them, never for the
//! processes the process handler started itself (tokio waits for those).

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use tracing::debug;

/// The processes the worker started itself and waits for through tokio.
static MANAGED: LazyLock<Mutex<HashSet<i32>>> = LazyLock::new(Mutex::default);

/// Marks `pid` as started and waited for by the worker.
pub fn manage(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        MANAGED.lock().expect("managed lock").insert(pid);
    }
}

/// `pid` is no longer the worker's to wait for through tokio (waited for, or dropped).
pub fn release(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        MANAGED.lock().expect("managed lock").remove(&pid);
    }
}

/// Makes this process the subreaper of its descendants and waits, every `every`, for those
/// that ended and that no one else waits for. Linux only; elsewhere it does nothing.
pub async fn run(every: Duration) {
    #[cfg(target_os = "linux")]
    {
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(error = %e, "cannot become the subreaper of the handler's processes; orphans go to PID 1");
            return;
        }
        loop {
            tokio::time::sleep(every).await;
            for pid in zombie_children() {
                if MANAGED.lock().expect("managed lock").contains(&pid) {
                    continue;
                }
                use nix::sys::wait::{waitpid, WaitPidFlag};
                use nix::unistd::Pid;
                if let Ok(status) = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                    debug!(pid, ?status, "reaped a process the handler left behind");
                }
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = every;
    }
}

/// This process's children that have ended and wait to be reaped (state `Z`).
fn zombie_children() -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(children) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        for pid in children
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            if is_zombie(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
            {
                out.push(pid);
            }
        }
    }
    out
}

/// Whether a `/proc/<pid>/stat` line is a zombie's: the state follows the command's closing
/// parenthesis (the command itself may hold parentheses and spaces). Pure.
fn is_zombie(stat: &str) -> bool {
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
        .is_some_and(|state| state == "Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zombies_are_read_from_the_state_after_the_command() {
        let cases = [
            ("42 (sleep) Z 1 42 42 0", true),
            ("42 (sleep) S 1 42 42 0", false),
            ("42 (a) Z (b)) R 1 2", false),
            ("42 (odd) name) Z 1", true),
            ("", false),
        ];
        for (stat, want) in cases {
            assert_eq!(is_zombie(stat), want, "{stat}");
        }
    }
}
