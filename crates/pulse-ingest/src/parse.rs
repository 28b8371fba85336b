//! Responses to records: the synchronous "transform" half of ingest (the client is the "extract" half).
//!
//! Strict on purpose: an unknown metric, an `end_time` that is not a Pacific midnight, or a breakdown key that is not
//! an age/gender key makes the whole response malformed (it is retried, then reported), because guessing would
//! silently shift or mislabel a series.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use pulse_domain::time::{covered_days, parse_end_time};
use pulse_domain::{
    AgeGenderKey, ApiVersion, MetricCatalogue, PageId, PageInsightFact, Period, Post, PostId, PostInsightSnapshot,
    PracticeCode,
};
use pulse_graph::wire::{InsightsView, MetricValue, MetricValueView, PostObject, PostsResponse};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// Where the values came from.
#[derive(Debug, Clone)]
pub struct Origin {
    pub practice: PracticeCode,
    pub page: PageId,
    pub version: ApiVersion,
    pub fetched_at: DateTime<Utc>,
}

/// `what` names the value in an error; it is only formatted when there is one.
fn number(v: &serde_json::Number, what: &dyn Fn() -> String) -> Result<f64, ParseError> {
    v.as_f64().ok_or_else(|| ParseError(format!("{}: value {v} is not a number", what())))
}

/// Breakdown keys seen in a response, each validated once and shared by every fact that carries it.
#[derive(Default)]
struct Keys<'a> {
    empty: Option<Arc<str>>,
    /// At most a few dozen (Meta's age bands by gender): a scan beats hashing.
    seen: Vec<(&'a str, Arc<str>)>,
}

impl<'a> Keys<'a> {
    fn total(&mut self) -> Arc<str> {
        self.empty.get_or_insert_with(|| Arc::from("")).clone()
    }

    /// `hint`: where the key was last time (a breakdown's keys come in the same order value after value).
    fn key(&mut self, k: &'a str, hint: usize, what: &dyn Fn() -> String) -> Result<Arc<str>, ParseError> {
        if let Some((s, a)) = self.seen.get(hint)
            && *s == k
        {
            return Ok(a.clone());
        }
        if let Some((_, a)) = self.seen.iter().find(|(s, _)| *s == k) {
            return Ok(a.clone());
        }
        k.parse::<AgeGenderKey>().map_err(|e| ParseError(format!("{}: {e}", what())))?;
        let a: Arc<str> = Arc::from(k);
        self.seen.push((k, a.clone()));
        Ok(a)
    }

    /// Cells of a borrowed value, as [`Keys::cells`].
    fn view_cells(
        &mut self,
        value: &'a MetricValueView<'a>,
        what: &dyn Fn() -> String,
        mut emit: impl FnMut(Arc<str>, f64),
    ) -> Result<(), ParseError> {
        match value {
            MetricValueView::Number(n) => emit(self.total(), *n),
            MetricValueView::Breakdown(cells) => {
                for (i, (k, v)) in cells.iter().enumerate() {
                    let key = self.key(k, i, what)?;
                    emit(key, *v);
                }
            }
        }
        Ok(())
    }

    /// Cells of a value: `("", n)` for a number, `("F.25-34", n)` for each breakdown key, to `emit`. A withheld
    /// breakdown (`{}`) gives no cells.
    fn cells(
        &mut self,
        value: &'a MetricValue,
        what: &dyn Fn() -> String,
        mut emit: impl FnMut(Arc<str>, f64),
    ) -> Result<(), ParseError> {
        match value {
            MetricValue::Number(n) => emit(self.total(), number(n, what)?),
            MetricValue::Breakdown(map) => {
                for (i, (k, v)) in map.iter().enumerate() {
                    let key = self.key(k, i, what)?;
                    emit(key, number(v, what)?);
                }
            }
        }
        Ok(())
    }
}

/// Every metric at every period: for [`page_facts`] when the request named exactly what it wants.
pub fn all_periods(_: &str, _: Period) -> bool {
    true
}

