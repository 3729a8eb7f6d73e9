//! Workloads: job arrivals and durations, built in or read from CSV.

use std::error::Error;
use std::f64::consts::PI;
use std::fmt;

use serde::Serialize;

/// Names accepted by [`Workload::builtin`].
pub const BUILTIN_WORKLOADS: [&str; 4] = ["steady", "burst", "diurnal", "spike"];

/// Seed of the built-in workloads unless told otherwise (the README's table).
pub const DEFAULT_SEED: u64 = 1;

/// Mean job duration of the built-in workloads (the shipped policy's
/// `average_job_seconds`).
pub const BUILTIN_MEAN_JOB_SECONDS: f64 = 10.0;

/// Spread of built-in job durations: log-normal with this sigma (cv ≈ 0.53).
const JOB_SIGMA: f64 = 0.5;

/// One job: when it is submitted and how long it runs once a worker has it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Job {
    /// Seconds from the start of the workload.
    pub arrival_seconds: f64,
    /// Seconds of work.
    pub duration_seconds: f64,
}

/// A replayable workload, jobs sorted by arrival.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Workload {
    /// `steady`, `burst`, `diurnal`, `spike` or `csv`.
    pub name: String,
    /// One line saying what it is.
    pub description: String,
    /// Jobs by arrival time.
    pub jobs: Vec<Job>,
}

/// Why a workload could not be built.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkloadError {
    /// Not one of [`BUILTIN_WORKLOADS`].
    Unknown(String),
    /// A CSV line that is not `arrival_seconds,duration_seconds`.
    Csv {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// No job at all.
    Empty,
}

impl fmt::Display for WorkloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkloadError::Unknown(name) => write!(
                f,
                "unknown workload {name:?} (expected steady, burst, diurnal, spike or csv:FILE)"
            ),
            WorkloadError::Csv { line, message } => write!(f, "line {line}: {message}"),
            WorkloadError::Empty => write!(f, "workload has no jobs"),
        }
    }
}

impl Error for WorkloadError {}

/// SplitMix64: a small, seeded, deterministic generator (not for secrets).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose sequence depends only on `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in the open interval (0, 1).
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Exponential with the given rate (per second).
    pub fn exponential(&mut self, rate: f64) -> f64 {
        -self.unit().ln() / rate
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.unit(), self.unit());
        (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
    }

    /// Log-normal with the given mean and log-space sigma.
    pub fn lognormal(&mut self, mean: f64, sigma: f64) -> f64 {
        let mu = mean.ln() - sigma * sigma / 2.0;
        (mu + sigma * self.normal()).exp()
    }
}

fn duration(rng: &mut Rng) -> f64 {
    rng.lognormal(BUILTIN_MEAN_JOB_SECONDS, JOB_SIGMA)
}

/// Poisson arrivals with rate `rate(t)` ≤ `peak` on `[start, end)` (thinning).
fn poisson(rng: &mut Rng, start: f64, end: f64, peak: f64, rate: impl Fn(f64) -> f64) -> Vec<Job> {
    poisson_of(rng, start, end, peak, rate, BUILTIN_MEAN_JOB_SECONDS)
}

/// [`poisson`] with jobs of another mean duration.
fn poisson_of(
    rng: &mut Rng,
    start: f64,
    end: f64,
    peak: f64,
    rate: impl Fn(f64) -> f64,
    mean_job_seconds: f64,
) -> Vec<Job> {
    let mut jobs = Vec::new();
    let mut t = start;
    loop {
        t += rng.exponential(peak);
        if t >= end {
            return jobs;
        }
        let keep = rng.unit() * peak < rate(t);
        let d = rng.lognormal(mean_job_seconds, JOB_SIGMA);
        if keep {
            jobs.push(Job {
                arrival_seconds: t,
                duration_seconds: d,
            });
        }
    }
}

/// `count` jobs at uniformly random times in `[start, start + width)`.
fn burst_of(rng: &mut Rng, count: usize, start: f64, width: f64) -> Vec<Job> {
    burst_with(rng, count, start, width, BUILTIN_MEAN_JOB_SECONDS)
}

fn burst_with(rng: &mut Rng, count: usize, start: f64, width: f64, mean_job: f64) -> Vec<Job> {
    (0..count)
        .map(|_| Job {
            arrival_seconds: start + rng.unit() * width,
            duration_seconds: if mean_job == BUILTIN_MEAN_JOB_SECONDS {
                duration(rng)
            } else {
                rng.lognormal(mean_job, JOB_SIGMA)
            },
        })
        .collect()
}

impl Workload {
    fn sorted(name: &str, description: String, mut jobs: Vec<Job>) -> Workload {
        jobs.sort_by(|a, b| a.arrival_seconds.total_cmp(&b.arrival_seconds));
        Workload {
            name: name.to_string(),
            description,
            jobs,
        }
    }

