//! Scaling against the emulator: the backlog metrics, the scale-from-zero nudge, and task
//! scale-in protection through a stand-in of the ECS agent's endpoint.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
use serde_json::json;
use sluice::api::Api;
use sluice::aws::RequestCounter;
use sluice::backlog::Sampler;
use sluice::cloudwatch::{Dimensions, Publisher};
use sluice::ecs::Service;
use sluice::job::Status;
use sluice::nudge::{lease_key, ScaleFromZero, LEASE_TTL, SETTLE};
use sluice::scaling::{Action, Memory, Policy};
use sluice::time::Millis;

use crate::support::*;

/// An ECS cluster and a service with no tasks, as `cdk deploy` leaves them.
async fn worker_service(s: &Stack, counter: Option<&RequestCounter>) -> Service {
    let ecs = aws_sdk_ecs::Client::new(&s.aws);
    ecs.create_cluster()
        .cluster_name(&s.name)
        .send()
        .await
        .unwrap();
    let container = aws_sdk_ecs::types::ContainerDefinition::builder()
        .name("worker")
        .image("sluice-worker")
        .memory(512)
        .build();
    ecs.register_task_definition()
        .family(&s.name)
        .container_definitions(container)
        .send()
        .await
        .unwrap();
    ecs.create_service()
        .cluster(&s.name)
        .service_name("workers")
        .task_definition(&s.name)
        .desired_count(0)
        .send()
        .await
        .unwrap();
    let mut conf = aws_sdk_ecs::config::Builder::from(&s.aws);
    if let Some(c) = counter {
        conf = conf.interceptor(c.clone());
    }
    Service::new(
        aws_sdk_ecs::Client::from_conf(conf.build()),
        &s.name,
        "workers",
    )
}

