//! Backlog-driven scaling: the policy file, the one controller of the desired
//! count ([`decide`]), the submit-time nudge from zero, a model of CloudWatch
//! alarms, and the simulator behind `sluice simulate`. Everything here is
//! pure: no I/O, no clock, no AWS. See `scaling/README.md` for the model and
//! its sources.

pub mod alarm;
pub mod decide;
pub mod policy;
pub mod sim;

pub use decide::{
    backlog_per_task, decide, decide_paused, needed_tasks, replay, replay_with_pauses,
    should_nudge_from_zero, tasks_for_backlog, Action, Decision, Memory, Metrics, Reason, Sample,
};
pub use policy::{Policy, PolicyError, BUILTIN_POLICY_JSON};
pub use sim::{simulate, Report, ScalerKind, SimOptions, Workload, WorkloadError};
