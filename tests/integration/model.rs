//! A model-based property test of the job state machine as the store enforces it: workers
//! claiming, beating, finishing and handing back one job, its caller cancelling, leases running
//! out and the deadline passing, in any order, against the real store on the emulator. Never two
//! winners, never a terminal status that changes, never a job nobody can end.

use std::time::Duration;

use proptest::prelude::*;
use sluice::job::{JobId, JobRecord, Owner, Status};
use sluice::store::{Finish, JobStore, StoreError};
use sluice::time::Millis;

use crate::support::*;

const LEASE: Duration = Duration::from_secs(10);
const WORKERS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    /// Worker w claims the job.
    Claim(usize),
    /// Worker w renews the attempt it holds.
    Beat(usize),
    /// Worker w ends its attempt: 0 succeeded, 1 failed, 2 cancelled.
    Finish(usize, u8),
    /// Worker w hands its attempt back: a retry, or a release.
    Requeue(usize, bool),
    /// The caller cancels.
    Cancel,
    /// Someone records the expiry.
    Expire,
    /// A worker records the cancel of a job whose attempt ended without honouring it.
    CancelAbandoned,
    /// The reconciler ends the job for its dead-lettered message.
    DeadLetter,
    /// Time passes, in seconds.
    Wait(u8),
}

fn op() -> impl Strategy<Value = Op> {
    let w = 0..WORKERS;
    prop_oneof![
        3 => w.clone().prop_map(Op::Claim),
        2 => w.clone().prop_map(Op::Beat),
        2 => (w.clone(), 0u8..3).prop_map(|(w, k)| Op::Finish(w, k)),
        1 => (w, any::<bool>()).prop_map(|(w, r)| Op::Requeue(w, r)),
        1 => Just(Op::Cancel),
        1 => Just(Op::Expire),
        1 => Just(Op::CancelAbandoned),
        1 => Just(Op::DeadLetter),
        2 => (1u8..15).prop_map(Op::Wait),
    ]
}

