//! Writes a national-scale year of page insight facts straight into the lake's Parquet layout, for the pipelines
//! benchmark: 42 tenants x 100 pages x 365 days x 76 rows a page-day (day, week and 28-day metrics and the
//! age/gender breakdowns) = about 116 million rows.
//!
//!   gen_lake <lake dir> [tenants] [pages per tenant] [days]

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

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
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
                    let reach = (f * 0.32 * (0.6 + 0.8 * noise(k, n as u64, 2))).round();
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
            let batch = c.batch()?;
            total += batch.num_rows();
            let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?)).build();
            let mut w = ArrowWriter::try_new(File::create(dir.join("data.parquet"))?, batch.schema(), Some(props))?;
            w.write(&batch)?;
            w.close()?;
            month_start = next;
        }
        eprintln!("tenant {tenant}: {total} rows so far ({:.0}s)", started.elapsed().as_secs_f64());
    }
    println!(
        "{{\"rows\": {total}, \"tenants\": {tenants}, \"pages_per_tenant\": {pages}, \"days\": {days}, \"seconds\": {:.1}}}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
