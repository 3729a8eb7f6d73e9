//! Configuration from environment variables, read once at start-up. Errors name the variable.

use std::str::FromStr;
use std::time::Duration;

use crate::env;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is not set; {hint}")]
    Missing {
        name: &'static str,
        hint: &'static str,
    },
    #[error("{name}={value:?} is not valid: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: String,
    },
}

/// Where variables come from: the process environment, or a list in tests.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
}

impl Source for [(&str, &str)] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

/// A variable that must be set.
pub fn required(
    src: &(impl Source + ?Sized),
    name: &'static str,
    hint: &'static str,
) -> Result<String, ConfigError> {
    src.get(name).ok_or(ConfigError::Missing { name, hint })
}

/// A number with a default, checked to lie in `range`.
pub fn number_or<T>(
    src: &(impl Source + ?Sized),
    name: &'static str,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(value) = src.get(name) else {
        return Ok(default);
    };
    let invalid = |reason: String| ConfigError::Invalid {
        name,
        value: value.clone(),
        reason,
    };
    let n: T = value
        .trim()
        .parse()
        .map_err(|_| invalid("expected a whole number".into()))?;
    if !range.contains(&n) {
        return Err(invalid(format!(
            "expected {} to {}",
            range.start(),
            range.end()
        )));
    }
    Ok(n)
}

/// Seconds with a default, checked to lie in `range`.
pub fn seconds_or(
    src: &(impl Source + ?Sized),
    name: &'static str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Duration, ConfigError> {
    number_or(src, name, default, range).map(Duration::from_secs)
}

/// What the submit and status handlers need.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub table_name: String,
    /// Unset for the status function, which never enqueues.
    pub queue_url: Option<String>,
    pub max_attempts: u32,
    pub retention: Duration,
    /// The worker service (cluster, service) to raise from zero on submit, when set.
    pub workers: Option<(String, String)>,
    /// The longest `timeout_seconds` a job may ask for.
    pub max_job_timeout: Duration,
    /// What makes two IAM callers the same owner.
    pub owner_scope: crate::api::OwnerScope,
    /// Which webhook URLs a submit accepts.
    pub webhook_policy: crate::webhook::TargetPolicy,
    /// Where uploaded inputs go, and how large and how long-lived an upload may be.
    pub uploads: UploadSettings,
    /// Who may pause and resume the pipeline (`SLUICE_OPERATORS`); empty: nobody.
    pub operators: Vec<crate::api::Operator>,
    /// Whether the deployment publishes the ends of the jobs it accepts (it names an SNS topic
    /// or an EventBridge bus): each job is marked so when it is accepted.
    pub publishes: bool,
    /// Which objects already in S3 jobs may name.
    pub references: ReferenceSettings,
}

/// The settings of jobs that name objects already in S3 (`s3://bucket/key`).
#[derive(Debug, Clone, Default)]
pub struct ReferenceSettings {
    /// The buckets jobs may name objects of (`SLUICE_INPUT_BUCKETS`); empty: none.
    pub buckets: crate::reference::InputBuckets,
    /// The local emulator's S3 endpoint, whose presigned URLs are accepted beside S3's own:
    /// `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` when on a loopback address; else `None`.
    pub emulator: Option<crate::reference::Emulator>,
}

/// The SDK's endpoint overrides, read to recognise the local emulator's presigned URLs.
const ENDPOINT_VARS: [&str; 2] = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"];

/// `SLUICE_INPUT_BUCKETS`, and the emulator a loopback `AWS_ENDPOINT_URL(_S3)` names.
pub fn reference_settings(src: &(impl Source + ?Sized)) -> Result<ReferenceSettings, ConfigError> {
    let buckets = match src.get(env::INPUT_BUCKETS) {
        None => Default::default(),
        Some(list) => {
            crate::reference::InputBuckets::parse(&list).map_err(|reason| ConfigError::Invalid {
                name: env::INPUT_BUCKETS,
                value: list.clone(),
                reason: format!("{reason}; expected comma-separated bucket names"),
            })?
        }
    };
    let emulator = ENDPOINT_VARS
        .iter()
        .find_map(|v| src.get(v))
        .and_then(|e| crate::reference::Emulator::from_endpoint(&e));
    Ok(ReferenceSettings { buckets, emulator })
}

