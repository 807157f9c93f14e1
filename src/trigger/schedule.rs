//! When the sidecar polls: every `--period` with ±10% jitter (so replicas do
//! not poll in step), or on a cron `--schedule` (5 fields as in Kubernetes
//! CronJobs, or 6 with seconds first). Day-of-week numbers follow cron and
//! Kubernetes (0 or 7 = Sunday), not the `cron` crate's 1 = Sunday.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::{Instant, sleep_until};

use super::Trigger;

/// Fraction of the period by which each poll may come early or late.
pub const JITTER: f64 = 0.10;

#[derive(Debug, Clone)]
pub enum Schedule {
    Every(Duration),
    Cron(Box<cron::Schedule>),
}

impl Schedule {
    /// Parses a 5-field (`min hour dom mon dow`) or 6-field (`sec min hour
    /// dom mon dow`) expression.
    pub fn cron(expr: &str) -> Result<Schedule, String> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let (sec, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(format!(
                    "--schedule {expr:?} has {n} fields; expected 5 (min hour day month weekday) or 6 (with seconds first)"
                ));
            }
        };
        let dow = translate_weekdays(rest[4])
            .map_err(|e| format!("--schedule {expr:?}: weekday field: {e}"))?;
        let full = format!(
            "{sec} {} {} {} {} {dow}",
            rest[0], rest[1], rest[2], rest[3]
        );
        cron::Schedule::from_str(&full)
            .map(|s| Schedule::Cron(Box::new(s)))
            .map_err(|e| format!("--schedule {expr:?}: {e}"))
    }

    /// How long to wait after `now` before the next poll. `unit` is a
    /// uniform random number in [0, 1) that places the jitter.
    /// The time between two polls: the period, or for a cron schedule the
    /// gap between its next two times (a minute when it has none).
    pub fn nominal(&self) -> Duration {
        match self {
            Schedule::Every(period) => *period,
            Schedule::Cron(cron) => {
                let mut next = cron.upcoming(Utc);
                match (next.next(), next.next()) {
                    (Some(a), Some(b)) => (b - a).to_std().unwrap_or(Duration::from_secs(60)),
                    _ => Duration::from_secs(60),
                }
            }
        }
    }

    pub fn next_delay(&self, now: DateTime<Utc>, unit: f64) -> Duration {
        match self {
            Schedule::Every(period) => {
                let factor = 1.0 + JITTER * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
                period.mul_f64(factor)
            }
            Schedule::Cron(schedule) => schedule
                .after(&now)
                .next()
                .and_then(|next| (next - now).to_std().ok())
                // A schedule with no future firing (e.g. a past year) never
                // polls again; a day keeps the loop alive for other triggers.
                .unwrap_or(Duration::from_secs(86_400)),
        }
    }
}

/// First retry delay after a failure; it doubles per failure in a row.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// `1s, 2s, 4s, …` up to `cap`, for the `failures`-th failure in a row.
pub fn backoff(failures: u32, cap: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    FIRST_BACKOFF.saturating_mul(1 << exp).min(cap)
}

/// The sidecar loop's clock: when the next poll (or retry after a failure)
/// and the next drift check are due. Polls follow the schedule; a failure
/// worth retrying brings the next attempt forward with capped exponential
/// backoff; drift checks keep their own period.
#[derive(Debug)]
pub struct Pacer {
    schedule: Schedule,
    verify_period: Duration,
    max_backoff: Duration,
    drift_checks: bool,
    next_poll: Instant,
    next_drift: Instant,
    retrying: bool,
}

impl Pacer {
    /// `drift_checks`: only with a gateway is there anything to check.
    pub fn new(
        schedule: Schedule,
        verify_period: Duration,
        max_backoff: Duration,
        drift_checks: bool,
    ) -> Pacer {
        let now = Instant::now();
        let mut pacer = Pacer {
            schedule,
            verify_period,
            max_backoff,
            drift_checks,
            next_poll: now,
            next_drift: now + verify_period,
            retrying: false,
        };
        pacer.next_poll = now + pacer.period();
        pacer
    }

