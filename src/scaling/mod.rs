//! Backlog-driven scaling: the policy file, the pure decisions the CloudWatch
//! alarms and step policies make, the submit-time nudge from zero, and the
//! simulator behind `sluice simulate`. Everything here is pure: no I/O, no
//! clock, no AWS. See `scaling/README.md` for the model and its sources.

pub mod decide;
pub mod policy;
pub mod sim;

pub use decide::{
    backlog_per_task, desired_tasks, percent_adjustment, should_nudge_from_zero, tasks_for_backlog,
    Action, Decision, Metrics, Observation, Sample, ScalingState,
};
pub use policy::{Policy, PolicyError, ScaleIn, ScaleOutStep, BUILTIN_POLICY_JSON};
pub use sim::{simulate, Report, ScalerKind, SimOptions, Workload, WorkloadError};
