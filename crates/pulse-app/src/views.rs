//! Typed rows of the report answers the dashboard shows: a post, a campaign's effect, a campaign's day, a data-quality
//! check. The dashboard renders these and never looks a column up by name; the names are read here, once, and each
//! must be a column of the report's declaration (`pulse-store/src/report.rs`) or one the application adds
//! (`practice_name`): a name that is not there is an error that names it, never a blank cell (the tests decode
//! every view from its table's declared schema).

use chrono::NaiveDate;
use serde::Serialize;

use crate::columns::Col;
use crate::error::{AppError, AppResult, ErrorKind};
use crate::report::{Kind, ReportAnswer};

/// Resolves an answer's columns by name, refusing a name the answer does not have.
struct Reader<'a> {
    answer: &'a ReportAnswer,
}

impl<'a> Reader<'a> {
    fn of(answer: &'a ReportAnswer, kind: Kind) -> AppResult<Self> {
        if answer.kind != kind {
            return Err(AppError::new(
                ErrorKind::Internal,
                format!("a {} answer was read as {}", answer.kind.table().name, kind.table().name),
            ));
        }
        Ok(Reader { answer })
    }

    fn col(&self, name: &str) -> AppResult<Col<'a>> {
        if self.answer.batch.column_by_name(name).is_none() {
            return Err(AppError::new(
                ErrorKind::Internal,
                format!("the {} report has no column `{name}`", self.answer.kind.table().name),
            ));
        }
        Ok(Col::of(&self.answer.batch, name))
    }

    fn rows(&self) -> std::ops::Range<usize> {
        0..self.answer.batch.num_rows()
    }
}

fn day(col: Col<'_>, i: usize) -> Option<NaiveDate> {
    col.day(i).map(pulse_domain::from_day_number)
}

/// One post with its lifetime figures (the latest snapshot).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PostView {
    pub practice_code: String,
    pub practice_name: String,
    pub page_id: String,
    pub post_id: String,
    /// The day it was posted (UTC).
    pub created: Option<NaiveDate>,
    pub post_type: String,
    pub topic: String,
    pub reach: Option<f64>,
    pub views: Option<f64>,
    pub video_views: Option<f64>,
    pub engagement_rate: Option<f64>,
    /// When it was posted; `None` in reports computed before the time was kept.
    pub posted_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The start of its text, on one line.
    pub excerpt: String,
    /// Its address on Facebook (empty in reports computed before it was kept).
    pub permalink: String,
}

impl PostView {
    /// Whether a figure applies to this post at all: video views only to videos.
    pub fn applies(&self, metric: &str) -> bool {
        metric != "video_views" || self.post_type == "video"
    }
}

/// One campaign's effect on one metric, for the tenant (`practice_code` `ALL`) or one practice.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CampaignEffectView {
    pub campaign: String,
    pub practice_code: String,
    pub metric: String,
    pub window_from: Option<NaiveDate>,
    pub window_to: Option<NaiveDate>,
    pub posts: f64,
    /// The campaign posts' lifetime value of the metric.
    pub post_lifetime: Option<f64>,
    /// The pages' total over the window, and what the counterfactual expected.
    pub observed: Option<f64>,
    pub counterfactual: Option<f64>,
    pub effect: Option<f64>,
    pub effect_lo: Option<f64>,
    pub effect_hi: Option<f64>,
    /// The interval's level (0.95, or lower with few placebo weeks).
    pub interval_level: Option<f64>,
    pub lift_pct: Option<f64>,
    /// Why there is no estimate, when there is none.
    pub note: String,
}

impl CampaignEffectView {
    /// The effect with its interval, when all three were estimated.
    pub fn interval(&self) -> Option<(f64, f64, f64)> {
        Some((self.effect?, self.effect_lo?, self.effect_hi?))
    }
}

/// One day of a campaign's series: observed against the counterfactual.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CampaignDayView {
    pub campaign: String,
    pub practice_code: String,
    pub metric: String,
    pub day: Option<NaiveDate>,
    pub observed: Option<f64>,
    pub counterfactual: Option<f64>,
}

/// One data-quality finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualityCheckView {
    pub practice_code: String,
    pub practice_name: String,
    pub page_id: String,
    /// gap, stale, reauth, unique_above_total, week_below_max_day
    pub check_name: String,
    pub day_from: Option<NaiveDate>,
    pub day_to: Option<NaiveDate>,
    pub count: f64,
    /// What was found and what to do.
    pub detail: String,
}

impl ReportAnswer {
    /// The posts of a [`Kind::Posts`] answer.
    pub fn post_views(&self) -> AppResult<Vec<PostView>> {
        let r = Reader::of(self, Kind::Posts)?;
        let (code, name, page, post, created, kind, topic) = (
            r.col("practice_code")?,
            r.col("practice_name")?,
            r.col("page_id")?,
            r.col("post_id")?,
            r.col("created")?,
            r.col("post_type")?,
            r.col("topic")?,
        );
        let (reach, views, video, rate) =
            (r.col("reach")?, r.col("views")?, r.col("video_views")?, r.col("engagement_rate")?);
        // Reports computed before migration 10 have no time, excerpt or permalink: read as missing.
        let optional = |name: &str| r.col(name).unwrap_or(crate::columns::Col::Missing);
        let (at, excerpt, link) = (optional("posted_at"), optional("excerpt"), optional("permalink"));
        Ok(r.rows()
            .map(|i| PostView {
                practice_code: code.text(i).to_owned(),
                practice_name: name.text(i).to_owned(),
                page_id: page.text(i).to_owned(),
                post_id: post.text(i).to_owned(),
                created: day(created, i),
                post_type: kind.text(i).to_owned(),
                topic: topic.text(i).to_owned(),
                reach: reach.num(i),
                views: views.num(i),
                video_views: video.num(i),
                engagement_rate: rate.num(i),
                posted_at: chrono::DateTime::parse_from_rfc3339(at.text(i)).ok().map(|t| t.to_utc()),
                excerpt: excerpt.text(i).to_owned(),
                permalink: link.text(i).to_owned(),
            })
            .collect())
    }