    /// Sleeps until the next timed trigger and names it.
    pub async fn due(&self) -> Trigger {
        tokio::select! {
            _ = sleep_until(self.next_poll) => {
                if self.retrying { Trigger::Retry } else { Trigger::Poll }
            }
            _ = sleep_until(self.next_drift), if self.drift_checks => Trigger::Drift,
        }
    }

    /// A poll left to the fleet's lease holder: the next one is a period away.
    pub fn skip_poll(&mut self) {
        self.next_poll = Instant::now() + self.period();
    }

    /// After a turn of the loop. `failures` is the number of failures in a
    /// row when this one is worth a retry (Git or gateway unavailable), else
    /// `None`. Returns the retry delay, if one was set.
    pub fn done(&mut self, trigger: &Trigger, failures: Option<u32>) -> Option<Duration> {
        let now = Instant::now();
        if *trigger == Trigger::Drift {
            self.next_drift = now + self.verify_period;
            // A drift check that worked leaves the poll schedule alone.
            failures?;
        }
        self.retrying = failures.is_some();
        let delay = match failures {
            Some(n) => backoff(n, self.max_backoff),
            None => self.period(),
        };
        self.next_poll = now + delay;
        failures.map(|_| delay)
    }

    fn period(&self) -> Duration {
        self.schedule.next_delay(Utc::now(), rand::random())
    }
}

