//! ECS task scale-in protection: on while the worker holds any job, renewed before it lapses,
//! off once the worker has been idle for a moment. Scale-in then never stops a busy task.
//!
//! It speaks to the ECS agent's endpoint (`PUT $ECS_AGENT_URI/task-protection/v1/state`),
//! which the agent injects into every task; outside ECS there is no agent and nothing to do.

use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

/// How long one protection lasts; renewed at half-time while jobs run.
pub const PROTECTION_TTL: Duration = Duration::from_secs(10 * 60);
/// How long the worker must be idle before protection comes off, so the gaps between jobs of
/// a busy worker cost no calls.
pub const IDLE_GRACE: Duration = Duration::from_secs(10);

/// What protection needs now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Enable,
    Disable,
}

/// The protection as last set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// When the current protection lapses, `None` when off.
    pub protected_until: Option<Instant>,
    /// Since when the worker holds no job, `None` while busy.
    pub idle_since: Option<Instant>,
}

/// Decides the next call. Pure.
pub fn next_action(
    busy: bool,
    state: &State,
    now: Instant,
    ttl: Duration,
    grace: Duration,
) -> Option<Action> {
    match (busy, state.protected_until) {
        (true, None) => Some(Action::Enable),
        (true, Some(until)) if until.saturating_duration_since(now) < ttl / 2 => {
            Some(Action::Enable)
        }
        (true, Some(_)) => None,
        (false, Some(_))
            if state
                .idle_since
                .is_some_and(|t| now.duration_since(t) >= grace) =>
        {
            Some(Action::Disable)
        }
        (false, _) => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProtectionError {
    #[error("the ECS agent could not be reached")]
    Transport(#[source] reqwest::Error),
    #[error("the ECS agent refused: {0}")]
    Refused(String),
}

#[derive(Deserialize)]
struct AgentAnswer {
    protection: Option<serde_json::Value>,
    failure: Option<serde_json::Value>,
    error: Option<serde_json::Value>,
}

/// A client of the ECS agent's task-protection endpoint.
#[derive(Debug, Clone)]
pub struct Agent {
    url: String,
    http: reqwest::Client,
}

impl Agent {
    /// `agent_uri` is `$ECS_AGENT_URI`.
    pub fn new(agent_uri: &str) -> Self {
        Agent {
            url: format!(
                "{}/task-protection/v1/state",
                agent_uri.trim_end_matches('/')
            ),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("a plain HTTP client builds"),
        }
    }

    /// The agent of this task, or `None` outside ECS.
    pub fn from_env() -> Option<Self> {
        std::env::var("ECS_AGENT_URI")
            .ok()
            .filter(|u| !u.is_empty())
            .map(|u| Agent::new(&u))
    }

    pub async fn set(&self, action: Action, ttl: Duration) -> Result<(), ProtectionError> {
        let body = match action {
            Action::Enable => serde_json::json!({
                "ProtectionEnabled": true,
                "ExpiresInMinutes": (ttl.as_secs() / 60).clamp(1, 2880),
            }),
            Action::Disable => serde_json::json!({ "ProtectionEnabled": false }),
        };
        let resp = self
            .http
            .put(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(ProtectionError::Transport)?;
        let status = resp.status();
        let text = resp.text().await.map_err(ProtectionError::Transport)?;
        let answer: Option<AgentAnswer> = serde_json::from_str(&text).ok();
        match answer {
            Some(AgentAnswer {
                protection: Some(_),
                ..
            }) if status.is_success() => Ok(()),
            Some(AgentAnswer {
                failure: Some(f), ..
            })
            | Some(AgentAnswer { error: Some(f), .. }) => {
                Err(ProtectionError::Refused(f.to_string()))
            }
            _ => Err(ProtectionError::Refused(format!(
                "HTTP {status}: {}",
                text.chars().take(200).collect::<String>()
            ))),
        }
    }
}

/// When to look again: at a renewal, at the end of the idle grace, or (after `failures` failed
/// calls in a row) after a pause that doubles from 1 s to 1 minute. Pure.
pub fn next_wake(busy: bool, state: &State, now: Instant, failures: u32) -> Instant {
    if failures > 0 {
        let pause = Duration::from_secs(1u64 << (failures - 1).min(6)).min(Duration::from_secs(60));
        return now + pause;
    }
    match (busy, state.protected_until, state.idle_since) {
        (true, Some(until), _) => until.checked_sub(PROTECTION_TTL / 2).unwrap_or(now),
        (false, Some(_), Some(idle)) => idle + IDLE_GRACE,
        // Nothing to do until the work changes, which wakes the keeper anyway.
        _ => now + Duration::from_secs(3600),
    }
    .max(now + Duration::from_millis(100))
}

/// Keeps protection in step with `busy` (the number of jobs held) until the sender is dropped,
/// then takes it off.
pub async fn keep(agent: Option<Agent>, mut busy: watch::Receiver<usize>) {
    let Some(agent) = agent else {
        info!("not running on ECS (no ECS_AGENT_URI): task scale-in protection is off");
        return;
    };
    let mut state = State {
        protected_until: None,
        idle_since: Some(Instant::now()),
    };
    let mut failures = 0u32;
    loop {
        let now = Instant::now();
        let is_busy = *busy.borrow_and_update() > 0;
        match (is_busy, state.idle_since) {
            (true, _) => state.idle_since = None,
            (false, None) => state.idle_since = Some(now),
            (false, Some(_)) => {}
        }
        if let Some(action) = next_action(is_busy, &state, now, PROTECTION_TTL, IDLE_GRACE) {
            match agent.set(action, PROTECTION_TTL).await {
                Ok(()) => {
                    failures = 0;
                    state.protected_until =
                        (action == Action::Enable).then(|| now + PROTECTION_TTL);
                    info!(?action, "task scale-in protection set");
                }
                Err(e) => {
                    failures += 1;
                    warn!(error = %sluice::aws::DisplayErrorContext(&e), ?action, failures, "could not set task scale-in protection; trying again soon")
                }
            }
        }
        let wake = next_wake(is_busy, &state, now, failures);
        tokio::select! {
            changed = busy.changed() => if changed.is_err() { break },
            () = tokio::time::sleep_until(wake) => {}
        }
    }
    if state.protected_until.is_some() {
        if let Err(e) = agent.set(Action::Disable, PROTECTION_TTL).await {
            warn!(error = %sluice::aws::DisplayErrorContext(&e), "could not take task scale-in protection off");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_calls_are_retried_after_a_growing_pause_not_an_hour_or_a_spin() {
        let t0 = Instant::now();
        let s = |secs: u64| Duration::from_secs(secs);
        let unprotected = State {
            protected_until: None,
            idle_since: None,
        };
        let due_renewal = State {
            protected_until: Some(t0 + s(200)),
            idle_since: None,
        };
        let idle = State {
            protected_until: Some(t0 + s(500)),
            idle_since: Some(t0),
        };
        // (case, busy, state, failures in a row, wake after)
        let cases = [
            ("enable failed once", true, unprotected, 1, s(1)),
            ("enable failed three times", true, unprotected, 3, s(4)),
            ("renewal failed", true, due_renewal, 1, s(1)),
            ("disable failed many times", false, idle, 20, s(60)),
            (
                "renewal due, no failure",
                true,
                due_renewal,
                0,
                Duration::from_millis(100),
            ),
            ("idle within grace", false, idle, 0, IDLE_GRACE),
            (
                "protected, busy",
                true,
                State {
                    protected_until: Some(t0 + s(600)),
                    idle_since: None,
                },
                0,
                s(300),
            ),
        ];
        for (name, busy, state, failures, want) in cases {
            assert_eq!(next_wake(busy, &state, t0, failures), t0 + want, "{name}");
        }
    }

    #[test]
    fn protection_follows_the_work_with_renewal_and_grace() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(600);
        let grace = Duration::from_secs(10);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let cases = [
            (
                "busy, unprotected",
                true,
                None,
                None,
                0,
                Some(Action::Enable),
            ),
            ("busy, fresh protection", true, Some(at(600)), None, 0, None),
            (
                "busy, protection past half-life",
                true,
                Some(at(600)),
                None,
                301,
                Some(Action::Enable),
            ),
            (
                "busy, protection lapsed",
                true,
                Some(at(600)),
                None,
                700,
                Some(Action::Enable),
            ),
            (
                "idle within grace",
                false,
                Some(at(600)),
                Some(at(0)),
                9,
                None,
            ),
            (
                "idle past grace",
                false,
                Some(at(600)),
                Some(at(0)),
                10,
                Some(Action::Disable),
            ),
            ("idle, unprotected", false, None, Some(at(0)), 100, None),
        ];
        for (name, busy, until, idle, now, want) in cases {
            let state = State {
                protected_until: until,
                idle_since: idle,
            };
            assert_eq!(
                next_action(busy, &state, at(now), ttl, grace),
                want,
                "{name}"
            );
        }
    }
}
