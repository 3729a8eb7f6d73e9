//! `sluice simulate --grid`: the policy over a grid of workloads, not one.
//!
//! Every case runs sluice, the anchors at their defaults and tuned for the
//! case, and the oracle, with the policy's `max_tasks` set to the case's cap
//! and `average_job_seconds` to its mean job duration (what a user deploying
//! for that workload sets); everything else is the policy as given.

use std::fmt;

use serde::Serialize;

use super::super::policy::Policy;
use super::workload::Workload;
use super::{simulate, Report, ScalerKind, SimOptions};

/// The p95 target against the oracle on burst, spike and repeated-burst cases.
pub const P95_TARGET_RATIO: f64 = 1.2;
/// The cost target against the oracle on every case: task-seconds.
pub const COST_TARGET_RATIO: f64 = 1.3;
/// The most seconds from the first job to the first capacity request.
pub const FIRST_REQUEST_TARGET_SECONDS: f64 = 10.0;

/// Which grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GridSize {
    /// A few cases of each shape, two phases: `make test`.
    Short,
    /// Every case, every phase: `make grid`.
    Full,
}

impl std::str::FromStr for GridSize {
    type Err = String;
    fn from_str(s: &str) -> Result<GridSize, String> {
        match s {
            "short" => Ok(GridSize::Short),
            "full" => Ok(GridSize::Full),
            other => Err(format!("unknown grid {other:?} (expected short or full)")),
        }
    }
}

/// The shape of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CaseKind {
    /// From idle, many jobs at once.
    Burst,
    /// A steady load and a sudden block of jobs on top.
    Spike,
    /// A day of rising and falling load.
    Diurnal,
    /// A load that rises, holds and falls within hours.
    Ramp,
    /// Bursts from idle, again and again.
    Repeated,
    /// A CSV trace.
    Trace,
}

impl CaseKind {
    /// Whether the p95 target applies: where jobs wait for capacity to
    /// start. On steady loads the oracle, which starts a task per job, waits
    /// next to nothing and the ratio says nothing; there the cost target
    /// and the tuned anchors judge.
    pub fn has_p95_target(self) -> bool {
        matches!(self, CaseKind::Burst | CaseKind::Spike | CaseKind::Repeated)
    }
}

/// A trace to replay: its name and CSV text.
#[derive(Debug, Clone)]
pub struct Trace {
    /// File name.
    pub name: String,
    /// `arrival_seconds,duration_seconds` lines.
    pub csv: String,
}

/// One case of the grid.
#[derive(Debug, Clone)]
pub struct Case {
    /// e.g. `burst 600 × 10 s, cap 100`.
    pub name: String,
    /// Its shape.
    pub kind: CaseKind,
    /// The jobs.
    pub workload: Workload,
    /// The policy it runs with.
    pub policy: Policy,
}

/// Most jobs a second a generated steady load offers (keeps a case of
/// 1 s jobs at a cap of 200 to a few hundred thousand jobs).
const MAX_GENERATED_RATE: f64 = 5.0;

fn for_case(base: &Policy, cap: u32, mean_job: f64) -> Result<Policy, String> {
    let mut p = base
        .with_bounds(base.min_tasks.min(cap), cap)
        .map_err(|e| e.to_string())?;
    p.average_job_seconds = mean_job.clamp(1e-3, 86_400.0);
    p.validate().map_err(|e| e.to_string())?;
    Ok(p)
}

/// [`for_case`] for tasks of `slots` jobs at once (the worker's concurrency).
fn for_slots(base: &Policy, cap: u32, mean_job: f64, slots: u32) -> Result<Policy, String> {
    let mut p = for_case(base, cap, mean_job)?;
    p.jobs_per_task = slots;
    p.validate().map_err(|e| e.to_string())?;
    Ok(p)
}

fn duration_label(d: f64) -> String {
    if d >= 60.0 {
        format!("{:.0} min", d / 60.0)
    } else {
        format!("{d:.0} s")
    }
}