/// Runs `ops` on a fresh job; panics (failing the case) when an invariant breaks.
async fn check(store: &JobStore, owner: &Owner, ops: &[Op], with_deadline: bool) {
    let t0 = Millis::now();
    let mut now = t0;
    let deadline = with_deadline.then(|| t0.plus(Duration::from_secs(20)));
    let job = JobRecord::queued(JobId::generate(), owner.clone(), t0, deadline, 3, 1);
    let id = job.id.clone();
    store
        .create(&job, Duration::from_secs(3600), None)
        .await
        .unwrap();
    let retention = Duration::from_secs(3600);
    // The attempt each worker believes it holds.
    let mut held: [Option<u32>; WORKERS] = [None; WORKERS];
    let mut winners = 0;
    let mut ended: Option<Status> = None;
    let mut cancel_asked = false;
    for op in ops {
        let result: Result<JobRecord, StoreError> = match op {
            Op::Claim(w) => {
                let r = store.claim(&id, &format!("w{w}"), now, LEASE).await;
                if let Ok(j) = &r {
                    held[*w] = Some(j.attempt);
                }
                r
            }
            Op::Beat(w) => match held[*w] {
                Some(a) => store.heartbeat(&id, a, now, LEASE, None).await,
                None => continue,
            },
            Op::Finish(w, kind) => match held[*w].take() {
                Some(a) => {
                    let end = match kind {
                        0 => Finish::Succeeded { result: "1".into() },
                        1 => Finish::Failed { error: "e".into() },
                        _ => Finish::Cancelled,
                    };
                    let r = store.finish(&id, a, end, now, retention).await;
                    if r.is_ok() {
                        winners += 1;
                    }
                    r
                }
                None => continue,
            },
            Op::Requeue(w, retry) => match held[*w].take() {
                Some(a) => store.requeue(&id, a, retry.then(|| "retry".into())).await,
                None => continue,
            },
            Op::Cancel => store.cancel(&id, owner, now, retention).await,
            Op::Expire => store.expire(&id, now, retention).await,
            Op::CancelAbandoned => store.cancel_abandoned(&id, now, retention).await,
            Op::DeadLetter => store.fail_dead_lettered(&id, 12, now, retention).await,
            Op::Wait(s) => {
                now = now.plus(Duration::from_secs(u64::from(*s)));
                continue;
            }
        };
        if let (Op::Claim(_), Ok(j)) = (op, &result) {
            assert!(
                !cancel_asked,
                "a job its caller cancelled started again: {j:?} after {ops:?}"
            );
        }
        if let (Op::Cancel, Ok(_)) = (op, &result) {
            cancel_asked = true;
        }
        if let (Op::Expire, Ok(j)) = (op, &result) {
            assert_eq!(
                j.attempt, 0,
                "a job that had started was expired after {ops:?}"
            );
        }
        let record = store.get(&id).await.unwrap().unwrap();
        if let Some(done) = ended {
            assert_eq!(
                record.status, done,
                "a terminal status changed after {op:?}: {record:?}"
            );
        }
        if record.status.is_terminal() {
            ended = Some(record.status);
        }
        assert!(winners <= 1, "two attempts finished the job: {ops:?}");
        if let (Op::Finish(..), Ok(_)) = (op, &result) {
            assert!(record.status.is_terminal());
        }
        if record.status == Status::Running {
            assert!(record.attempt >= 1);
        }
    }
    // Never lost: once every lease has run out, someone can end the job.
    let later = now.plus(LEASE + Duration::from_secs(1));
    let record = store.get(&id).await.unwrap().unwrap();
    if record.status.is_terminal() {
        return;
    }
    let ends = match store.claim(&id, "rescuer", later, LEASE).await {
        Ok(_) if cancel_asked => {
            panic!("a job its caller cancelled could start again after {ops:?}")
        }
        Ok(j) => store
            .finish(
                &id,
                j.attempt,
                Finish::Succeeded { result: "2".into() },
                later,
                retention,
            )
            .await
            .is_ok(),
        Err(StoreError::Conflict { current: Some(cur) }) => {
            match sluice::job::on_claim_refused(Some(&cur), later, Duration::from_secs(1)) {
                sluice::job::ClaimRefusal::Cancel => {
                    store.cancel_abandoned(&id, later, retention).await.is_ok()
                }
                sluice::job::ClaimRefusal::Expire => {
                    store.expire(&id, later, retention).await.is_ok()
                }
                other => panic!("the job cannot be ended: {other:?} for {cur:?} after {ops:?}"),
            }
        }
        Err(e) => panic!("{e}"),
    };
    assert!(ends, "the job could not be ended after {ops:?}: {record:?}");
}

#[test]
fn no_order_of_events_gives_two_winners_or_a_lost_job() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (store, owner) = rt.block_on(async {
        let s = Stack::new("model").await;
        (s.store.clone(), Owner::new("iam:model"))
    });
    let config = ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in prop::collection::vec(op(), 1..16), with_deadline in any::<bool>())| {
        rt.block_on(check(&store, &owner, &ops, with_deadline));
    });
}

/// Cases the property once found, kept: a heartbeat and a second claim by the same worker in the
/// same millisecond must not pass the claim for the first one's own lost answer.
#[tokio::test]
async fn found_cases_stay_fixed() {
    let s = Stack::new("model_found").await;
    let owner = Owner::new("iam:model");
    use Op::*;
    let cases: &[(&[Op], bool)] = &[(
        &[
            Claim(1),
            Wait(4),
            Expire,
            CancelAbandoned,
            Beat(2),
            Cancel,
            Wait(5),
            Beat(1),
            Beat(0),
            Claim(1),
            Cancel,
            Beat(1),
            Cancel,
        ],
        true,
    )];
    for (ops, with_deadline) in cases {
        check(&s.store, &owner, ops, *with_deadline).await;
    }
}
