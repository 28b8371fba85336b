//! Writes a national-scale year of page insight facts straight into the lake's Parquet layout, for the pipelines
//! benchmark: 42 tenants x 100 pages x 365 days x 76 rows a page-day (day, week and 28-day metrics and the
//! age/gender breakdowns) = about 116 million rows. With campaigns, a share of each tenant's pages posts the
//! campaign's video on its first day and its daily figures rise over the window; every page also posts about twice a
//! week. Posts and their lifetime snapshots go through the lake store itself.
//!
//!   gen_lake <lake dir> [tenants] [pages per tenant] [days] [--campaign 'name|#tag|start|days|share']...

use std::fs::File;
use std::sync::Arc;

use anyhow::Result;
use arrow::array::{ArrayRef, Date32Array, Float64Array, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use chrono::{Datelike, Duration, NaiveDate};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

const BANDS: [&str; 7] = ["13-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+"];
const BAND_SHARE: [f64; 7] = [0.01, 0.06, 0.17, 0.25, 0.23, 0.16, 0.12];

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn noise(a: u64, b: u64, c: u64) -> f64 {
    (mix(a.wrapping_mul(1_000_003) ^ b.wrapping_mul(7919) ^ c) >> 11) as f64 / (1u64 << 53) as f64
}

#[derive(Default)]
struct Cols {
    tenant: Vec<String>,
    practice: Vec<String>,
    page: Vec<String>,
    metric: Vec<&'static str>,
    graph: Vec<&'static str>,
    period: Vec<&'static str>,
    day: Vec<i32>,
    breakdown: Vec<String>,
    value: Vec<f64>,
}

impl Cols {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        t: &str,
        pr: &str,
        pg: &str,
        m: &'static str,
        g: &'static str,
        p: &'static str,
        d: i32,
        b: String,
        v: f64,
    ) {
        self.tenant.push(t.to_owned());
        self.practice.push(pr.to_owned());
        self.page.push(pg.to_owned());
        self.metric.push(m);
        self.graph.push(g);
        self.period.push(p);
        self.day.push(d);
        self.breakdown.push(b);
        self.value.push(v);
    }

    fn batch(self) -> Result<RecordBatch> {
        let n = self.value.len();
        let schema = Schema::new(vec![
            Field::new("tenant_id", DataType::Utf8, false),
            Field::new("practice_code", DataType::Utf8, false),
            Field::new("page_id", DataType::Utf8, false),
            Field::new("metric", DataType::Utf8, false),
            Field::new("graph_metric", DataType::Utf8, false),
            Field::new("period", DataType::Utf8, false),
            Field::new("day", DataType::Date32, false),
            Field::new("breakdown", DataType::Utf8, false),
            Field::new("value", DataType::Float64, false),
            Field::new("api_version", DataType::Utf8, false),
            Field::new("fetched_at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
        ]);
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(self.tenant)),
            Arc::new(StringArray::from(self.practice)),
            Arc::new(StringArray::from(self.page)),
            Arc::new(StringArray::from(self.metric)),
            Arc::new(StringArray::from(self.graph)),
            Arc::new(StringArray::from(self.period)),
            Arc::new(Date32Array::from(self.day)),
            Arc::new(StringArray::from(self.breakdown)),
            Arc::new(Float64Array::from(self.value)),
            Arc::new(StringArray::from_iter_values((0..n).map(|_| "v25.0"))),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values((0..n).map(|_| 1_763_700_000_000_000)).with_timezone("UTC"),
            ),
        ];
        Ok(RecordBatch::try_new(Arc::new(schema), cols)?)
    }
}

/// A campaign of the generated year: `name|#tag|start|days|share of pages`.
struct Campaign {
    name: String,
    tag: String,
    start: i32,
    days: i32,
    share: f64,
}