/// The dimensions of a grid.
struct Shape {
    burst_jobs: &'static [usize],
    burst_caps: &'static [u32],
    durations: &'static [f64],
    spike_caps: &'static [u32],
    spike_durations: &'static [f64],
    /// (cap, job duration)
    diurnal: &'static [(u32, f64)],
    /// Heavy-tailed bursts (median 20 s, sigma 1.5): (jobs, cap)
    heavy: &'static [(usize, u32)],
    /// Ramps over 20 min to 0.8 of the cap's rate: (cap, job duration)
    ramps: &'static [(u32, f64)],
    /// Five bursts of twice the cap's slots: (cap, job duration, seconds between bursts)
    repeated: &'static [(u32, f64, f64)],
    /// Bursts on tasks of several slots: (jobs, cap, job duration, slots)
    slotted: &'static [(usize, u32, f64, u32)],
}

/// The cases of a grid. Traces run at caps 20 and 100 with the policy's
/// duration set to their mean.
pub fn cases(
    size: GridSize,
    base: &Policy,
    traces: &[Trace],
    seed: u64,
) -> Result<Vec<Case>, String> {
    let shape = match size {
        GridSize::Short => Shape {
            burst_jobs: &[100, 3000],
            burst_caps: &[5, 100],
            durations: &[10.0, 600.0],
            spike_caps: &[20],
            spike_durations: &[10.0],
            diurnal: &[],
            heavy: &[(600, 100)],
            ramps: &[],
            repeated: &[(20, 10.0, 300.0)],
            slotted: &[(2000, 50, 2.0, 4)],
        },
        GridSize::Full => Shape {
            burst_jobs: &[20, 100, 600, 3000],
            burst_caps: &[5, 20, 100, 200],
            durations: &[1.0, 10.0, 60.0, 600.0],
            spike_caps: &[5, 20, 100, 200],
            spike_durations: &[1.0, 10.0, 60.0, 600.0],
            diurnal: &[(20, 10.0), (20, 60.0), (100, 10.0), (100, 60.0)],
            heavy: &[(100, 20), (100, 100), (600, 20), (600, 100), (3000, 200)],
            ramps: &[(20, 10.0), (20, 60.0), (100, 10.0), (100, 60.0)],
            repeated: &[
                (20, 10.0, 120.0),
                (20, 10.0, 300.0),
                (20, 60.0, 600.0),
                (100, 10.0, 120.0),
                (100, 10.0, 900.0),
                (100, 60.0, 300.0),
            ],
            slotted: &[
                (2000, 50, 2.0, 4),
                (400, 20, 60.0, 8),
                (300, 10, 600.0, 4),
                (200, 100, 10.0, 8),
            ],
        },
    };
    let Shape {
        burst_jobs,
        burst_caps,
        durations,
        spike_caps,
        spike_durations,
        diurnal,
        heavy,
        ramps,
        repeated,
        slotted,
    } = shape;
    let k = f64::from(base.jobs_per_task);
    let mut out = Vec::new();
    for &jobs in burst_jobs {
        for &cap in burst_caps {
            for &d in durations {
                out.push(Case {
                    name: format!("burst {jobs} × {}, cap {cap}", duration_label(d)),
                    kind: CaseKind::Burst,
                    workload: Workload::burst(seed, jobs, 30.0, d),
                    policy: for_case(base, cap, d)?,
                });
            }
        }
    }
    for &cap in spike_caps {
        for &d in spike_durations {
            // A tenth of the cap busy for an hour (three for 10 min jobs), and at a third of
            // the way in a block of jobs within 60 s: at least twice the cap's slots and two
            // thirds as many as the steady load brings, so the p95 falls on the spike.
            let rate = (0.1 * f64::from(cap) * k / d).min(MAX_GENERATED_RATE);
            let hours = if d >= 600.0 { 3.0 } else { 1.0 };
            let base_jobs = rate * hours * 3600.0;
            let count = (2.0 * f64::from(cap) * k).max(base_jobs * 2.0 / 3.0) as usize;
            out.push(Case {
                name: format!("spike {count} × {}, cap {cap}", duration_label(d)),
                kind: CaseKind::Spike,
                workload: Workload::spike(seed, rate, count, hours, d),
                policy: for_case(base, cap, d)?,
            });
        }
    }
    for &(cap, d) in diurnal {
        let peak = (0.6 * f64::from(cap) * k / d).min(MAX_GENERATED_RATE);
        out.push(Case {
            name: format!("diurnal × {}, cap {cap}", duration_label(d)),
            kind: CaseKind::Diurnal,
            workload: Workload::diurnal(seed, peak, 86_400.0, d),
            policy: for_case(base, cap, d)?,
        });
    }
    for &(jobs, cap) in heavy {
        let w = Workload::heavy_tailed_burst(seed, jobs, 30.0, 20.0, 1.5);
        out.push(Case {
            name: format!("heavy-tailed burst {jobs} × ~20 s, cap {cap}"),
            kind: CaseKind::Burst,
            policy: for_case(base, cap, w.mean_job_seconds())?,
            workload: w,
        });
    }
    for &(cap, d) in ramps {
        let peak = (0.8 * f64::from(cap) * k / d).min(MAX_GENERATED_RATE);
        out.push(Case {
            name: format!("ramp × {}, cap {cap}", duration_label(d)),
            kind: CaseKind::Ramp,
            workload: Workload::ramp(seed, peak, 1200.0, d),
            policy: for_case(base, cap, d)?,
        });
    }
    for &(cap, d, every) in repeated {
        let count = (2.0 * f64::from(cap) * k) as usize;
        out.push(Case {
            name: format!(
                "5 bursts {count} × {} every {}, cap {cap}",
                duration_label(d),
                duration_label(every)
            ),
            kind: CaseKind::Repeated,
            workload: Workload::repeated_bursts(seed, 5, count, every, d),
            policy: for_case(base, cap, d)?,
        });
    }
    for &(jobs, cap, d, slots) in slotted {
        out.push(Case {
            name: format!(
                "burst {jobs} × {}, {slots} slots, cap {cap}",
                duration_label(d)
            ),
            kind: CaseKind::Burst,
            workload: Workload::burst(seed, jobs, 30.0, d),
            policy: for_slots(base, cap, d, slots)?,
        });
    }
    let trace_caps: &[u32] = match size {
        GridSize::Short => &[20],
        GridSize::Full => &[20, 100],
    };
    let traces = match size {
        GridSize::Short => &traces[..traces.len().min(1)],
        GridSize::Full => traces,
    };
    for trace in traces {
        let mut workload =
            Workload::from_csv(&trace.csv).map_err(|e| format!("{}: {e}", trace.name))?;
        workload.name = trace.name.clone();
        let mean = workload.mean_job_seconds();
        for &cap in trace_caps {
            out.push(Case {
                name: format!("trace {}, cap {cap}", trace.name),
                kind: CaseKind::Trace,
                workload: workload.clone(),
                policy: for_case(base, cap, mean)?,
            });
        }
    }
    Ok(out)
}

