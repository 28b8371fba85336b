//! Which days a Graph API value covers.
//!
//! A daily value's `end_time` is midnight US-Pacific at the END of the day it covers, written in UTC:
//! `2018-01-02T08:00:00+0000` (winter, PST) covers 2018-01-01; `2018-07-02T07:00:00+0000` (summer, PDT) covers
//! 2018-07-01. `week` and `days_28` values are rolling windows ending at the same instant. Days in this project are
//! Pacific-time days, and the data dictionary says so.

use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveDate, TimeZone, Timelike, Utc};
use chrono_tz::America::Los_Angeles;

use crate::{DomainError, Period};

/// The Pacific-time days a value covers: `last` is the day before its `end_time`, `first` is `days` earlier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoveredDays {
    pub first: NaiveDate,
    pub last: NaiveDate,
}

impl CoveredDays {
    pub fn len(&self) -> i64 {
        (self.last - self.first).num_days() + 1
    }

    pub fn is_empty(&self) -> bool {
        self.last < self.first
    }
}

/// Day 0 of the day numbers used in Arrow `Date32` columns and ClickHouse `Date`.
pub const EPOCH: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid");

/// Days since 1970-01-01 (Arrow's `Date32`).
pub fn day_number(day: NaiveDate) -> i32 {
    // Days from the common era's first day, less 1970-01-01's (719,163): the same as `(day - EPOCH).num_days()`,
    // without its duration arithmetic (it ran once per row written).
    day.num_days_from_ce() - 719_163
}

/// The day `n` days after 1970-01-01.
pub fn from_day_number(n: i32) -> NaiveDate {
    EPOCH + Duration::days(n as i64)
}

/// The Unix time of midnight US-Pacific at the start of `day` (what `since`/`until` take).
pub fn pacific_midnight(day: NaiveDate) -> i64 {
    end_time_for_day(day - Duration::days(1)).timestamp()
}

/// Today in US-Pacific time: the first day whose values are not complete yet.
pub fn pacific_today() -> NaiveDate {
    pacific_today_at(Utc::now())
}

/// The US-Pacific day at instant `t`.
pub fn pacific_today_at(t: DateTime<Utc>) -> NaiveDate {
    t.with_timezone(&Los_Angeles).date_naive()
}

/// Parses a Graph `end_time` such as `2018-01-02T08:00:00+0000` (Meta's offset has no colon).
pub fn parse_end_time(value: &str) -> Result<DateTime<Utc>, DomainError> {
    DateTime::<FixedOffset>::parse_from_str(value, "%Y-%m-%dT%H:%M:%S%z")
        .or_else(|_| DateTime::parse_from_rfc3339(value))
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| DomainError::EndTime { value: value.to_owned(), reason: e.to_string() })
}

/// The days covered by a value of `period` whose window ends at `end_time`.
///
/// Refuses an `end_time` that is not a Pacific midnight: Meta never sends one, so it means a parsing or unit bug
/// upstream, and guessing a day would silently shift a whole series.
pub fn covered_days(end_time: DateTime<Utc>, period: Period) -> Result<CoveredDays, DomainError> {
    let local = end_time.with_timezone(&Los_Angeles);
    if local.hour() != 0 || local.minute() != 0 || local.second() != 0 {
        return Err(DomainError::EndTime {
            value: end_time.format("%Y-%m-%dT%H:%M:%S%z").to_string(),
            reason: format!("not midnight US-Pacific (it is {} Pacific)", local.format("%H:%M:%S")),
        });
    }
    let last = local.date_naive() - Duration::days(1);
    let days = match period.window_days() {
        Some(d) => d,
        None => {
            return Err(DomainError::EndTime {
                value: end_time.to_rfc3339(),
                reason: "lifetime values have no end_time window".into(),
            });
        }
    };
    Ok(CoveredDays { first: last - Duration::days(days - 1), last })
}

