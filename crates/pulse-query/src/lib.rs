//! The analyst query: metrics by dimensions over a date range, with filters, order and paging, in the shape of
//! Plausible's stats API v2 (`metrics`, `dimensions`, `date_range`, `filters`, `order_by`, `pagination`). It reads
//! the tenant's report tables (never raw facts), so it answers from what the pipelines computed, for one tenant at a
//! time: the tenant comes from the caller's access, and a query can only name one of the tenants that access sees.
//!
//! Which report answers a query follows from what it asks for: weekly reach for practice/week breakdowns, post
//! performance for post type or topic (and video views), age bands for age band or gender, campaigns for
//! campaign. A combination no report holds is refused with the combinations that work.

pub mod benchmarks;
pub mod posting;
pub mod region;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, StringArray};
use arrow::record_batch::RecordBatch;
use chrono::{Datelike, NaiveDate};
use pulse_config::Config;
use pulse_config::{Access, TenantScope};
use pulse_domain::{day_number, from_day_number};
use pulse_store::report::{AGE_BANDS, CAMPAIGN_UPLIFT, POST_PERFORMANCE, REACH_WEEKLY, REPORT_RUNS};
use pulse_store::{ReportTable, ReportVariant, Store};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use pulse_app::columns::Col;
use pulse_app::error::{AppError, AppResult, ErrorKind};

/// The most rows one page of an answer may hold.
pub const MAX_LIMIT: usize = 10_000;
/// The widest date range one query may span.
pub const MAX_RANGE_DAYS: i64 = 3 * 366;

macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal : $doc:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant,)* }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];
            pub fn name(self) -> &'static str { match self { $($name::$variant => $text,)* } }
            pub fn about(self) -> &'static str { match self { $($name::$variant => $doc,)* } }
            pub fn parse(s: &str) -> Option<Self> { Self::ALL.iter().copied().find(|m| m.name() == s) }
        }
    };
}

named_enum!(
    /// What a query measures.
    Metric {
        Reach = "gross_reach": "people reached, summed over the rows: each page's weekly unique people added over pages and weeks, so a person reached by two pages or in two weeks counts twice (a row of one page and one week is exact); post reach for post breakdowns; campaign posts' lifetime reach for campaigns",
        EngagedUsers = "gross_engaged_users": "people who engaged, summed the same way as gross_reach (n/a where Meta no longer reports it)",
        Views = "views": "times content was seen",
        Engagements = "engagements": "engagements (clicks, reactions, comments, shares as Meta counts them)",
        EngagementRate = "engagement_rate": "engagements / views (weekly rows), or engaged users / reach (posts)",
        Penetration = "reach_per_1000": "people reached per 1,000 registered patients: the average week's reach for weekly rows, the band's people in its 28-day window for age bands (the age-bands report's `penetration` is the same figure as a fraction, per 1)",
        VideoViews = "video_views": "video views of video posts (3-second views as Meta counts them); null for posts or groups without a video, to which it does not apply",
        Posts = "posts": "posts published",
        People = "people": "people in the age band (the latest 28-day window in the range)",
        Effect = "effect": "a campaign's effect on one figure (ask by campaign and campaign_metric): what its pages got over the window beyond the counterfactual built from their other days",
        EffectLow = "effect_low": "the low end of the effect's interval, at interval_level",
        EffectHigh = "effect_high": "the high end of the effect's interval, at interval_level",
        IntervalLevel = "interval_level": "the interval's confidence level (0.95 when there are enough placebo weeks; lower, and stated, when there are not)",
        Lift = "lift_pct": "the effect as a percentage of the counterfactual",
    }
);

impl Metric {
    /// Names the query language used to give these metrics, still accepted: `reach` and `engaged_users` read as unique
    /// people but are sums of weekly uniques, and `penetration` clashed with the age-bands report's fraction.
    pub const RENAMED: [(&'static str, Metric); 3] =
        [("reach", Metric::Reach), ("engaged_users", Metric::EngagedUsers), ("penetration", Metric::Penetration)];

    /// A metric by its name, or by the name it had before (answered under its name now; see `Query::renamed`).
    pub fn parse_or_renamed(name: &str) -> Option<Metric> {
        Metric::parse(name).or_else(|| Metric::RENAMED.iter().find(|(old, _)| *old == name).map(|(_, m)| *m))
    }

    /// The sum slot a plain metric is added up in.
    fn slot_name(self) -> &'static str {
        match self {
            Metric::Reach => "reach",
            Metric::EngagedUsers => "engaged_users",
            Metric::EffectLow => "effect_lo",
            Metric::EffectHigh => "effect_hi",
            m => m.name(),
        }
    }
}

named_enum!(
    /// What a query breaks its answer down by.
    Dimension {
        Practice = "practice": "the practice (ODS code; names are in meta.practice_names)",
        Week = "week": "the Pacific-time week, by its last day (a Sunday)",
        AgeBand = "age_band": "Meta's age band",
        Gender = "gender": "female, male or unknown",
        Campaign = "campaign": "the campaign's name",
        PostType = "post_type": "photo, video, link or status",
        Topic = "topic": "the post's topic tag",
        CampaignMetric = "campaign_metric": "the figure a campaign is measured on: views, reach, engagements or video_views",
        Post = "post": "one post, by its id (its time, type, text excerpt and permalink are in meta.posts)",
    }
);

/// Which report table answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Reach,
    Posts,
    AgeBands,
    Campaigns,
}

impl Source {
    const ORDER: [Source; 4] = [Source::Reach, Source::Posts, Source::AgeBands, Source::Campaigns];

    fn table(self) -> &'static ReportTable {
        match self {
            Source::Reach => &REACH_WEEKLY,
            Source::Posts => &POST_PERFORMANCE,
            Source::AgeBands => &AGE_BANDS,
            Source::Campaigns => &CAMPAIGN_UPLIFT,
        }
    }

    fn dimensions(self) -> &'static [Dimension] {
        use Dimension::*;
        match self {
            Source::Reach => &[Practice, Week],
            Source::Posts => &[Practice, Week, PostType, Topic, Post],
            Source::AgeBands => &[Practice, AgeBand, Gender],
            Source::Campaigns => &[Practice, Campaign, CampaignMetric],
        }
    }

    fn metrics(self) -> &'static [Metric] {
        use Metric::*;
        match self {
            Source::Reach => &[Reach, EngagedUsers, Views, Engagements, EngagementRate, Penetration],
            Source::Posts => &[Posts, Reach, Views, Engagements, EngagedUsers, VideoViews, EngagementRate],
            Source::AgeBands => &[People, Penetration],
            Source::Campaigns => {
                &[Reach, Views, Engagements, VideoViews, Effect, EffectLow, EffectHigh, IntervalLevel, Lift]
            }
        }
    }

    fn date_column(self) -> &'static str {
        match self {
            Source::Reach => "week_ending",
            Source::Posts => "created",
            Source::AgeBands => "window_end",
            Source::Campaigns => "window_from",
        }
    }

    fn names(list: &[impl Copy + Into<&'static str>]) -> String {
        list.iter().map(|x| (*x).into()).collect::<Vec<&str>>().join(", ")
    }
}

impl From<Metric> for &'static str {
    fn from(m: Metric) -> Self {
        m.name()
    }
}

impl From<Dimension> for &'static str {
    fn from(d: Dimension) -> Self {
        d.name()
    }
}

/// A filter: `[op, dimension, [values]]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Filter {
    pub op: FilterOp,
    pub dimension: Dimension,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FilterOp {
    Is,
    IsNot,
    Contains,
}

/// The date range: explicit days, or one relative to the latest day the reports cover.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DateRange {
    All,
    /// The last N days up to the latest day in the reports.
    LastDays(i64),
    Between(NaiveDate, NaiveDate),
}

/// A query, parsed and checked. Its [`Query::normalised`] form is the cache key.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// One of the caller's tenants; required when the caller sees several.
    pub tenant: Option<String>,
    pub metrics: Vec<Metric>,
    pub dimensions: Vec<Dimension>,
    pub date_range: DateRange,
    pub filters: Vec<Filter>,
    /// (metric or dimension name, descending)
    pub order_by: Vec<(String, bool)>,
    pub limit: usize,
    pub offset: usize,
    /// Notes for metrics asked for by a former name (`reach` is now `gross_reach`, ...).
    pub renamed: Vec<String>,
}

