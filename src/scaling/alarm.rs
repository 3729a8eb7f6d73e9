//! A model of one CloudWatch alarm whose action is an Application Auto Scaling policy: what the
//! anchors in `sluice simulate` are built from, and what the backstop alarm the CDK app deploys
//! beside sluice's controller does. Pure.

use serde::{Deserialize, Serialize};

/// CloudWatch keeps invoking an Auto Scaling action once a minute while its
/// alarm stays in ALARM.
pub const ALARM_ACTION_REPEAT_SECONDS: f64 = 60.0;

const EPSILON: f64 = 1e-9;

/// Minutes the backstop alarm waits: no sample from the backlog function and an empty queue for
/// this many minutes in a row park the service at `min_tasks` (the CDK app's
/// `BACKSTOP_MINUTES`).
pub const BACKSTOP_MINUTES: u32 = 15;

/// The backstop alarm's datapoint for one minute:
/// `IF(FILL(samples, 0) == 0 AND FILL(visible, 0) + FILL(inflight, 0) == 0, 0, 1)`, breaching at
/// 0 or below. `samples` is how many samples the backlog function published in the minute;
/// `visible` and `in_flight` SQS's own Maximum of the minute.
pub fn backstop_datapoint(samples: u32, visible: u32, in_flight: u32) -> f64 {
    if samples == 0 && u64::from(visible) + u64::from(in_flight) == 0 {
        0.0
    } else {
        1.0
    }
}

/// How an alarm treats a period without a datapoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MissingData {
    /// `missing`, what sluice deploys: CloudWatch evaluates the most recent
    /// real datapoints, so a gap changes nothing; once the whole evaluation
    /// range is empty the alarm goes to INSUFFICIENT_DATA and stops acting.
    Missing,
    /// `notBreaching`: a gap counts as a good datapoint and ends any streak.
    NotBreaching,
}

/// One CloudWatch alarm whose action is an Application Auto Scaling policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct AlarmState {
    /// Whether the alarm is in ALARM.
    pub in_alarm: bool,
    /// Consecutive breaching datapoints up to the last evaluation.
    pub breaching_streak: u32,
    /// Consecutive periods without a datapoint.
    pub missing_streak: u32,
    /// When the alarm last invoked its action.
    pub last_action_at: Option<f64>,
}

impl AlarmState {
    /// Evaluates the alarm on its newest datapoint (`None`: the period had
    /// none) with "N out of N" datapoints to alarm, and says whether it
    /// invokes its action now: on entering ALARM, then once a minute while it
    /// stays.
    pub fn evaluate(
        &mut self,
        breaching: Option<bool>,
        datapoints: u32,
        missing: MissingData,
        now: f64,
    ) -> bool {
        let n = datapoints.max(1);
        let breaching = match (breaching, missing) {
            (Some(b), _) => {
                self.missing_streak = 0;
                b
            }
            (None, MissingData::NotBreaching) => {
                self.missing_streak = 0;
                false
            }
            (None, MissingData::Missing) => {
                self.missing_streak = self.missing_streak.saturating_add(1);
                if self.missing_streak >= n {
                    // INSUFFICIENT_DATA: no action, and a fresh start.
                    self.in_alarm = false;
                    self.breaching_streak = 0;
                    return false;
                }
                // The most recent real datapoints decide: nothing changes.
                return self.repeat_due(now, true);
            }
        };
        self.breaching_streak = if breaching {
            self.breaching_streak.saturating_add(1)
        } else {
            0
        };
        let was_in_alarm = self.in_alarm;
        self.in_alarm = self.breaching_streak >= n;
        self.repeat_due(now, was_in_alarm)
    }

    fn repeat_due(&mut self, now: f64, was_in_alarm: bool) -> bool {
        if !self.in_alarm {
            return false;
        }
        let due = match self.last_action_at {
            None => true,
            Some(t) => !was_in_alarm || now - t + EPSILON >= ALARM_ACTION_REPEAT_SECONDS,
        };
        if due {
            self.last_action_at = Some(now);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backstop_breaches_only_without_samples_and_work() {
        // (samples, visible, in flight, breaching)
        let cases = [
            (0, 0, 0, true),
            (1, 0, 0, false),
            (0, 1, 0, false),
            (0, 0, 1, false),
            (6, 3, 2, false),
        ];
        for (samples, visible, in_flight, want) in cases {
            assert_eq!(
                backstop_datapoint(samples, visible, in_flight) <= 0.0,
                want,
                "{samples} {visible} {in_flight}"
            );
        }
    }

    #[test]
    fn an_alarm_acts_on_entering_alarm_then_once_a_minute() {
        let mut a = AlarmState::default();
        let acted: Vec<bool> = (1..=5)
            .map(|i| a.evaluate(Some(i >= 2), 2, MissingData::Missing, f64::from(i) * 60.0))
            .collect();
        assert_eq!(acted, vec![false, false, true, true, true]);
        // A good datapoint returns it to OK.
        assert!(!a.evaluate(Some(false), 2, MissingData::Missing, 360.0));
        assert!(!a.in_alarm);
    }

    #[test]
    fn missing_data_keeps_the_state_until_the_whole_range_is_empty() {
        let mut a = AlarmState::default();
        a.evaluate(Some(true), 3, MissingData::Missing, 60.0);
        a.evaluate(Some(true), 3, MissingData::Missing, 120.0);
        assert!(a.evaluate(Some(true), 3, MissingData::Missing, 180.0));
        // Most recent real datapoints decide for two empty minutes, then INSUFFICIENT_DATA.
        assert!(a.evaluate(None, 3, MissingData::Missing, 240.0));
        assert!(a.evaluate(None, 3, MissingData::Missing, 300.0));
        assert!(!a.evaluate(None, 3, MissingData::Missing, 360.0));
        assert!(!a.in_alarm);
        // "Not breaching" ends a streak on the first gap.
        let mut b = AlarmState::default();
        b.evaluate(Some(true), 2, MissingData::NotBreaching, 60.0);
        b.evaluate(None, 2, MissingData::NotBreaching, 120.0);
        assert!(!b.evaluate(Some(true), 2, MissingData::NotBreaching, 180.0));
    }
}
