//! Age-band engagement: who engages, by age band and gender, per practice and per tenant, from whichever source
//! the data has, saying which; and penetration into each band's registered patients.
//!
//! Sources, best first: engaged people by age/gender (28 days), people reached by age/gender (28 days), followers by
//! age/gender (older API era); video view time by age/gender of the page's posts (current era: shares of watch time,
//! not people, so no penetration). Meta withholds breakdowns below 100 people; we suppress bands below
//! [`SMALL_CELL`] people ourselves.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use polars::prelude::*;
use pulse_domain::{AgeBand, AgeGenderKey, CanonicalMetric as M, Gender, Period as P, PostInsightSnapshot};

use crate::Result;
use crate::frames::day_number;
use crate::registered::Registered;

/// The unit of the figures when the source counts people.
pub const UNIT_PEOPLE: &str = "people";
/// The unit when the source is video watch time (Meta reports `post_video_view_time*` in milliseconds).
pub const UNIT_WATCH_TIME: &str = "ms of video watch time";

/// Bands with fewer people than this are suppressed in the output.
pub const SMALL_CELL: f64 = 10.0;

pub const WANTED: &[(M, P)] = &[
    (M::PageEngagedByAgeGender, P::Days28),
    (M::PageReachByAgeGender, P::Days28),
    (M::PageFollowersByAgeGender, P::Day),
];

/// The sources in order of preference, with how the output names them.
pub const SOURCES: &[(M, P, &str)] = &[
    (M::PageEngagedByAgeGender, P::Days28, "engaged people, 28 days (page_content_activity_by_age_gender_unique)"),
    (M::PageReachByAgeGender, P::Days28, "people reached, 28 days (page_impressions_by_age_gender_unique)"),
    (M::PageFollowersByAgeGender, P::Day, "followers (page_fans_gender_age)"),
];
pub const VIDEO_SOURCE: &str =
    "video watch time of the page's posts (post_video_view_time_by_age_bucket_and_gender): shares of time, not people";

/// Cells per practice: band -> [F, M, U].
type Cells = BTreeMap<String, [[f64; 3]; 7]>;

fn gender_index(g: Gender) -> usize {
    match g {
        Gender::Female => 0,
        Gender::Male => 1,
        Gender::Unknown => 2,
    }
}

/// The breakdowns of each source, summed per practice: for every Sunday's window (one a week, ending with the reach
/// week), and for each page's latest window at or before `to` (with the last day any page's latest ends).
#[derive(Default)]
struct SourceCells {
    sundays: BTreeMap<i32, Cells>,
    latest: Cells,
    latest_end: Option<i32>,
}