/// The request body as sent (Plausible's v2 shape; `site_id` names the tenant). [`Query::parse`] reads it and
/// checks every name and bound; the OpenAPI document describes it from this definition.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = Query)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    /// Tenant id; required for a key that reads several tenants.
    site_id: Option<String>,
    /// One or more metric names.
    metrics: Vec<String>,
    /// Dimension names to group by.
    #[serde(default)]
    dimensions: Vec<String>,
    /// `"all"`, `"Nd"` (1 to 1098 days), `"6mo"`, `"12mo"` ending at the latest day in the reports, or two
    /// `YYYY-MM-DD` days `[from, to]` (ISO 8601 only).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    date_range: Option<Value>,
    /// `[operator, dimension, [values]]`, each.
    #[serde(default)]
    #[schema(value_type = Vec<Vec<Object>>)]
    filters: Vec<Value>,
    /// `[metric or dimension, "asc" | "desc"]`, each.
    #[serde(default)]
    #[schema(value_type = Vec<Vec<String>>)]
    order_by: Vec<Value>,
    #[serde(default)]
    pagination: Option<Pagination>,
    /// Accepted for compatibility with Plausible's clients; ignored.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    include: Option<Value>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Pagination {
    /// Rows to return (default and most: see the maximum).
    #[schema(minimum = 1)]
    limit: Option<usize>,
    #[schema(minimum = 0)]
    offset: Option<usize>,
}

fn bad(field: &str, message: impl Into<String>, hint: impl Into<String>) -> AppError {
    AppError::bad_request(message).with_hint(hint).at(field)
}

/// Inputs are bounded so that no one query can cost much more than the largest answer: the values of one filter, their
/// length, and the filters of one query. (Names of metrics and dimensions are bounded by being unique and known.)
pub const MAX_FILTER_VALUES: usize = 500;
pub const MAX_FILTER_VALUE_BYTES: usize = 200;
pub const MAX_FILTERS: usize = 16;

fn parse_day(field: &str, text: &str) -> AppResult<NaiveDate> {
    pulse_config::real_date(field, text).map_err(|m| bad(field, m, "dates are YYYY-MM-DD"))
}

impl Query {
    /// Parses a request body, saying which field is wrong and how to fix it.
    pub fn parse(body: &[u8]) -> AppResult<Query> {
        let raw: QueryBody = serde_json::from_slice(body).map_err(|e| {
            bad(
                "body",
                format!("the query is not valid JSON of the expected shape: {e}"),
                "send {\"metrics\": [\"reach\"], \"dimensions\": [\"week\"], \"date_range\": \"all\"}; GET /api/v1/openapi.json describes every field",
            )
        })?;
        let _ = raw.include;
        if raw.metrics.is_empty() {
            return Err(bad(
                "metrics",
                "no metrics asked for",
                format!("name one or more of {}", Source::names(Metric::ALL)),
            ));
        }
        let metrics = parse_names(&raw.metrics, "metrics", "metric", Metric::parse_or_renamed, Metric::ALL)?;
        let renamed: Vec<String> = raw
            .metrics
            .iter()
            .filter_map(|name| Metric::RENAMED.iter().find(|(old, _)| old == name))
            .map(|(old, m)| {
                format!(
                    "metric `{old}` is now called `{}` (same figure; the old name is still accepted): {}",
                    m.name(),
                    m.about()
                )
            })
            .collect();
        let dimensions = parse_names(&raw.dimensions, "dimensions", "dimension", Dimension::parse, Dimension::ALL)?;
        let date_range = parse_range(raw.date_range.as_ref())?;
        if raw.filters.len() > MAX_FILTERS {
            return Err(bad(
                "filters",
                format!("{} filters; at most {MAX_FILTERS}", raw.filters.len()),
                "put the values of one dimension in one filter",
            ));
        }
        let mut filters = Vec::new();
        for (i, f) in raw.filters.iter().enumerate() {
            filters.push(parse_filter(&format!("filters[{i}]"), f)?);
        }
        let mut order_by = Vec::new();
        for (i, o) in raw.order_by.iter().enumerate() {
            let field = format!("order_by[{i}]");
            let pair = o.as_array().filter(|a| a.len() == 2);
            let (name, dir) = match pair.map(|a| (a[0].as_str(), a[1].as_str())) {
                Some((Some(n), Some(d))) => (n, d),
                _ => {
                    return Err(bad(
                        &field,
                        "an order is [name, \"asc\" | \"desc\"]",
                        "for example [\"reach\", \"desc\"]",
                    ));
                }
            };
            // A metric's former name orders by it too.
            let name = Metric::parse_or_renamed(name).filter(|m| metrics.contains(m)).map_or(name, |m| m.name());
            let named = metrics.iter().any(|m| m.name() == name) || dimensions.iter().any(|d| d.name() == name);
            if !named {
                return Err(bad(
                    &field,
                    format!("cannot order by `{name}`: it is not one of the query's metrics or dimensions"),
                    "order by a metric or dimension the query names",
                ));
            }
            let desc = match dir {
                "asc" => false,
                "desc" => true,
                other => return Err(bad(&field, format!("order direction `{other}`"), "use \"asc\" or \"desc\"")),
            };
            order_by.push((name.to_owned(), desc));
        }
        let limit = raw.pagination.as_ref().and_then(|p| p.limit).unwrap_or(MAX_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(bad(
                "pagination.limit",
                format!("limit {limit} is out of range"),
                format!("ask for 1 to {MAX_LIMIT} rows a page and page with offset"),
            ));
        }
        let offset = raw.pagination.as_ref().and_then(|p| p.offset).unwrap_or(0);
        let q =
            Query { tenant: raw.site_id, metrics, dimensions, date_range, filters, order_by, limit, offset, renamed };
        q.source()?;
        Ok(q)
    }

    /// The report that answers this query, or why none can.
    fn source(&self) -> AppResult<Source> {
        let filter_dims: Vec<Dimension> = self.filters.iter().map(|f| f.dimension).collect();
        Source::ORDER
            .into_iter()
            .find(|s| {
                self.metrics.iter().all(|m| s.metrics().contains(m))
                    && self.dimensions.iter().chain(&filter_dims).all(|d| s.dimensions().contains(d))
            })
            .ok_or_else(|| {
                let combos: Vec<String> = Source::ORDER
                    .iter()
                    .map(|s| format!("[{}] by [{}]", Source::names(s.metrics()), Source::names(s.dimensions())))
                    .collect();
                bad(
                    "metrics",
                    format!(
                        "no report holds metrics [{}] by dimensions [{}]",
                        Source::names(&self.metrics),
                        Source::names(&self.dimensions.iter().chain(&filter_dims).copied().collect::<Vec<_>>())
                    ),
                    format!("ask for metrics and dimensions (filters included) from one of: {}", combos.join("; ")),
                )
            })
    }

    /// The canonical form (the cache key's query part): defaults filled in, filters sorted.
    pub fn normalised(&self) -> String {
        let mut filters: Vec<&Filter> = self.filters.iter().collect();
        filters.sort();
        let range = match &self.date_range {
            DateRange::All => json!("all"),
            DateRange::LastDays(n) => json!(format!("{n}d")),
            DateRange::Between(a, b) => json!([a.to_string(), b.to_string()]),
        };
        json!({
            "site_id": self.tenant,
            "metrics": self.metrics.iter().map(|m| m.name()).collect::<Vec<_>>(),
            "dimensions": self.dimensions.iter().map(|d| d.name()).collect::<Vec<_>>(),
            "date_range": range,
            "filters": filters.iter().map(|f| json!([op_name(f.op), f.dimension.name(), f.values])).collect::<Vec<_>>(),
            "order_by": self.order_by.iter().map(|(n, d)| json!([n, if *d { "desc" } else { "asc" }])).collect::<Vec<_>>(),
            "pagination": {"limit": self.limit, "offset": self.offset},
        })
        .to_string()
    }
}

/// Parses a list of metric or dimension names, each once, naming the entry at fault (`metrics[2]`).
fn parse_names<T: Copy + PartialEq + Into<&'static str>>(
    names: &[String],
    field: &str,
    what: &str,
    parse: fn(&str) -> Option<T>,
    all: &[T],
) -> AppResult<Vec<T>> {
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let item = parse(name).ok_or_else(|| {
            bad(&at, format!("unknown {what} `{name}`"), format!("the {field} are {}", Source::names(all)))
        })?;
        if out.contains(&item) {
            return Err(bad(&at, format!("{what} `{name}` is named twice"), format!("name each {what} once")));
        }
        out.push(item);
    }
    Ok(out)
}

fn op_name(op: FilterOp) -> &'static str {
    match op {
        FilterOp::Is => "is",
        FilterOp::IsNot => "is_not",
        FilterOp::Contains => "contains",
    }
}

