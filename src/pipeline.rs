//! Pause and resume: one switch for the whole pipeline.
//!
//! The state is one item in the jobs table (`control:pipeline`): `running` or `paused`, since
//! when, by whom and why. Its id is no job id (job ids are ULIDs), it carries no `open` or
//! `notify` attribute (so it is in none of the sparse indexes the sweeper, the deliverers and
//! the deadline pass read) and no TTL: nothing that reads job records ever meets it, and it
//! lasts until it is changed. No item means `running`.
//!
//! While paused, jobs are still accepted and wait in the queue; workers finish what they hold
//! and take nothing new; the backlog function holds the service at `min_tasks` and publishes
//! `Paused` = 1, which the deployment's alarms on waiting jobs are multiplied away by; and a
//! queued job whose deadline passes is ended `EXPIRED` by [`expire_overdue`] (the backlog
//! function's every run, the local stack's every few seconds), not only when a worker meets it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::aws::DisplayErrorContext;
use crate::job::{JobId, JobRecord, Status};
use crate::store::{classify, JobStore, StoreError, OPEN_SHARDS};
use crate::time::Millis;

/// The key of the pipeline's state item in the jobs table.
pub const ITEM_ID: &str = "control:pipeline";

/// The longest reason a pause may carry, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// How often a worker reads the state: the longest it may take a new job after a pause, or
/// stay idle after a resume (beside a long poll under way, which a pause cuts short).
pub const WORKER_POLL: Duration = Duration::from_secs(2);

mod attr {
    pub const ID: &str = "id";
    pub const STATE: &str = "pipeline_state";
    pub const SINCE: &str = "since";
    pub const BY: &str = "by";
    pub const REASON: &str = "reason";
}

/// Whether workers take jobs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Workers take jobs (the state of a deployment nobody paused).
    #[default]
    Running,
    /// Workers finish what they hold and take nothing new; jobs wait.
    Paused,
}

impl State {
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Running => "running",
            State::Paused => "paused",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The pipeline's state as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineState {
    pub state: State,
    /// When it was last changed; `None` when it never was.
    pub since: Option<Millis>,
    /// Who changed it: the operator's IAM ARN.
    pub by: Option<String>,
    /// Why it was paused, as the operator said.
    pub reason: Option<String>,
}

impl PipelineState {
    pub fn is_paused(&self) -> bool {
        self.state == State::Paused
    }

    /// As the API shows it. Pure.
    pub fn view(&self) -> PipelineView {
        PipelineView {
            state: self.state,
            since: self.since.map(Millis::to_rfc3339),
            by: self.by.clone(),
            reason: self.reason.clone(),
            changed: None,
        }
    }

    /// One line for people: `paused since … by … (reason)`. Pure.
    pub fn describe(&self) -> String {
        self.view().to_string()
    }
}

/// The pipeline as `GET /pipeline`, `POST /pipeline/pause` and `POST /pipeline/resume` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineView {
    pub state: State,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// On a pause or a resume: whether it changed the state (`false`: it was so already, and
    /// `since`, `by` and `reason` are the earlier change's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<bool>,
}

impl std::fmt::Display for PipelineView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.state)?;
        if let Some(since) = &self.since {
            write!(f, " since {since}")?;
        }
        if let Some(by) = &self.by {
            write!(f, " by {by}")?;
        }
        if let (State::Paused, Some(reason)) = (self.state, &self.reason) {
            write!(f, " ({reason})")?;
        }
        Ok(())
    }
}

/// `POST /pipeline/pause`'s optional body.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A pause's reason, checked: trimmed, `None` when empty, at most [`MAX_REASON_CHARS`]
/// characters, no control characters. Pure.
pub fn check_reason(reason: Option<&str>) -> Result<Option<String>, String> {
    let Some(text) = reason.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    let chars = text.chars().count();
    if chars > MAX_REASON_CHARS {
        return Err(format!(
            "the reason has {chars} characters; at most {MAX_REASON_CHARS} are kept"
        ));
    }
    if text.chars().any(char::is_control) {
        return Err("the reason must be one line of text, without control characters".into());
    }
    Ok(Some(text.to_owned()))
}

/// The state item in the jobs table.
#[derive(Debug, Clone)]
pub struct Pipeline {
    client: Client,
    table: String,
}

impl Pipeline {
    /// The state in `store`'s table.
    pub fn of(store: &JobStore) -> Self {
        let (client, table) = store.client_and_table();
        Pipeline {
            client: client.clone(),
            table: table.to_owned(),
        }
    }