/// The settings of `POST /uploads`.
#[derive(Debug, Clone)]
pub struct UploadSettings {
    /// The payload bucket; `None` refuses uploads.
    pub bucket: Option<String>,
    /// The largest upload accepted.
    pub max_bytes: u64,
    /// How long an upload's URLs stay valid, and within which a job must reference it.
    pub expiry: Duration,
    /// Uploads up to this size are one PUT; larger ones are multipart.
    pub single_put_limit: u64,
}

impl Default for UploadSettings {
    /// No bucket; 5 TiB at most; an hour; one PUT up to 100 MiB.
    fn default() -> Self {
        UploadSettings {
            bucket: None,
            max_bytes: crate::payload::MAX_OBJECT_SIZE,
            expiry: Duration::from_secs(3600),
            single_put_limit: crate::upload::SINGLE_PUT_LIMIT,
        }
    }
}

/// `SLUICE_PAYLOAD_BUCKET`, `SLUICE_MAX_UPLOAD_BYTES` and `SLUICE_UPLOAD_EXPIRY_SECONDS`.
pub fn upload_settings(src: &(impl Source + ?Sized)) -> Result<UploadSettings, ConfigError> {
    let max = crate::payload::MAX_OBJECT_SIZE;
    Ok(UploadSettings {
        bucket: src.get(env::PAYLOAD_BUCKET),
        max_bytes: number_or(src, env::MAX_UPLOAD_BYTES, max, 1..=max)?,
        expiry: seconds_or(src, env::UPLOAD_EXPIRY_SECONDS, 3600, 60..=7 * 86_400)?,
        ..UploadSettings::default()
    })
}

/// `SLUICE_WEBHOOK_ALLOW_LOOPBACK`: the local stack's policy when `true`, else the deployed one.
pub fn webhook_policy(
    src: &(impl Source + ?Sized),
) -> Result<crate::webhook::TargetPolicy, ConfigError> {
    use crate::webhook::TargetPolicy;
    match src
        .get(env::WEBHOOK_ALLOW_LOOPBACK)
        .as_deref()
        .map(str::trim)
    {
        None | Some("false") | Some("0") => Ok(TargetPolicy::DEPLOYED),
        Some("true") | Some("1") => Ok(TargetPolicy::LOCAL_STACK),
        Some(other) => Err(ConfigError::Invalid {
            name: env::WEBHOOK_ALLOW_LOOPBACK,
            value: other.to_owned(),
            reason: "expected true or false".into(),
        }),
    }
}

/// `SLUICE_OWNER_SCOPE`: `session` (the default) or `role`; with `session`,
/// `SLUICE_PINNED_SESSION_ROLES` names the roles whose trust policies pin their session names.
pub fn owner_scope(src: &(impl Source + ?Sized)) -> Result<crate::api::OwnerScope, ConfigError> {
    let scope = match src.get(env::OWNER_SCOPE) {
        None => crate::api::OwnerScope::default(),
        Some(v) => v.parse().map_err(|reason| ConfigError::Invalid {
            name: env::OWNER_SCOPE,
            value: v,
            reason,
        })?,
    };
    let Some(roles) = src.get(env::PINNED_SESSION_ROLES) else {
        return Ok(scope);
    };
    let invalid = |reason: String| ConfigError::Invalid {
        name: env::PINNED_SESSION_ROLES,
        value: roles.clone(),
        reason,
    };
    let crate::api::OwnerScope::Session { mut pinned } = scope else {
        return Err(invalid(
            "role scope makes every session of a role one owner; unset it or choose session".into(),
        ));
    };
    for role in roles.split(',').filter(|r| !r.trim().is_empty()) {
        pinned.push(role.parse().map_err(invalid)?);
    }
    Ok(crate::api::OwnerScope::Session { pinned })
}

/// `SLUICE_OPERATORS`: comma-separated IAM user and role ARNs; unset, nobody is an operator.
pub fn operators(src: &(impl Source + ?Sized)) -> Result<Vec<crate::api::Operator>, ConfigError> {
    let Some(list) = src.get(env::OPERATORS) else {
        return Ok(Vec::new());
    };
    list.split(',')
        .filter(|o| !o.trim().is_empty())
        .map(|o| {
            o.parse().map_err(|reason| ConfigError::Invalid {
                name: env::OPERATORS,
                value: list.clone(),
                reason,
            })
        })
        .collect()
}

/// `SLUICE_MAX_JOB_TIMEOUT_SECONDS`, at most [`MAX_JOB_TIMEOUT`](crate::job::MAX_JOB_TIMEOUT).
pub fn max_job_timeout(src: &(impl Source + ?Sized)) -> Result<Duration, ConfigError> {
    let cap = crate::job::MAX_JOB_TIMEOUT.as_secs();
    seconds_or(src, env::MAX_JOB_TIMEOUT_SECONDS, cap, 1..=cap)
}