/// One scaler's figures on one case.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Figures {
    /// Which scaler.
    pub scaler: ScalerKind,
    /// p95 queue wait, seconds (mean over phases).
    pub p95_wait_seconds: f64,
    /// Task-seconds billed (mean over phases).
    pub task_seconds: f64,
    /// Instance-seconds (mean over phases; the task-seconds without an
    /// instance linger).
    pub instance_seconds: f64,
}

/// One line of the grid.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The case's name.
    pub case: String,
    /// Its shape.
    pub kind: CaseKind,
    /// Jobs in it.
    pub jobs: usize,
    /// The cap.
    pub max_tasks: u32,
    /// sluice's p95 over the oracle's.
    pub p95_ratio: f64,
    /// sluice's task-seconds over the oracle's.
    pub cost_ratio: f64,
    /// The longest time, over phases, from the first job to sluice's first
    /// capacity request.
    pub first_request_seconds: f64,
    /// sluice, the anchors and the oracle.
    pub scalers: Vec<Figures>,
    /// Tuned anchors with both a lower p95 and fewer task-seconds than sluice.
    pub tuned_dominating: Vec<ScalerKind>,
    /// Anchors at their defaults that do.
    pub defaults_dominating: Vec<ScalerKind>,
}

impl Row {
    fn of(case: &Case, report: &Report) -> Row {
        let figures = |k: ScalerKind| {
            report.scaler(k).map(|s| Figures {
                scaler: k,
                p95_wait_seconds: s.p95_wait_seconds,
                task_seconds: s.task_seconds,
                instance_seconds: s.instance_seconds,
            })
        };
        let sluice = report.scaler(ScalerKind::Sluice);
        let first_request_seconds = sluice
            .map(|s| {
                s.runs
                    .iter()
                    .filter_map(|r| r.first_request_after_seconds)
                    .fold(0.0, f64::max)
            })
            .unwrap_or(f64::NAN);
        let dominating = report.anchors_dominating_sluice();
        Row {
            case: case.name.clone(),
            kind: case.kind,
            jobs: case.workload.jobs.len(),
            max_tasks: case.policy.max_tasks,
            p95_ratio: report.p95_ratio_to_oracle().unwrap_or(f64::NAN),
            cost_ratio: report.cost_ratio_to_oracle().unwrap_or(f64::NAN),
            first_request_seconds,
            scalers: ScalerKind::ALL.into_iter().filter_map(figures).collect(),
            tuned_dominating: dominating
                .iter()
                .copied()
                .filter(|k| ScalerKind::TUNED.contains(k))
                .collect(),
            defaults_dominating: dominating
                .iter()
                .copied()
                .filter(|k| !ScalerKind::TUNED.contains(k))
                .collect(),
        }
    }