    /// The effects of a [`Kind::Campaigns`] answer.
    pub fn campaign_effects(&self) -> AppResult<Vec<CampaignEffectView>> {
        let r = Reader::of(self, Kind::Campaigns)?;
        let (campaign, code, metric, from, to, posts, lifetime) = (
            r.col("campaign")?,
            r.col("practice_code")?,
            r.col("metric")?,
            r.col("window_from")?,
            r.col("window_to")?,
            r.col("posts")?,
            r.col("post_lifetime")?,
        );
        let (observed, counterfactual) = (r.col("observed")?, r.col("counterfactual")?);
        let (effect, lo, hi, level, lift, note) = (
            r.col("effect")?,
            r.col("effect_lo")?,
            r.col("effect_hi")?,
            r.col("interval_level")?,
            r.col("lift_pct")?,
            r.col("note")?,
        );
        Ok(r.rows()
            .map(|i| CampaignEffectView {
                campaign: campaign.text(i).to_owned(),
                practice_code: code.text(i).to_owned(),
                metric: metric.text(i).to_owned(),
                window_from: day(from, i),
                window_to: day(to, i),
                posts: posts.num(i).unwrap_or(0.0),
                post_lifetime: lifetime.num(i),
                observed: observed.num(i),
                counterfactual: counterfactual.num(i),
                effect: effect.num(i),
                effect_lo: lo.num(i),
                effect_hi: hi.num(i),
                interval_level: level.num(i),
                lift_pct: lift.num(i),
                note: note.text(i).to_owned(),
            })
            .collect())
    }

    /// The days of a [`Kind::CampaignSeries`] answer.
    pub fn campaign_days(&self) -> AppResult<Vec<CampaignDayView>> {
        let r = Reader::of(self, Kind::CampaignSeries)?;
        let (campaign, code, metric, d, observed, counterfactual) = (
            r.col("campaign")?,
            r.col("practice_code")?,
            r.col("metric")?,
            r.col("day")?,
            r.col("observed")?,
            r.col("counterfactual")?,
        );
        Ok(r.rows()
            .map(|i| CampaignDayView {
                campaign: campaign.text(i).to_owned(),
                practice_code: code.text(i).to_owned(),
                metric: metric.text(i).to_owned(),
                day: day(d, i),
                observed: observed.num(i),
                counterfactual: counterfactual.num(i),
            })
            .collect())
    }

    /// The findings of a [`Kind::Quality`] answer.
    pub fn quality_checks(&self) -> AppResult<Vec<QualityCheckView>> {
        let r = Reader::of(self, Kind::Quality)?;
        let (code, name, page, check, from, to, count, detail) = (
            r.col("practice_code")?,
            r.col("practice_name")?,
            r.col("page_id")?,
            r.col("check_name")?,
            r.col("day_from")?,
            r.col("day_to")?,
            r.col("count")?,
            r.col("detail")?,
        );
        Ok(r.rows()
            .map(|i| QualityCheckView {
                practice_code: code.text(i).to_owned(),
                practice_name: name.text(i).to_owned(),
                page_id: page.text(i).to_owned(),
                check_name: check.text(i).to_owned(),
                day_from: day(from, i),
                day_to: day(to, i),
                count: count.num(i).unwrap_or(0.0),
                detail: detail.text(i).to_owned(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer of `kind` with no rows, shaped as `report::query` shapes it: the table's declared columns and the
    /// practice names beside the codes.
    fn empty(kind: Kind) -> ReportAnswer {
        let batch = arrow::record_batch::RecordBatch::new_empty(kind.table().schema());
        let batch = crate::report::with_practice_names(&batch, &Default::default()).unwrap();
        ReportAnswer { kind, tenant: "t".into(), batch, run: None, empty_note: None, total: 0, offset: 0 }
    }

    /// Every name a view reads is a column of its report as declared (pulse-store/src/report.rs).
    #[test]
    fn every_view_reads_only_declared_columns() {
        assert!(empty(Kind::Posts).post_views().unwrap().is_empty());
        assert!(empty(Kind::Campaigns).campaign_effects().unwrap().is_empty());
        assert!(empty(Kind::CampaignSeries).campaign_days().unwrap().is_empty());
        assert!(empty(Kind::Quality).quality_checks().unwrap().is_empty());
    }

    /// A column that is not there is an error that names it, not a blank cell; an answer read as another is refused.
    #[test]
    fn a_missing_column_or_the_wrong_report_is_an_error() {
        let mut answer = empty(Kind::Posts);
        let at = answer.batch.schema().index_of("topic").unwrap();
        answer.batch.remove_column(at);
        let err = answer.post_views().unwrap_err();
        assert!(err.message.contains("no column `topic`"), "{}", err.message);
        assert!(empty(Kind::Quality).post_views().is_err());
    }
}