fn parse_range(v: Option<&Value>) -> AppResult<DateRange> {
    let hint = "use \"all\", \"7d\", \"28d\", \"91d\", \"12mo\" (ending at the latest day in the reports) or [\"YYYY-MM-DD\", \"YYYY-MM-DD\"]";
    match v {
        None => Ok(DateRange::All),
        Some(Value::String(s)) => match s.as_str() {
            "all" => Ok(DateRange::All),
            "12mo" | "year" => Ok(DateRange::LastDays(364)),
            "6mo" => Ok(DateRange::LastDays(182)),
            other => match other.strip_suffix('d').and_then(|n| n.parse::<i64>().ok()) {
                Some(n) if (1..=MAX_RANGE_DAYS).contains(&n) => Ok(DateRange::LastDays(n)),
                _ => Err(bad("date_range", format!("date range `{other}` is not understood"), hint)),
            },
        },
        Some(Value::Array(a)) if a.len() == 2 => {
            let (Some(from), Some(to)) = (a[0].as_str(), a[1].as_str()) else {
                return Err(bad("date_range", "a date range is two dates as text", hint));
            };
            let (from, to) = (parse_day("date_range[0]", from)?, parse_day("date_range[1]", to)?);
            if to < from {
                return Err(bad(
                    "date_range",
                    format!("the range ends ({to}) before it starts ({from})"),
                    "put the earlier day first",
                ));
            }
            if (to - from).num_days() > MAX_RANGE_DAYS {
                return Err(bad(
                    "date_range",
                    format!(
                        "the range {from} to {to} spans {} days, more than the {MAX_RANGE_DAYS} one query may",
                        (to - from).num_days() + 1
                    ),
                    "split it into queries of up to three years",
                ));
            }
            Ok(DateRange::Between(from, to))
        }
        Some(_) => Err(bad("date_range", "the date range is not understood", hint)),
    }
}

fn parse_filter(field: &str, v: &Value) -> AppResult<Filter> {
    let hint = "a filter is [\"is\" | \"is_not\" | \"contains\", dimension, [values]], e.g. [\"is\", \"practice\", [\"M83001\"]]";
    let a = v.as_array().filter(|a| a.len() == 3).ok_or_else(|| bad(field, "a filter has three parts", hint))?;
    let op = match a[0].as_str() {
        Some("is") => FilterOp::Is,
        Some("is_not") => FilterOp::IsNot,
        Some("contains") => FilterOp::Contains,
        _ => return Err(bad(field, format!("unknown filter operator {}", a[0]), hint)),
    };
    let dim_name = a[1].as_str().unwrap_or_default();
    let dimension = Dimension::parse(dim_name).ok_or_else(|| {
        bad(
            field,
            format!("cannot filter on `{dim_name}`"),
            format!("filter on a dimension: {}", Source::names(Dimension::ALL)),
        )
    })?;
    let raw = a[2].as_array().filter(|vs| !vs.is_empty());
    let raw = raw.ok_or_else(|| bad(field, "a filter needs a non-empty list of text values", hint))?;
    if raw.len() > MAX_FILTER_VALUES {
        return Err(bad(
            field,
            format!("{} values in one filter; at most {MAX_FILTER_VALUES}", raw.len()),
            "filter on fewer values, or leave the filter out and filter the answer",
        ));
    }
    let mut values = Vec::with_capacity(raw.len());
    for x in raw {
        let v = x.as_str().ok_or_else(|| bad(field, "a filter's values are text", hint))?;
        if v.len() > MAX_FILTER_VALUE_BYTES {
            return Err(bad(
                field,
                format!("a value of {} bytes; at most {MAX_FILTER_VALUE_BYTES}", v.len()),
                "filter values are practice codes, campaign names, age bands: short text",
            ));
        }
        values.push(v.to_owned());
    }
    Ok(Filter { op, dimension, values })
}

/// The tenant's main run (its reports' range), or NotReady saying how to compute them.
pub async fn computed_run<S: Store>(store: &S, access: &Access, tenant: &str) -> AppResult<pulse_app::report::RunInfo> {
    pulse_app::report::main_run(store, access, tenant).await?.ok_or_else(|| {
        AppError::new(ErrorKind::NotReady, format!("tenant {tenant}'s reports have not been computed"))
            .with_hint(format!("the operator runs `pulse jobs run --tenant {tenant}` after an ingest"))
    })
}

/// What the query layer needs from the config, loaded once: practice names and registered patients.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    /// tenant → practice code → name
    pub names: BTreeMap<String, BTreeMap<String, String>>,
    /// practice code → registered patients (list size, or the registered-patients CSV's total of Meta's bands)
    pub registered: HashMap<String, f64>,
}

impl Directory {
    pub fn load(config: &Config) -> AppResult<Self> {
        let mut out = Directory::default();
        let csv = pulse_app::jobs::registered_for(config)?;
        for t in &config.tenants {
            let names = out.names.entry(t.id.to_string()).or_default();
            for p in &t.practices {
                names.insert(p.code.to_string(), p.name.clone());
                let from_csv = csv
                    .as_ref()
                    .and_then(|r| r.practices.get(p.code.as_str()))
                    .map(|b| b.iter().map(|x| x[0] + x[1]).sum());
                if let Some(n) = p.list_size.map(f64::from).or(from_csv) {
                    out.registered.insert(p.code.to_string(), n);
                }
            }
        }
        Ok(out)
    }
}

/// The answer: rows of dimension values and metric values, and what a reader needs to read them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = QueryAnswer)]
pub struct Answer {
    pub results: Vec<Row>,
    pub meta: Meta,
    /// The query as understood (defaults filled in).
    #[schema(value_type = QueryBody)]
    pub query: Value,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Row {
    pub dimensions: Vec<String>,
    pub metrics: Vec<Option<f64>>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Meta {
    pub tenant: String,
    /// The report table that answered.
    pub source: &'static str,
    /// The days the answer covers, after a relative range is resolved against the reports.
    #[schema(value_type = Option<Vec<String>>)]
    pub date_range: Option<[String; 2]>,
    /// Rows before paging.
    pub total_rows: usize,
    /// The pipelines run the reports came from (the data watermark).
    pub watermark: String,
    pub practice_names: BTreeMap<String, String>,
    /// The posts of the answer's rows, by id, when it is broken down by `post`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub posts: BTreeMap<String, PostDetails>,
    pub notes: Vec<String>,
    pub cached: bool,
}

/// A post as its readers know it (practices' posts are public on their pages).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct PostDetails {
    /// The practice's ODS code.
    pub practice: String,
    /// When it was posted (RFC 3339, UTC); empty when the reports predate migration 10 (the next jobs run fills it).
    pub posted_at: String,
    /// photo, video, link or status.
    pub post_type: String,
    /// The start of its text on one line, at most 160 characters.
    pub excerpt: String,
    /// Its address on Facebook.
    pub permalink: String,
}

/// The data watermark of a tenant's main reports: the pipelines run that wrote them. A new jobs run changes it.
pub async fn watermark<S: Store>(store: &S, scope: &TenantScope) -> AppResult<String> {
    let runs = store.read_report(scope, &REPORT_RUNS, &ReportVariant::main()).await?;
    if runs.num_rows() == 0 {
        return Ok(String::new());
    }
    let text = |name: &str| {
        runs.column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<StringArray>().map(|a| a.value(0).to_owned()))
            .unwrap_or_default()
    };
    Ok(format!("{}@{}", text("run_id"), text("computed_at")))
}

/// Which tenant a query is for: the one named (must be visible), or the caller's only tenant.
pub fn tenant_scope(access: &Access, named: Option<&str>) -> AppResult<TenantScope> {
    pulse_app::tenant::resolve(access, named, "site_id", "set site_id to one of the tenants named")
}

/// (tenant, SHA-256 of the normalised query, data watermark)
type CacheKey = (String, String, String);

/// Answers cached by (tenant, digest of the normalised query), each kept with the data watermark it was computed at
/// and served only for that watermark: a new pipelines run changes the watermark, so an answer computed from older
/// reports is never served again (it is replaced by the next answer to the same query, or ages out). A `moka` cache,
/// bounded by bytes (keys and answers as JSON) and by count, least recently used out first, idle answers dropped
/// after [`ANSWER_IDLE`].
pub struct Cache {
    /// An answer of more than a quarter of this is not kept.
    max_bytes: usize,
    /// (tenant, query digest) -> (watermark, answer, its size in bytes).
    answers: moka::sync::Cache<(String, String), Arc<Cached>>,
    /// Each tenant's watermark and when it was read: re-read after [`WATERMARK_TTL`], so a new jobs run is seen
    /// within that time without a store round trip on every request.
    watermarks: Mutex<HashMap<String, (std::time::Instant, String)>>,
    /// (tenant, report table) -> (watermark, the tenant's main report slice): what a question not asked before is
    /// answered from, without a store round trip, until a jobs run changes the watermark. Bounded by the slices'
    /// memory; `None` when the server keeps no slices (then ClickHouse adds up weekly reach itself).
    slices: Option<SliceKeeper>,
    slice_max_bytes: usize,
}

/// The kept report slices, and a lock per slice so that one question reads it while the others wait for it.
struct SliceKeeper {
    kept: moka::sync::Cache<SliceKey, Arc<Slice>>,
    reading: Mutex<HashMap<SliceKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Slices found too large to keep, with the watermark they were read at.
    oversized: Mutex<HashMap<SliceKey, String>>,
    max_bytes: usize,
}

impl SliceKeeper {
    /// Keeps a tenant's slice as of `watermark` (not one over a quarter of the bound: it would push out the rest).
    fn keep(&self, tenant: &str, table: &'static str, watermark: &str, batch: &RecordBatch) {
        let key = (tenant.to_owned(), table);
        if batch.get_array_memory_size() <= self.max_bytes / 4 {
            self.kept.insert(key, Arc::new((watermark.to_owned(), batch.clone())));
        } else {
            self.oversized.lock().unwrap_or_else(|e| e.into_inner()).insert(key, watermark.to_owned());
        }
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("max_bytes", &self.max_bytes)
            .field("answers", &self.answers.entry_count())
            .field("slice_max_bytes", &self.slice_max_bytes)
            .finish()
    }
}