/// The `end_time` Meta writes for a value whose window ends with Pacific day `last_day`.
pub fn end_time_for_day(last_day: NaiveDate) -> DateTime<Utc> {
    let next = last_day + Duration::days(1);
    let midnight = next.and_hms_opt(0, 0, 0).expect("midnight exists");
    // Midnight always exists in America/Los_Angeles (DST changes happen at 02:00), so this is unambiguous.
    Los_Angeles
        .from_local_datetime(&midnight)
        .single()
        .expect("Pacific midnight is never ambiguous")
        .with_timezone(&Utc)
}

/// Formats an instant the way the Graph API does: `2018-01-02T08:00:00+0000`.
pub fn format_graph_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S+0000").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn day_number_counts_days_from_1970_on_both_sides_of_it() {
        // Every day from 1900 to 2110 (ClickHouse's Date ends in 2105), leap years and centuries included.
        let mut day = d(1900, 1, 1);
        while day <= d(2110, 12, 31) {
            assert_eq!(day_number(day) as i64, (day - EPOCH).num_days(), "{day}");
            assert_eq!(from_day_number(day_number(day)), day);
            day = day.succ_opt().unwrap();
        }
        assert_eq!(day_number(EPOCH), 0);
    }

    fn day_of(end_time: &str) -> NaiveDate {
        covered_days(parse_end_time(end_time).unwrap(), Period::Day).unwrap().last
    }

    #[test]
    fn winter_and_summer_offsets() {
        assert_eq!(day_of("2018-01-02T08:00:00+0000"), d(2018, 1, 1));
        assert_eq!(day_of("2018-07-02T07:00:00+0000"), d(2018, 7, 1));
    }

    #[test]
    fn spring_forward_2018() {
        // DST began 2018-03-11 02:00 PST. The day 2018-03-10 (PST) ends at 2018-03-11T08:00Z;
        // the short day 2018-03-11 ends at midnight PDT, 2018-03-12T07:00Z.
        assert_eq!(day_of("2018-03-11T08:00:00+0000"), d(2018, 3, 10));
        assert_eq!(day_of("2018-03-12T07:00:00+0000"), d(2018, 3, 11));
        assert_eq!(day_of("2018-03-13T07:00:00+0000"), d(2018, 3, 12));
        // A winter offset on a summer date is not a Pacific midnight.
        assert!(covered_days(parse_end_time("2018-03-13T08:00:00+0000").unwrap(), Period::Day).is_err());
    }

    #[test]
    fn fall_back_2018() {
        // DST ended 2018-11-04 02:00 PDT. 2018-11-03 ends at midnight PDT (07:00Z on the 4th);
        // the long day 2018-11-04 ends at midnight PST (08:00Z on the 5th).
        assert_eq!(day_of("2018-11-04T07:00:00+0000"), d(2018, 11, 3));
        assert_eq!(day_of("2018-11-05T08:00:00+0000"), d(2018, 11, 4));
        assert!(covered_days(parse_end_time("2018-11-05T07:00:00+0000").unwrap(), Period::Day).is_err());
    }

    #[test]
    fn round_trip_every_day_of_two_years() {
        let mut day = d(2017, 1, 1);
        while day < d(2019, 1, 1) {
            let end = end_time_for_day(day);
            let text = format_graph_time(end);
            assert!(text.ends_with("T07:00:00+0000") || text.ends_with("T08:00:00+0000"), "{text}");
            assert_eq!(day_of(&text), day);
            day += Duration::days(1);
        }
    }

    #[test]
    fn week_and_28_day_windows_end_on_the_same_day() {
        let end = parse_end_time("2018-03-13T07:00:00+0000").unwrap();
        let week = covered_days(end, Period::Week).unwrap();
        assert_eq!(week, CoveredDays { first: d(2018, 3, 6), last: d(2018, 3, 12) });
        assert_eq!(week.len(), 7);
        let m = covered_days(end, Period::Days28).unwrap();
        assert_eq!(m.first, d(2018, 2, 13));
        assert_eq!(m.len(), 28);
        assert!(covered_days(end, Period::Lifetime).is_err());
    }

    #[test]
    fn accepts_rfc3339_too_and_rejects_garbage() {
        assert_eq!(day_of("2018-01-02T08:00:00Z"), d(2018, 1, 1));
        let err = parse_end_time("2018-01-02").unwrap_err();
        assert!(err.to_string().contains("2018-01-02"));
    }
}