    /// A built-in workload; the same name and seed give the same jobs.
    ///
    /// All use log-normal job durations, mean 10 s, sigma 0.5:
    /// - `steady`: Poisson arrivals at 0.5 job/s for an hour (5 busy tasks);
    /// - `burst`: idle, then 300 jobs within 30 s (at t = 60 s), then idle:
    ///   from zero to the cap and back;
    /// - `diurnal`: one day of Poisson arrivals whose rate follows a cosine
    ///   from 0.01 job/s at midnight to 1.5 job/s at noon;
    /// - `spike`: Poisson 0.2 job/s for an hour, plus 480 jobs within 60 s at
    ///   t = 20 min.
    pub fn builtin(name: &str, seed: u64) -> Result<Workload, WorkloadError> {
        // Each workload gets its own stream, so adding one does not shift another.
        let salt = name.bytes().fold(0u64, |h, b| {
            h.wrapping_mul(0x100_0000_01B3).wrapping_add(u64::from(b))
        });
        let mut rng = Rng::new(seed ^ salt);
        match name {
            "steady" => Ok(Workload::sorted(
                name,
                "poisson 0.5 job/s for 1 h, jobs ~10 s".into(),
                poisson(&mut rng, 0.0, 3600.0, 0.5, |_| 0.5),
            )),
            "burst" => Ok(Workload::sorted(
                name,
                "300 jobs within 30 s from idle (t = 60 s), jobs ~10 s".into(),
                burst_of(&mut rng, 300, 60.0, 30.0),
            )),
            "diurnal" => {
                let (low, high, day) = (0.01, 1.5, 86_400.0);
                let rate =
                    move |t: f64| low + (high - low) * (1.0 - (2.0 * PI * t / day).cos()) / 2.0;
                Ok(Workload::sorted(
                    name,
                    "24 h, poisson rate 0.01 → 1.5 job/s (noon) → 0.01, jobs ~10 s".into(),
                    poisson(&mut rng, 0.0, day, high, rate),
                ))
            }
            "spike" => {
                let mut jobs = poisson(&mut rng, 0.0, 3600.0, 0.2, |_| 0.2);
                jobs.extend(burst_of(&mut rng, 480, 1200.0, 60.0));
                Ok(Workload::sorted(
                    name,
                    "poisson 0.2 job/s for 1 h + 480 jobs within 60 s at t = 20 min, jobs ~10 s"
                        .into(),
                    jobs,
                ))
            }
            other => Err(WorkloadError::Unknown(other.to_string())),
        }
    }

    /// `count` jobs from idle within `width` seconds (at t = 60 s), log-normal
    /// durations of mean `mean_job_seconds` (σ 0.5).
    pub fn burst(seed: u64, count: usize, width: f64, mean_job_seconds: f64) -> Workload {
        let mut rng = Rng::new(seed ^ 0xB0B5);
        Workload::sorted(
            "burst",
            format!("{count} jobs within {width:.0} s from idle, jobs ~{mean_job_seconds} s"),
            burst_with(&mut rng, count, 60.0, width, mean_job_seconds),
        )
    }

    /// Poisson `base_rate` job/s for `hours`, plus `count` jobs within 60 s at
    /// a third of the way in; durations of mean `mean_job_seconds`.
    pub fn spike(
        seed: u64,
        base_rate: f64,
        count: usize,
        hours: f64,
        mean_job_seconds: f64,
    ) -> Workload {
        let mut rng = Rng::new(seed ^ 0x5B1E);
        let end = hours * 3600.0;
        let mut jobs = poisson_of(
            &mut rng,
            0.0,
            end,
            base_rate,
            |_| base_rate,
            mean_job_seconds,
        );
        jobs.extend(burst_with(
            &mut rng,
            count,
            end / 3.0,
            60.0,
            mean_job_seconds,
        ));
        Workload::sorted(
            "spike",
            format!(
                "poisson {base_rate:.3} job/s for {hours} h + {count} jobs within 60 s, jobs ~{mean_job_seconds} s"
            ),
            jobs,
        )
    }

    /// One `day_seconds` day of Poisson arrivals whose rate follows a cosine
    /// from 1/150 of `peak_rate` at midnight to `peak_rate` at noon.
    pub fn diurnal(seed: u64, peak_rate: f64, day_seconds: f64, mean_job_seconds: f64) -> Workload {
        let mut rng = Rng::new(seed ^ 0xD1A1);
        let low = peak_rate / 150.0;
        let rate = move |t: f64| {
            low + (peak_rate - low) * (1.0 - (2.0 * PI * t / day_seconds).cos()) / 2.0
        };
        Workload::sorted(
            "diurnal",
            format!(
                "{:.0} h day, poisson rate up to {peak_rate:.3} job/s, jobs ~{mean_job_seconds} s",
                day_seconds / 3600.0
            ),
            poisson_of(
                &mut rng,
                0.0,
                day_seconds,
                peak_rate,
                rate,
                mean_job_seconds,
            ),
        )
    }