/// A cached answer: the watermark it was computed at, the answer, its size in bytes.
type Cached = (String, Answer, usize);

/// A kept report slice: the watermark it was read at, and the tenant's rows.
type Slice = (String, RecordBatch);

/// (tenant, report table)
type SliceKey = (String, &'static str);

/// How long an answer nobody asks for again is kept.
pub const ANSWER_IDLE: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// The answer cache's default bound in bytes.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// The report slice cache's default bound in bytes (`[server] report_cache_mb`).
pub const DEFAULT_SLICE_BYTES: usize = 256 << 20;

/// How long a tenant's data watermark is trusted before it is read again from the store.
pub const WATERMARK_TTL: std::time::Duration = std::time::Duration::from_secs(1);

impl Cache {
    pub fn new(capacity: usize) -> Self {
        Self::with_max_bytes(capacity, DEFAULT_CACHE_BYTES)
    }

    /// At most `capacity` answers (0: none) in at most `max_bytes`. Each answer weighs its size, but at least
    /// `max_bytes / capacity`, so the one bound by weight keeps both.
    pub fn with_max_bytes(capacity: usize, max_bytes: usize) -> Self {
        Self::with_limits(capacity, max_bytes, DEFAULT_SLICE_BYTES)
    }

    /// As [`Cache::with_max_bytes`], keeping report slices in at most `slice_bytes` (0: none kept, each question
    /// read or added up in the store).
    pub fn with_limits(capacity: usize, max_bytes: usize, slice_bytes: usize) -> Self {
        let floor = max_bytes.checked_div(capacity).map_or(u32::MAX, |f| f.min(u32::MAX as usize) as u32);
        let answers = moka::sync::Cache::builder()
            .max_capacity(if capacity == 0 { 0 } else { max_bytes as u64 })
            .weigher(move |_: &(String, String), v: &Arc<Cached>| (v.2.min(u32::MAX as usize) as u32).max(floor))
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .time_to_idle(ANSWER_IDLE)
            .build();
        let slices = (slice_bytes > 0).then(|| SliceKeeper {
            kept: moka::sync::Cache::builder()
                .max_capacity(slice_bytes as u64)
                .weigher(|_: &(String, &'static str), v: &Arc<Slice>| {
                    v.1.get_array_memory_size().min(u32::MAX as usize) as u32
                })
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                // As answers: a slice nobody asks about goes (and a jobs run that failed before its run record
                // cannot leave one served for longer than an answer would be).
                .time_to_idle(ANSWER_IDLE)
                .build(),
            reading: Mutex::new(HashMap::new()),
            oversized: Mutex::new(HashMap::new()),
            max_bytes: slice_bytes,
        });
        Self { max_bytes, answers, watermarks: Mutex::new(HashMap::new()), slices, slice_max_bytes: slice_bytes }
    }

    /// A tenant's report slice as of `watermark`, when kept.
    fn slice(&self, tenant: &str, table: &'static str, watermark: &str) -> Option<RecordBatch> {
        let hit = self.slices.as_ref()?.kept.get(&(tenant.to_owned(), table))?;
        (hit.0 == watermark).then(|| hit.1.clone())
    }

    /// Keeps a tenant's slice as of `watermark` (not one over a quarter of the bound: it would push out the rest).
    fn keep_slice(&self, tenant: &str, table: &'static str, watermark: &str, batch: &RecordBatch) {
        if let Some(slices) = &self.slices {
            slices.keep(tenant, table, watermark, batch);
        }
    }

    /// Whether this slice, as of `watermark`, was found too large to keep.
    fn oversized(&self, tenant: &str, table: &'static str, watermark: &str) -> bool {
        self.slices.as_ref().is_some_and(|s| {
            let sizes = s.oversized.lock().unwrap_or_else(|e| e.into_inner());
            sizes.get(&(tenant.to_owned(), table)).is_some_and(|m| m == watermark)
        })
    }

    /// The lock held while a slice is read (one per tenant and report: the map holds at most that many).
    fn reading(&self, tenant: &str, table: &'static str) -> Arc<tokio::sync::Mutex<()>> {
        let Some(s) = &self.slices else { return Arc::new(tokio::sync::Mutex::new(())) };
        let mut locks = s.reading.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry((tenant.to_owned(), table)).or_default().clone()
    }

    /// Whether report slices are kept (and so read whole rather than added up in the store).
    fn keeps_slices(&self) -> bool {
        self.slices.is_some()
    }

    /// How many report slices are kept now.
    pub fn slices_kept(&self) -> usize {
        self.slices.as_ref().map_or(0, |s| {
            s.kept.run_pending_tasks();
            s.kept.entry_count() as usize
        })
    }

    fn get(&self, key: &CacheKey) -> Option<Answer> {
        let (tenant, digest, watermark) = key;
        self.answers.get(&(tenant.clone(), digest.clone())).and_then(|hit| (hit.0 == *watermark).then(|| hit.1.clone()))
    }

    fn put(&self, key: CacheKey, answer: Answer) {
        let size =
            key.0.len() + key.1.len() + key.2.len() + serde_json::to_vec(&answer).map_or(usize::MAX, |v| v.len());
        if size > self.max_bytes / 4 {
            return;
        }
        let (tenant, digest, watermark) = key;
        self.answers.insert((tenant, digest), Arc::new((watermark, answer, size)));
    }

    pub fn len(&self) -> usize {
        self.answers.run_pending_tasks();
        self.answers.entry_count() as usize
    }

    /// The bytes the cached answers take (as JSON, with their keys).
    pub fn bytes(&self) -> usize {
        self.answers.run_pending_tasks();
        self.answers.iter().map(|(_, v)| v.2).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Runs a query for `access` on `store`, from `cache` when the reports have not changed since it was answered.
pub async fn run<S: Store>(
    store: &S,
    directory: &Directory,
    access: &Access,
    q: &Query,
    cache: Option<&Cache>,
) -> AppResult<Answer> {
    run_with(store, directory, access, q, cache, Aggregation::WhereTheDataLives).await
}

/// Where a query's groups are added up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    /// In the store when it can (ClickHouse's GROUP BY; weekly reach queries), else here.
    WhereTheDataLives,
    /// Here, from the report slice read whole: the reference the store's aggregation is checked against.
    InTheService,
}

/// [`run`], choosing where the groups are added up.
pub async fn run_with<S: Store>(
    store: &S,
    directory: &Directory,
    access: &Access,
    q: &Query,
    cache: Option<&Cache>,
    aggregation: Aggregation,
) -> AppResult<Answer> {
    let scope = tenant_scope(access, q.tenant.as_deref())?;
    let tenant = scope.to_string();
    let remembered = cache.and_then(|c| {
        let marks = c.watermarks.lock().unwrap_or_else(|e| e.into_inner());
        marks.get(&tenant).filter(|(at, _)| at.elapsed() < WATERMARK_TTL).map(|(_, m)| m.clone())
    });
    let mark = match remembered {
        Some(m) => m,
        None => {
            let m = watermark(store, &scope).await?;
            if let Some(c) = cache {
                let mut marks = c.watermarks.lock().unwrap_or_else(|e| e.into_inner());
                marks.insert(tenant.clone(), (std::time::Instant::now(), m.clone()));
            }
            m
        }
    };
    if mark.is_empty() {
        return Err(AppError::new(ErrorKind::NotReady, format!("tenant {tenant}'s reports have not been computed"))
            .with_hint(format!("the operator runs `pulse jobs run --tenant {tenant}`")));
    }
    // The cache keeps a digest of the query, not its text (a query may carry 500 filter values), and does not keep
    // answers to queries that large at all: they are bespoke, and a flood of them must leave memory as it was.
    let normalised = q.normalised();
    let slices = cache.filter(|c| c.keeps_slices());
    let cache = cache.filter(|_| normalised.len() <= MAX_CACHED_QUERY_BYTES);
    let key = (tenant.clone(), digest(&normalised), mark.clone());
    let hit = cache.and_then(|c| c.get(&key));
    if cache.is_some() {
        let outcome = if hit.is_some() { "hit" } else { "miss" };
        metrics::counter!("pulse_query_cache_total", "outcome" => outcome).increment(1);
    }
    if let Some(mut hit) = hit {
        hit.meta.cached = true;
        hit.meta.notes.extend(q.renamed.iter().cloned());
        return Ok(hit);
    }
    let source = q.source()?;
    let names = directory.names.get(&tenant).cloned().unwrap_or_default();
    // A practice filter naming a practice of another tenant is an error, not an empty answer.
    for f in q.filters.iter().filter(|f| f.dimension == Dimension::Practice && f.op != FilterOp::Contains) {
        if let Some(p) = f.values.iter().find(|p| !names.contains_key(*p)) {
            return Err(bad(
                "filters",
                format!("practice {p} is not one of tenant {tenant}'s practices"),
                "use the ODS code of one of this tenant's practices (dimension practice lists them)",
            ));
        }
    }
    // With slices kept, the question is answered here from the tenant's slice, read from the store once per jobs run
    // (questions arriving while it is read wait for that one read). Without, ClickHouse adds up weekly reach itself.
    let table = source.table();
    // A slice too large to keep is not read whole for every question: those go to the store as without slices.
    let mut kept: Option<RecordBatch> = None;
    if let Some(c) = slices.filter(|c| !c.oversized(&tenant, table.name, &mark)) {
        kept = match c.slice(&tenant, table.name, &mark) {
            Some(batch) => {
                metrics::counter!("pulse_query_slice_total", "outcome" => "hit").increment(1);
                Some(batch)
            }
            None => {
                metrics::counter!("pulse_query_slice_total", "outcome" => "miss").increment(1);
                let gate = c.reading(&tenant, table.name);
                let _one_read = gate.lock().await;
                match c.slice(&tenant, table.name, &mark) {
                    Some(batch) => Some(batch),
                    // The read this question waited for found it too large to keep: to the store, as without.
                    None if c.oversized(&tenant, table.name, &mark) => None,
                    None => {
                        let batch = store.read_report(&scope, table, &ReportVariant::main()).await?;
                        c.keep_slice(&tenant, table.name, &mark, &batch);
                        Some(batch)
                    }
                }
            }
        };
    }
    let mut answer = if let Some(batch) = kept {
        compute(source, &batch, directory, &names, q, &tenant, mark)?
    } else {
        let pushed = match (aggregation, pushdown(source, q, directory, &names)) {
            (Aggregation::WhereTheDataLives, Some(aggregate)) => {
                store.aggregate_report(&scope, table, &ReportVariant::main(), &aggregate).await?
            }
            _ => None,
        };
        match pushed {
            // An empty answer says why, from the whole report's extent: the service reads it for that.
            Some(pushed) if !pushed.groups.is_empty() => from_pushed(source, q, pushed, &names, &tenant, mark),
            _ => {
                let batch = store.read_report(&scope, table, &ReportVariant::main()).await?;
                compute(source, &batch, directory, &names, q, &tenant, mark)?
            }
        }
    };
    if let Some(c) = cache {
        c.put(key, answer.clone());
    }
    // After the cache: the note depends on the names asked, the cached answer on the metrics.
    answer.meta.notes.extend(q.renamed.iter().cloned());
    Ok(answer)
}

/// The largest query (as normalised JSON) whose answer the cache keeps.
pub const MAX_CACHED_QUERY_BYTES: usize = 4096;

/// A query's cache key part: SHA-256 of its normalised form, in hex.
fn digest(text: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A sum that stays missing until a value arrives.
#[derive(Debug, Clone, Copy, Default)]
struct Sum(Option<f64>);

impl Sum {
    fn add(&mut self, v: Option<f64>) {
        if let Some(v) = v {
            self.0 = Some(self.0.unwrap_or(0.0) + v);
        }
    }
}

/// The sums a group keeps, by slot.
const SLOTS: [&str; 14] = [
    "reach",
    "engaged_users",
    "views",
    "engagements",
    "video_views",
    "posts",
    "rate_num",
    "rate_den",
    "people",
    // A campaign row's estimate (read only from a group of one row: effects do not add up).
    "effect",
    "effect_lo",
    "effect_hi",
    "interval_level",
    "lift_pct",
];
const REGISTERED: usize = 14;

fn slot(name: &str) -> usize {
    if name == "registered" {
        return REGISTERED;
    }
    SLOTS.iter().position(|s| *s == name).unwrap_or(REGISTERED)
}

#[derive(Debug, Default)]
struct Group {
    sums: [Sum; 15],
    practices: BTreeSet<String>,
    weeks: BTreeSet<i32>,
    rows: usize,
    /// A campaign row's note (why an estimate is missing), for a group of one row.
    note: String,
}

fn sunday_on_or_after(d: NaiveDate) -> NaiveDate {
    d + chrono::Duration::days(i64::from((7 - d.weekday().num_days_from_sunday()) % 7))
}

fn compute(
    source: Source,
    batch: &RecordBatch,
    directory: &Directory,
    names: &BTreeMap<String, String>,
    q: &Query,
    tenant: &str,
    watermark: String,
) -> AppResult<Answer> {
    let sel = Selection::of(source, batch, q);
    let mut notes = Vec::new();
    let (groups, unit_watch_time) = group_rows(source, batch, q, &sel);
    let groups_empty = groups.is_empty();
    // The days the rows counted cover (the answering window's, for age bands).
    let first = groups.values().filter_map(|g| g.weeks.first()).min().copied();
    let last = groups.values().filter_map(|g| g.weeks.last()).max().copied();
    let extent = first.zip(last).map(|(a, b)| (from_day_number(a), from_day_number(b)));
    if unit_watch_time {
        notes.push("age-band rows measured in video watch time (the current API era) are left out: they count milliseconds, not people".into());
    }
    let totals = groups
        .into_iter()
        .map(|(dims, g)| {
            // Registered patients of this tenant's practices only: a practice now configured under another tenant
            // has none here (the same rule the store's aggregation follows).
            let registered: Option<f64> = g
                .practices
                .iter()
                .map(|p| names.contains_key(p).then(|| directory.registered.get(p).copied()).flatten())
                .sum();
            (dims, Totals { sums: g.sums, days: g.weeks.len(), registered, rows: g.rows, note: g.note })
        })
        .collect();
    if groups_empty {
        notes.push(why_empty(source, q, &sel.days, sel.from, sel.to));
    }
    let date_range = covered_days(source, q, extent, &mut notes);
    let mut answer = finish(source, totals, names, q, tenant, watermark, notes, date_range);
    if let Some(pi) = q.dimensions.iter().position(|d| *d == Dimension::Post) {
        answer.meta.posts = post_details(batch, answer.results.iter().filter_map(|r| r.dimensions.get(pi)));
    }
    Ok(answer)
}

/// The details of the posts named, from the post-performance rows.
fn post_details<'a>(batch: &RecordBatch, ids: impl Iterator<Item = &'a String>) -> BTreeMap<String, PostDetails> {
    let wanted: BTreeSet<&str> = ids.map(String::as_str).collect();
    let col = |name: &str| Col::of(batch, name);
    let (post, practice, at, kind, excerpt, link) =
        (col("post_id"), col("practice_code"), col("posted_at"), col("post_type"), col("excerpt"), col("permalink"));
    (0..batch.num_rows())
        .filter(|&i| wanted.contains(post.text(i)))
        .map(|i| {
            let details = PostDetails {
                practice: practice.text(i).to_owned(),
                posted_at: at.text(i).to_owned(),
                post_type: kind.text(i).to_owned(),
                excerpt: excerpt.text(i).to_owned(),
                permalink: link.text(i).to_owned(),
            };
            (post.text(i).to_owned(), details)
        })
        .collect()
}

/// Which rows of a report the query's range selects, by each row's day (its week, window or post day); for age bands
/// also the 28-day window that answers (the latest in the range: summing windows would count people several times).
struct Selection {
    days: Vec<Option<i32>>,
    from: Option<i32>,
    to: Option<i32>,
    selected: Vec<bool>,
    window: Option<i32>,
}

impl Selection {
    fn of(source: Source, batch: &RecordBatch, q: &Query) -> Self {
        let date_col = Col::of(batch, source.date_column());
        let n = batch.num_rows();
        let days: Vec<Option<i32>> = (0..n).map(|i| date_col.day(i)).collect();
        let latest = days.iter().flatten().max().copied();
        let (from, to) = match (&q.date_range, latest) {
            (DateRange::All, _) => (None, None),
            (DateRange::LastDays(days), Some(l)) => (Some(l - (*days as i32) + 1), Some(l)),
            (DateRange::LastDays(_), None) => (None, None),
            (DateRange::Between(a, b), _) => (Some(day_number(*a)), Some(day_number(*b))),
        };
        let selected: Vec<bool> = days
            .iter()
            .map(|d| match d {
                Some(d) => from.is_none_or(|f| *d >= f) && to.is_none_or(|t| *d <= t),
                None => true,
            })
            .collect();
        let window = if source == Source::AgeBands {
            (0..n).filter(|&i| selected[i]).filter_map(|i| days[i]).max()
        } else {
            None
        };
        Selection { days, from, to, selected, window }
    }
}

/// The selected rows added up by the query's dimensions, after its filters (each age-band row once per gender when
/// the query asks by gender); and whether age-band rows measured in watch time were left out.
fn group_rows(source: Source, batch: &RecordBatch, q: &Query, sel: &Selection) -> (BTreeMap<Vec<String>, Group>, bool) {
    let n = batch.num_rows();
    let by_practice =
        q.dimensions.contains(&Dimension::Practice) || q.filters.iter().any(|f| f.dimension == Dimension::Practice);
    let genders: &[&str] = if source == Source::AgeBands
        && (q.dimensions.contains(&Dimension::Gender) || q.filters.iter().any(|f| f.dimension == Dimension::Gender))
    {
        &["female", "male", "unknown"]
    } else {
        &["people"]
    };
    let col = |name: &str| Col::of(batch, name);
    let (practice_col, level_col, unit_col, metric_col) =
        (col("practice_code"), col("level"), col("unit"), col("metric"));
    let (week_col, created_col) = (col("week_ending"), col("created"));
    let (band_col, campaign_col, type_col, topic_col, post_col) =
        (col("age_band"), col("campaign"), col("post_type"), col("topic"), col("post_id"));
    // (slot, column) pairs each source adds per row.
    let sums: Vec<(usize, Col)> = match source {
        Source::Reach => ["reach", "engaged_users", "views", "engagements"].iter().map(|c| (slot(c), col(c))).collect(),
        // Video views only of videos (below): Meta answers 0 for a photo, a figure that does not apply to it.
        Source::Posts => ["reach", "views", "engagements", "engaged_users"].iter().map(|c| (slot(c), col(c))).collect(),
        _ => Vec::new(),
    };
    let (engaged_col, engagements_col, reach_col, video_col) =
        (col("engaged_users"), col("engagements"), col("reach"), col("video_views"));
    let (registered_col, lifetime_col, note_col) = (col("registered"), col("post_lifetime"), col("note"));
    let estimates: Vec<(&str, Col)> =
        ["effect", "effect_lo", "effect_hi", "interval_level", "lift_pct"].iter().map(|c| (*c, col(c))).collect();
    let gender_cols: Vec<Col> = genders.iter().map(|g| col(g)).collect();
    let mut groups: BTreeMap<Vec<String>, Group> = BTreeMap::new();
    // Contains filters compare lowercased: the values once here, not once per row.
    let lowered: Vec<Vec<String>> =
        q.filters.iter().map(|f| f.values.iter().map(|v| v.to_lowercase()).collect()).collect();
    let mut unit_watch_time = false;
    let mut key: Vec<String> = Vec::with_capacity(q.dimensions.len());
    for i in 0..n {
        if !sel.selected[i] {
            continue;
        }
        let practice = practice_col.text(i);
        match source {
            Source::AgeBands => {
                if sel.days[i] != sel.window {
                    continue;
                }
                if (level_col.text(i) == "practice") != by_practice {
                    continue;
                }
                if unit_col.text(i) != "people" {
                    unit_watch_time = true;
                    continue;
                }
            }
            Source::Campaigns if (practice == "ALL") == by_practice => continue,
            _ => {}
        }
        for (gi, gender) in genders.iter().enumerate() {
            let dim_value = |d: Dimension| -> std::borrow::Cow<'_, str> {
                match d {
                    Dimension::Practice => practice.into(),
                    Dimension::Week => match source {
                        Source::Posts => created_col
                            .day(i)
                            .map(|d| sunday_on_or_after(from_day_number(d)).to_string())
                            .unwrap_or_default()
                            .into(),
                        _ => week_col.day(i).map(|d| from_day_number(d).to_string()).unwrap_or_default().into(),
                    },
                    Dimension::AgeBand => band_col.text(i).into(),
                    Dimension::Gender => (*gender).into(),
                    Dimension::Campaign => campaign_col.text(i).into(),
                    Dimension::PostType => type_col.text(i).into(),
                    Dimension::Topic => topic_col.text(i).into(),
                    Dimension::CampaignMetric => metric_col.text(i).into(),
                    Dimension::Post => post_col.text(i).into(),
                }
            };
            let keep = q.filters.iter().enumerate().all(|(fi, f)| {
                let v = dim_value(f.dimension);
                match f.op {
                    FilterOp::Is => f.values.iter().any(|x| *x == v),
                    FilterOp::IsNot => !f.values.iter().any(|x| *x == v),
                    FilterOp::Contains => {
                        let lower = v.to_lowercase();
                        lowered[fi].iter().any(|x| lower.contains(x.as_str()))
                    }
                }
            });
            if !keep {
                continue;
            }
            key.clear();
            key.extend(q.dimensions.iter().map(|d| dim_value(*d).into_owned()));
            let g = match groups.get_mut(&key) {
                Some(g) => g,
                None => groups.entry(key.clone()).or_default(),
            };
            g.rows += 1;
            if practice != "ALL" && !g.practices.contains(practice) {
                g.practices.insert(practice.to_owned());
            }
            if let Some(d) = sel.days[i] {
                g.weeks.insert(d);
            }
            for (s, c) in &sums {
                g.sums[*s].add(c.num(i));
            }
            match source {
                Source::Reach => {}
                Source::Posts => {
                    if type_col.text(i) == "video" {
                        g.sums[slot("video_views")].add(video_col.num(i));
                    }
                    g.sums[slot("posts")].add(Some(1.0));
                    g.sums[slot("rate_num")].add(engaged_col.num(i).or(engagements_col.num(i)));
                    g.sums[slot("rate_den")].add(reach_col.num(i));
                }
                Source::AgeBands => {
                    g.sums[slot("people")].add(gender_cols[gi].num(i));
                    // Registered patients are counted by band, not by gender, in this table.
                    let share = (*gender == "people").then_some(1.0);
                    g.sums[REGISTERED].add(registered_col.num(i).zip(share).map(|(r, s)| r * s));
                }
                Source::Campaigns => {
                    let metric = metric_col.text(i);
                    if ["views", "reach", "engagements", "video_views"].contains(&metric) {
                        g.sums[slot(metric)].add(lifetime_col.num(i));
                    }
                    for (name, c) in &estimates {
                        g.sums[slot(name)].add(c.num(i));
                    }
                    g.note = note_col.text(i).to_owned();
                }
            }
        }
    }
    (groups, unit_watch_time)
}

/// The aggregation a store may run for `q` where the data lives: weekly reach (its dimensions are columns; a week
/// is a row's own week), summing the additive columns, counting the distinct weeks of each group, and weighting
/// each practice by its registered patients when `reach_per_1000` is asked. `None` for the other reports, whose
/// rows need the service's rules (age bands' window and levels, posts' weeks from their creation, campaign rows).
fn pushdown(
    source: Source,
    q: &Query,
    directory: &Directory,
    names: &BTreeMap<String, String>,
) -> Option<pulse_store::ReportAggregate> {
    use pulse_store::{ColumnFilter, ColumnFilterOp};
    if source != Source::Reach {
        return None;
    }
    let column = |d: Dimension| match d {
        Dimension::Practice => Some("practice_code"),
        Dimension::Week => Some("week_ending"),
        _ => None,
    };
    let group_by = q.dimensions.iter().map(|d| column(*d)).collect::<Option<Vec<_>>>()?;
    let filters = q
        .filters
        .iter()
        .map(|f| {
            // ClickHouse 18.16 has no multi-needle search and its lambdas cannot see columns: many `contains`
            // values would be as many conditions per row, slower than reading the slice; those stay here.
            if f.op == FilterOp::Contains && f.values.len() > MAX_PUSHED_CONTAINS_VALUES {
                return None;
            }
            // ClickHouse folds case by its own rules and refuses some letters (`ı`, the Kelvin sign) outright;
            // ASCII folds the same everywhere (practice codes and dates are ASCII).
            if f.op == FilterOp::Contains && !f.values.iter().all(|v| v.is_ascii()) {
                return None;
            }
            let op = match f.op {
                FilterOp::Is => ColumnFilterOp::In,
                FilterOp::IsNot => ColumnFilterOp::NotIn,
                FilterOp::Contains => ColumnFilterOp::Contains,
            };
            Some(ColumnFilter { column: column(f.dimension)?, op, values: f.values.clone() })
        })
        .collect::<Option<Vec<_>>>()?;
    let (from, to, last_days) = match &q.date_range {
        DateRange::All => (None, None, None),
        DateRange::LastDays(n) => (None, None, Some(u32::try_from(*n).ok()?)),
        DateRange::Between(a, b) => (Some(*a), Some(*b), None),
    };
    let weights = q.metrics.contains(&Metric::Penetration).then(|| {
        let known = names.keys().filter_map(|p| directory.registered.get(p).map(|r| (p.clone(), *r)));
        ("practice_code", known.collect())
    });
    Some(pulse_store::ReportAggregate {
        group_by,
        date_column: source.date_column(),
        from,
        to,
        last_days,
        filters,
        sums: SUMMED_REACH.to_vec(),
        weights,
    })
}

/// The most `contains` values a query pushed into the store may have.
const MAX_PUSHED_CONTAINS_VALUES: usize = 16;

/// The weekly-reach columns a group sums, in the order of their slots.
const SUMMED_REACH: [&str; 4] = ["reach", "engaged_users", "views", "engagements"];

/// The answer from groups a store added up.
fn from_pushed(
    source: Source,
    q: &Query,
    pushed: pulse_store::AggregateAnswer,
    names: &BTreeMap<String, String>,
    tenant: &str,
    watermark: String,
) -> Answer {
    // The days the groups cover, from each group's first and last week.
    let first = pushed.groups.iter().filter_map(|g| g.first).min();
    let last = pushed.groups.iter().filter_map(|g| g.last).max();
    let mut notes = Vec::new();
    let date_range = covered_days(source, q, first.zip(last), &mut notes);
    let totals = totals_of(pushed.groups);
    finish(source, totals, names, q, tenant, watermark, notes, date_range)
}

/// The days an answer covers, from the first and last value of the source's date column among the rows counted: a
/// week ending on a day covers the six before it, an age-band window the 27 before its end. When those days are not
/// the range asked for (weeks ending in March begin in February), a note says which days answered.
fn covered_days(
    source: Source,
    q: &Query,
    extent: Option<(NaiveDate, NaiveDate)>,
    notes: &mut Vec<String>,
) -> Option<[String; 2]> {
    let (lo, hi) = extent?;
    let (from, what) = match source {
        Source::Reach => (lo - chrono::Duration::days(6), format!("weeks ending {} to {}", uk_day(lo), uk_day(hi))),
        Source::AgeBands => (hi - chrono::Duration::days(27), String::new()),
        Source::Posts => (lo, format!("posts made {} to {}", uk_day(lo), uk_day(hi))),
        Source::Campaigns => (lo, format!("campaigns starting {} to {}", uk_day(lo), uk_day(hi))),
    };
    if source == Source::AgeBands {
        notes.push(format!(
            "age bands are from the 28-day window ending {} (it covers {} to {})",
            uk_day(hi),
            uk_day(from),
            uk_day(hi)
        ));
    } else if let DateRange::Between(a, b) = q.date_range
        && (from != a || hi != b)
        // An open side (the dashboard's range with one end) is not a day anyone asked for.
        && a != NaiveDate::MIN
        && b != NaiveDate::MAX
    {
        notes.push(format!(
            "{what} answered: they cover {} to {} (asked: {} to {})",
            uk_day(from),
            uk_day(hi),
            uk_day(a),
            uk_day(b)
        ));
    }
    Some([from.to_string(), hi.to_string()])
}

/// Why an answer has no rows, from where the report's rows lie against the range asked (day numbers): never a
/// generic reason.
fn why_empty(source: Source, q: &Query, days: &[Option<i32>], from: Option<i32>, to: Option<i32>) -> String {
    let (Some(first), Some(last)) = (days.iter().flatten().min(), days.iter().flatten().max()) else {
        return match source {
            Source::AgeBands => "no age-band windows were computed: the stored facts have no age/gender breakdown \
                (Meta gives none for pages with fewer than 100 people, and the current API has no page-level age \
                metrics)"
                .into(),
            _ => format!("the {} report has no rows: ingest facts, then run `pulse jobs run`", source.table().name),
        };
    };
    let (first, last) = (from_day_number(*first), from_day_number(*last));
    let unit = match source {
        Source::Reach => "weeks (ending on Sundays)",
        Source::AgeBands => "28-day windows",
        Source::Posts => "posts",
        Source::Campaigns => "campaigns",
    };
    if to.is_some_and(|t| t < day_number(first)) {
        return format!("no facts that early: the reports' {unit} start on {}", uk_day(first));
    }
    if from.is_some_and(|f| f > day_number(last)) {
        return format!(
            "not computed yet: the latest of the reports' {unit} ends {} (a week or window counts once complete and \
             ingested)",
            uk_day(last)
        );
    }
    if !q.filters.is_empty() {
        return format!(
            "no rows pass the filters in that range (the reports' {unit} run {} to {})",
            uk_day(first),
            uk_day(last)
        );
    }
    match source {
        Source::AgeBands => format!(
            "no age breakdown for a window ending in that range: Meta gives none for fewer than 100 people, and the \
             API of the time may have had no page age metrics (windows run {} to {})",
            uk_day(first),
            uk_day(last)
        ),
        Source::Reach => {
            "no complete week (Monday to Sunday) ends in that range: ask for at least seven days ending on a Sunday"
                .into()
        }
        _ => format!("none in that range (the reports' {unit} run {} to {})", uk_day(first), uk_day(last)),
    }
}

fn uk_day(d: NaiveDate) -> String {
    d.format("%-d %B %Y").to_string()
}

/// The figures of groups a store added up.
fn totals_of(groups: Vec<pulse_store::AggregateGroup>) -> BTreeMap<Vec<String>, Totals> {
    groups
        .into_iter()
        .map(|g| {
            let mut sums = [Sum::default(); 15];
            for (column, value) in SUMMED_REACH.iter().zip(&g.sums) {
                sums[slot(column)].add(*value);
            }
            (g.keys, Totals { sums, days: g.days as usize, registered: g.weight, rows: 0, note: String::new() })
        })
        .collect()
}

/// A group's figures, however they were added up (here, or where the data lives).
#[derive(Debug, Default)]
struct Totals {
    sums: [Sum; 15],
    /// Distinct days of the source's date column (weeks, for weekly reach).
    days: usize,
    /// The registered patients of the group's practices (`None` when any is unknown).
    registered: Option<f64>,
    /// Report rows in the group (campaign estimates are read from a group of exactly one).
    rows: usize,
    /// A campaign row's note, for a group of one row.
    note: String,
}

/// A metric that reads one campaign row's estimate rather than adding rows up.
fn is_estimate(m: Metric) -> bool {
    matches!(m, Metric::Effect | Metric::EffectLow | Metric::EffectHigh | Metric::IntervalLevel | Metric::Lift)
}

/// From groups' totals to the answer: the metrics' figures, notes, order, the page asked for, names.
#[allow(clippy::too_many_arguments)]
fn finish(
    source: Source,
    totals: BTreeMap<Vec<String>, Totals>,
    names: &BTreeMap<String, String>,
    q: &Query,
    tenant: &str,
    watermark: String,
    mut notes: Vec<String>,
    date_range: Option<[String; 2]>,
) -> Answer {
    if source == Source::Reach && q.metrics.iter().any(|m| matches!(m, Metric::Reach | Metric::EngagedUsers)) {
        notes.push("gross_reach and gross_engaged_users add up the API's weekly uniques per page; over several pages or weeks a person reached by two pages, or in two weeks, counts twice".into());
    }
    if source == Source::AgeBands
        && q.dimensions.contains(&Dimension::Gender)
        && q.metrics.contains(&Metric::Penetration)
    {
        notes.push(
            "penetration is by age band only: registered patients are not split by gender here, so it is n/a by gender"
                .into(),
        );
    }
    let estimates_asked = q.metrics.iter().any(|m| is_estimate(*m));
    let (mut several, mut missing) = (0, Vec::new());
    let mut results: Vec<Row> = totals
        .into_iter()
        .map(|(dims, g)| {
            let s = |name: &str| g.sums[slot(name)].0;
            if estimates_asked {
                if g.rows > 1 {
                    several += 1;
                } else if (g.sums[slot("effect")].0.is_none() || g.sums[slot("effect_lo")].0.is_none())
                    && !g.note.is_empty()
                {
                    let what = if dims.is_empty() { "the campaign".to_owned() } else { dims.join(" / ") };
                    missing.push(format!("{what}: {}", g.note));
                }
            }
            let metrics = q
                .metrics
                .iter()
                .map(|m| match (source, m) {
                    (_, Metric::Posts) => s("posts"),
                    (Source::Reach, Metric::EngagementRate) => ratio(s("engagements"), s("views")),
                    (Source::Posts, Metric::EngagementRate) => ratio(s("rate_num"), s("rate_den")),
                    (Source::Reach, Metric::Penetration) => {
                        let weeks = g.days.max(1) as f64;
                        ratio(s("reach").map(|r| r / weeks * 1000.0), g.registered.filter(|r| *r > 0.0))
                    }
                    (Source::AgeBands, Metric::Penetration) => ratio(s("people").map(|p| p * 1000.0), s("registered")),
                    (_, Metric::People) => s("people"),
                    // An estimate is one campaign's on one figure: a group of several rows has none.
                    (_, m) if is_estimate(*m) => (g.rows == 1).then(|| s(m.slot_name())).flatten(),
                    (_, m) => s(m.slot_name()),
                })
                .map(|v| v.map(round_figure))
                .collect();
            Row { dimensions: dims, metrics }
        })
        .collect();
    if several > 0 {
        notes.push(format!(
            "effects are per campaign and figure: {several} group(s) hold several campaigns or figures, so their effect, interval and lift are n/a; ask by campaign and campaign_metric (or filter campaign_metric)"
        ));
    }
    if !missing.is_empty() {
        let n = missing.len();
        notes.extend(missing.into_iter().take(10).map(|m| format!("no estimate or interval for {m}")));
        if n > 10 {
            notes.push(format!("and {} more without an estimate (the campaigns report says why)", n - 10));
        }
    }
    let order: Vec<(String, bool)> = if q.order_by.is_empty() {
        if q.dimensions.contains(&Dimension::Week) {
            vec![("week".into(), false)]
        } else {
            vec![(q.metrics[0].name().to_owned(), true)]
        }
    } else {
        q.order_by.clone()
    };
    results.sort_by(|a, b| {
        for (name, desc) in &order {
            let ord = if let Some(mi) = q.metrics.iter().position(|m| m.name() == name) {
                // Missing figures last either way.
                match (a.metrics[mi], b.metrics[mi]) {
                    (Some(x), Some(y)) => {
                        let o = x.total_cmp(&y);
                        if *desc { o.reverse() } else { o }
                    }
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (None, None) => std::cmp::Ordering::Equal,
                }
            } else if let Some(di) = q.dimensions.iter().position(|d| d.name() == name) {
                let o = a.dimensions[di].cmp(&b.dimensions[di]);
                if *desc { o.reverse() } else { o }
            } else {
                std::cmp::Ordering::Equal
            };
            if ord != std::cmp::Ordering::Equal {
                return ord;
            }
        }
        a.dimensions.cmp(&b.dimensions)
    });
    let total_rows = results.len();
    let results: Vec<Row> = results.into_iter().skip(q.offset).take(q.limit).collect();
    let practice_names: BTreeMap<String, String> = if q.dimensions.contains(&Dimension::Practice) {
        let pi = q.dimensions.iter().position(|d| *d == Dimension::Practice).unwrap_or(0);
        results
            .iter()
            .filter_map(|r| r.dimensions.get(pi))
            .filter_map(|c| names.get(c).map(|n| (c.clone(), n.clone())))
            .collect()
    } else {
        BTreeMap::new()
    };
    Answer {
        results,
        meta: Meta {
            tenant: tenant.to_owned(),
            source: source.table().name,
            date_range,
            total_rows,
            watermark,
            practice_names,
            posts: BTreeMap::new(),
            notes,
            cached: false,
        },
        query: serde_json::from_str(&q.normalised()).unwrap_or(Value::Null),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// Counts stay whole; rates keep four significant decimals.
fn round_figure(v: f64) -> f64 {
    if v.fract() == 0.0 { v } else { (v * 10_000.0).round() / 10_000.0 }
}

/// The query language for the OpenAPI document and the dashboard's help: which metrics go with which dimensions.
pub fn combinations() -> Vec<(&'static str, Vec<&'static str>, Vec<&'static str>)> {
    Source::ORDER
        .iter()
        .map(|s| {
            (
                s.table().name,
                s.metrics().iter().map(|m| m.name()).collect(),
                s.dimensions().iter().map(|d| d.name()).collect(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_parsed_with_defaults_and_each_mistake_names_its_field() {
        let q = Query::parse(br#"{"metrics":["reach","penetration"],"dimensions":["practice"],"date_range":"28d"}"#)
            .unwrap();
        assert_eq!(q.limit, MAX_LIMIT);
        assert_eq!(q.date_range, DateRange::LastDays(28));
        let cases: &[(&str, &str)] = &[
            (r#"{"metrics":["reech"]}"#, "metrics[0]"),
            (r#"{"metrics":["reach"],"dimensions":["colour"]}"#, "dimensions[0]"),
            (r#"{"metrics":["reach"],"date_range":["2018-02-30","2018-03-01"]}"#, "date_range[0]"),
            (r#"{"metrics":["reach"],"date_range":["2018-03-01","2018-02-01"]}"#, "date_range"),
            (r#"{"metrics":["reach"],"date_range":["2010-01-01","2018-02-01"]}"#, "date_range"),
            (r#"{"metrics":["reach"],"pagination":{"limit":100000}}"#, "pagination.limit"),
            (r#"{"metrics":["reach"],"filters":[["is","practice"]]}"#, "filters[0]"),
            (r#"{"metrics":["reach"],"order_by":[["views","desc"]]}"#, "order_by[0]"),
            (r#"{"metrics":["people"],"dimensions":["week"]}"#, "metrics"),
            (r#"{"metrics":["reach"],"tenant":"x"}"#, "body"),
        ];
        for (body, field) in cases {
            let e = Query::parse(body.as_bytes()).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadRequest);
            assert_eq!(e.field.as_deref(), Some(*field), "{body}: {e}");
            assert!(e.hint.is_some(), "{body}: no hint");
        }
    }

    #[test]
    fn the_normalised_form_ignores_filter_order() {
        let a =
            Query::parse(br#"{"metrics":["reach"],"filters":[["is","practice",["A"]],["is","week",["2018-01-07"]]]}"#)
                .unwrap();
        let b =
            Query::parse(br#"{"metrics":["reach"],"filters":[["is","week",["2018-01-07"]],["is","practice",["A"]]]}"#)
                .unwrap();
        assert_eq!(a.normalised(), b.normalised());
    }

    #[test]
    fn weeks_of_posts_end_on_sunday() {
        let d = NaiveDate::from_ymd_opt(2018, 3, 10).unwrap(); // a Saturday
        assert_eq!(sunday_on_or_after(d), NaiveDate::from_ymd_opt(2018, 3, 11).unwrap());
        let s = NaiveDate::from_ymd_opt(2018, 3, 11).unwrap();
        assert_eq!(sunday_on_or_after(s), s);
    }

    #[test]
    fn a_slice_is_served_for_its_own_watermark_only_and_a_huge_one_is_not_kept() {
        let batch = RecordBatch::try_from_iter([(
            "practice_code",
            Arc::new(StringArray::from(vec!["M83001"; 100])) as arrow::array::ArrayRef,
        )])
        .unwrap();
        let cache = Cache::with_limits(0, DEFAULT_CACHE_BYTES, 1 << 20);
        cache.keep_slice("a", "report_reach_weekly", "run-1", &batch);
        assert_eq!(cache.slice("a", "report_reach_weekly", "run-1").map(|b| b.num_rows()), Some(100));
        assert!(cache.slice("a", "report_reach_weekly", "run-2").is_none(), "a jobs run retires the slice");
        assert!(cache.slice("b", "report_reach_weekly", "run-1").is_none(), "another tenant's is its own");
        assert!(cache.slice("a", "report_age_bands", "run-1").is_none());
        let small = Cache::with_limits(0, DEFAULT_CACHE_BYTES, batch.get_array_memory_size() * 2);
        small.keep_slice("a", "report_reach_weekly", "run-1", &batch);
        assert!(small.slice("a", "report_reach_weekly", "run-1").is_none(), "over a quarter of the bound");
        assert!(small.oversized("a", "report_reach_weekly", "run-1"), "and remembered, so it is not read whole again");
        assert!(!small.oversized("a", "report_reach_weekly", "run-2"), "until the next jobs run");
        let none = Cache::with_limits(10, DEFAULT_CACHE_BYTES, 0);
        none.keep_slice("a", "report_reach_weekly", "run-1", &batch);
        assert!(!none.keeps_slices() && none.slices_kept() == 0);
    }

    #[test]
    fn a_new_watermark_misses_the_cache_and_retires_the_tenants_old_answers() {
        let cache = Cache::new(10);
        let answer = |t: &str| Answer {
            results: vec![],
            meta: Meta {
                tenant: t.into(),
                source: "x",
                date_range: None,
                total_rows: 0,
                watermark: String::new(),
                practice_names: BTreeMap::new(),
                posts: BTreeMap::new(),
                notes: vec![],
                cached: false,
            },
            query: Value::Null,
        };
        let key = |t: &str, w: &str| (t.to_owned(), "q".to_owned(), w.to_owned());
        cache.put(key("a", "run-1"), answer("a"));
        cache.put(key("b", "run-1"), answer("b"));
        assert!(cache.get(&key("a", "run-1")).is_some());
        assert!(cache.get(&key("a", "run-2")).is_none(), "a jobs run changes the watermark: a miss");
        cache.put(key("a", "run-2"), answer("a"));
        assert!(cache.get(&key("a", "run-1")).is_none(), "the old answer is gone");
        assert!(cache.get(&key("b", "run-1")).is_some(), "other tenants keep theirs");
        let small = Cache::new(2);
        for t in ["x", "y", "z"] {
            small.put(key(t, "w"), answer(t));
        }
        assert_eq!(small.len(), 2, "bounded");
        // Bounded by bytes too: answers that would pass the bound push out the least recently used, and one over
        // a quarter of it is not kept at all.
        let one = serde_json::to_vec(&answer("x")).unwrap().len() + 6;
        let tight = Cache::with_max_bytes(100, one * 4);
        for t in ["p", "q", "r", "s", "t", "u"] {
            tight.put(key(t, "w"), answer(t));
        }
        assert!(tight.len() <= 4 && tight.bytes() <= one * 4, "{} answers, {} bytes", tight.len(), tight.bytes());
        assert!(tight.get(&key("u", "w")).is_some() && tight.get(&key("p", "w")).is_none());
        let tiny = Cache::with_max_bytes(100, one * 2);
        tiny.put(key("a", "w"), answer("a"));
        assert!(tiny.is_empty(), "an answer over a quarter of the bound is not cached");
    }
}