/// Page insight facts from an `/insights` response, keeping only days in `[from, to]` and the metrics at the
/// periods `wanted` (a request without `period` is answered at every period a metric has).
pub fn page_facts<'a>(
    origin: &Origin,
    body: &'a InsightsView<'a>,
    from: NaiveDate,
    to: NaiveDate,
    wanted: &dyn Fn(&str, Period) -> bool,
) -> Result<Vec<PageInsightFact>, ParseError> {
    let catalogue = MetricCatalogue::default();
    // Sized once: a breakdown value is one fact per key.
    let cells: usize = body
        .data
        .iter()
        .filter(|i| i.period.parse().is_ok_and(|p| wanted(&i.name, p)))
        .flat_map(|i| &i.values)
        .map(|v| match &v.value {
            MetricValueView::Number(_) => 1,
            MetricValueView::Breakdown(cells) => cells.len(),
        })
        .sum();
    let mut out = Vec::with_capacity(cells);
    let mut keys = Keys::default();
    // The same end_time strings recur for every metric of a response, usually at the same position: each is
    // parsed (and turned into its Pacific day) once. Which day a value ends on does not depend on its period.
    let mut by_position: Vec<Option<(&str, NaiveDate)>> = Vec::new();
    let mut by_text: HashMap<&str, NaiveDate> = HashMap::new();
    for insight in &body.data {
        let graph = catalogue
            .by_graph_name(&insight.name)
            .ok_or_else(|| ParseError(format!("unexpected metric `{}` in the response", insight.name)))?;
        let period: Period = insight.period.parse().map_err(|e| ParseError(format!("{}: {e}", insight.name)))?;
        if period == Period::Lifetime {
            return Err(ParseError(format!("{}: a page metric with period lifetime", insight.name)));
        }
        if !wanted(&insight.name, period) {
            continue;
        }
        let what = || format!("{} ({})", insight.name, insight.period);
        for (j, v) in insight.values.iter().enumerate() {
            let end =
                v.end_time.as_deref().ok_or_else(|| ParseError(format!("{}: a value without end_time", what())))?;
            let day = match by_position.get(j).copied().flatten() {
                Some((text, day)) if text == end => day,
                _ => {
                    let day = match by_text.get(end) {
                        Some(day) => *day,
                        None => {
                            let t = parse_end_time(end).map_err(|e| ParseError(format!("{}: {e}", what())))?;
                            let day = covered_days(t, period).map_err(|e| ParseError(format!("{}: {e}", what())))?.last;
                            by_text.insert(end, day);
                            day
                        }
                    };
                    if by_position.len() <= j {
                        by_position.resize(j + 1, None);
                    }
                    by_position[j] = Some((end, day));
                    day
                }
            };
            if day < from || day > to {
                continue;
            }
            keys.view_cells(&v.value, &what, |breakdown, value| {
                out.push(PageInsightFact {
                    practice: origin.practice.clone(),
                    page: origin.page.clone(),
                    metric: graph.canonical,
                    graph_metric: graph.name,
                    period,
                    day,
                    breakdown,
                    value,
                    api_version: origin.version,
                    fetched_at: origin.fetched_at,
                })
            })?;
        }
    }
    Ok(out)
}

fn post_type(p: &PostObject) -> String {
    if let Some(kind) = &p.kind {
        return kind.clone();
    }
    match p.status_type.as_deref() {
        Some("added_photos") => "photo",
        Some("added_video") => "video",
        Some("shared_story") => "link",
        Some(_) | None => "status",
    }
    .to_owned()
}