    fn get(&self, k: ScalerKind) -> Option<&Figures> {
        self.scalers.iter().find(|f| f.scaler == k)
    }

    /// Whether the p95 target is met (or does not apply).
    pub fn meets_p95_target(&self) -> bool {
        !self.kind.has_p95_target() || self.p95_ratio <= P95_TARGET_RATIO
    }

    /// Whether the cost target is met.
    pub fn meets_cost_target(&self) -> bool {
        self.cost_ratio <= COST_TARGET_RATIO
    }

    /// Whether the case meets its targets (p95 only where jobs wait for capacity).
    pub fn meets_targets(&self) -> bool {
        self.meets_p95_target()
            && self.meets_cost_target()
            && self.first_request_seconds <= FIRST_REQUEST_TARGET_SECONDS
            && self.tuned_dominating.is_empty()
    }
}

/// The grid's result.
#[derive(Debug, Clone, Serialize)]
pub struct GridReport {
    /// Seconds from a task's request until it takes jobs.
    pub startup_delay_seconds: f64,
    /// Phases averaged per clocked scaler.
    pub phases: u32,
    /// Seconds instances outlive their last task (0: task-seconds only).
    pub instance_linger_seconds: f64,
    /// One per case.
    pub rows: Vec<Row>,
}

/// Runs every case.
///
/// The start-up delay is the model's and, as a user deploying for it would
/// set it, the policy's `task_startup_seconds`.
pub fn run(
    cases: &[Case],
    startup_delay_seconds: f64,
    phases: u32,
    instance_linger_seconds: f64,
) -> GridReport {
    let rows = cases
        .iter()
        .map(|case| {
            let policy = Policy {
                task_startup_seconds: startup_delay_seconds.clamp(1e-3, 86_400.0),
                ..case.policy.clone()
            };
            let opts = SimOptions {
                startup_delay_seconds,
                phases,
                record_series: false,
                instance_linger_seconds,
                ..SimOptions::new(policy)
            };
            Row::of(case, &simulate(&case.workload, &ScalerKind::ALL, &opts))
        })
        .collect();
    GridReport {
        startup_delay_seconds,
        phases,
        instance_linger_seconds,
        rows,
    }
}

