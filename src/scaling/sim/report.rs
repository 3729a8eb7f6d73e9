//! What `sluice simulate` prints: per scaler, queue waits, cost and reaction.

use std::fmt;

use serde::Serialize;

use super::engine::{Point, RunOutcome};
use super::ScalerKind;

/// One run of one scaler at one phase of its clock.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    /// Offset of the scaler's clock from the workload's start.
    pub phase_offset_seconds: f64,
    /// Median queue wait.
    pub p50_wait_seconds: f64,
    /// 95th percentile queue wait (nearest rank).
    pub p95_wait_seconds: f64,
    /// Longest queue wait.
    pub max_wait_seconds: f64,
    /// Task-seconds billed (request to stop).
    pub task_seconds: f64,
    /// Instance-seconds with one task an instance and instances kept
    /// [`super::SimOptions::instance_linger_seconds`] after their last task
    /// (the task-seconds when that is 0).
    pub instance_seconds: f64,
    /// Most tasks alive at once.
    pub peak_tasks: u32,
    /// From the first job to the first task requested.
    pub first_request_after_seconds: Option<f64>,
    /// From the first job to the first task running.
    pub first_task_after_seconds: Option<f64>,
    /// Jobs not finished when the run gave up (0 in a healthy run).
    pub unfinished_jobs: usize,
}

impl RunSummary {
    pub(super) fn from_outcome(
        phase_offset_seconds: f64,
        outcome: &RunOutcome,
        instance_linger_seconds: f64,
    ) -> RunSummary {
        let mut waits = outcome.waits.clone();
        waits.sort_by(f64::total_cmp);
        RunSummary {
            phase_offset_seconds,
            p50_wait_seconds: percentile(&waits, 0.50),
            p95_wait_seconds: percentile(&waits, 0.95),
            max_wait_seconds: waits.last().copied().unwrap_or(0.0),
            task_seconds: outcome.task_seconds,
            instance_seconds: super::engine::instance_seconds(
                &outcome.task_intervals,
                instance_linger_seconds,
            ),
            peak_tasks: outcome.peak_tasks,
            first_request_after_seconds: outcome
                .first_request_at
                .map(|t| t - outcome.first_arrival),
            first_task_after_seconds: outcome.first_running_at.map(|t| t - outcome.first_arrival),
            unfinished_jobs: outcome.unfinished,
        }
    }
}

/// Nearest-rank percentile of sorted values (0 for none).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// One scaler on one workload, averaged over the phases of its clock.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScalerReport {
    /// Which scaler.
    pub scaler: ScalerKind,
    /// Mean over phases of the median wait.
    pub p50_wait_seconds: f64,
    /// Mean over phases of the 95th percentile wait.
    pub p95_wait_seconds: f64,
    /// Mean over phases of the longest wait.
    pub max_wait_seconds: f64,
    /// Mean over phases of the task-seconds billed.
    pub task_seconds: f64,
    /// Mean over phases of the instance-seconds (see [`RunSummary::instance_seconds`]).
    pub instance_seconds: f64,
    /// Mean over phases of the peak task count.
    pub peak_tasks: f64,
    /// Mean over phases: first job to first task requested.
    pub first_request_after_seconds: Option<f64>,
    /// Mean over phases: first job to first task running.
    pub first_task_after_seconds: Option<f64>,
    /// Mean over phases of jobs left unfinished.
    pub unfinished_jobs: f64,
    /// Every phase's run.
    pub runs: Vec<RunSummary>,
    /// Backlog and tasks over time in the first phase (for the SVG).
    #[serde(skip)]
    pub series: Vec<Point>,
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

fn mean_some(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let present: Vec<f64> = values.flatten().collect();
    if present.is_empty() {
        None
    } else {
        Some(mean(present.into_iter()))
    }
}

impl ScalerReport {
    pub(super) fn from_runs(
        scaler: ScalerKind,
        runs: Vec<RunSummary>,
        series: Vec<Point>,
    ) -> ScalerReport {
        ScalerReport {
            scaler,
            p50_wait_seconds: mean(runs.iter().map(|r| r.p50_wait_seconds)),
            p95_wait_seconds: mean(runs.iter().map(|r| r.p95_wait_seconds)),
            max_wait_seconds: mean(runs.iter().map(|r| r.max_wait_seconds)),
            task_seconds: mean(runs.iter().map(|r| r.task_seconds)),
            instance_seconds: mean(runs.iter().map(|r| r.instance_seconds)),
            peak_tasks: mean(runs.iter().map(|r| f64::from(r.peak_tasks))),
            first_request_after_seconds: mean_some(
                runs.iter().map(|r| r.first_request_after_seconds),
            ),
            first_task_after_seconds: mean_some(runs.iter().map(|r| r.first_task_after_seconds)),
            unfinished_jobs: mean(runs.iter().map(|r| r.unfinished_jobs as f64)),
            runs,
            series,
        }
    }