/// One pass over the breakdown rows (the kept windows: see [`crate::frames::Facts`]), every source at once.
fn source_cells(facts: &DataFrame, to: NaiveDate) -> Result<Vec<SourceCells>> {
    let f = facts
        .clone()
        .lazy()
        .filter(col("breakdown").neq(lit("")).and(col("day").lt_eq(crate::frames::date(to))))
        .with_column(col("day").cast(DataType::Int32).alias("day_n"))
        .select([
            col("practice_code"),
            col("page_id"),
            col("metric"),
            col("period"),
            col("breakdown"),
            col("value"),
            col("day_n"),
        ])
        .collect()?;
    let s = |name: &str| -> Result<StringChunked> { Ok(f.column(name)?.str()?.clone()) };
    let (practices, pages, metrics, periods, keys) =
        (s("practice_code")?, s("page_id")?, s("metric")?, s("period")?, s("breakdown")?);
    let values = f.column("value")?.f64()?.clone();
    let days = f.column("day_n")?.i32()?.clone();
    // Each row's source, once per row (zipped iterators throughout: `get(i)` on columns of many chunks finds the
    // chunk of every row anew).
    let sources: Vec<Option<usize>> = metrics
        .iter()
        .zip(periods.iter())
        .map(|(m, p)| SOURCES.iter().position(|(sm, sp, _)| m == Some(sm.as_str()) && p == Some(sp.as_str())))
        .collect();
    // Practices, pages and breakdown keys interned once (a tenant has a few hundred of each, and millions of rows):
    // the per-row work is then array indexing, not string comparisons in ordered maps or parsing of keys.
    let mut practice_ix: PlHashMap<&str, usize> = PlHashMap::new();
    let mut practice_names: Vec<&str> = Vec::new();
    let mut page_ix: PlHashMap<&str, usize> = PlHashMap::new();
    let mut key_ix: PlHashMap<&str, Option<(usize, usize)>> = PlHashMap::new();
    // Each row, interned (24 bytes); rows of no source or key dropped.
    struct Row {
        value: f64,
        practice: u32,
        page: u32,
        day: i32,
        src: u8,
        band: u8,
        gender: u8,
    }
    let mut interned: Vec<Row> = Vec::new();
    let rows =
        sources.iter().zip(practices.iter()).zip(pages.iter()).zip(keys.iter()).zip(values.iter()).zip(days.iter());
    for (((((src, p), page), k), v), d) in rows {
        let (Some(src), Some(p), Some(page), Some(k), Some(v), Some(d)) = (*src, p, page, k, v, d) else {
            continue;
        };
        let parsed = *key_ix.entry(k).or_insert_with(|| {
            k.parse::<AgeGenderKey>().ok().map(|key| {
                (AgeBand::ALL.iter().position(|b| *b == key.band).expect("a band"), gender_index(key.gender))
            })
        });
        let Some((band, g)) = parsed else { continue };
        let next = practice_names.len();
        let pi = *practice_ix.entry(p).or_insert_with(|| {
            practice_names.push(p);
            next
        });
        let next = page_ix.len();
        let gi = *page_ix.entry(page).or_insert(next);
        interned.push(Row {
            value: v,
            practice: pi as u32,
            page: gi as u32,
            day: d,
            src: src as u8,
            band: band as u8,
            gender: g as u8,
        });
    }
    // Each (source, page)'s latest day in the last week (the latest window; see `frames::Facts`).
    let last_week = day_number(to) - 6;
    let mut latest_day: Vec<Vec<Option<i32>>> = vec![vec![None; page_ix.len()]; SOURCES.len()];
    for r in &interned {
        if r.day >= last_week {
            let (d, e) = (r.day, &mut latest_day[r.src as usize][r.page as usize]);
            *e = Some(e.map_or(d, |x| x.max(d)));
        }
    }
    // Cells per practice index: each Sunday's, and the latest window's.
    type Flat = Vec<Option<[[f64; 3]; 7]>>;
    let n = practice_names.len();
    let mut sundays: Vec<BTreeMap<i32, Flat>> = SOURCES.iter().map(|_| BTreeMap::new()).collect();
    let mut latest: Vec<Flat> = SOURCES.iter().map(|_| vec![None; n]).collect();
    let mut out: Vec<SourceCells> = SOURCES.iter().map(|_| SourceCells::default()).collect();
    for r in &interned {
        let (src, pi, page, d, v) = (r.src as usize, r.practice as usize, r.page as usize, r.day, r.value);
        let (band, g) = (r.band as usize, r.gender as usize);
        if d % 7 == 3 {
            sundays[src].entry(d).or_insert_with(|| vec![None; n])[pi].get_or_insert([[0.0; 3]; 7])[band][g] += v;
        }
        if latest_day[src][page] == Some(d) {
            latest[src][pi].get_or_insert([[0.0; 3]; 7])[band][g] += v;
            out[src].latest_end = Some(out[src].latest_end.map_or(d, |e| e.max(d)));
        }
    }
    let named = |flat: Flat| -> Cells {
        flat.into_iter().enumerate().filter_map(|(i, c)| c.map(|c| (practice_names[i].to_owned(), c))).collect()
    };
    for (src, (days, last)) in sundays.into_iter().zip(latest).enumerate() {
        out[src].sundays = days.into_iter().map(|(d, flat)| (d, named(flat))).collect();
        out[src].latest = named(last);
    }
    Ok(out)
}

/// Cells from the video view time of posts: the latest snapshot of each post, summed per practice.
fn video_cells(snapshots: &[PostInsightSnapshot]) -> Cells {
    let mut latest: BTreeMap<(&str, &str), (NaiveDate, f64, &str)> = BTreeMap::new();
    for s in snapshots.iter().filter(|s| s.metric == M::PostVideoViewTimeByAgeGender && !s.breakdown.is_empty()) {
        let e =
            latest.entry((s.post.as_str(), &*s.breakdown)).or_insert((s.snapshot_day, s.value, s.practice.as_str()));
        if s.snapshot_day >= e.0 {
            *e = (s.snapshot_day, s.value, s.practice.as_str());
        }
    }
    let mut cells: Cells = BTreeMap::new();
    for ((_, key), (_, value, practice)) in latest {
        let Ok(key) = key.parse::<AgeGenderKey>() else { continue };
        let band = AgeBand::ALL.iter().position(|b| *b == key.band).expect("a band");
        cells.entry(practice.to_owned()).or_insert([[0.0; 3]; 7])[band][gender_index(key.gender)] += value;
    }
    cells
}

