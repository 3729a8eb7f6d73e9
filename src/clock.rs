//! AWS's clock, as a worker reads it: leases, deadlines and a message's age are compared between
//! machines, so a worker whose own clock runs a minute ahead would take over jobs whose holder is
//! alive (their leases look lapsed to it), and one behind would expire nothing on time. The
//! worker measures how far its clock is from AWS's on every answer it gets (the `Date` header,
//! to the second) and on every message SQS delivers for the first time (its first-receive
//! timestamp, to the millisecond), and [`Millis::now`](crate::time::Millis::now) then reads
//! AWS's time.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};

/// What one observation says of the offset (this machine's clock minus AWS's), in ms: it lies
/// within `lo..=hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub lo: i64,
    pub hi: i64,
}

/// Bounds from a server timestamp `server_ms` taken while a call ran between `sent_ms` and
/// `received_ms` on this machine's clock, the server's stamp being `resolution_ms` coarse (1000
/// for an HTTP `Date`, which drops the milliseconds). `slack_ms` allows for the time between
/// the server's stamp and its answer's arrival that the interval does not hold. Pure.
pub fn bounds(
    sent_ms: i64,
    received_ms: i64,
    server_ms: i64,
    resolution_ms: i64,
    slack_ms: i64,
) -> Bounds {
    Bounds {
        lo: sent_ms - (server_ms + resolution_ms) - slack_ms,
        hi: received_ms - server_ms + slack_ms,
    }
}

/// The offset the observations agree on: the middle of the range every one of them allows,
/// from the newest back for as long as they agree (older ones that disagree predate a step of
/// the clock). `None` without observations. Pure.
pub fn estimate(newest_first: impl IntoIterator<Item = Bounds>) -> Option<i64> {
    let mut agreed: Option<Bounds> = None;
    for b in newest_first {
        agreed = Some(match agreed {
            None => b,
            Some(a) => {
                let (lo, hi) = (a.lo.max(b.lo), a.hi.min(b.hi));
                if lo > hi {
                    break;
                }
                Bounds { lo, hi }
            }
        });
    }
    agreed.map(|b| b.lo + (b.hi - b.lo) / 2)
}

/// How long observations count: a clock that drifts or is stepped is followed within this.
const WINDOW: Duration = Duration::from_secs(600);
/// The most observations kept.
const KEPT: usize = 256;

/// The offset of this machine's clock from AWS's, as measured. Cheap to clone; add it to SDK
/// clients as an interceptor to measure on each answer.
#[derive(Debug, Clone, Default)]
pub struct ServerClock(Arc<Mutex<VecDeque<(Instant, Bounds)>>>);

impl ServerClock {
    /// Records an observation and makes [`Millis::now`](crate::time::Millis::now) follow the
    /// estimate.
    pub fn observe(&self, b: Bounds) {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        seen.push_front((Instant::now(), b));
        seen.truncate(KEPT);
        while seen.back().is_some_and(|(at, _)| at.elapsed() > WINDOW) {
            seen.pop_back();
        }
        if let Some(offset) = estimate(seen.iter().map(|(_, b)| *b)) {
            let before = crate::time::clock_offset_ms();
            crate::time::set_clock_offset_ms(offset);
            if (offset - before).abs() >= 1000 {
                tracing::warn!(
                    offset_ms = offset,
                    "this machine's clock differs from AWS's; times are read from AWS's"
                );
            }
        }
    }

    /// An observation from a message SQS delivered for the first time: its first-receive
    /// timestamp is AWS's time during the receive that took between `sent` and `received`
    /// (this machine's raw clock).
    pub fn observe_first_receive(&self, sent_ms: i64, received_ms: i64, first_receive_ms: i64) {
        self.observe(bounds(sent_ms, received_ms, first_receive_ms, 1, 5));
    }
}

/// This machine's own clock, in ms since the epoch, without the offset.
pub fn raw_now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// When the current attempt of a call was sent, by this machine's raw clock.
#[derive(Debug, Clone, Copy)]
struct SentAt(i64);

impl Storable for SentAt {
    type Storer = StoreReplace<Self>;
}

impl Intercept for ServerClock {
    fn name(&self) -> &'static str {
        "ServerClock"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state().store_put(SentAt(raw_now_ms()));
        Ok(())
    }

    fn read_before_deserialization(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let received = raw_now_ms();
        let Some(SentAt(sent)) = cfg.load::<SentAt>().copied() else {
            return Ok(());
        };
        let date = context
            .response()
            .headers()
            .get("date")
            .and_then(|d| httpdate::parse_http_date(d).ok());
        if let Some(date) = date {
            let server = date
                .duration_since(UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                .unwrap_or(0);
            // The stamp is taken while the answer is made; 250 ms allows for its way back.
            self.observe(bounds(sent, received, server, 1000, 250));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_narrow_to_the_offset_they_agree_on() {
        // A clock 90 s ahead, seen through answers stamped to the second at several phases.
        let ahead = 90_000;
        let obs = |server: i64, rtt: i64| {
            let sent = server + ahead - rtt / 2;
            let received = server + ahead + rtt / 2;
            // The Date header drops the milliseconds.
            bounds(sent, received, server - server.rem_euclid(1000), 1000, 0)
        };
        let newest_first = [
            obs(10_999, 4),
            obs(20_001, 4),
            obs(30_500, 4),
            obs(40_250, 4),
        ];
        let got = estimate(newest_first).unwrap();
        assert!((got - ahead).abs() <= 10, "{got}");

        let cases: Vec<(&str, Vec<Bounds>, Option<i64>)> = vec![
            ("none", vec![], None),
            (
                "one",
                vec![Bounds {
                    lo: -1000,
                    hi: 1000,
                }],
                Some(0),
            ),
            (
                "agreeing",
                vec![Bounds { lo: 0, hi: 100 }, Bounds { lo: 50, hi: 200 }],
                Some(75),
            ),
            // The clock was stepped: the newest observations win over the old ones.
            (
                "stepped",
                vec![Bounds { lo: 5000, hi: 5100 }, Bounds { lo: 0, hi: 100 }],
                Some(5050),
            ),
        ];
        for (name, obs, want) in cases {
            assert_eq!(estimate(obs), want, "{name}");
        }
    }
}