/// Posts and their lifetime-value snapshots (as of the end of `snapshot_day`) from a `published_posts` page.
pub fn posts(
    origin: &Origin,
    body: &PostsResponse,
    snapshot_day: NaiveDate,
) -> Result<(Vec<Post>, Vec<PostInsightSnapshot>), ParseError> {
    let catalogue = MetricCatalogue::default();
    let mut posts = Vec::new();
    let mut snapshots = Vec::new();
    let mut keys = Keys::default();
    for p in &body.data {
        let id: PostId = p.id.parse().map_err(|e| ParseError(format!("post id: {e}")))?;
        if id.page_id() != origin.page {
            return Err(ParseError(format!("post {} does not belong to page {}", p.id, origin.page)));
        }
        let created = p.created_time.as_deref().ok_or_else(|| ParseError(format!("post {}: no created_time", p.id)))?;
        let created = DateTime::<FixedOffset>::parse_from_str(created, "%Y-%m-%dT%H:%M:%S%z")
            .map_err(|e| ParseError(format!("post {}: created_time `{created}`: {e}", p.id)))?
            .with_timezone(&Utc);
        posts.push(Post {
            practice: origin.practice.clone(),
            page: origin.page.clone(),
            post: id.clone(),
            created_time: created,
            post_type: post_type(p),
            message: p.message.clone().unwrap_or_default(),
            permalink: p.permalink_url.clone().unwrap_or_default(),
            fetched_at: origin.fetched_at,
        });
        for insight in p.insights.iter().flat_map(|i| &i.data) {
            let graph = catalogue
                .by_graph_name(&insight.name)
                .ok_or_else(|| ParseError(format!("post {}: unexpected metric `{}`", p.id, insight.name)))?;
            let what = || insight.name.clone();
            for v in &insight.values {
                keys.cells(&v.value, &what, |breakdown, value| {
                    snapshots.push(PostInsightSnapshot {
                        practice: origin.practice.clone(),
                        page: origin.page.clone(),
                        post: id.clone(),
                        metric: graph.canonical,
                        graph_metric: graph.name,
                        breakdown,
                        snapshot_day,
                        value,
                        api_version: origin.version,
                        fetched_at: origin.fetched_at,
                    })
                })?;
            }
        }
    }
    Ok((posts, snapshots))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulse_domain::CanonicalMetric;

    fn origin() -> Origin {
        Origin {
            practice: "M83001".parse().unwrap(),
            page: "1234567890".parse().unwrap(),
            version: ApiVersion::new(2, 12),
            fetched_at: Utc::now(),
        }
    }

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    /// A response in the shape Meta records (see pulse-graph's fixtures), across the spring-forward change.
    const RECORDED: &str = r#"{"data":[
      {"name":"page_impressions_unique","period":"day","values":[
        {"value":1248,"end_time":"2018-03-11T08:00:00+0000"},{"value":1512,"end_time":"2018-03-12T07:00:00+0000"}],
       "title":"Daily Total Reach","description":"Daily: ...","id":"1234567890/insights/page_impressions_unique/day"},
      {"name":"page_content_activity_by_age_gender_unique","period":"days_28","values":[
        {"value":{"F.35-44":212,"M.65+":40},"end_time":"2018-03-12T07:00:00+0000"},
        {"value":{},"end_time":"2018-03-13T07:00:00+0000"}],
       "title":"28 Days Engaged","description":"28 Days: ...","id":"1234567890/insights/page_content_activity_by_age_gender_unique/days_28"}
    ],"paging":{"previous":"https://graph.facebook.com/v2.12/1234567890/insights?since=1&until=2","next":"https://graph.facebook.com/v2.12/1234567890/insights?since=3&until=4"}}"#;

    #[test]
    fn parses_recorded_insights_into_pacific_days() {
        let body: InsightsView = serde_json::from_str(RECORDED).unwrap();
        let facts = page_facts(&origin(), &body, d(2018, 1, 1), d(2018, 12, 31), &all_periods).unwrap();
        assert_eq!(facts.len(), 4, "two days of reach, two cells of one breakdown, nothing for a withheld one");
        assert_eq!(
            (facts[0].metric, facts[0].day, facts[0].value),
            (CanonicalMetric::PageReach, d(2018, 3, 10), 1248.0)
        );
        assert_eq!(facts[1].day, d(2018, 3, 11));
        assert_eq!(&*facts[2].breakdown, "F.35-44");
        assert_eq!(facts[2].period, Period::Days28);
        let only_first = page_facts(&origin(), &body, d(2018, 3, 10), d(2018, 3, 10), &all_periods).unwrap();
        assert_eq!(only_first.len(), 1);
    }

    #[test]
    fn refuses_what_it_cannot_place() {
        let bad_key = RECORDED.replace("M.65+", "M.66+");
        let body: InsightsView = serde_json::from_str(&bad_key).unwrap();
        let err = page_facts(&origin(), &body, d(2018, 1, 1), d(2018, 12, 31), &all_periods).unwrap_err();
        assert!(err.0.contains("M.66+"), "{err}");
        let bad_time = RECORDED.replace("2018-03-11T08:00:00+0000", "2018-03-11T09:00:00+0000");
        let body: InsightsView = serde_json::from_str(&bad_time).unwrap();
        assert!(
            page_facts(&origin(), &body, d(2018, 1, 1), d(2018, 12, 31), &all_periods)
                .unwrap_err()
                .0
                .contains("not midnight")
        );
        let unknown = RECORDED.replace("page_impressions_unique\",\"period", "page_mystery\",\"period");
        let body: InsightsView = serde_json::from_str(&unknown).unwrap();
        assert!(page_facts(&origin(), &body, d(2018, 1, 1), d(2018, 12, 31), &all_periods).is_err());
    }

    #[test]
    fn parses_recorded_posts_with_expanded_insights() {
        let body = r#"{"data":[{"id":"1234567890_170","created_time":"2018-03-10T09:05:00+0000","message":"Stroke: act FAST","permalink_url":"https://www.facebook.com/1234567890/posts/170/","type":"video",
          "insights":{"data":[{"name":"post_video_views","period":"lifetime","values":[{"value":611}],"title":"Lifetime Video Views","description":"Lifetime: ...","id":"1234567890_170/insights/post_video_views/lifetime"},
                               {"name":"post_video_view_time_by_age_bucket_and_gender","period":"lifetime","values":[{"value":{"F.45-54":120000,"U.65+":9000}}],"title":"t","description":"d","id":"x"}]}},
          {"id":"1234567890_171","created_time":"2018-03-10T12:00:00+0000","status_type":"added_photos"}],
          "paging":{"cursors":{"before":"a","after":"b"}}}"#;
        let body: PostsResponse = serde_json::from_str(body).unwrap();
        let (posts, snaps) = posts(&origin(), &body, d(2018, 3, 12)).unwrap();
        assert_eq!(posts.len(), 2);
        assert_eq!(posts[0].post_type, "video");
        assert_eq!(posts[1].post_type, "photo");
        assert_eq!(snaps.len(), 3);
        assert_eq!(snaps[0].metric, CanonicalMetric::PostVideoViews);
        assert_eq!(&*snaps[1].breakdown, "F.45-54");
        assert!(snaps.iter().all(|s| s.snapshot_day == d(2018, 3, 12)));
    }
}
