//! Cron schedules read in a time zone: when a job is due, across daylight-saving changes.
//!
//! Five fields (minute hour day-of-month month day-of-week). Times are found in real time, in the zone: a fixed
//! time that does not exist on the spring-forward day (01:30 in London) runs at the first minute after the gap; one
//! that happens twice on the fall-back day runs once, at the first.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

/// A parsed cron expression in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub expression: String,
    pub tz: Tz,
    cron: Cron,
}

/// Parses a five-field expression (no seconds), saying what is wrong with it otherwise.
pub fn parse(expression: &str) -> Result<Cron, String> {
    let fields = expression.split_whitespace().count();
    if fields != 5 && !expression.trim_start().starts_with('@') {
        return Err(format!(
            "a schedule has five fields (minute hour day-of-month month day-of-week), this has {fields}; e.g. \"0 8 * * MON\""
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .build()
        .parse(expression)
        .map_err(|e| format!("not a cron expression ({e}); e.g. \"0 8 * * MON\" for Mondays at 08:00"))
}

impl Schedule {
    pub fn new(expression: &str, tz: Tz) -> Result<Self, String> {
        Ok(Self { expression: expression.trim().to_owned(), tz, cron: parse(expression)? })
    }

    /// The first time strictly after `t` the schedule fires.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&t.with_timezone(&self.tz), false).ok().map(|d| d.with_timezone(&Utc))
    }

    /// The last time at or before `t` the schedule fired.
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_previous_occurrence(&t.with_timezone(&self.tz), true).ok().map(|d| d.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn monday_eight_in_london_moves_an_hour_in_utc_across_both_changes() {
        let s = Schedule::new("0 8 * * MON", chrono_tz::Europe::London).unwrap();
        // Clocks went forward on Sunday 25 March 2018: Monday 19th 08:00 GMT, Monday 26th 08:00 BST (07:00 UTC).
        assert_eq!(s.next_after(utc(2018, 3, 19, 8, 0)), Some(utc(2018, 3, 26, 7, 0)));
        // And back on Sunday 28 October 2018.
        assert_eq!(s.next_after(utc(2018, 10, 22, 7, 0)), Some(utc(2018, 10, 29, 8, 0)));
        assert_eq!(s.last_at_or_before(utc(2018, 3, 28, 12, 0)), Some(utc(2018, 3, 26, 7, 0)));
        assert_eq!(s.last_at_or_before(utc(2018, 3, 26, 7, 0)), Some(utc(2018, 3, 26, 7, 0)));
    }

    #[test]
    fn a_time_in_the_spring_gap_runs_once_after_it_and_a_doubled_time_runs_once() {
        let s = Schedule::new("30 1 * * *", chrono_tz::Europe::London).unwrap();
        // 01:30 does not exist on 25 March 2018 (01:00 GMT -> 02:00 BST): it runs at 02:00 BST = 01:00 UTC.
        let day_before = s.next_after(utc(2018, 3, 24, 0, 0)).unwrap();
        assert_eq!(day_before, utc(2018, 3, 24, 1, 30));
        let gap_day = s.next_after(day_before).unwrap();
        assert_eq!(gap_day, utc(2018, 3, 25, 1, 0));
        assert_eq!(s.next_after(gap_day), Some(utc(2018, 3, 26, 0, 30)));
        // 01:30 happens twice on 28 October 2018 (00:30 UTC in BST, 01:30 UTC in GMT): once, at the first.
        let first = s.next_after(utc(2018, 10, 27, 12, 0)).unwrap();
        assert_eq!(first, utc(2018, 10, 28, 0, 30));
        assert_eq!(s.next_after(first), Some(utc(2018, 10, 29, 1, 30)));
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        assert!(parse("0 8 * *").unwrap_err().contains("five fields"));
        assert!(parse("0 25 * * *").unwrap_err().contains("not a cron expression"));
        assert!(parse("0 8 * * MON").is_ok());
    }
}
