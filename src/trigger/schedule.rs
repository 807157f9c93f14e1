//! When the sidecar polls: every `--period` with ±10% jitter (so replicas do
//! not poll in step), or on a cron `--schedule` (5 fields as in Kubernetes
//! CronJobs, or 6 with seconds first). Day-of-week numbers follow cron and
//! Kubernetes (0 or 7 = Sunday), not the `cron` crate's 1 = Sunday.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};

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
    fn bad_expressions_say_what_is_wrong() {
        assert!(Schedule::cron("* * *").unwrap_err().contains("3 fields"));
        assert!(Schedule::cron("0 9 * * 8").unwrap_err().contains("weekday"));
        assert!(Schedule::cron("61 * * * *").is_err());
    }
}