    /// Reads the state; `consistent` for a strongly consistent read (what an operator is shown),
    /// else an eventually consistent one at half the price (what workers and the scaling poll).
    pub async fn read(&self, consistent: bool) -> Result<PipelineState, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::ID, AttributeValue::S(ITEM_ID.into()))
            .consistent_read(consistent)
            .send()
            .await
            .map_err(classify)?;
        Ok(out.item().map(state_of).unwrap_or_default())
    }

    /// Sets the state to `to`, by `by`, with `reason` (a pause's). When it is `to` already, it
    /// is left as it is: `(state, false)` with the earlier change's time, author and reason.
    pub async fn set(
        &self,
        to: State,
        by: &str,
        reason: Option<&str>,
        now: Millis,
    ) -> Result<(PipelineState, bool), StoreError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::ID, AttributeValue::S(ITEM_ID.into()))
            .expression_attribute_names("#state", attr::STATE)
            .expression_attribute_names("#since", attr::SINCE)
            .expression_attribute_names("#by", attr::BY)
            .expression_attribute_values(":to", AttributeValue::S(to.as_str().into()))
            .expression_attribute_values(":since", AttributeValue::N(now.0.to_string()))
            .expression_attribute_values(":by", AttributeValue::S(by.into()))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        update = match to {
            // No item is running: a pause applies unless paused already.
            State::Paused => {
                update.condition_expression("attribute_not_exists(#state) OR #state <> :to")
            }
            // A resume applies only to a paused pipeline.
            State::Running => update
                .condition_expression("#state = :paused")
                .expression_attribute_values(
                    ":paused",
                    AttributeValue::S(State::Paused.as_str().into()),
                ),
        };
        update = update.expression_attribute_names("#reason", attr::REASON);
        update = match reason {
            Some(r) => update
                .update_expression(
                    "SET #state = :to, #since = :since, #by = :by, #reason = :reason",
                )
                .expression_attribute_values(":reason", AttributeValue::S(r.into())),
            None => update
                .update_expression("SET #state = :to, #since = :since, #by = :by REMOVE #reason"),
        };
        match update.send().await {
            Ok(out) => Ok((out.attributes().map(state_of).unwrap_or_default(), true)),
            Err(e) => {
                let current = e.as_service_error().and_then(|e| match e {
                    UpdateItemError::ConditionalCheckFailedException(c) => {
                        Some(c.item().map(state_of).unwrap_or_default())
                    }
                    _ => None,
                });
                match current {
                    Some(state) => Ok((state, false)),
                    None => Err(classify(e)),
                }
            }
        }
    }
}

/// The state an item holds; an unreadable one counts as running (what a deployment nobody
/// paused does). Pure.
fn state_of(item: &HashMap<String, AttributeValue>) -> PipelineState {
    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    PipelineState {
        state: match text(attr::STATE).as_deref() {
            Some("paused") => State::Paused,
            _ => State::Running,
        },
        since: item
            .get(attr::SINCE)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .map(Millis),
        by: text(attr::BY),
        reason: text(attr::REASON),
    }
}

/// The last state read, kept when a read fails: a table that cannot be reached for a moment
/// neither pauses nor resumes anyone. Before any read succeeded it is `running` (a worker that
/// cannot reach the table cannot claim a job anyway).
#[derive(Debug)]
pub struct Known {
    pipeline: Pipeline,
    last: Mutex<Option<(Instant, PipelineState)>>,
    fresh_for: Duration,
}

impl Known {
    /// Reads at most once per `fresh_for`.
    pub fn new(pipeline: Pipeline, fresh_for: Duration) -> Self {
        Known {
            pipeline,
            last: Mutex::new(None),
            fresh_for,
        }
    }

    fn last(&self) -> std::sync::MutexGuard<'_, Option<(Instant, PipelineState)>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state: the last one read when it is fresh, else read now (eventually consistent);
    /// when the read fails, the last one known.
    pub async fn current(&self) -> PipelineState {
        let now = Instant::now();
        if let Some((at, state)) = self.last().as_ref() {
            if is_fresh(*at, now, self.fresh_for) {
                return state.clone();
            }
        }
        let read = self.pipeline.read(false).await;
        let mut last = self.last();
        match read {
            Ok(state) => {
                *last = Some((Instant::now(), state.clone()));
                state
            }
            Err(e) => {
                warn!(error = %DisplayErrorContext(&e), "could not read the pipeline's state; keeping the last one known");
                last.as_ref().map(|(_, s)| s.clone()).unwrap_or_default()
            }
        }
    }
}

/// Whether a state read at `at` may still be used at `now`. Pure.
pub fn is_fresh(at: Instant, now: Instant, fresh_for: Duration) -> bool {
    now.saturating_duration_since(at) < fresh_for
}

/// Whether a queued job must end `EXPIRED` now: it never started and its deadline passed. Pure.
pub fn overdue(job: &JobRecord, now: Millis) -> bool {
    job.status == Status::Queued
        && !job.has_started()
        && !job.cancel_requested
        && job.deadline.is_some_and(|d| d <= now)
}