/// Rewrites a cron weekday field from 0-7 (0 and 7 = Sunday) to the `cron`
/// crate's 1-7 (1 = Sunday). Names (`MON-FRI`) pass through.
fn translate_weekdays(field: &str) -> Result<String, String> {
    let shift = |n: &str| -> Result<u32, String> {
        let v: u32 = n.parse().map_err(|_| format!("{n:?} is not a weekday"))?;
        match v {
            0..=6 => Ok(v + 1),
            7 => Ok(1),
            _ => Err(format!("{v} is not a weekday (0-7)")),
        }
    };
    let mut out = Vec::new();
    for item in field.split(',') {
        let (base, step) = match item.split_once('/') {
            Some((b, s)) => (b, Some(s)),
            None => (item, None),
        };
        let numeric = base.chars().all(|c| c.is_ascii_digit() || c == '-') && !base.is_empty();
        if !numeric {
            out.push(item.to_string());
            continue;
        }
        let translated = match base.split_once('-') {
            None => shift(base)?.to_string(),
            Some((a, b)) => {
                let (a, b) = (a.parse::<u32>(), b.parse::<u32>());
                match (a, b) {
                    (Ok(0), Ok(7)) => "1-7".to_string(),
                    (Ok(a), Ok(7)) if step.is_none() && a <= 6 => format!("{}-7,1", a + 1),
                    (Ok(a), Ok(b)) if a <= b && b <= 6 => format!("{}-{}", a + 1, b + 1),
                    _ => return Err(format!("unsupported weekday range {base:?}")),
                }
            }
        };
        match step {
            Some(s) => out.push(format!("{translated}/{s}")),
            None => out.push(translated),
        }
    }
    Ok(out.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Weekday};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn period_jitter_stays_within_ten_percent() {
        let s = Schedule::Every(Duration::from_secs(30));
        let now = Utc::now();
        assert_eq!(s.next_delay(now, 0.0), Duration::from_secs(27));
        assert_eq!(s.next_delay(now, 0.5), Duration::from_secs(30));
        assert!(s.next_delay(now, 0.999_999) <= Duration::from_secs(33));
    }

    #[test]
    fn five_field_cron_fires_on_the_minute() {
        let s = Schedule::cron("*/5 * * * *").unwrap();
        let d = s.next_delay(at("2026-11-26T10:03:20Z"), 0.0);
        assert_eq!(d, Duration::from_secs(100));
    }

    #[test]
    fn six_field_cron_has_seconds_first() {
        let s = Schedule::cron("*/10 * * * * *").unwrap();
        assert_eq!(
            s.next_delay(at("2026-11-26T10:03:21Z"), 0.0),
            Duration::from_secs(9)
        );
    }

    #[test]
    fn weekday_numbers_follow_kubernetes_not_the_crate() {
        // 2026-11-26 is a Thursday; "0" must mean Sunday the 29th.
        let now = at("2026-11-26T12:00:00Z");
        for expr in ["0 9 * * 0", "0 9 * * 7", "0 9 * * SUN"] {
            let s = Schedule::cron(expr).unwrap();
            let next = now + chrono::Duration::from_std(s.next_delay(now, 0.0)).unwrap();
            assert_eq!(next.weekday(), Weekday::Sun, "{expr}");
            assert_eq!(next, Utc.with_ymd_and_hms(2026, 11, 29, 9, 0, 0).unwrap());
        }
        let weekdays = Schedule::cron("0 9 * * 1-5").unwrap();
        let next = now + chrono::Duration::from_std(weekdays.next_delay(now, 0.0)).unwrap();
        assert_eq!(next.weekday(), Weekday::Fri);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let cap = Duration::from_secs(60);
        let got: Vec<u64> = (1..=8).map(|n| backoff(n, cap).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(u32::MAX, cap), cap);
    }

    /// Ten minutes of a 30 s period and a 60 s drift check, on tokio's
    /// paused clock: every gap between polls within ±10%, not all equal
    /// (jitter), drift checks on their own beat.
    #[tokio::test(start_paused = true)]
    async fn polls_keep_the_jittered_period_and_drift_checks_their_own() {
        let start = Instant::now();
        let mut pacer = Pacer::new(
            Schedule::Every(Duration::from_secs(30)),
            Duration::from_secs(60),
            Duration::from_secs(300),
            true,
        );
        let (mut polls, mut drifts) = (vec![Duration::ZERO], Vec::new());
        while start.elapsed() < Duration::from_secs(600) {
            let trigger = pacer.due().await;
            match trigger {
                Trigger::Poll => polls.push(start.elapsed()),
                Trigger::Drift => drifts.push(start.elapsed()),
                other => panic!("unexpected {other:?}"),
            }
            pacer.done(&trigger, None);
        }
        let gaps: Vec<Duration> = polls.windows(2).map(|w| w[1] - w[0]).collect();
        for gap in &gaps {
            assert!(
                (Duration::from_secs(27)..=Duration::from_secs(33)).contains(gap),
                "{gaps:?}"
            );
        }
        assert!(gaps.iter().any(|g| *g != gaps[0]), "no jitter: {gaps:?}");
        let drift_secs: Vec<u64> = drifts.iter().map(|d| d.as_secs()).collect();
        assert_eq!(drift_secs, (1..=10).map(|n| n * 60).collect::<Vec<_>>());
    }

    /// Failures in a row retry after 1, 2, 4, 8 s … up to the cap; the first
    /// success puts polls back on the period.
    #[tokio::test(start_paused = true)]
    async fn failures_back_off_to_the_cap_then_the_period_resumes() {
        let mut pacer = Pacer::new(
            Schedule::Every(Duration::from_secs(30)),
            Duration::from_secs(3600),
            Duration::from_secs(16),
            false,
        );
        assert_eq!(pacer.due().await, Trigger::Poll);
        let mut waits = Vec::new();
        for failures in 1..=7 {
            pacer.done(&Trigger::Poll, Some(failures));
            let before = Instant::now();
            assert_eq!(pacer.due().await, Trigger::Retry);
            waits.push(before.elapsed().as_secs());
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 16, 16]);
        pacer.done(&Trigger::Retry, None);
        let before = Instant::now();
        assert_eq!(pacer.due().await, Trigger::Poll);
        assert!(before.elapsed() >= Duration::from_secs(27));
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        assert!(Schedule::cron("* * *").unwrap_err().contains("3 fields"));
        assert!(Schedule::cron("0 9 * * 8").unwrap_err().contains("weekday"));
        assert!(Schedule::cron("61 * * * *").is_err());
    }
}