impl GridReport {
    /// Rows with the p95 target (bursts and spikes).
    pub fn targeted(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| r.kind.has_p95_target())
    }

    /// The largest p95 ratio to the oracle where the p95 target applies, and its case.
    pub fn worst_ratio(&self) -> Option<&Row> {
        self.targeted()
            .max_by(|a, b| a.p95_ratio.total_cmp(&b.p95_ratio))
    }

    /// The largest cost ratio to the oracle, and its case.
    pub fn worst_cost_ratio(&self) -> Option<&Row> {
        self.rows
            .iter()
            .max_by(|a, b| a.cost_ratio.total_cmp(&b.cost_ratio))
    }

    /// The longest first-request time on any case.
    pub fn slowest_first_request(&self) -> Option<&Row> {
        self.rows
            .iter()
            .max_by(|a, b| a.first_request_seconds.total_cmp(&b.first_request_seconds))
    }

    /// Cases where a tuned anchor has both a lower p95 and fewer task-seconds.
    pub fn dominated_by_tuned(&self) -> Vec<&Row> {
        self.rows
            .iter()
            .filter(|r| !r.tuned_dominating.is_empty())
            .collect()
    }

    /// Whether every case meets every target.
    pub fn all_targets_met(&self) -> bool {
        self.rows.iter().all(Row::meets_targets)
    }

    /// As pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| String::from("{}"))
    }
}

/// The keep-idle times the frontier tries, in start-ups.
pub const FRONTIER_KEEP_IDLE_STARTUPS: [f64; 7] = [0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 4.0];

/// The grid at one keep-idle time: how far from the oracle it gets at worst.
#[derive(Debug, Clone, Serialize)]
pub struct FrontierPoint {
    /// The policy's `keep_idle_startups` for this point.
    pub keep_idle_startups: f64,
    /// The largest p95 ratio where the p95 target applies, and its case.
    pub worst_p95_ratio: f64,
    pub worst_p95_case: String,
    /// The largest cost ratio, and its case.
    pub worst_cost_ratio: f64,
    pub worst_cost_case: String,
    /// sluice's task-seconds over the oracle's, summed over every case.
    pub total_cost_ratio: f64,
    /// Cases within each target, of how many.
    pub p95_met: usize,
    pub p95_cases: usize,
    pub cost_met: usize,
    pub cases: usize,
    /// Cases where a tuned anchor is both faster and cheaper.
    pub dominated: usize,
    /// Whether every target of every case is met.
    pub all_met: bool,
}

/// The trade-off between wait and cost as the keep-idle time moves: the
/// grid once per value, every other field of each case's policy unchanged.
#[derive(Debug, Clone, Serialize)]
pub struct Frontier {
    /// Seconds from a task's request until it takes jobs.
    pub startup_delay_seconds: f64,
    /// One per keep-idle time tried.
    pub points: Vec<FrontierPoint>,
}

/// Runs the grid at each of `keep_idle_startups`.
pub fn frontier(
    cases: &[Case],
    startup_delay_seconds: f64,
    phases: u32,
    keep_idle_startups: &[f64],
) -> Frontier {
    let points = keep_idle_startups
        .iter()
        .map(|&keep| {
            let at: Vec<Case> = cases
                .iter()
                .map(|c| Case {
                    policy: Policy {
                        keep_idle_startups: keep,
                        ..c.policy.clone()
                    },
                    ..c.clone()
                })
                .collect();
            let report = run(&at, startup_delay_seconds, phases, 0.0);
            let total = |k: ScalerKind| {
                report
                    .rows
                    .iter()
                    .filter_map(|r| r.get(k).map(|f| f.task_seconds))
                    .sum::<f64>()
            };
            let (p95, cost) = (report.worst_ratio(), report.worst_cost_ratio());
            FrontierPoint {
                keep_idle_startups: keep,
                worst_p95_ratio: p95.map_or(f64::NAN, |r| r.p95_ratio),
                worst_p95_case: p95.map_or_else(String::new, |r| r.case.clone()),
                worst_cost_ratio: cost.map_or(f64::NAN, |r| r.cost_ratio),
                worst_cost_case: cost.map_or_else(String::new, |r| r.case.clone()),
                total_cost_ratio: total(ScalerKind::Sluice)
                    / total(ScalerKind::Oracle).max(f64::MIN_POSITIVE),
                p95_met: report.targeted().filter(|r| r.meets_p95_target()).count(),
                p95_cases: report.targeted().count(),
                cost_met: report.rows.iter().filter(|r| r.meets_cost_target()).count(),
                cases: report.rows.len(),
                dominated: report.dominated_by_tuned().len(),
                all_met: report.all_targets_met(),
            }
        })
        .collect();
    Frontier {
        startup_delay_seconds,
        points,
    }
}

