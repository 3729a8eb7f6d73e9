//! The job store's conditional writes, with explicit clocks.

use std::time::Duration;

use sluice::job::{JobId, JobRecord, Owner, Status};
use sluice::store::{Finish, StoreError};
use sluice::time::Millis;

use crate::support::*;

#[tokio::test]
async fn a_stale_attempt_cannot_overwrite_a_newer_attempts_result() {
    let s = Stack::new("stale_attempt").await;
    let t0 = Millis::now();
    let job = JobRecord::queued(JobId::generate(), Owner::new("o"), t0, None, 3, 1);
    s.store.create(&job, s.retention, None).await.unwrap();
    let lease = Duration::from_secs(10);

    let first = s.store.claim(&job.id, "slow", t0, lease).await.unwrap();
    assert_eq!((first.status, first.attempt), (Status::Running, 1));
    // While the first lease holds, nobody else may claim.
    let early = s
        .store
        .claim(&job.id, "eager", t0.plus(Duration::from_secs(5)), lease)
        .await;
    assert!(
        matches!(early, Err(StoreError::Conflict { current: Some(_) })),
        "{early:?}"
    );

    // The first worker stalls past its lease; a second attempt takes over.
    let later = t0.plus(Duration::from_secs(11));
    let second = s.store.claim(&job.id, "fresh", later, lease).await.unwrap();
    assert_eq!(
        (second.attempt, second.worker_id.as_deref()),
        (2, Some("fresh"))
    );
    s.store
        .finish(
            &job.id,
            2,
            Finish::Succeeded {
                result: r#""fresh""#.into(),
            },
            later,
            s.retention,
        )
        .await
        .unwrap();

    // The stalled attempt wakes up: its heartbeat, result and requeue are all refused.
    let hb = s.store.heartbeat(&job.id, 1, later, lease, None).await;
    assert!(matches!(hb, Err(StoreError::Conflict { .. })), "{hb:?}");
    let stale = s
        .store
        .finish(
            &job.id,
            1,
            Finish::Succeeded {
                result: r#""stale""#.into(),
            },
            later,
            s.retention,
        )
        .await;
    match stale {
        Err(StoreError::Conflict { current: Some(cur) }) => {
            assert_eq!((cur.status, cur.attempt), (Status::Succeeded, 2))
        }
        other => panic!("the stale finish was not refused: {other:?}"),
    }
    assert!(matches!(
        s.store.requeue(&job.id, 1, Some("x".into())).await,
        Err(StoreError::Conflict { .. })
    ));

    let stored = s.store.get(&job.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.attempt, stored.result.as_deref()),
        (Status::Succeeded, 2, Some(r#""fresh""#))
    );
}

#[tokio::test]
async fn claims_respect_deadlines_and_cancels() {
    let s = Stack::new("claims").await;
    let t0 = Millis::now();
    let lease = Duration::from_secs(10);
    let late = JobRecord::queued(
        JobId::generate(),
        Owner::new("o"),
        t0,
        Some(t0.plus(Duration::from_secs(1))),
        3,
        1,
    );
    s.store.create(&late, s.retention, None).await.unwrap();
    let refused = s
        .store
        .claim(&late.id, "w", t0.plus(Duration::from_secs(2)), lease)
        .await;
    assert!(
        matches!(refused, Err(StoreError::Conflict { .. })),
        "a job past its deadline cannot start"
    );
    let expired = s
        .store
        .expire(&late.id, t0.plus(Duration::from_secs(2)), s.retention)
        .await
        .unwrap();
    assert_eq!(expired.status, Status::Expired);

    let job = JobRecord::queued(JobId::generate(), Owner::new("o"), t0, None, 3, 1);
    s.store.create(&job, s.retention, None).await.unwrap();
    s.store.claim(&job.id, "w", t0, lease).await.unwrap();
    let asked = s
        .store
        .cancel(&job.id, &Owner::new("o"), t0, s.retention)
        .await
        .unwrap();
    assert_eq!(
        (asked.status, asked.cancel_requested),
        (Status::Running, true)
    );
    // Its worker dies; the next claim must not run a job its owner cancelled.
    let after = t0.plus(Duration::from_secs(11));
    assert!(matches!(
        s.store.claim(&job.id, "w2", after, lease).await,
        Err(StoreError::Conflict { .. })
    ));
    let done = s
        .store
        .cancel_abandoned(&job.id, after, s.retention)
        .await
        .unwrap();
    assert_eq!(done.status, Status::Cancelled);
}

#[tokio::test]
async fn progress_rides_on_the_heartbeat_and_the_time_limit_on_the_record() {
    let s = Stack::new("progress_store").await;
    let t0 = Millis::now();
    let mut job = JobRecord::queued(
        JobId::generate(),
        Owner::new(format!("iam:{ALICE}")),
        t0,
        None,
        3,
        1,
    );
    job.timeout_seconds = Some(90);
    job.on_timeout = sluice::job::OnTimeout::Retry;
    s.store.create(&job, s.retention, None).await.unwrap();
    let lease = Duration::from_secs(10);
    let claimed = s.store.claim(&job.id, "w", t0, lease).await.unwrap();
    assert_eq!(
        (claimed.timeout_seconds, claimed.on_timeout),
        (Some(90), sluice::job::OnTimeout::Retry),
        "the worker learns the time limit from its claim"
    );

    let half = sluice::job::Progress::new(Some(0.5), Some("halfway"));
    let beat = s
        .store
        .heartbeat(
            &job.id,
            1,
            t0.plus(Duration::from_secs(1)),
            lease,
            Some(&half),
        )
        .await
        .unwrap();
    assert_eq!(beat.progress.as_ref(), Some(&half));
    // A heartbeat with nothing new keeps the last report.
    s.store
        .heartbeat(&job.id, 1, t0.plus(Duration::from_secs(2)), lease, None)
        .await
        .unwrap();
    let message_only = sluice::job::Progress::new(None, Some("writing"));
    s.store
        .heartbeat(
            &job.id,
            1,
            t0.plus(Duration::from_secs(3)),
            lease,
            Some(&message_only),
        )
        .await
        .unwrap();
    let stored = s.store.get(&job.id).await.unwrap().unwrap();
    assert_eq!(
        stored.progress,
        Some(message_only),
        "a new report replaces the old one whole"
    );

    // The API shows it.
    let (status, v) = s.call(get(ALICE, &format!("/jobs/{}", job.id), None)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["progress"]["message"], "writing");
    assert_eq!(v["timeout_seconds"], 90);
    assert_eq!(v["on_timeout"], "retry");

    // A retry starts without the earlier attempt's progress.
    s.store
        .requeue(&job.id, 1, Some("flaky".into()))
        .await
        .unwrap();
    let again = s
        .store
        .claim(&job.id, "w", t0.plus(Duration::from_secs(4)), lease)
        .await
        .unwrap();
    assert_eq!((again.attempt, again.progress), (2, None));
}

#[tokio::test]
async fn a_cancel_asked_while_a_job_ran_survives_its_retry_and_its_release() {
    let s = Stack::new("cancel_across_retry").await;
    let owner = Owner::new(format!("iam:{ALICE}"));
    let lease = Duration::from_secs(10);
    for retry_error in [Some("flaky".to_owned()), None] {
        let t0 = Millis::now();
        let job = JobRecord::queued(JobId::generate(), owner.clone(), t0, None, 3, 1);
        s.store.create(&job, s.retention, None).await.unwrap();
        s.store.claim(&job.id, "w1", t0, lease).await.unwrap();
        let asked = s
            .store
            .cancel(&job.id, &owner, t0, s.retention)
            .await
            .unwrap();
        assert!(asked.cancel_requested && asked.status == Status::Running);
        // The attempt ends before its heartbeat sees the cancel: a retryable failure, or a
        // release on shutdown.
        s.store
            .requeue(&job.id, 1, retry_error.clone())
            .await
            .unwrap();

        let later = t0.plus(Duration::from_secs(1));
        let refused = s.store.claim(&job.id, "w2", later, lease).await;
        let current = match refused {
            Err(StoreError::Conflict { current: Some(cur) }) => cur,
            other => panic!("{retry_error:?}: the cancelled job was claimed again: {other:?}"),
        };
        assert_eq!(
            sluice::job::on_claim_refused(Some(&current), later, Duration::from_secs(1)),
            sluice::job::ClaimRefusal::Cancel
        );
        let ended = s
            .store
            .cancel_abandoned(&job.id, later, s.retention)
            .await
            .unwrap();
        assert_eq!(ended.status, Status::Cancelled, "{retry_error:?}");
    }
}

#[tokio::test]
async fn a_deadline_stops_a_job_from_starting_not_from_being_retried() {
    let s = Stack::new("deadline_retry").await;
    let t0 = Millis::now();
    let deadline = t0.plus(Duration::from_secs(5));
    let job = JobRecord::queued(JobId::generate(), Owner::new("o"), t0, Some(deadline), 3, 1);
    s.store.create(&job, s.retention, None).await.unwrap();
    let lease = Duration::from_secs(10);
    s.store.claim(&job.id, "w1", t0, lease).await.unwrap();
    s.store
        .requeue(&job.id, 1, Some("flaky".into()))
        .await
        .unwrap();
    // The retry comes after the deadline: it runs.
    let after = t0.plus(Duration::from_secs(30));
    let second = s.store.claim(&job.id, "w2", after, lease).await.unwrap();
    assert_eq!((second.status, second.attempt), (Status::Running, 2));
    // And a job that never started still expires.
    let never = JobRecord::queued(JobId::generate(), Owner::new("o"), t0, Some(deadline), 3, 1);
    s.store.create(&never, s.retention, None).await.unwrap();
    assert!(matches!(
        s.store.claim(&never.id, "w1", after, lease).await,
        Err(StoreError::Conflict { .. })
    ));
    let expired = s.store.expire(&never.id, after, s.retention).await.unwrap();
    assert_eq!(expired.status, Status::Expired);
}

/// The record's DynamoDB TTL, in epoch seconds, read as it is stored.
async fn ttl_of(s: &Stack, id: &JobId) -> i64 {
    let out = aws_sdk_dynamodb::Client::new(&s.aws)
        .get_item()
        .table_name(&s.res.table_name)
        .key(
            "id",
            aws_sdk_dynamodb::types::AttributeValue::S(id.to_string()),
        )
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    out.item().unwrap()["expires_at"]
        .as_n()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_record_outlives_its_job_and_is_kept_for_the_retention_after_it_ends() {
    let s = Stack::new("ttl").await;
    let retention = Duration::from_secs(86_400);
    let day = 86_400i64;
    let queue_keeps = sluice::limits::MESSAGE_RETENTION.as_secs() as i64;
    let t0 = Millis::now();
    let job = JobRecord::queued(JobId::generate(), Owner::new("o"), t0, None, 3, 1);
    s.store.create(&job, retention, None).await.unwrap();
    // Queued: kept while its message may still be delivered, then the retention.
    assert!(
        ttl_of(&s, &job.id).await >= t0.as_epoch_seconds() + queue_keeps + day,
        "a queued record must not expire before its message"
    );
    // Claimed ten days later (a long queue): counted again from the claim.
    let later = t0.plus(Duration::from_secs(10 * 86_400));
    s.store
        .claim(&job.id, "w", later, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(ttl_of(&s, &job.id).await >= later.as_epoch_seconds() + queue_keeps + day);
    // Ended: the retention counts from the end.
    let end = later.plus(Duration::from_secs(3_600));
    s.store
        .finish(
            &job.id,
            1,
            Finish::Succeeded { result: "1".into() },
            end,
            retention,
        )
        .await
        .unwrap();
    assert_eq!(ttl_of(&s, &job.id).await, end.as_epoch_seconds() + day);
}

/// An announcement retried for longer than the retention (a day's retention, a webhook schedule
/// of more than a day) keeps its record until its next attempt and a retention after: the
/// record, which is the outbox, is never deleted under a pending delivery.
#[tokio::test]
async fn a_pending_announcement_keeps_its_record_past_the_retention() {
    let s = Stack::new("ttl-webhook").await;
    let retention = Duration::from_secs(86_400);
    let store = s.store.clone().with_retention(retention);
    let t0 = Millis::now();
    let mut job = JobRecord::queued(JobId::generate(), Owner::new("o"), t0, None, 3, 1);
    job.webhook = Some("https://example.com/hooks".into());
    store.create(&job, retention, None).await.unwrap();
    store
        .claim(&job.id, "w", t0, Duration::from_secs(60))
        .await
        .unwrap();
    let end = t0.plus(Duration::from_secs(60));
    let ended = store
        .finish(
            &job.id,
            1,
            Finish::Succeeded { result: "1".into() },
            end,
            retention,
        )
        .await
        .unwrap();
    let due = ended.delivery.due_at.expect("an announcement is due");
    // The schedule's last retry comes more than a day after the end.
    let lease = end.plus(Duration::from_secs(60));
    store.take_delivery(&job.id, due, lease, end).await.unwrap();
    let next_at = end.plus(Duration::from_secs(27 * 3600));
    store
        .record_delivery(
            &job.id,
            lease,
            &sluice::store::DeliveryEnd::Retry {
                status: Some(503),
                error: "busy".into(),
                next_at,
            },
            end,
        )
        .await
        .unwrap();
    assert!(
        ttl_of(&s, &job.id).await >= next_at.as_epoch_seconds() + 86_400,
        "the record outlives the pending attempt by the retention"
    );
}

/// A claim and a cancel racing for one queued job: exactly one wins, as DynamoDB's conditional
/// writes guarantee. The emulator runs with a tiny thread switch interval, so that its request
/// threads interleave as often as they can; a plain moto server lets both writes pass their
/// conditions then (a cancelled job ran in the chaos run that way).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_claims_and_a_cancel_have_one_winner() {
    let emulator = Emulator::start(&[("SLUICE_EMULATOR_SWITCH_INTERVAL", "0.000001")]);
    let s = Stack::with_sdk("racing_claims", emulator.sdk().await).await;
    let owner = Owner::new("o");
    let lease = Duration::from_secs(30);
    let mut doubled = Vec::new();
    for round in 0..40 {
        let t0 = Millis::now();
        let job = JobRecord::queued(JobId::generate(), owner.clone(), t0, None, 3, 1);
        s.store.create(&job, s.retention, None).await.unwrap();
        let mut racers = tokio::task::JoinSet::new();
        for w in 0..3 {
            let (store, id) = (s.store.clone(), job.id.clone());
            racers.spawn(async move {
                let claimed = store.claim(&id, &format!("w{w}"), t0, lease).await;
                ("claim", claimed.map(|r| r.status))
            });
        }
        let (store, id, owner, retention) =
            (s.store.clone(), job.id.clone(), owner.clone(), s.retention);
        racers.spawn(async move {
            let asked = store.cancel(&id, &owner, t0, retention).await;
            ("cancel", asked.map(|r| r.status))
        });
        let mut winners = Vec::new();
        while let Some(done) = racers.join_next().await {
            match done.unwrap() {
                // A cancel that found the job running only asks it to stop: not a winner.
                ("cancel", Ok(Status::Running)) => {}
                (racer, Ok(status)) => winners.push((racer, status)),
                (_, Err(StoreError::Conflict { .. })) => {}
                (racer, Err(e)) => panic!("round {round}: the {racer} failed: {e}"),
            }
        }
        if winners.len() != 1 {
            doubled.push((round, winners));
        }
    }
    assert!(
        doubled.is_empty(),
        "rounds without exactly one winner: {doubled:?}"
    );
}

/// A job whose message left the queue (its retention passed in a long outage, or its worker was
/// lost after it expired) can never run: the sweeper finds it through the open-jobs index and
/// ends it with the reason; jobs that still run, or whose message was sent again lately, stay.
#[tokio::test]
async fn the_sweeper_ends_open_jobs_whose_message_left_the_queue() {
    use sluice::sweep::{Sweeper, MARGIN};
    let s = Stack::new("sweeper").await;
    let retention = Duration::from_secs(14 * 86_400);
    let now = Millis::now();
    // The sweep runs 15 days from now, as if the jobs had waited that long.
    let later = now.plus(retention + MARGIN + Duration::from_secs(3600));
    let s = &s;
    let submitted = |deadline: Option<Millis>| async move {
        let id = JobId::generate();
        let job = JobRecord::queued(
            id.clone(),
            Owner::new(format!("iam:{ALICE}")),
            now,
            deadline,
            3,
            2,
        );
        s.store.create(&job, s.retention, None).await.unwrap();
        id
    };
    let queued = submitted(None).await;
    let past_deadline = submitted(Some(now.plus(Duration::from_secs(60)))).await;
    // Its worker was lost after a cancel was asked.
    let cancel_asked = submitted(None).await;
    s.store
        .claim(&cancel_asked, "lost", now, Duration::from_secs(60))
        .await
        .unwrap();
    s.store
        .cancel(
            &cancel_asked,
            &Owner::new(format!("iam:{ALICE}")),
            now,
            s.retention,
        )
        .await
        .unwrap();
    let lost = submitted(None).await;
    s.store
        .claim(&lost, "lost", now, Duration::from_secs(60))
        .await
        .unwrap();
    // Still running on a lease that outlives the sweep: its worker ends it.
    let running = submitted(None).await;
    s.store
        .claim(&running, "alive", now, retention * 2)
        .await
        .unwrap();
    // Sent again (fresh) by a worker a day before the sweep: its message still lives.
    let resent = submitted(None).await;
    s.store
        .mark_sent(&resent, Millis(later.0 - 86_400_000))
        .await
        .unwrap();
    // Ended: not in the index at all.
    let done = submitted(None).await;
    let claimed = s
        .store
        .claim(&done, "w", now, Duration::from_secs(60))
        .await
        .unwrap();
    s.store
        .finish(
            &done,
            claimed.attempt,
            Finish::Succeeded { result: "1".into() },
            now,
            s.retention,
        )
        .await
        .unwrap();

    let sweeper = Sweeper {
        store: s.store.clone(),
        queues: vec![s.queue.clone()],
        budget: Duration::from_secs(30),
    };
    let swept = sweeper.sweep_with(later, retention).await.unwrap();
    assert!(swept.complete);
    assert_eq!(swept.looked_at, 5, "{swept:?}");
    let status = |id: &JobId| {
        let id = id.clone();
        let store = s.store.clone();
        async move { store.get(&id).await.unwrap().unwrap() }
    };
    let cases = [
        (&queued, Status::Failed),
        (&past_deadline, Status::Expired),
        (&cancel_asked, Status::Cancelled),
        (&lost, Status::Failed),
        (&running, Status::Running),
        (&resent, Status::Queued),
        (&done, Status::Succeeded),
    ];
    for (id, want) in cases {
        assert_eq!(status(id).await.status, want, "{id}");
    }
    let failed = status(&queued).await;
    assert!(
        failed
            .error
            .as_deref()
            .unwrap_or("")
            .contains("message left the queue"),
        "{failed:?}"
    );
    // The caller sees why.
    let (code, v) = s.call(get(ALICE, &format!("/jobs/{queued}"), None)).await;
    assert_eq!((code, v["status"].as_str()), (200, Some("FAILED")), "{v}");
    // What ended left the index: the next sweep looks at the running job only.
    let again = sweeper.sweep_with(later, retention).await.unwrap();
    assert_eq!((again.looked_at, again.ended.len()), (1, 0), "{again:?}");
    // The queue's own retention is what a sweep uses when not told.
    assert_eq!(sweeper.message_retention().await.unwrap(), retention);
}

/// Terminal means terminal: no write moves a job out of an ended status, except an operator's
/// redrive of a job the dead-letter reconciler ended FAILED, which the record counts.
#[tokio::test]
async fn no_write_leaves_a_terminal_status_but_a_recorded_redrive() {
    let s = Stack::new("terminal").await;
    let owner = Owner::new(format!("iam:{ALICE}"));
    let now = Millis::now();
    let ended = |status: Status| {
        let (s, owner) = (&s, owner.clone());
        async move {
            let id = JobId::generate();
            let job = JobRecord::queued(
                id.clone(),
                owner.clone(),
                now,
                Some(now.plus(Duration::from_secs(1))),
                3,
                2,
            );
            s.store.create(&job, s.retention, None).await.unwrap();
            match status {
                Status::Cancelled => {
                    s.store.cancel(&id, &owner, now, s.retention).await.unwrap();
                }
                Status::Expired => {
                    s.store
                        .expire(&id, now.plus(Duration::from_secs(2)), s.retention)
                        .await
                        .unwrap();
                }
                _ => {
                    let c = s
                        .store
                        .claim(&id, "w", now, Duration::from_secs(60))
                        .await
                        .unwrap();
                    let end = match status {
                        Status::Succeeded => Finish::Succeeded { result: "1".into() },
                        _ => Finish::Failed { error: "no".into() },
                    };
                    s.store
                        .finish(&id, c.attempt, end, now, s.retention)
                        .await
                        .unwrap();
                }
            }
            id
        }
    };
    let far = now.plus(Duration::from_secs(86_400 * 30));
    for status in [
        Status::Succeeded,
        Status::Failed,
        Status::Cancelled,
        Status::Expired,
    ] {
        let id = ended(status).await;
        let before = s.store.get(&id).await.unwrap().unwrap();
        assert_eq!(before.status, status);
        let a = before.attempt;
        let refusals = [
            (
                "claim",
                s.store
                    .claim(&id, "w2", far, Duration::from_secs(60))
                    .await
                    .map(|_| ()),
            ),
            (
                "heartbeat",
                s.store
                    .heartbeat(&id, a, far, Duration::from_secs(60), None)
                    .await
                    .map(|_| ()),
            ),
            (
                "requeue",
                s.store
                    .requeue(&id, a, Some("again".into()))
                    .await
                    .map(|_| ()),
            ),
            (
                "finish",
                s.store
                    .finish(
                        &id,
                        a,
                        Finish::Succeeded { result: "2".into() },
                        far,
                        s.retention,
                    )
                    .await
                    .map(|_| ()),
            ),
            (
                "expire",
                s.store.expire(&id, far, s.retention).await.map(|_| ()),
            ),
            (
                "cancel",
                s.store
                    .cancel(&id, &owner, far, s.retention)
                    .await
                    .map(|_| ()),
            ),
            (
                "cancel_abandoned",
                s.store
                    .cancel_abandoned(&id, far, s.retention)
                    .await
                    .map(|_| ()),
            ),
            (
                "fail_dead_lettered",
                s.store
                    .fail_dead_lettered(&id, 9, far, s.retention)
                    .await
                    .map(|_| ()),
            ),
            (
                "revive",
                s.store.revive_dead_lettered(&id, a, far).await.map(|_| ()),
            ),
        ];
        for (write, got) in refusals {
            assert!(
                matches!(got, Err(StoreError::Conflict { .. })),
                "{status}: {write} was not refused: {got:?}"
            );
        }
        assert_eq!(s.store.get(&id).await.unwrap().unwrap(), before, "{status}");
    }
    // The one way out: a job the reconciler ended FAILED, redriven by an operator.
    let lost = JobId::generate();
    let job = JobRecord::queued(lost.clone(), owner.clone(), now, None, 3, 2);
    s.store.create(&job, s.retention, None).await.unwrap();
    let failed = s
        .store
        .fail_dead_lettered(&lost, 5, now, s.retention)
        .await
        .unwrap();
    let revived = s
        .store
        .revive_dead_lettered(&lost, failed.attempt, now)
        .await
        .unwrap();
    assert_eq!((revived.status, revived.redrives), (Status::Queued, 1));
    // Back in the open-jobs index, its message counted from the redrive.
    let (open, _) = s
        .store
        .open_sent_before(
            &sluice::store::open_shard(&lost),
            now.plus(Duration::from_millis(1)),
            100,
            None,
        )
        .await
        .unwrap();
    assert!(open.contains(&(lost.clone(), now)), "{open:?}");
}

/// A heartbeat's write that reaches the table late (held on the way past the next beat) must not
/// shorten the lease a later beat already set: another worker would take the job over while its
/// holder still runs it.
#[tokio::test]
async fn a_late_heartbeat_never_shortens_the_lease() {
    let s = Stack::new("late_beat").await;
    let t0 = Millis::now();
    let id = JobId::generate();
    let job = JobRecord::queued(
        id.clone(),
        Owner::new(format!("iam:{ALICE}")),
        t0,
        None,
        3,
        1,
    );
    s.store.create(&job, s.retention, None).await.unwrap();
    let lease = Duration::from_secs(3);
    let claimed = s.store.claim(&id, "holder", t0, lease).await.unwrap();
    let at = |secs: u64| t0.plus(Duration::from_secs(secs));
    // The beat sent at 2 s applies first; the one sent at 1 s arrives after it.
    s.store
        .heartbeat(&id, claimed.attempt, at(2), lease, None)
        .await
        .unwrap();
    let late = s
        .store
        .heartbeat(&id, claimed.attempt, at(1), lease, None)
        .await
        .expect("a late beat is no loss of the job");
    assert_eq!(late.attempt, claimed.attempt);
    let record = s.store.get(&id).await.unwrap().unwrap();
    assert_eq!(record.lease_expires_at, Some(at(5)), "{record:?}");
    // At 4.5 s the lease the holder renewed still stands.
    let rival = s
        .store
        .claim(&id, "rival", t0.plus(Duration::from_millis(4_500)), lease)
        .await;
    assert!(
        matches!(rival, Err(StoreError::Conflict { .. })),
        "{rival:?}"
    );
}

/// A claim applied by its first try, whose answer was lost and whose retries all failed, is
/// still this worker's: the attempt it counted is run, not lost as if its worker had vanished.
#[tokio::test]
async fn a_claim_applied_whose_every_retry_failed_is_still_ours() {
    use crate::faults::{Fault, Faults};
    let s = Stack::new("claim_retries_failed").await;
    let now = Millis::now();
    let id = JobId::generate();
    let job = JobRecord::queued(
        id.clone(),
        Owner::new(format!("iam:{ALICE}")),
        now,
        None,
        1,
        1,
    );
    s.store.create(&job, s.retention, None).await.unwrap();
    let faults = Faults::default();
    faults.fail("UpdateItem", None, Fault::AppliedThen500, 1);
    faults.fail("UpdateItem", None, Fault::Refused, 20);
    let store = faults.store(&s.aws, &s.res.table_name);
    let claimed = store
        .claim(&id, "w1", now, Duration::from_secs(60))
        .await
        .expect("the applied claim is recognised");
    assert_eq!((claimed.status, claimed.attempt), (Status::Running, 1));
    assert_eq!(s.store.get(&id).await.unwrap().unwrap().attempt, 1);
}