    /// Whether this scaler is at least as good on both p95 wait and cost and
    /// strictly better on one.
    pub fn dominates(&self, other: &ScalerReport) -> bool {
        let (a, b) = (self, other);
        a.p95_wait_seconds <= b.p95_wait_seconds
            && a.task_seconds <= b.task_seconds
            && (a.p95_wait_seconds < b.p95_wait_seconds || a.task_seconds < b.task_seconds)
    }
}

/// The result of `sluice simulate` for one workload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Workload name.
    pub workload: String,
    /// What the workload is.
    pub description: String,
    /// Jobs in it.
    pub jobs: usize,
    /// Total job duration, seconds.
    pub work_seconds: f64,
    /// Fargate start-up delay used.
    pub startup_delay_seconds: f64,
    /// Phases of each clocked scaler's clock averaged.
    pub phases: u32,
    /// The policy's target backlog per task.
    pub target_backlog_per_task: f64,
    /// The cap every scaler shares.
    pub max_tasks: u32,
    /// One entry per scaler, in the order asked.
    pub scalers: Vec<ScalerReport>,
}

impl Report {
    /// The entry for one scaler, if it was run.
    pub fn scaler(&self, kind: ScalerKind) -> Option<&ScalerReport> {
        self.scalers.iter().find(|s| s.scaler == kind)
    }

    /// sluice's p95 wait over the oracle's, when both ran.
    pub fn p95_ratio_to_oracle(&self) -> Option<f64> {
        let sluice = self.scaler(ScalerKind::Sluice)?;
        let oracle = self.scaler(ScalerKind::Oracle)?;
        Some(sluice.p95_wait_seconds / oracle.p95_wait_seconds.max(f64::MIN_POSITIVE))
    }

    /// sluice's task-seconds over the oracle's, when both ran.
    pub fn cost_ratio_to_oracle(&self) -> Option<f64> {
        let sluice = self.scaler(ScalerKind::Sluice)?;
        let oracle = self.scaler(ScalerKind::Oracle)?;
        Some(sluice.task_seconds / oracle.task_seconds.max(f64::MIN_POSITIVE))
    }

    /// Anchors with both a lower p95 wait and fewer task-seconds than sluice.
    pub fn anchors_dominating_sluice(&self) -> Vec<ScalerKind> {
        let Some(sluice) = self.scaler(ScalerKind::Sluice) else {
            return Vec::new();
        };
        self.scalers
            .iter()
            .filter(|s| !matches!(s.scaler, ScalerKind::Sluice | ScalerKind::Oracle))
            .filter(|s| {
                s.p95_wait_seconds < sluice.p95_wait_seconds && s.task_seconds < sluice.task_seconds
            })
            .map(|s| s.scaler)
            .collect()
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| String::from("{}"))
    }

    /// An SVG drawing backlog and tasks over time, one panel per scaler.
    pub fn to_svg(&self) -> String {
        super::svg::render(self)
    }
}

fn seconds(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |s| format!("{s:.1} s"))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "workload {}: {} ({} jobs, {:.0} task-s of work)",
            self.workload, self.description, self.jobs, self.work_seconds
        )?;
        writeln!(
            f,
            "start-up delay {:.0} s, target backlog per task {:.1}, at most {} tasks, clocked scalers averaged over {} phases",
            self.startup_delay_seconds, self.target_backlog_per_task, self.max_tasks, self.phases
        )?;
        writeln!(
            f,
            "{:<18}{:>10}{:>10}{:>10}{:>14}{:>7}{:>15}{:>12}",
            "scaler",
            "p50 wait",
            "p95 wait",
            "max wait",
            "task-seconds",
            "peak",
            "first request",
            "first task"
        )?;
        for s in &self.scalers {
            write!(
                f,
                "{:<18}{:>10}{:>10}{:>10}{:>14.0}{:>7.1}{:>15}{:>12}",
                s.scaler.name(),
                format!("{:.1} s", s.p50_wait_seconds),
                format!("{:.1} s", s.p95_wait_seconds),
                format!("{:.1} s", s.max_wait_seconds),
                s.task_seconds,
                s.peak_tasks,
                seconds(s.first_request_after_seconds),
                seconds(s.first_task_after_seconds),
            )?;
            if s.unfinished_jobs > 0.0 {
                write!(f, "  ({:.0} jobs unfinished)", s.unfinished_jobs)?;
            }
            writeln!(f)?;
        }
        if let Some(ratio) = self.p95_ratio_to_oracle() {
            let dominating = self.anchors_dominating_sluice();
            let names: Vec<&str> = dominating.iter().map(|k| k.name()).collect();
            writeln!(
                f,
                "sluice p95 wait is {ratio:.2}× the oracle's; anchors with both a lower p95 wait and fewer task-seconds: {}",
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.95), 95.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.95), 7.0);
        assert_eq!(percentile(&[], 0.95), 0.0);
    }
}