impl Frontier {
    /// Whether some keep-idle time meets every target.
    pub fn any_meets_all(&self) -> bool {
        self.points.iter().any(|p| p.all_met)
    }

    /// As pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| String::from("{}"))
    }
}

impl fmt::Display for Frontier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "frontier over keep_idle_startups, start-up delay {:.0} s (worst ratios to the oracle; \
             targets p95 ≤ {P95_TARGET_RATIO}×, task-seconds ≤ {COST_TARGET_RATIO}×)",
            self.startup_delay_seconds
        )?;
        writeln!(
            f,
            "{:>6} {:>9} {:>11} {:>10} {:>11} {:>9} {:>10}  worst p95 case / worst cost case",
            "keep", "p95 ×", "p95 met", "cost ×", "cost met", "total ×", "dominated"
        )?;
        for p in &self.points {
            writeln!(
                f,
                "{:>6} {:>9.2} {:>11} {:>10.2} {:>11} {:>9.2} {:>10}  {} / {}{}",
                p.keep_idle_startups,
                p.worst_p95_ratio,
                format!("{}/{}", p.p95_met, p.p95_cases),
                p.worst_cost_ratio,
                format!("{}/{}", p.cost_met, p.cases),
                p.total_cost_ratio,
                p.dominated,
                p.worst_p95_case,
                p.worst_cost_case,
                if p.all_met {
                    "  (every target met)"
                } else {
                    ""
                }
            )?;
        }
        Ok(())
    }
}

fn pair(f: Option<&Figures>) -> String {
    f.map_or_else(
        || "-".into(),
        |f| format!("{:.0}/{:.0}", f.p95_wait_seconds, f.task_seconds),
    )
}