#[derive(Default)]
struct Rows {
    level: Vec<&'static str>,
    practice: Vec<String>,
    source: Vec<String>,
    window_end: Vec<i32>,
    band: Vec<&'static str>,
    unit: Vec<&'static str>,
    female: Vec<Option<f64>>,
    male: Vec<Option<f64>>,
    unknown: Vec<Option<f64>>,
    people: Vec<Option<f64>>,
    share: Vec<Option<f64>>,
    registered: Vec<Option<f64>>,
    penetration: Vec<Option<f64>>,
    note: Vec<String>,
}

impl Rows {
    /// One window's rows: each practice's, then the tenant's (the practices summed).
    fn push_window(&mut self, cells: &Cells, end: i32, source: &str, people: bool, registered: Option<&Registered>) {
        let mut tenant = [[0.0; 3]; 7];
        let mut tenant_reg = [0.0; 7];
        let mut any_reg = false;
        for (practice, bands) in cells {
            let reg = registered.and_then(|r| r.practices.get(practice)).map(|b| {
                let mut out = [0.0; 7];
                for i in 0..7 {
                    out[i] = b[i][0] + b[i][1];
                }
                out
            });
            if let Some(r) = reg {
                any_reg = true;
                for i in 0..7 {
                    tenant_reg[i] += r[i];
                }
            }
            for i in 0..7 {
                for g in 0..3 {
                    tenant[i][g] += bands[i][g];
                }
            }
            self.push_level("practice", practice, source, end, bands, reg, people, "");
        }
        self.push_level(
            "tenant",
            "ALL",
            source,
            end,
            &tenant,
            any_reg.then_some(tenant_reg),
            people,
            "sum across the tenant's pages: people who follow several pages count once per page",
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn push_level(
        &mut self,
        level: &'static str,
        practice: &str,
        source: &str,
        end: i32,
        bands: &[[f64; 3]; 7],
        registered: Option<[f64; 7]>,
        people_are_people: bool,
        extra_note: &str,
    ) {
        let total: f64 = bands.iter().flatten().sum();
        for (i, band) in AgeBand::ALL.iter().enumerate() {
            let people = bands[i].iter().sum::<f64>();
            let small = people < SMALL_CELL && people_are_people;
            let keep = |v: f64| if small { None } else { Some(v) };
            let reg = registered.map(|r| r[i]).filter(|r| *r > 0.0);
            self.level.push(level);
            self.practice.push(practice.to_owned());
            self.source.push(source.to_owned());
            self.window_end.push(end);
            self.band.push(band.as_str());
            self.unit.push(if people_are_people { UNIT_PEOPLE } else { UNIT_WATCH_TIME });
            self.female.push(keep(bands[i][0]));
            self.male.push(keep(bands[i][1]));
            self.unknown.push(keep(bands[i][2]));
            self.people.push(keep(people));
            self.share.push(if total > 0.0 && !small { Some(people / total) } else { None });
            self.registered.push(reg);
            self.penetration.push(match (people_are_people && !small, reg) {
                (true, Some(r)) => Some(people / r),
                _ => None,
            });
            let mut note = extra_note.to_owned();
            if small {
                note = format!("fewer than {SMALL_CELL} people: suppressed");
            } else if !people_are_people && registered.is_some() {
                note = "penetration needs counts of people; this source gives watch time".into();
            } else if reg.is_none() && people_are_people {
                note = "no registered-patient figures for this practice".into();
            }
            self.note.push(note);
        }
    }

    fn frame(self) -> Result<DataFrame> {
        let df = df!(
            "level" => self.level,
            "practice_code" => self.practice,
            "source" => self.source,
            "window_end" => self.window_end,
            "age_band" => self.band,
            "unit" => self.unit,
            "female" => self.female,
            "male" => self.male,
            "unknown" => self.unknown,
            "people" => self.people,
            "share" => self.share,
            "registered" => self.registered,
            "penetration" => self.penetration,
            "note" => self.note,
        )?;
        Ok(df.lazy().with_column(col("window_end").cast(DataType::Date)).collect()?)
    }
}

/// Why there is no age-band source: retired metrics are called retired, with the date, not "no data".
fn no_source_reason(to: NaiveDate) -> String {
    let catalogue = pulse_domain::MetricCatalogue::default();
    let retired: Vec<(M, NaiveDate)> = SOURCES
        .iter()
        .filter_map(|(m, _, _)| catalogue.retired_since(*m).map(|d| (*m, d)))
        .filter(|(_, d)| *d <= to)
        .collect();
    if retired.len() == SOURCES.len() {
        let since = retired.iter().map(|(_, d)| *d).max().expect("not empty");
        format!(
            "page-level age/gender metrics were retired by Meta on {since} (the report range ends {to}); the current \
             API has only video watch time by age of video posts, and these pages' stored posts have none"
        )
    } else {
        "no age/gender breakdown in the stored data: Meta withholds breakdowns below 100 people".into()
    }
}

/// Whether [`age_bands`] would take its latest window from the posts' video watch time (no page-level breakdown
/// in the facts' last week): then it needs every post's snapshots.
pub fn needs_video(facts: &DataFrame, to: NaiveDate) -> Result<bool> {
    Ok(source_cells(facts, to)?.iter().all(|c| c.latest_end.is_none()))
}

/// The age-band report for a tenant: for every 28-day window the reports keep (each Sunday's, ending with the reach
/// week, and the latest), per practice and a tenant row, each window from the best source it has, saying which.
/// Returns the rows and the latest window's source (or why there is none).
pub fn age_bands(
    facts: &DataFrame,
    snapshots: &[PostInsightSnapshot],
    registered: Option<&Registered>,
    to: NaiveDate,
) -> Result<(DataFrame, String)> {
    let sources = source_cells(facts, to)?;
    // Every window end, each with the first source that has it.
    let mut windows: BTreeMap<i32, (&Cells, &'static str)> = BTreeMap::new();
    for (src, cells) in sources.iter().enumerate().rev() {
        for (end, c) in &cells.sundays {
            windows.insert(*end, (c, SOURCES[src].2));
        }
    }
    // The latest window, unless it ends on a Sunday already kept (the Sunday's is the same window).
    if let Some((cells, end, label)) =
        sources.iter().enumerate().find_map(|(i, c)| c.latest_end.map(|e| (&c.latest, e, SOURCES[i].2)))
    {
        windows.entry(end).or_insert((cells, label));
    }
    let mut rows = Rows::default();
    for (end, (cells, label)) in &windows {
        rows.push_window(cells, *end, label, true, registered);
    }
    // Without a page-level breakdown in the last week (the current API era has none), the latest window is the video
    // watch time of the page's posts, when there is any.
    if sources.iter().all(|c| c.latest_end.is_none()) {
        let video = video_cells(snapshots);
        if !video.is_empty() {
            rows.push_window(&video, day_number(to), VIDEO_SOURCE, false, registered);
            return Ok((rows.frame()?, VIDEO_SOURCE.to_owned()));
        }
        if windows.is_empty() {
            return Ok((rows.frame()?, no_source_reason(to)));
        }
    }
    let latest = windows.values().next_back().map(|(_, l)| (*l).to_owned()).unwrap_or_default();
    Ok((rows.frame()?, latest))
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use pulse_domain::{ApiVersion, PageInsightFact};

    use super::*;

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn fact(practice: &str, page: &str, metric: M, period: P, on: &str, key: &str, value: f64) -> PageInsightFact {
        PageInsightFact {
            practice: practice.parse().unwrap(),
            page: page.parse().unwrap(),
            metric,
            graph_metric: "",
            period,
            day: day(on),
            breakdown: key.into(),
            value,
            api_version: ApiVersion::new(2, 12),
            fetched_at: Utc::now(),
        }
    }

    /// (female, male, unknown, source).
    type Cell = (Option<f64>, Option<f64>, Option<f64>, String);

    /// (female, male, unknown, source) of one practice's band in one window; None when the practice has no row.
    fn cell(df: &DataFrame, practice: &str, end: &str, band: &str) -> Option<Cell> {
        let hit = df
            .clone()
            .lazy()
            .filter(
                col("level")
                    .eq(lit("practice"))
                    .and(col("practice_code").eq(lit(practice)))
                    .and(col("window_end").eq(lit(day(end))))
                    .and(col("age_band").eq(lit(band))),
            )
            .collect()
            .unwrap();
        if hit.height() == 0 {
            return None;
        }
        assert_eq!(hit.height(), 1, "{hit}");
        let f = |c: &str| hit.column(c).unwrap().f64().unwrap().get(0);
        let source = hit.column("source").unwrap().str().unwrap().get(0).unwrap().to_owned();
        Some((f("female"), f("male"), f("unknown"), source))
    }

    #[test]
    fn windows_sum_a_practice_s_pages_from_the_best_source_and_the_latest_is_each_page_s_own_latest_day() {
        let (engaged, reach) = ((M::PageEngagedByAgeGender, P::Days28), (M::PageReachByAgeGender, P::Days28));
        let (a, b, c) = ("100000000001", "100000000002", "100000000003");
        let rows = [
            // Sunday 11 March: only reach has it.
            ("M83001", a, reach, "2018-03-11", "F.18-24", 40.0),
            // Sunday 18 March: engaged, two pages of one practice summed; reach's figure for it is not used.
            ("M83001", a, engaged, "2018-03-18", "F.25-34", 30.0),
            ("M83001", a, engaged, "2018-03-18", "M.25-34", 20.0),
            ("M83001", b, engaged, "2018-03-18", "F.25-34", 5.0),
            ("M83002", c, engaged, "2018-03-18", "U.65+", 12.0),
            ("M83001", a, reach, "2018-03-18", "F.25-34", 1000.0),
            // The last week before Wednesday 28 March: Sunday 25th is kept; page a's latest is the 27th, c's the 26th.
            ("M83001", a, engaged, "2018-03-25", "F.25-34", 50.0),
            ("M83001", a, engaged, "2018-03-26", "F.25-34", 999.0),
            ("M83001", a, engaged, "2018-03-27", "F.25-34", 60.0),
            ("M83002", c, engaged, "2018-03-26", "U.65+", 15.0),
            // Page b of the same practice has its own latest day, the 26th; a band of 5 people is suppressed.
            ("M83001", b, engaged, "2018-03-26", "F.25-34", 8.0),
            ("M83001", b, engaged, "2018-03-26", "M.45-54", 5.0),
            // A key that is not an age/gender key is skipped, and does not make its day a page's latest (page c's
            // latest stays the 26th); a day after the range is not read.
            ("M83001", a, engaged, "2018-03-27", "X.99", 7.0),
            ("M83002", c, engaged, "2018-03-27", "X.99", 7.0),
            ("M83001", a, engaged, "2018-03-29", "F.25-34", 70.0),
        ];
        let facts: Vec<PageInsightFact> =
            rows.iter().map(|(pr, pg, (m, p), on, k, v)| fact(pr, pg, *m, *p, on, k, *v)).collect();
        let df = crate::frames::facts_frame(&facts).unwrap();
        let (out, latest) = age_bands(&df, &[], None, day("2018-03-28")).unwrap();
        let (engaged_label, reach_label) = (SOURCES[0].2.to_owned(), SOURCES[1].2.to_owned());
        assert_eq!(latest, engaged_label);
        assert_eq!(cell(&out, "M83001", "2018-03-11", "18-24"), Some((Some(40.0), Some(0.0), Some(0.0), reach_label)));
        assert_eq!(
            cell(&out, "M83001", "2018-03-18", "25-34"),
            Some((Some(35.0), Some(20.0), Some(0.0), engaged_label.clone()))
        );
        assert_eq!(
            cell(&out, "M83002", "2018-03-18", "65+"),
            Some((Some(0.0), Some(0.0), Some(12.0), engaged_label.clone()))
        );
        assert_eq!(
            cell(&out, "M83001", "2018-03-25", "25-34"),
            Some((Some(50.0), Some(0.0), Some(0.0), engaged_label.clone()))
        );
        // The second practice has no window ending on the 25th, and no row for it.
        assert_eq!(cell(&out, "M83002", "2018-03-25", "65+"), None);
        // The latest window ends on the latest page's day, each page from its own latest day.
        assert_eq!(
            cell(&out, "M83001", "2018-03-27", "25-34"),
            Some((Some(68.0), Some(0.0), Some(0.0), engaged_label.clone()))
        );
        assert_eq!(cell(&out, "M83001", "2018-03-27", "45-54"), Some((None, None, None, engaged_label.clone())));
        assert_eq!(cell(&out, "M83002", "2018-03-27", "65+"), Some((Some(0.0), Some(0.0), Some(15.0), engaged_label)));
        // Four windows: the 11th, 18th, 25th and the 27th; seven bands per practice and a tenant row each.
        let ends = out.column("window_end").unwrap().n_unique().unwrap();
        assert_eq!(ends, 4);
        assert_eq!(out.height(), 7 * (1 + 2 + 1 + 2) + 7 * 4);
        // Bands of fewer than 10 people are suppressed.
        assert_eq!(cell(&out, "M83001", "2018-03-18", "13-17"), Some((None, None, None, SOURCES[0].2.to_owned())));
    }
}
