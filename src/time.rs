//! Wall-clock instants as milliseconds since the Unix epoch: the unit stored in DynamoDB and
//! compared in conditional writes, formatted as RFC 3339 at the API.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Millis(pub i64);

/// How far this machine's clock runs ahead of AWS's, in ms, as measured by
/// [`crate::clock::ServerClock`] (zero until something measures it: the functions run on AWS's
/// own time).
static CLOCK_OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// The offset [`Millis::now`] takes off this machine's clock.
pub fn clock_offset_ms() -> i64 {
    CLOCK_OFFSET_MS.load(Ordering::Relaxed)
}

/// Sets the offset [`Millis::now`] takes off this machine's clock.
pub fn set_clock_offset_ms(offset: i64) {
    CLOCK_OFFSET_MS.store(offset, Ordering::Relaxed);
}

impl Millis {
    /// Now, on AWS's clock as far as it was measured (see [`crate::clock`]).
    pub fn now() -> Self {
        Millis(crate::clock::raw_now_ms().saturating_sub(clock_offset_ms()))
    }

    pub fn plus(self, d: Duration) -> Self {
        Millis(
            self.0
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// Time from `earlier` to `self`, zero when `earlier` is later.
    pub fn since(self, earlier: Millis) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }

    /// Whole seconds since the epoch, the unit of DynamoDB's TTL attribute.
    pub fn as_epoch_seconds(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-24T05:12:02.123Z`.
    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(t) => format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.millisecond()
            ),
            Err(_) => self.0.to_string(),
        }
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_in_utc_with_millis() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_795_000_000_123, "2026-11-18T11:06:40.123Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
        ];
        for (ms, want) in cases {
            assert_eq!(Millis(ms).to_rfc3339(), want, "{ms}");
        }
    }

    #[test]
    fn arithmetic_saturates_and_never_goes_negative() {
        assert_eq!(Millis(1000).since(Millis(3000)), Duration::ZERO);
        assert_eq!(
            Millis(3500).since(Millis(1000)),
            Duration::from_millis(2500)
        );
        assert_eq!(
            Millis(i64::MAX).plus(Duration::from_secs(1)),
            Millis(i64::MAX)
        );
        assert_eq!(Millis(-1).as_epoch_seconds(), -1);
        assert_eq!(Millis(1999).as_epoch_seconds(), 1);
    }
}