impl fmt::Display for GridReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} cases, start-up delay {:.0} s, clocked scalers averaged over {} phases; \
             sluice's p95 wait (s) and task-seconds beside the oracle's, anchors as p95 wait (s) / task-seconds",
            self.rows.len(),
            self.startup_delay_seconds,
            self.phases
        )?;
        writeln!(
            f,
            "{:<48}{:>7}{:>9}{:>9}{:>6}{:>10}{:>10}{:>6}{:>6} | {:>17}{:>17} | {:>17}{:>17}{:>17} | verdict",
            "case",
            "jobs",
            "p95",
            "oracle",
            "×",
            "task-s",
            "oracle",
            "×",
            "first",
            "tf-tuned",
            "keda-tuned",
            "tf-default",
            "keda-default",
            "aws-sample",
        )?;
        for r in &self.rows {
            let sluice = r.get(ScalerKind::Sluice);
            let oracle = r.get(ScalerKind::Oracle);
            let verdict = if r.meets_targets() {
                "ok".to_string()
            } else {
                let mut why = Vec::new();
                if !r.meets_p95_target() {
                    why.push(format!("p95 {:.2}×", r.p95_ratio));
                }
                if !r.meets_cost_target() {
                    why.push(format!("cost {:.2}×", r.cost_ratio));
                }
                if r.first_request_seconds > FIRST_REQUEST_TARGET_SECONDS {
                    why.push(format!("first request {:.1} s", r.first_request_seconds));
                }
                for k in &r.tuned_dominating {
                    why.push(format!("{k} faster and cheaper"));
                }
                why.join(", ")
            };
            writeln!(
                f,
                "{:<48}{:>7}{:>9.1}{:>9.1}{:>6.2}{:>10.0}{:>10.0}{:>6.2}{:>6.1} | {:>17}{:>17} | {:>17}{:>17}{:>17} | {verdict}",
                r.case,
                r.jobs,
                sluice.map_or(f64::NAN, |s| s.p95_wait_seconds),
                oracle.map_or(f64::NAN, |s| s.p95_wait_seconds),
                r.p95_ratio,
                sluice.map_or(f64::NAN, |s| s.task_seconds),
                oracle.map_or(f64::NAN, |s| s.task_seconds),
                r.cost_ratio,
                r.first_request_seconds,
                pair(r.get(ScalerKind::TerraformModuleTuned)),
                pair(r.get(ScalerKind::KedaTuned)),
                pair(r.get(ScalerKind::TerraformModule)),
                pair(r.get(ScalerKind::Keda)),
                pair(r.get(ScalerKind::AwsSample)),
            )?;
        }
        let targeted: Vec<&Row> = self.targeted().collect();
        let within = targeted
            .iter()
            .filter(|r| r.p95_ratio <= P95_TARGET_RATIO)
            .count();
        writeln!(f, "summary")?;
        if let Some(w) = self.worst_ratio() {
            writeln!(
                f,
                "  p95 ≤ {P95_TARGET_RATIO}× the oracle on bursts, spikes and repeated bursts: {within} of {} (worst {:.2}×, {})",
                targeted.len(),
                w.p95_ratio,
                w.case
            )?;
        }
        if let Some(w) = self.worst_cost_ratio() {
            let cheap = self.rows.iter().filter(|r| r.meets_cost_target()).count();
            writeln!(
                f,
                "  task-seconds ≤ {COST_TARGET_RATIO}× the oracle's on every case: {cheap} of {} (worst {:.2}×, {})",
                self.rows.len(),
                w.cost_ratio,
                w.case
            )?;
        }
        if self.instance_linger_seconds > 0.0 {
            let ratio = |r: &Row, k: ScalerKind| {
                r.get(k).map_or(f64::NAN, |f| f.instance_seconds)
                    / r.get(ScalerKind::Oracle)
                        .map_or(f64::NAN, |f| f.instance_seconds.max(f64::MIN_POSITIVE))
            };
            let total = |field: fn(&Figures) -> f64, k: ScalerKind| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(k).map(field))
                    .sum::<f64>()
            };
            let worst = self.rows.iter().max_by(|a, b| {
                ratio(a, ScalerKind::Sluice).total_cmp(&ratio(b, ScalerKind::Sluice))
            });
            if let Some(w) = worst {
                writeln!(
                    f,
                    "  instances kept {:.0} s after their last task: sluice's instance-seconds {:.2}× its task-seconds \
                     (the oracle's {:.2}×); ≤ {COST_TARGET_RATIO}× the oracle's on {} of {} (worst {:.2}×, {})",
                    self.instance_linger_seconds,
                    total(|f| f.instance_seconds, ScalerKind::Sluice) / total(|f| f.task_seconds, ScalerKind::Sluice),
                    total(|f| f.instance_seconds, ScalerKind::Oracle) / total(|f| f.task_seconds, ScalerKind::Oracle),
                    self.rows
                        .iter()
                        .filter(|r| ratio(r, ScalerKind::Sluice) <= COST_TARGET_RATIO)
                        .count(),
                    self.rows.len(),
                    ratio(w, ScalerKind::Sluice),
                    w.case
                )?;
            }
        }
        if let Some(s) = self.slowest_first_request() {
            writeln!(
                f,
                "  first capacity request after the first job: at most {:.1} s (target {FIRST_REQUEST_TARGET_SECONDS} s), on {}",
                s.first_request_seconds, s.case
            )?;
        }
        let dominated = self.dominated_by_tuned();
        writeln!(
            f,
            "  cases where a tuned anchor has both a lower p95 and fewer task-seconds: {}{}",
            dominated.len(),
            if dominated.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    dominated
                        .iter()
                        .map(|r| r.case.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            }
        )?;
        let by_defaults = self
            .rows
            .iter()
            .filter(|r| !r.defaults_dominating.is_empty())
            .count();
        writeln!(
            f,
            "  cases where an anchor at its defaults does: {by_defaults}"
        )?;
        writeln!(
            f,
            "  every target met: {}",
            if self.all_targets_met() { "yes" } else { "no" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every trace in `scaling/traces/` (the CLI builds the same files in).
    fn shipped_traces() -> Vec<Trace> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scaling/traces");
        let mut traces: Vec<Trace> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "csv"))
            .map(|p| Trace {
                name: p.file_name().unwrap().to_string_lossy().into_owned(),
                csv: std::fs::read_to_string(&p).unwrap(),
            })
            .collect();
        traces.sort_by(|a, b| a.name.cmp(&b.name));
        assert!(!traces.is_empty());
        traces
    }

    /// Keeping spare tasks longer costs more and never waits longer on the
    /// short grid: the frontier moves the way the trade-off says.
    #[test]
    fn the_frontier_trades_cost_for_wait() {
        let base = Policy::builtin().unwrap();
        let cases = cases(GridSize::Short, &base, &shipped_traces(), 1).unwrap();
        let f = frontier(&cases, base.task_startup_seconds, 1, &[0.0, 1.0, 4.0]);
        let [none, one, four] = &f.points[..] else {
            panic!("three points")
        };
        assert!(none.total_cost_ratio < four.total_cost_ratio, "{f}");
        assert!(one.total_cost_ratio < four.total_cost_ratio, "{f}");
        assert!(four.worst_cost_ratio > COST_TARGET_RATIO, "{f}");
        assert!(one.all_met, "{f}");
        assert!(f.to_string().contains("every target met"));
    }

    #[test]
    fn grid_sizes_parse() {
        assert_eq!("short".parse::<GridSize>(), Ok(GridSize::Short));
        assert!("big"
            .parse::<GridSize>()
            .unwrap_err()
            .contains("short or full"));
    }

    #[test]
    fn full_grid_spans_the_issue_ranges() {
        let base = Policy::builtin().unwrap();
        let cases = cases(GridSize::Full, &base, &shipped_traces(), 1).unwrap();
        let caps: Vec<u32> = cases.iter().map(|c| c.policy.max_tasks).collect();
        assert_eq!(caps.iter().min(), Some(&5));
        assert_eq!(caps.iter().max(), Some(&200));
        let bursts: Vec<usize> = cases
            .iter()
            .filter(|c| c.kind == CaseKind::Burst)
            .map(|c| c.workload.jobs.len())
            .collect();
        assert_eq!(bursts.iter().min(), Some(&20));
        assert_eq!(bursts.iter().max(), Some(&3000));
        let durations: Vec<f64> = cases.iter().map(|c| c.policy.average_job_seconds).collect();
        assert!(durations.iter().any(|d| (*d - 1.0).abs() < 1e-9));
        assert!(durations.iter().any(|d| (*d - 600.0).abs() < 1e-9));
        for kind in [
            CaseKind::Burst,
            CaseKind::Spike,
            CaseKind::Diurnal,
            CaseKind::Trace,
        ] {
            assert!(cases.iter().any(|c| c.kind == kind), "{kind:?}");
        }
        for kind in [CaseKind::Ramp, CaseKind::Repeated] {
            assert!(cases.iter().any(|c| c.kind == kind), "{kind:?}");
        }
        assert!(cases.iter().any(|c| c.name.starts_with("heavy-tailed")));
        assert!(cases.iter().any(|c| c.policy.jobs_per_task == 8));
        // Every case's policy differs from the shipped one only in cap, duration and slots
        // per task, as a user deploying for the workload sets them.
        for c in &cases {
            let mut p = c.policy.clone();
            p.max_tasks = base.max_tasks;
            p.average_job_seconds = base.average_job_seconds;
            p.jobs_per_task = base.jobs_per_task;
            assert_eq!(p, base, "{}", c.name);
        }
    }
}