/// Ends `EXPIRED` every queued job whose deadline passed, found through the open-deadlines index
/// (the open jobs with a deadline, by deadline: no scan), within `budget`. Returns the jobs
/// ended. A job that moved meanwhile (claimed, cancelled) is left alone.
pub async fn expire_overdue(
    store: &JobStore,
    now: Millis,
    budget: Duration,
) -> Result<Vec<JobId>, StoreError> {
    let started = Instant::now();
    let mut ended = Vec::new();
    for shard in 0..OPEN_SHARDS {
        let mut start = None;
        loop {
            if started.elapsed() >= budget {
                return Ok(ended);
            }
            let (page, next) = store
                .open_deadline_before(&shard.to_string(), now, 100, start)
                .await?;
            let ids: Vec<JobId> = page.into_iter().map(|(id, _)| id).collect();
            let mut records = store.get_many(&ids).await?;
            for id in ids {
                let Some(Ok(job)) = records.remove(&id) else {
                    continue;
                };
                if !overdue(&job, now) {
                    continue;
                }
                match store.expire(&id, now, store.retention()).await {
                    Ok(_) => {
                        tracing::info!(job_id = %id, "job expired: its deadline passed before it started");
                        ended.push(id);
                    }
                    Err(StoreError::Conflict { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            match next {
                Some(key) => start = Some(key),
                None => break,
            }
        }
    }
    Ok(ended)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Owner;

    #[test]
    fn reasons_are_one_short_line() {
        let long = "x".repeat(MAX_REASON_CHARS + 1);
        type Case<'a> = (Option<&'a str>, Result<Option<&'a str>, &'a str>);
        let cases: Vec<Case> = vec![
            (None, Ok(None)),
            (Some(""), Ok(None)),
            (Some("   "), Ok(None)),
            (Some(" model upgrade "), Ok(Some("model upgrade"))),
            (Some("two\nlines"), Err("one line")),
            (Some(long.as_str()), Err("at most 500")),
        ];
        for (given, want) in cases {
            match (check_reason(given), want) {
                (Ok(got), Ok(want)) => assert_eq!(got.as_deref(), want, "{given:?}"),
                (Err(e), Err(text)) => assert!(e.contains(text), "{given:?}: {e}"),
                (got, want) => panic!("{given:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn only_a_queued_job_that_never_started_expires() {
        let now = Millis(1_000_000);
        let job = |status: Status, attempt: u32, deadline: Option<i64>| {
            let mut j =
                JobRecord::queued(JobId::generate(), Owner::new("o"), Millis(1), None, 3, 1);
            j.status = status;
            j.attempt = attempt;
            j.deadline = deadline.map(Millis);
            j
        };
        let mut cancel_asked = job(Status::Queued, 0, Some(now.0 - 1));
        cancel_asked.cancel_requested = true;
        let cases = [
            (
                "queued, deadline passed",
                job(Status::Queued, 0, Some(now.0 - 1)),
                true,
            ),
            (
                "queued, deadline now",
                job(Status::Queued, 0, Some(now.0)),
                true,
            ),
            (
                "queued, deadline ahead",
                job(Status::Queued, 0, Some(now.0 + 1)),
                false,
            ),
            ("queued, no deadline", job(Status::Queued, 0, None), false),
            (
                "retrying after a start",
                job(Status::Queued, 1, Some(now.0 - 1)),
                false,
            ),
            ("running", job(Status::Running, 1, Some(now.0 - 1)), false),
            (
                "expired already",
                job(Status::Expired, 0, Some(now.0 - 1)),
                false,
            ),
            ("cancel asked", cancel_asked, false),
        ];
        for (name, j, want) in cases {
            assert_eq!(overdue(&j, now), want, "{name}");
        }
    }

    #[test]
    fn the_state_reads_from_its_item_and_shows_who_and_why() {
        let item = |pairs: &[(&str, AttributeValue)]| -> HashMap<String, AttributeValue> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect()
        };
        let s = |v: &str| AttributeValue::S(v.into());
        let paused = state_of(&item(&[
            (attr::STATE, s("paused")),
            (attr::SINCE, AttributeValue::N("0".into())),
            (attr::BY, s("arn:aws:iam::123456789012:user/ops")),
            (attr::REASON, s("model upgrade")),
        ]));
        assert!(paused.is_paused());
        assert_eq!(
            paused.describe(),
            "paused since 1970-01-01T00:00:00.000Z by arn:aws:iam::123456789012:user/ops (model upgrade)"
        );
        let cases = [
            (item(&[]), State::Running),
            (item(&[(attr::STATE, s("running"))]), State::Running),
            (item(&[(attr::STATE, s("bogus"))]), State::Running),
            (
                item(&[(attr::STATE, AttributeValue::N("1".into()))]),
                State::Running,
            ),
            (item(&[(attr::STATE, s("paused"))]), State::Paused),
        ];
        for (i, want) in cases {
            assert_eq!(state_of(&i).state, want, "{i:?}");
        }
        assert_eq!(PipelineState::default().describe(), "running");
    }

    #[test]
    fn a_state_read_is_used_for_its_freshness_only() {
        let t0 = Instant::now();
        let fresh = Duration::from_secs(2);
        let cases = [(0, true), (1_999, true), (2_000, false), (60_000, false)];
        for (after_ms, want) in cases {
            let now = t0 + Duration::from_millis(after_ms);
            assert_eq!(is_fresh(t0, now, fresh), want, "{after_ms} ms");
        }
    }
}