#[tokio::test]
async fn the_backlog_metrics_can_be_read_back() {
    let s = Stack::new("backlog_metrics").await;
    let service = worker_service(&s, None).await;
    for i in 0..7 {
        s.submit(ALICE, json!({ "n": i })).await;
    }
    service.set_desired(2).await.unwrap();
    let namespace = format!("Sluice-{}", s.name);
    let sampler = Sampler {
        queue: s.queue.clone(),
        service: service.clone(),
        publisher: Publisher::from_sdk(&s.aws, &namespace),
        dims: Dimensions {
            queue_name: s.queue.name().to_owned(),
            service_name: "workers".into(),
        },
        policy: Policy::builtin().unwrap(),
        lease: Some(s.store.clone()),
        memory: Default::default(),
        pipeline: None,
    };
    let start = Millis::now();
    let m = sampler.sample().await.unwrap();
    assert_eq!((m.backlog, m.running_tasks, m.desired_tasks), (7, 2, 2));
    assert_eq!(m.backlog_per_task, 3.5);
    // 7 jobs at 2 a task within the latency: 4 tasks, raised in the same sample.
    assert_eq!(m.needed_tasks, 4);
    assert_eq!(service.counts().await.unwrap().desired, 4);

    let cw = aws_sdk_cloudwatch::Client::new(&s.aws);
    let query = |id: &str, name: &str| {
        let metric = Metric::builder()
            .namespace(&namespace)
            .metric_name(name)
            .dimensions(
                Dimension::builder()
                    .name("QueueName")
                    .value(s.queue.name())
                    .build(),
            )
            .dimensions(
                Dimension::builder()
                    .name("ServiceName")
                    .value("workers")
                    .build(),
            )
            .build();
        MetricDataQuery::builder()
            .id(id)
            .metric_stat(
                MetricStat::builder()
                    .metric(metric)
                    .period(1)
                    .stat("Maximum")
                    .build(),
            )
            .build()
    };
    let out = cw
        .get_metric_data()
        .metric_data_queries(query("backlog", "Backlog"))
        .metric_data_queries(query("bpt", "BacklogPerTask"))
        .metric_data_queries(query("nocap", "BacklogWithoutCapacity"))
        .start_time(DateTime::from_millis(start.0 - 60_000))
        .end_time(DateTime::from_millis(Millis::now().0 + 60_000))
        .send()
        .await
        .unwrap();
    let value = |id: &str| {
        out.metric_data_results()
            .iter()
            .find(|r| r.id() == Some(id))
            .and_then(|r| r.values().first().copied())
    };
    assert_eq!(value("backlog"), Some(7.0));
    assert_eq!(value("bpt"), Some(3.5));
    assert_eq!(value("nocap"), Some(0.0));

    let listed = cw
        .list_metrics()
        .namespace(&namespace)
        .send()
        .await
        .unwrap();
    let mut names: Vec<&str> = listed
        .metrics()
        .iter()
        .filter_map(|m| m.metric_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "Backlog",
            "BacklogPerTask",
            "BacklogWithoutCapacity",
            "DesiredTasks",
            "InFlight",
            "NeededTasks",
            "Paused",
            "PendingTasks",
            "RunningTasks"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_submits_raises_the_service_from_zero_with_one_call() {
    let s = Stack::new("scale_from_zero").await;
    let counter = RequestCounter::default();
    let service = worker_service(&s, Some(&counter)).await;
    // Three function instances share the table and the service, as concurrent Lambdas do.
    let apis: Vec<Api> = (0..3)
        .map(|_| {
            let nudge =
                ScaleFromZero::new(service.clone(), s.store.clone(), Duration::from_secs(60));
            s.api.clone().with_scale_from_zero(nudge)
        })
        .collect();
    let mut burst = tokio::task::JoinSet::new();
    for i in 0..60 {
        let api = apis[i % apis.len()].clone();
        burst.spawn(async move {
            let body = json!({ "input": { "n": i } }).to_string();
            crate::support::decode(api.handle(post_json(ALICE, &body, None)).await).0
        });
    }
    while let Some(status) = burst.join_next().await {
        assert_eq!(status.unwrap(), 202);
    }
    assert_eq!(
        counter.count("UpdateService"),
        1,
        "{:?}",
        counter.snapshot()
    );
    assert_eq!(
        counter.count("DescribeServices"),
        1,
        "{:?}",
        counter.snapshot()
    );
    assert_eq!(service.counts().await.unwrap().desired, 1);
}

fn sampler_for(s: &Stack, service: &Service, policy: Policy, lease: bool) -> Sampler {
    Sampler {
        queue: s.queue.clone(),
        service: service.clone(),
        publisher: Publisher::from_sdk(&s.aws, format!("Sluice-{}", s.name)),
        dims: Dimensions {
            queue_name: s.queue.name().to_owned(),
            service_name: "workers".into(),
        },
        policy,
        lease: lease.then(|| s.store.clone()),
        memory: Default::default(),
        pipeline: None,
    }
}

/// While the pipeline is paused the controller holds the service at `min_tasks` whatever waits,
/// publishes `Paused` = 1, and a submit does not raise the service from zero; on resume the next
/// sample raises it to the need.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_pipeline_holds_the_service_at_min_tasks_and_says_so() {
    use sluice::pipeline::{Known, Pipeline, State};
    let s = Stack::new("paused_scaling").await;
    let counter = RequestCounter::default();
    let service = worker_service(&s, Some(&counter)).await;
    for i in 0..7 {
        s.submit(ALICE, json!({ "n": i })).await;
    }
    service.set_desired(3).await.unwrap();
    let pipeline = Pipeline::of(&s.store);
    pipeline
        .set(State::Paused, OPERATOR, Some("a test"), Millis::now())
        .await
        .unwrap();
    let policy = Policy {
        min_tasks: 0,
        ..Policy::builtin().unwrap()
    };
    let sampler = Sampler {
        pipeline: Some(Arc::new(Known::new(pipeline.clone(), Duration::ZERO))),
        ..sampler_for(&s, &service, policy, true)
    };
    let m = sampler.sample().await.unwrap();
    assert_eq!((m.backlog, m.paused), (7, 1));
    assert_eq!(
        service.counts().await.unwrap().desired,
        0,
        "jobs wait, no task holds one: parked at min_tasks"
    );
    // A second sample of the same work changes nothing.
    let before = counter.count("UpdateService");
    sampler.sample().await.unwrap();
    assert_eq!(counter.count("UpdateService"), before);

    // A submit while paused is accepted and raises nothing.
    let api = s.api.clone().with_scale_from_zero(ScaleFromZero::new(
        service.clone(),
        s.store.clone(),
        Duration::from_secs(60),
    ));
    let (status, v) = crate::support::decode(
        api.handle(post_json(ALICE, r#"{"input": {"n": 8}}"#, None))
            .await,
    );
    assert_eq!(status, 202, "{v}");
    assert_eq!(
        counter.count("UpdateService"),
        before,
        "no nudge while paused"
    );
    assert_eq!(service.counts().await.unwrap().desired, 0);

    pipeline
        .set(State::Running, OPERATOR, None, Millis::now())
        .await
        .unwrap();
    let m = sampler.sample().await.unwrap();
    assert_eq!((m.backlog, m.paused), (8, 0));
    assert!(
        service.counts().await.unwrap().desired >= 1,
        "resumed: raised to the need"
    );
}

/// A burst larger than 24 times the running capacity asks for all it needs on the first
/// sample, up to the cap, with one UpdateService; later samples of the same work ask nothing.
#[tokio::test]
async fn a_burst_is_raised_to_the_capacity_it_needs_in_one_step() {
    let s = Stack::new("one_step").await;
    let counter = RequestCounter::default();
    let service = worker_service(&s, Some(&counter)).await;
    for i in 0..150 {
        s.submit(ALICE, json!({ "n": i })).await;
    }
    let policy = Policy::builtin().unwrap().with_bounds(0, 100).unwrap();
    let sampler = sampler_for(&s, &service, policy, true);
    let m = sampler.sample().await.unwrap();
    assert_eq!((m.backlog, m.desired_tasks, m.needed_tasks), (150, 0, 100));
    assert_eq!(service.counts().await.unwrap().desired, 100);
    assert_eq!(counter.count("UpdateService"), 1);
    sampler.sample().await.unwrap();
    sampler.sample().await.unwrap();
    assert_eq!(
        counter.count("UpdateService"),
        1,
        "{:?}",
        counter.snapshot()
    );
    // The lease is kept until ECS shows the new count (SETTLE after the write), then free.
    let key = lease_key(&service);
    assert!(!s
        .store
        .take_turn(&key, Millis::now(), LEASE_TTL)
        .await
        .unwrap());
    tokio::time::sleep(SETTLE).await;
    assert!(s
        .store
        .take_turn(&key, Millis::now(), LEASE_TTL)
        .await
        .unwrap());
}

/// The two writers of the desired count exclude each other: while one holds the lease the
/// other writes nothing, so the nudge cannot lower a count the backlog function raised in
/// between its read and its write, nor the raise undo itself against a nudge.
#[tokio::test]
async fn the_nudge_and_the_raise_never_write_under_each_others_lease() {
    let s = Stack::new("lease").await;
    let service = worker_service(&s, None).await;
    let sampler = sampler_for(&s, &service, Policy::builtin().unwrap(), true);
    s.submit(ALICE, json!({ "n": 1 })).await;
    let nudge = ScaleFromZero::new(service.clone(), s.store.clone(), Duration::from_secs(1));
    let api = s.api.clone().with_scale_from_zero(nudge);

    // The raise holds the lease (as if between its read and its write): the nudge stays away.
    let key = lease_key(&service);
    let held_at = Millis::now();
    assert!(s.store.take_turn(&key, held_at, LEASE_TTL).await.unwrap());
    let body = json!({ "input": { "n": 2 } }).to_string();
    assert_eq!(
        crate::support::decode(api.handle(post_json(ALICE, &body, None)).await).0,
        202
    );
    assert_eq!(
        service.counts().await.unwrap().desired,
        0,
        "the nudge wrote under the lease"
    );
    // Nor does another raise.
    let seen = sluice::scaling::Sample {
        visible: 2,
        ..Default::default()
    };
    let fresh = Memory::default();
    let raise = |now| sampler.apply(&seen, &fresh, now);
    assert_eq!(raise(0.0).await.unwrap(), None);
    assert_eq!(service.counts().await.unwrap().desired, 0);
    s.store
        .release_turn(&key, held_at.plus(LEASE_TTL))
        .await
        .unwrap();

    // Free again: the raise writes, and a nudge that reads the raised count leaves it.
    assert_eq!(raise(1.0).await.unwrap().map(|d| d.desired_tasks), Some(2));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let body = json!({ "input": { "n": 3 } }).to_string();
    assert_eq!(
        crate::support::decode(api.handle(post_json(ALICE, &body, None)).await).0,
        202
    );
    assert_eq!(service.counts().await.unwrap().desired, 2);
}

/// A stand-in of the ECS agent's task-protection endpoint that records every request body.
pub(crate) async fn agent_stand_in() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let log = log.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        async move {
                            assert_eq!(
                                (req.method().as_str(), req.uri().path()),
                                ("PUT", "/task-protection/v1/state")
                            );
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                            let enabled = v["ProtectionEnabled"].as_bool().unwrap();
                            log.lock().unwrap().push(v);
                            let answer = json!({"protection": {"ProtectionEnabled": enabled, "TaskArn": "arn:aws:ecs:us-east-1:123456789012:task/c/1"}});
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::from(answer.to_string()),
                            )))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_worker_keeps_scale_in_protection_and_drops_it_when_done() {
    let s = Stack::new("protection").await;
    let (agent, seen) = agent_stand_in().await;
    let mut w = s.worker("protected", &[("ECS_AGENT_URI", &agent)]);
    let id = s
        .submit(ALICE, json!({"text": "guard me", "sleep_ms": 1500}))
        .await;
    s.until(&id, Duration::from_secs(20), "the job starts", |j| {
        j.status == Status::Running
    })
    .await;
    let view = s.wait_terminal(ALICE, &id, Duration::from_secs(20)).await;
    assert_eq!(view.status, Status::Succeeded);
    {
        let calls = seen.lock().unwrap();
        assert_eq!(
            calls.first(),
            Some(&json!({"ProtectionEnabled": true, "ExpiresInMinutes": 10})),
            "{calls:?}"
        );
    }
    w.signal("TERM");
    w.exited(Duration::from_secs(15)).await;
    let calls = seen.lock().unwrap();
    assert_eq!(
        calls.last(),
        Some(&json!({"ProtectionEnabled": false})),
        "{calls:?}"
    );
    assert_eq!(calls.len(), 2, "one call on, one off: {calls:?}");
}

#[tokio::test]
async fn a_sample_that_fails_publishes_nothing() {
    let s = Stack::new("failed_sample").await;
    let namespace = format!("Sluice-{}", s.name);
    let sampler = Sampler {
        policy: Policy::builtin().unwrap(),
        lease: None,
        queue: s.queue.clone(),
        // No such cluster or service: the sample cannot be read.
        service: Service::from_sdk(&s.aws, "missing-cluster", "missing-service"),
        publisher: Publisher::from_sdk(&s.aws, &namespace),
        dims: Dimensions {
            queue_name: s.queue.name().to_owned(),
            service_name: "missing-service".into(),
        },
        memory: Default::default(),
        pipeline: None,
    };
    let err = sampler.sample().await.unwrap_err();
    assert!(
        err.to_string().contains("could not read the service"),
        "{err}"
    );
    let listed = aws_sdk_cloudwatch::Client::new(&s.aws)
        .list_metrics()
        .namespace(&namespace)
        .send()
        .await
        .unwrap();
    assert!(listed.metrics().is_empty(), "{:?}", listed.metrics());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_shows_the_queue_the_service_and_the_policys_verdict() {
    let s = Stack::new("report").await;
    worker_service(&s, None).await;
    for i in 0..7 {
        s.submit(ALICE, json!({ "n": i })).await;
    }
    let args = [
        "--queue-url",
        s.res.queue_url.as_str(),
        "--cluster",
        s.name.as_str(),
        "--service",
        "workers",
    ];
    let out = sluice_cli(&[&["--json", "report"][..], &args[..]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["queue"]["visible"], 7, "{r}");
    assert_eq!(r["service"]["desired"], 0, "{r}");
    assert_eq!(r["backlog_per_task"], 7.0);
    assert_eq!(
        r["tasks_for_backlog"], 7,
        "a target of one waiting job per task"
    );
    assert_ne!(
        r["policy_action"], "none",
        "backlog with no task must scale: {r}"
    );
    assert!(r["policy_desired_tasks"].as_u64().unwrap() >= 1, "{r}");
    assert!(
        r["policy_reason"]
            .as_str()
            .unwrap()
            .contains("need more tasks"),
        "{r}"
    );

    assert_eq!(r["recent"], json!([]), "nothing published yet: {r}");

    let text = sluice_cli(&[&["report"][..], &args[..]].concat());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("queue     7 visible, 0 in flight"), "{text}");
    assert!(
        text.contains("tasks     0 running, 0 pending, 0 desired"),
        "{text}"
    );

    // The backlog function samples (and raises); the report explains those samples.
    let service = Service::from_sdk(&s.aws, &s.name, "workers");
    let mut policy = Policy::builtin().unwrap();
    policy.namespace = format!("Sluice-{}", s.name);
    let sampler = sampler_for(&s, &service, policy.clone(), false);
    sampler.sample().await.unwrap();
    // Samples a second apart, as the metrics' 1 s resolution tells them apart.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sampler.sample().await.unwrap();
    let dir = std::env::temp_dir().join(format!("sluice-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy_file = dir.join("policy.json");
    std::fs::write(&policy_file, serde_json::to_string(&policy).unwrap()).unwrap();
    let with_policy = [&args[..], &["--policy", policy_file.to_str().unwrap()][..]].concat();
    let out = sluice_cli(&[&["--json", "report"][..], &with_policy[..]].concat());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let recent = r["recent"].as_array().unwrap();
    assert_eq!(recent.len(), 2, "{r}");
    assert_eq!(
        (recent[0]["desired"].as_u64(), recent[0]["action"].as_str()),
        (Some(0), Some("scale-out")),
        "{r}"
    );
    assert_eq!(recent[0]["reason"], "work-needs-more", "{r}");
    assert_eq!(recent[1]["reason"], "jobs-waiting", "{r}");
    let text = sluice_cli(&[&["report"][..], &with_policy[..]].concat());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("recent samples"), "{text}");
    assert!(text.contains("scale-out to "), "{text}");

    // With the jobs table, the report shows the pipeline; paused, the controller's verdict is
    // to hold min_tasks.
    let with_table = [
        &args[..],
        &["--table", s.res.table_name.as_str(), "--minutes", "0"][..],
    ]
    .concat();
    let out = sluice_cli(&[&["--json", "report"][..], &with_table[..]].concat());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["pipeline"]["state"], "running", "{r}");
    sluice::pipeline::Pipeline::of(&s.store)
        .set(
            sluice::pipeline::State::Paused,
            OPERATOR,
            Some("maintenance"),
            Millis::now(),
        )
        .await
        .unwrap();
    let out = sluice_cli(&[&["--json", "report"][..], &with_table[..]].concat());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            &r["pipeline"]["state"],
            &r["pipeline"]["by"],
            &r["pipeline"]["reason"]
        ),
        (&json!("paused"), &json!(OPERATOR), &json!("maintenance")),
        "{r}"
    );
    assert!(
        r["policy_reason"].as_str().unwrap().contains("paused"),
        "{r}"
    );
    assert_eq!(r["policy_desired_tasks"], json!(policy.min_tasks), "{r}");
    let text = sluice_cli(&[&["report"][..], &with_table[..]].concat());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.starts_with("pipeline  paused since ") && text.contains("(maintenance)"),
        "{text}"
    );

    let bad = sluice_cli(&[
        "report",
        "--queue-url",
        s.res.queue_url.as_str(),
        "--cluster",
        "nope",
        "--service",
        "nope",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cannot read the service nope in nope"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_compares_the_scalers_and_draws_them() {
    let dir = std::env::temp_dir().join(format!("sluice-simulate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("spike.svg");
    let out = sluice_cli(&[
        "--json",
        "simulate",
        "--workload",
        "spike",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = r["scalers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["scaler"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "sluice",
            "aws-sample",
            "terraform-module",
            "terraform-module-tuned",
            "keda",
            "keda-tuned",
            "oracle"
        ]
    );
    for s in r["scalers"].as_array().unwrap() {
        assert_eq!(s["unfinished_jobs"], 0.0, "every job finishes: {s}");
    }
    let drawing = std::fs::read_to_string(&svg).unwrap();
    assert!(
        drawing.starts_with("<svg") && drawing.contains("sluice"),
        "{}",
        &drawing[..drawing.len().min(200)]
    );

    let csv = dir.join("trace.csv");
    std::fs::write(&csv, "0,5\n1,5\n2,oops\n").unwrap();
    let bad = sluice_cli(&["simulate", "--workload", &format!("csv:{}", csv.display())]);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("is not a workload") && err.contains("line 3"),
        "{err}"
    );
}

/// `sluice simulate --grid short` prints a line per case and a summary, and exits 0 only when
/// every target is met; a bad trace folder or grid name is an error that says what to fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_grid_prints_cases_and_a_summary() {
    let out = sluice_cli(&["simulate", "--grid", "short"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("burst 3000 × 10 min, cap 100"), "{text}");
    assert!(text.contains("heavy-tailed burst 600"), "{text}");
    assert!(
        text.contains("5 bursts 40 × 10 s every 5 min, cap 20"),
        "{text}"
    );
    assert!(text.contains("4 slots"), "{text}");
    assert!(
        text.contains("task-seconds ≤ 1.3× the oracle's on every case: 13 of 13"),
        "{text}"
    );
    assert!(text.contains("every target met: yes"), "{text}");

    let json = sluice_cli(&["--json", "simulate", "--grid", "short"]);
    let r: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 13);
    assert!(rows
        .iter()
        .all(|row| row["cost_ratio"].as_f64().unwrap() <= 1.3));

    // The frontier: the grid at each keep-idle time, one line each.
    let out = sluice_cli(&["simulate", "--grid", "short", "--phases", "1", "--frontier"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.starts_with("frontier over keep_idle_startups"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 2 + 7, "{text}");

    // GPU instances kept after their last task: instance-seconds beside the task-seconds.
    let out = sluice_cli(&[
        "simulate",
        "--grid",
        "short",
        "--phases",
        "1",
        "--instance-linger",
        "900",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("instances kept 900 s after their last task"),
        "{text}"
    );

    // The cost target fails a policy that keeps its spare tasks ten start-ups.
    let dir = std::env::temp_dir().join(format!("sluice-grid-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut lavish: serde_json::Value =
        serde_json::from_str(sluice::scaling::BUILTIN_POLICY_JSON).unwrap();
    lavish["keep_idle_startups"] = json!(10);
    let lavish_file = dir.join("lavish.json");
    std::fs::write(&lavish_file, lavish.to_string()).unwrap();
    let out = sluice_cli(&[
        "simulate",
        "--grid",
        "short",
        "--policy",
        lavish_file.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("| cost "), "{text}");
    assert!(text.contains("every target met: no"), "{text}");

    let dir = std::env::temp_dir().join(format!("sluice-traces-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let with_traces = || {
        sluice_cli(&[
            "simulate",
            "--grid",
            "short",
            "--traces",
            dir.to_str().unwrap(),
        ])
    };
    let bad = with_traces();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("holds no .csv trace"));
    std::fs::write(dir.join("mine.csv"), "0,5\n1,x\n").unwrap();
    let bad = with_traces();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("mine.csv: line 2"), "{err}");
    let bad = sluice_cli(&["simulate", "--grid", "huge"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected short or full"));
}

/// With the stack outputs, the smoke script reads the service before it submits and says the
/// path was cold (no task running), which is what a deploy parked at zero must prove.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smoke_script_says_whether_the_path_was_cold() {
    let s = Stack::new("smoke_cold").await;
    worker_service(&s, None).await;
    let _w = s.worker("w1", &[]);
    let (url, _stop) = crate::http::serve(&s).await;
    let dir = std::env::temp_dir().join(format!("sluice-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let outputs = dir.join("outputs.json");
    let stack = json!({ "Sluice": {
        "ApiUrl": url,
        "QueueUrl": s.res.queue_url,
        "ClusterName": s.name,
        "ServiceName": "workers",
    }});
    std::fs::write(&outputs, stack.to_string()).unwrap();
    let env = [
        ("SLUICE_SMOKE_OUTPUTS", outputs.display().to_string()),
        ("SLUICE_SMOKE_INPUT", r#"{"text": "cold"}"#.to_string()),
    ];
    let out = tokio::task::spawn_blocking(move || crate::http::smoke(&env))
        .await
        .unwrap();
    let text = crate::http::smoke_report(&out);
    assert!(
        text.contains("path: cold (0 tasks running, 0 desired)"),
        "{text}"
    );
}

/// A raise that ECS refuses still publishes its sample, and the run reports it, so the backlog
/// function's invocation fails and its errors alarm says the loop cannot scale out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raise_that_fails_is_reported_by_the_run() {
    let s = Stack::new("raise_fails").await;
    worker_service(&s, None).await;
    let faults = crate::faults::Faults::default();
    faults.fail("UpdateService", None, crate::faults::Fault::Refused, 1000);
    let ecs = aws_sdk_ecs::Client::from_conf(
        aws_sdk_ecs::config::Builder::from(&s.aws)
            .interceptor(faults.clone())
            .build(),
    );
    let service = Service::new(ecs, &s.name, "workers");
    s.submit(ALICE, json!({ "n": 1 })).await;
    let sampler = sampler_for(&s, &service, Policy::builtin().unwrap(), false);
    let summary = sampler
        .run(Duration::from_millis(200), Duration::from_millis(300))
        .await;
    assert!(summary.raise_failures >= 1, "{summary:?}");
    assert_eq!(summary.published, summary.raise_failures, "{summary:?}");
    assert!(
        summary
            .last_raise_error
            .as_deref()
            .is_some_and(|e| e.contains("could not set the service's desired count")),
        "{summary:?}"
    );
    assert_eq!(service.counts().await.unwrap().desired, 0);
}

/// The one controller lowers the count too: spare tasks go once unused for the keep-idle time,
/// with one UpdateService, never below the tasks that hold jobs, and under the same lease as
/// the raise and the nudge, so a nudge that holds it keeps the count.
#[tokio::test]
async fn spare_tasks_are_released_by_the_same_controller_under_the_lease() {
    let s = Stack::new("scale_in").await;
    let counter = RequestCounter::default();
    let service = worker_service(&s, Some(&counter)).await;
    // The emulator runs what ECS is asked for at once: 6 running, no job anywhere.
    service.set_desired(6).await.unwrap();
    let policy = Policy {
        keep_idle_startups: 0.0,
        ..Policy::builtin().unwrap().with_bounds(0, 20).unwrap()
    };
    let sampler = sampler_for(&s, &service, policy, true);

    // A nudge holds the lease: the controller writes nothing.
    let key = lease_key(&service);
    let held_at = Millis::now();
    assert!(s.store.take_turn(&key, held_at, LEASE_TTL).await.unwrap());
    let seen = sampler.read().await.unwrap();
    assert_eq!(
        (seen.running_tasks, seen.desired_tasks, seen.visible),
        (6, 6, 0)
    );
    let now = Millis::now().0 as f64 / 1000.0;
    let start = tokio::time::Instant::now();
    assert_eq!(
        sampler.apply(&seen, &Memory::default(), now).await.unwrap(),
        None
    );
    assert!(start.elapsed() >= SETTLE, "it waited for the lease once");
    assert_eq!(service.counts().await.unwrap().desired, 6);
    s.store
        .release_turn(&key, held_at.plus(LEASE_TTL))
        .await
        .unwrap();

    // Free: one sample parks the idle fleet at min_tasks with one write.
    let before = counter.count("UpdateService");
    let m = sampler.sample().await.unwrap();
    assert_eq!(m.desired_tasks, 6, "the published sample is what was read");
    assert_eq!(service.counts().await.unwrap().desired, 0);
    assert_eq!(counter.count("UpdateService"), before + 1);

    // With a job in flight on one of three tasks, one stays.
    tokio::time::sleep(SETTLE).await;
    service.set_desired(3).await.unwrap();
    let busy = sluice::scaling::Sample {
        in_flight: 1,
        ..sampler.read().await.unwrap()
    };
    let d = sampler
        .apply(&busy, &Memory::default(), Millis::now().0 as f64 / 1000.0)
        .await
        .unwrap()
        .expect("lowered");
    assert_eq!((d.action, d.desired_tasks), (Action::ScaleIn, 1));
    assert_eq!(service.counts().await.unwrap().desired, 1);
}

/// What the controller remembers lives with the sampler, across runs of the backlog function:
/// spare tasks kept longer than one run lasts are still released, by the run after.
#[tokio::test]
async fn the_controller_remembers_across_runs_of_the_function() {
    let s = Stack::new("memory_across_runs").await;
    let service = worker_service(&s, None).await;
    service.set_desired(3).await.unwrap();
    // Spare tasks kept 2 s; each run samples every second for 1.5 s.
    let policy = Policy {
        task_startup_seconds: 2.0,
        keep_idle_startups: 1.0,
        metric_period_seconds: 1,
        ..Policy::builtin().unwrap()
    };
    let sampler = sampler_for(&s, &service, policy, false);
    let run = || sampler.run(Duration::from_secs(1), Duration::from_millis(1500));
    let first = run().await;
    assert_eq!(first.published, 2, "{first:?}");
    assert_eq!(
        service.counts().await.unwrap().desired,
        3,
        "kept within the first run"
    );
    let second = run().await;
    assert_eq!(second.published, 2, "{second:?}");
    assert_eq!(
        service.counts().await.unwrap().desired,
        0,
        "released by the second run, 2 s after the first sample saw them spare"
    );
}