/// The SNS topics and EventBridge bus the ends of jobs are published to
/// (`SLUICE_SUCCESS_TOPIC_ARN`, `SLUICE_ERROR_TOPIC_ARN`, `SLUICE_EVENT_BUS`).
pub fn event_targets(
    src: &(impl Source + ?Sized),
) -> Result<crate::events::EventTargets, ConfigError> {
    use crate::events::TargetError;
    crate::events::EventTargets::from_lookup(|name| src.get(name)).map_err(|e| {
        let reason = match &e {
            TargetError::Topic { .. } => {
                "give an SNS topic's ARN: arn:aws:sns:<region>:<account>:<topic>"
            }
            TargetError::Bus { .. } => {
                "give an EventBridge bus's name (1 to 256 of A-Z a-z 0-9 . _ -) or ARN \
                 (arn:aws:events:<region>:<account>:event-bus/<name>)"
            }
        };
        match e {
            TargetError::Topic { var, value } | TargetError::Bus { var, value } => {
                ConfigError::Invalid {
                    name: var,
                    value,
                    reason: reason.into(),
                }
            }
        }
    })
}

impl ApiConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&ProcessEnv)
    }

    pub fn from_source(src: &(impl Source + ?Sized)) -> Result<Self, ConfigError> {
        Ok(ApiConfig {
            table_name: required(src, env::TABLE_NAME, "set it to the jobs table's name")?,
            queue_url: src.get(env::QUEUE_URL),
            max_attempts: number_or(src, env::MAX_ATTEMPTS, 3, 1..=100)?,
            retention: Duration::from_secs(86_400)
                * number_or(src, env::RETENTION_DAYS, 7u32, 1..=3650)?,
            max_job_timeout: max_job_timeout(src)?,
            owner_scope: owner_scope(src)?,
            webhook_policy: webhook_policy(src)?,
            uploads: upload_settings(src)?,
            operators: operators(src)?,
            publishes: event_targets(src)?.any(),
            references: reference_settings(src)?,
            workers: match (src.get(env::CLUSTER), src.get(env::SERVICE)) {
                (Some(c), Some(s)) => Some((c, s)),
                (None, None) => None,
                (Some(_), None) => {
                    return Err(ConfigError::Missing {
                        name: env::SERVICE,
                        hint: "set it with SLUICE_CLUSTER, or unset both",
                    })
                }
                (None, Some(_)) => {
                    return Err(ConfigError::Missing {
                        name: env::CLUSTER,
                        hint: "set it with SLUICE_SERVICE, or unset both",
                    })
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_config_names_the_variable_at_fault() {
        type Vars<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Vars, Option<&str>)] = &[
            (&[], Some("SLUICE_TABLE_NAME is not set")),
            (&[("SLUICE_TABLE_NAME", "jobs")], None),
            (
                &[
                    ("SLUICE_TABLE_NAME", "jobs"),
                    ("SLUICE_MAX_ATTEMPTS", "three"),
                ],
                Some("SLUICE_MAX_ATTEMPTS=\"three\" is not valid: expected a whole number"),
            ),
            (
                &[("SLUICE_TABLE_NAME", "jobs"), ("SLUICE_MAX_ATTEMPTS", "0")],
                Some("SLUICE_MAX_ATTEMPTS=\"0\" is not valid: expected 1 to 100"),
            ),
            (
                &[
                    ("SLUICE_TABLE_NAME", "jobs"),
                    ("SLUICE_RETENTION_DAYS", "-1"),
                ],
                Some("SLUICE_RETENTION_DAYS=\"-1\" is not valid: expected a whole number"),
            ),
            (
                &[
                    ("SLUICE_TABLE_NAME", "jobs"),
                    ("SLUICE_MAX_JOB_TIMEOUT_SECONDS", "43200"),
                ],
                Some("SLUICE_MAX_JOB_TIMEOUT_SECONDS=\"43200\" is not valid: expected 1 to 42300"),
            ),
            (
                &[
                    ("SLUICE_TABLE_NAME", "jobs"),
                    ("SLUICE_OWNER_SCOPE", "user"),
                ],
                Some("SLUICE_OWNER_SCOPE=\"user\" is not valid: expected session"),
            ),
            (
                &[
                    ("SLUICE_TABLE_NAME", "jobs"),
                    ("SLUICE_PINNED_SESSION_ROLES", "Analysts"),
                ],
                Some("SLUICE_PINNED_SESSION_ROLES=\"Analysts\" is not valid: expected a role ARN"),
            ),
            (
                &[
                    ("SLUICE_TABLE_NAME", "jobs"),
                    ("SLUICE_OWNER_SCOPE", "role"),
                    (
                        "SLUICE_PINNED_SESSION_ROLES",
                        "arn:aws:iam::123456789012:role/Analysts",
                    ),
                ],
                Some("SLUICE_PINNED_SESSION_ROLES=\"arn:aws:iam::123456789012:role/Analysts\" is not valid: role scope"),
            ),
            (
                &[
                    ("SLUICE_TABLE_NAME", "jobs"),
                    (
                        "SLUICE_PINNED_SESSION_ROLES",
                        "arn:aws:iam::123456789012:role/Analysts, arn:aws:iam::123456789012:role/team/Okta",
                    ),
                ],
                None,
            ),
            (
                &[
                    ("SLUICE_TABLE_NAME", "jobs"),
                    ("SLUICE_OPERATORS", "arn:aws:iam::123456789012:user/ops, ops"),
                ],
                Some("SLUICE_OPERATORS=\"arn:aws:iam::123456789012:user/ops, ops\" is not valid: expected IAM user or role ARNs"),
            ),
            (
                &[
                    ("SLUICE_TABLE_NAME", "jobs"),
                    (
                        "SLUICE_OPERATORS",
                        "arn:aws:iam::123456789012:user/ops,arn:aws:iam::123456789012:role/Operators",
                    ),
                ],
                None,
            ),
            (
                &[
                    ("SLUICE_TABLE_NAME", "jobs"),
                    ("SLUICE_INPUT_BUCKETS", "data-lake,Raw_Images"),
                ],
                Some("SLUICE_INPUT_BUCKETS=\"data-lake,Raw_Images\" is not valid: \"Raw_Images\" is not an S3 bucket name"),
            ),
            (
                &[
                    ("SLUICE_TABLE_NAME", "jobs"),
                    ("SLUICE_INPUT_BUCKETS", "data-lake, raw.images"),
                ],
                None,
            ),
            (
                &[("SLUICE_TABLE_NAME", "jobs"), ("SLUICE_CLUSTER", "c")],
                Some("SLUICE_SERVICE is not set; set it with SLUICE_CLUSTER"),
            ),
        ];
        for (vars, want) in cases {
            let got = ApiConfig::from_source(*vars);
            match (got, want) {
                (Ok(_), None) => {}
                (Err(e), Some(w)) => assert!(e.to_string().starts_with(w), "{e} vs {w}"),
                (got, want) => panic!("{vars:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn api_config_defaults() {
        let c = ApiConfig::from_source(&[("SLUICE_TABLE_NAME", "jobs")][..]).unwrap();
        assert_eq!(c.max_attempts, 3);
        assert_eq!(c.retention, Duration::from_secs(7 * 86_400));
        assert_eq!(c.queue_url, None);
        assert_eq!(c.max_job_timeout, crate::job::MAX_JOB_TIMEOUT);
        assert_eq!(c.webhook_policy, crate::webhook::TargetPolicy::DEPLOYED);
        assert!(c.references.buckets.is_empty() && c.references.emulator.is_none());
        for (endpoint, emulator) in [
            ("http://127.0.0.1:4566", true),
            ("https://s3.vpce.example.com", false),
        ] {
            let vars = [
                ("SLUICE_TABLE_NAME", "jobs"),
                ("AWS_ENDPOINT_URL", endpoint),
            ];
            let c = ApiConfig::from_source(&vars[..]).unwrap();
            assert_eq!(c.references.emulator.is_some(), emulator, "{endpoint}");
        }
        for (value, want) in [
            ("true", Ok(crate::webhook::TargetPolicy::LOCAL_STACK)),
            ("false", Ok(crate::webhook::TargetPolicy::DEPLOYED)),
            ("yes", Err(())),
        ] {
            let vars = [
                ("SLUICE_TABLE_NAME", "jobs"),
                ("SLUICE_WEBHOOK_ALLOW_LOOPBACK", value),
            ];
            let got = ApiConfig::from_source(&vars[..]).map(|c| c.webhook_policy);
            assert_eq!(got.map_err(|_| ()), want, "{value}");
        }
    }
}