    /// `count` jobs from idle within `width` seconds (at t = 60 s) whose
    /// durations are heavy-tailed: log-normal with median `median_seconds`
    /// and log-space sigma `sigma` (1.5: the mean is 3 medians, one job in a
    /// hundred runs 30 medians).
    pub fn heavy_tailed_burst(
        seed: u64,
        count: usize,
        width: f64,
        median_seconds: f64,
        sigma: f64,
    ) -> Workload {
        let mut rng = Rng::new(seed ^ 0x7A11);
        let jobs = (0..count)
            .map(|_| Job {
                arrival_seconds: 60.0 + rng.unit() * width,
                duration_seconds: (median_seconds.ln() + sigma * rng.normal()).exp(),
            })
            .collect();
        Workload::sorted(
            "heavy-tailed burst",
            format!(
                "{count} jobs within {width:.0} s from idle, log-normal jobs: median {median_seconds} s, sigma {sigma}"
            ),
            jobs,
        )
    }

    /// A ramp: Poisson arrivals whose rate rises linearly from 0 to
    /// `peak_rate` over `ramp_seconds`, holds for `ramp_seconds`, and falls
    /// back to 0 over `ramp_seconds`; durations of mean `mean_job_seconds`.
    pub fn ramp(seed: u64, peak_rate: f64, ramp_seconds: f64, mean_job_seconds: f64) -> Workload {
        let mut rng = Rng::new(seed ^ 0x4A3F);
        let r = ramp_seconds.max(1.0);
        let rate = move |t: f64| peak_rate * (t / r).min(1.0).min((3.0 * r - t) / r).max(0.0);
        Workload::sorted(
            "ramp",
            format!(
                "poisson rate 0 → {peak_rate:.3} job/s over {:.0} min, held, and back, jobs ~{mean_job_seconds} s",
                r / 60.0
            ),
            poisson_of(&mut rng, 0.0, 3.0 * r, peak_rate, rate, mean_job_seconds),
        )
    }

    /// `bursts` bursts of `count` jobs, each within 30 s, one every
    /// `every_seconds` from t = 60 s; durations of mean `mean_job_seconds`.
    pub fn repeated_bursts(
        seed: u64,
        bursts: usize,
        count: usize,
        every_seconds: f64,
        mean_job_seconds: f64,
    ) -> Workload {
        let mut rng = Rng::new(seed ^ 0x12E9);
        let jobs = (0..bursts)
            .flat_map(|i| {
                burst_with(
                    &mut rng,
                    count,
                    60.0 + i as f64 * every_seconds,
                    30.0,
                    mean_job_seconds,
                )
            })
            .collect();
        Workload::sorted(
            "repeated bursts",
            format!(
                "{bursts} bursts of {count} jobs within 30 s, one every {every_seconds:.0} s, jobs ~{mean_job_seconds} s"
            ),
            jobs,
        )
    }

    /// Mean job duration, seconds.
    pub fn mean_job_seconds(&self) -> f64 {
        if self.jobs.is_empty() {
            0.0
        } else {
            self.work_seconds() / self.jobs.len() as f64
        }
    }