impl Campaign {
    fn parse(spec: &str) -> Result<Campaign> {
        let f: Vec<&str> = spec.split('|').collect();
        anyhow::ensure!(f.len() == 5, "--campaign {spec:?}: expected 'name|#tag|start|days|share'");
        let start: NaiveDate = f[2].parse()?;
        Ok(Campaign {
            name: f[0].into(),
            tag: f[1].into(),
            start: (start - NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid")).num_days() as i32,
            days: f[3].parse()?,
            share: f[4].parse()?,
        })
    }

    fn takes_part(&self, ci: usize, page: u64) -> bool {
        noise(page, ci as u64, 17) < self.share
    }

    /// The factor on a participating page's daily figures: the video's pull, halving each day of the window.
    fn boost(&self, day: i32) -> f64 {
        if (self.start..self.start + self.days).contains(&day) {
            1.0 + 1.5 * 0.5f64.powi(day - self.start)
        } else {
            1.0
        }
    }
}

const MESSAGES: [(&str, &str); 5] = [
    ("Flu vaccination clinics this Saturday: book your jab online", "photo"),
    ("Our opening hours over the bank holiday", "status"),
    ("Join our patient participation group (PPG) meeting", "link"),
    ("Self-care tips for coughs and colds this winter", "photo"),
    ("Missed appointments last month: please cancel if you cannot attend", "status"),
];

/// A tenant's posts (about two a week a page, plus the campaigns' videos) and each post's lifetime snapshot a week
/// after it was posted, written through the lake store.
#[allow(clippy::too_many_arguments)]
fn write_posts(
    lake: &pulse_store::lake::LakeStore,
    rt: &tokio::runtime::Runtime,
    t: usize,
    tenant: &str,
    pages: usize,
    (first, last): (i32, i32),
    campaigns: &[Campaign],
) -> Result<usize> {
    use pulse_domain::{ApiVersion, CanonicalMetric as M, Post, PostInsightSnapshot, TenantId};
    use pulse_store::Store;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid");
    let fetched = chrono::DateTime::from_timestamp(1_763_700_000, 0).expect("valid");
    let scope = pulse_benches::operator([TenantId::new(tenant)?])?.write_scope(tenant)?;
    let (mut posts, mut snapshots) = (Vec::new(), Vec::new());
    for p in 0..pages {
        let k = (t * pages + p) as u64;
        let practice: pulse_domain::PracticeCode = format!("A{:02}{:03}", t + 1, p + 1).parse()?;
        let page: pulse_domain::PageId = format!("{}", 100_000_000_000u64 + k).parse()?;
        let followers = 800.0 + 6000.0 * noise(t as u64, p as u64, 1);
        let mut n = 0;
        for day in first..=last {
            let mut todays: Vec<(String, &str, f64)> = Vec::new();
            if noise(k, day as u64, 11) < 2.0 / 7.0 {
                let (message, kind) = MESSAGES[(noise(k, day as u64, 12) * MESSAGES.len() as f64) as usize];
                todays.push((message.into(), kind, 1.0));
            }
            for (ci, c) in campaigns.iter().enumerate() {
                if day == c.start && c.takes_part(ci, k) {
                    todays.push((
                        format!("{}: know the signs, Face Arms Speech Time, call 999 {}", c.name, c.tag),
                        "video",
                        8.0,
                    ));
                }
            }
            for (message, kind, pull) in todays {
                n += 1;
                let post = pulse_domain::PostId::new(format!("{page}_{n}"))?;
                let created = epoch + Duration::days(day as i64);
                let reach = (followers * 0.1 * pull * (0.5 + noise(k, day as u64, 13))).round();
                let mut values = vec![
                    (M::PostReach, "post_total_media_view_unique", reach),
                    (M::PostViews, "post_media_view", (reach * 1.4).round()),
                    (M::PostEngagements, "post_clicks", (reach * 0.05).round()),
                ];
                if kind == "video" {
                    values.push((M::PostVideoViews, "post_video_views", (reach * 0.5).round()));
                }
                for (metric, graph_metric, value) in values {
                    snapshots.push(PostInsightSnapshot {
                        practice: practice.clone(),
                        page: page.clone(),
                        post: post.clone(),
                        metric,
                        graph_metric,
                        breakdown: "".into(),
                        snapshot_day: created + Duration::days(7),
                        value,
                        api_version: ApiVersion::new(25, 0),
                        fetched_at: fetched,
                    });
                }
                posts.push(Post {
                    practice: practice.clone(),
                    page: page.clone(),
                    post: post.clone(),
                    created_time: created.and_hms_opt(9, 30, 0).expect("valid").and_utc(),
                    post_type: kind.into(),
                    message,
                    permalink: format!("https://www.facebook.com/{post}"),
                    fetched_at: fetched,
                });
            }
        }
    }
    rt.block_on(lake.write_posts(&scope, &posts))?;
    rt.block_on(lake.write_post_snapshots(&scope, &snapshots))?;
    // As an ingest run's end leaves a tenant: each partition compacted into its `data.parquet` (a lone part renamed),
    // which a read takes without merging.
    rt.block_on(lake.settle(&scope))?;
    Ok(posts.len())
}

/// The rows in the order the lake writes them (its fact key: breakdown, metric, period, page, day).
fn sorted_like_the_lake(batch: RecordBatch) -> Result<RecordBatch> {
    use arrow::compute::{SortColumn, lexsort_to_indices, take};
    let by =
        |name: &str| SortColumn { values: batch.column_by_name(name).expect("a fact column").clone(), options: None };
    let order = lexsort_to_indices(&[by("breakdown"), by("metric"), by("period"), by("page_id"), by("day")], None)?;
    let columns = batch.columns().iter().map(|c| take(c, &order, None)).collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

fn main() -> Result<()> {
    let all: Vec<String> = std::env::args().collect();
    let mut args = Vec::new();
    let mut campaigns = Vec::new();
    let mut it = all.into_iter();
    while let Some(a) = it.next() {
        if a == "--campaign" {
            campaigns.push(Campaign::parse(&it.next().unwrap_or_default())?);
        } else {
            args.push(a);
        }
    }
    let root = std::path::PathBuf::from(args.get(1).expect("usage: gen_lake <lake dir> [tenants] [pages] [days]"));
    let tenants: usize = args.get(2).map_or(Ok(42), |v| v.parse())?;
    let pages: usize = args.get(3).map_or(Ok(100), |v| v.parse())?;
    let days: i64 = args.get(4).map_or(Ok(365), |v| v.parse())?;
    let end = NaiveDate::from_ymd_opt(2026, 11, 20).expect("valid");
    let start = end - Duration::days(days - 1);
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid");
    std::fs::create_dir_all(&root)?;
    std::fs::write(root.join("_pulse_lake.json"), r#"{"format":1,"written_by":"gen_lake"}"#)?;
    let started = std::time::Instant::now();
    let mut total = 0usize;
    let mut total_posts = 0usize;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    for t in 0..tenants {
        let tenant = format!("icb-{:02}", t + 1);
        let mut month_start = NaiveDate::from_ymd_opt(start.year(), start.month(), 1).expect("valid");
        while month_start <= end {
            let next = month_start.checked_add_months(chrono::Months::new(1)).expect("valid");
            let mut c = Cols::default();
            for p in 0..pages {
                let practice = format!("A{:02}{:03}", t + 1, p + 1);
                let page = format!("{}", 100_000_000_000u64 + (t * pages + p) as u64);
                let followers0 = 800.0 + 6000.0 * noise(t as u64, p as u64, 1);
                let mut d = month_start.max(start);
                while d < next && d <= end {
                    let n = (d - epoch).num_days() as i32;
                    let f = followers0 * (1.0 + 0.0004 * (d - start).num_days() as f64);
                    let k = (t * pages + p) as u64;
                    let boost: f64 = campaigns
                        .iter()
                        .enumerate()
                        .filter(|(ci, c)| c.takes_part(*ci, k))
                        .map(|(_, c)| c.boost(n))
                        .product();
                    let reach = (boost * f * 0.32 * (0.6 + 0.8 * noise(k, n as u64, 2))).round();
                    let engaged = (reach * 0.09 * (0.7 + 0.6 * noise(k, n as u64, 3))).round();
                    let rows: [(&str, &str, &str, f64); 13] = [
                        ("page_views", "page_media_view", "day", (reach * 1.5).round()),
                        ("page_reach", "page_total_media_view_unique", "day", reach),
                        ("page_engagements", "page_post_engagements", "day", (engaged * 1.6).round()),
                        ("page_engaged_users", "page_engaged_users", "day", engaged),
                        ("page_followers", "page_follows", "day", f.round()),
                        ("page_new_followers", "page_daily_follows_unique", "day", (f * 0.001).round()),
                        ("page_video_views", "page_video_views", "day", (reach * 0.04).round()),
                        ("page_views", "page_media_view", "week", (reach * 1.5 * 7.0).round()),
                        ("page_reach", "page_total_media_view_unique", "week", (reach * 4.3).round()),
                        ("page_engagements", "page_post_engagements", "week", (engaged * 1.6 * 7.0).round()),
                        ("page_engaged_users", "page_engaged_users", "week", (engaged * 4.3).round()),
                        ("page_reach", "page_total_media_view_unique", "days_28", (reach * 11.0).round()),
                        ("page_engaged_users", "page_engaged_users", "days_28", (engaged * 11.0).round()),
                    ];
                    for (m, g, per, v) in rows {
                        c.push(&tenant, &practice, &page, m, g, per, n, String::new(), v);
                    }
                    for (m, g, per, total) in [
                        ("page_reach_by_age_gender", "page_impressions_by_age_gender_unique", "days_28", reach * 11.0),
                        (
                            "page_engaged_by_age_gender",
                            "page_content_activity_by_age_gender_unique",
                            "days_28",
                            engaged * 11.0,
                        ),
                        ("page_followers_by_age_gender", "page_fans_gender_age", "day", f),
                    ] {
                        for (b, share) in BANDS.iter().zip(BAND_SHARE) {
                            for (sex, s) in [("F", 0.68), ("M", 0.3), ("U", 0.02)] {
                                c.push(
                                    &tenant,
                                    &practice,
                                    &page,
                                    m,
                                    g,
                                    per,
                                    n,
                                    format!("{sex}.{b}"),
                                    (total * share * s).round().max(1.0),
                                );
                            }
                        }
                    }
                    d += Duration::days(1);
                }
            }
            let dir = root
                .join("page_insights")
                .join(format!("tenant={tenant}"))
                .join(format!("month={}", month_start.format("%Y-%m")));
            std::fs::create_dir_all(&dir)?;
            let batch = sorted_like_the_lake(c.batch()?)?;
            total += batch.num_rows();
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
                .set_max_row_group_row_count(Some(pulse_store::lake::ROW_GROUP_ROWS))
                .build();
            let mut w = ArrowWriter::try_new(File::create(dir.join("data.parquet"))?, batch.schema(), Some(props))?;
            w.write(&batch)?;
            w.close()?;
            month_start = next;
        }
        let lake = pulse_store::lake::LakeStore::open(&root)?;
        let span = ((start - epoch).num_days() as i32, (end - epoch).num_days() as i32);
        total_posts += write_posts(&lake, &rt, t, &tenant, pages, span, &campaigns)?;
        eprintln!(
            "tenant {tenant}: {total} rows, {total_posts} posts so far ({:.0}s)",
            started.elapsed().as_secs_f64()
        );
    }
    println!(
        "{{\"rows\": {total}, \"posts\": {total_posts}, \"campaigns\": {}, \"tenants\": {tenants}, \"pages_per_tenant\": {pages}, \"days\": {days}, \"seconds\": {:.1}}}",
        campaigns.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
