//! Backlog-driven scaling: the policy file, the pure decisions (the backlog
//! Lambda's raise to the needed capacity, the scale-in and idle alarms), the
//! submit-time nudge from zero, and the simulator behind `sluice simulate`.
//! Everything here is pure: no I/O, no clock, no AWS. See `scaling/README.md`
//! for the model and its sources.

pub mod decide;
pub mod policy;
pub mod sim;

pub use decide::{
    backlog_per_task, evaluate_alarms, needed_tasks, percent_adjustment, scale_out_to,
    should_nudge_from_zero, tasks_for_backlog, Action, AlarmState, Decision, Metrics, Minute,
    MissingData, Sample, ScalingState,
};
pub use policy::{Policy, PolicyError, ScaleIn, BUILTIN_POLICY_JSON};
pub use sim::{simulate, Report, ScalerKind, SimOptions, Workload, WorkloadError};