    /// Reads `arrival_seconds,duration_seconds` lines. An optional header line
    /// with those names, blank lines and `#` comments are skipped; rows need
    /// not be sorted. Errors carry the 1-based line number.
    pub fn from_csv(text: &str) -> Result<Workload, WorkloadError> {
        let mut jobs = Vec::new();
        let mut seen_row = false;
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let row = raw.trim();
            if row.is_empty() || row.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = row.split(',').map(str::trim).collect();
            let err = |message: String| WorkloadError::Csv { line, message };
            if !seen_row
                && fields.len() == 2
                && fields[0].eq_ignore_ascii_case("arrival_seconds")
                && fields[1].eq_ignore_ascii_case("duration_seconds")
            {
                seen_row = true;
                continue;
            }
            seen_row = true;
            if fields.len() != 2 {
                return Err(err(format!(
                    "expected 2 fields (arrival_seconds,duration_seconds), got {}",
                    fields.len()
                )));
            }
            let number = |name: &str, text: &str| {
                text.parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| err(format!("{name} is not a number: {text:?}")))
            };
            let arrival = number("arrival_seconds", fields[0])?;
            let duration = number("duration_seconds", fields[1])?;
            if arrival < 0.0 {
                return Err(err(format!(
                    "arrival_seconds must not be negative, got {arrival}"
                )));
            }
            if duration <= 0.0 {
                return Err(err(format!(
                    "duration_seconds must be positive, got {duration}"
                )));
            }
            jobs.push(Job {
                arrival_seconds: arrival,
                duration_seconds: duration,
            });
        }
        if jobs.is_empty() {
            return Err(WorkloadError::Empty);
        }
        let count = jobs.len();
        Ok(Workload::sorted(
            "csv",
            format!("{count} jobs from csv"),
            jobs,
        ))
    }

    /// Total work in task-seconds (at one job per task).
    pub fn work_seconds(&self) -> f64 {
        self.jobs.iter().map(|j| j.duration_seconds).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_deterministic_and_shaped_as_described() {
        for name in BUILTIN_WORKLOADS {
            let a = Workload::builtin(name, 7).unwrap();
            let b = Workload::builtin(name, 7).unwrap();
            assert_eq!(a, b, "{name} is deterministic");
            assert_ne!(
                a,
                Workload::builtin(name, 8).unwrap(),
                "{name} depends on the seed"
            );
            assert!(a
                .jobs
                .windows(2)
                .all(|w| w[0].arrival_seconds <= w[1].arrival_seconds));
            let mean = a.work_seconds() / a.jobs.len() as f64;
            assert!((mean - 10.0).abs() < 1.0, "{name}: mean job {mean}");
        }
        let burst = Workload::builtin("burst", 1).unwrap();
        assert_eq!(burst.jobs.len(), 300);
        assert!(burst
            .jobs
            .iter()
            .all(|j| (60.0..90.0).contains(&j.arrival_seconds)));
        let steady = Workload::builtin("steady", 1).unwrap();
        assert!(
            (1600..2000).contains(&steady.jobs.len()),
            "{}",
            steady.jobs.len()
        );
        let spike = Workload::builtin("spike", 1).unwrap();
        let in_spike = spike
            .jobs
            .iter()
            .filter(|j| (1200.0..1260.0).contains(&j.arrival_seconds))
            .count();
        assert!(in_spike >= 480);
        let diurnal = Workload::builtin("diurnal", 1).unwrap();
        let night = diurnal
            .jobs
            .iter()
            .filter(|j| j.arrival_seconds < 3600.0)
            .count();
        let noon = diurnal
            .jobs
            .iter()
            .filter(|j| (41_400.0..45_000.0).contains(&j.arrival_seconds))
            .count();
        assert!(noon > 20 * night.max(1), "night {night}, noon {noon}");
    }

    #[test]
    fn unknown_builtin_is_an_error() {
        let err = Workload::builtin("bursty", 1).unwrap_err();
        assert!(err.to_string().starts_with("unknown workload \"bursty\""));
    }

    #[test]
    fn csv_reads_rows_header_comments_and_sorts() {
        let w =
            Workload::from_csv("arrival_seconds,duration_seconds\n# a comment\n\n5, 2.5\n1,10\n")
                .unwrap();
        assert_eq!(
            w.jobs,
            vec![
                Job {
                    arrival_seconds: 1.0,
                    duration_seconds: 10.0
                },
                Job {
                    arrival_seconds: 5.0,
                    duration_seconds: 2.5
                },
            ]
        );
    }

    #[test]
    fn csv_errors_name_the_line() {
        let cases = [
            ("1,2\n3\n", 2, "expected 2 fields"),
            ("1,2\n2,3,4\n", 2, "expected 2 fields"),
            ("x,2\n", 1, "arrival_seconds is not a number"),
            ("1,2\n\n1,abc\n", 3, "duration_seconds is not a number"),
            ("-1,2\n", 1, "arrival_seconds must not be negative"),
            ("1,0\n", 1, "duration_seconds must be positive"),
            ("1,inf\n", 1, "duration_seconds is not a number"),
            (
                "1,2\narrival_seconds,duration_seconds\n",
                2,
                "arrival_seconds is not a number",
            ),
        ];
        for (text, line, message) in cases {
            match Workload::from_csv(text) {
                Err(WorkloadError::Csv {
                    line: l,
                    message: m,
                }) => {
                    assert_eq!(l, line, "{text:?}");
                    assert!(m.starts_with(message), "{m:?} for {text:?}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        assert_eq!(Workload::from_csv("# nothing\n"), Err(WorkloadError::Empty));
    }

    #[test]
    fn rng_is_uniform_enough() {
        let mut rng = Rng::new(42);
        let n = 100_000;
        let mean = (0..n).map(|_| rng.unit()).sum::<f64>() / f64::from(n);
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        let mean_exp = (0..n).map(|_| rng.exponential(2.0)).sum::<f64>() / f64::from(n);
        assert!((mean_exp - 0.5).abs() < 0.01, "{mean_exp}");
    }
}
