//! The regional view: a key's tenants side by side (reach and engagements per 1,000 registered patients over a
//! range) with each tenant's adoption of social media: practices with an official page, with a claimed page (one the
//! public created that the practice has since claimed), and with none, listed by name so someone can follow them up.
//! The case study's headline is adoption ("over two-thirds of practices now use social media").

use std::collections::BTreeMap;

use chrono::NaiveDate;
use pulse_app::columns::Col;
use pulse_app::error::AppResult;
use pulse_app::report::{self, Kind, ReportQuery};
use pulse_config::{Access, Config};
use pulse_domain::PageKind;
use pulse_store::Store;
use serde::Serialize;

use crate::Directory;

/// One tenant in the regional view.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TenantSide {
    pub tenant: String,
    pub name: String,
    /// Practices the tenant commissions.
    pub practices: usize,
    /// Practices with an official page (whether or not they also have a claimed one).
    pub official: usize,
    /// Practices whose only page is one they claimed.
    pub claimed: usize,
    /// Practices with no page.
    pub without_page: usize,
    /// Practices with a page of either kind, as a share of all (0 to 1).
    pub adoption: Option<f64>,
    /// Weeks in the range with figures.
    pub weeks: usize,
    /// The average week's reach summed over the tenant's pages (gross: a person reached by two pages counts twice).
    pub weekly_reach: Option<f64>,
    /// The average week's engagements summed over the tenant's pages.
    pub weekly_engagements: Option<f64>,
    /// Registered patients of all the tenant's practices, with a page or not (`None` when a list size is unknown).
    pub registered: Option<f64>,
    /// `weekly_reach` per 1,000 registered patients of the whole tenant: how far its practices' pages reach its
    /// population, adoption included.
    pub reach_per_1000: Option<f64>,
    /// `weekly_engagements` per 1,000 registered patients of the whole tenant.
    pub engagements_per_1000: Option<f64>,
    /// The practices without a page: (ODS code, name), by name.
    pub practices_without_page: Vec<PracticeRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PracticeRef {
    pub code: String,
    pub name: String,
}

/// A week's (reach, engagements) summed over a tenant's pages.
type WeekSums = (Option<f64>, Option<f64>);

/// Each tenant `access` may read, side by side over `from`..`to` (all history when both are `None`).
pub async fn side_by_side<S: Store>(
    store: &S,
    config: &Config,
    directory: &Directory,
    access: &Access,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> AppResult<Vec<TenantSide>> {
    let mut out = Vec::new();
    for scope in access.scopes() {
        let Some(t) = config.tenant(scope.tenant()) else { continue };
        let (mut official, mut claimed) = (0, 0);
        let mut without: Vec<PracticeRef> = Vec::new();
        for p in &t.practices {
            if p.pages.iter().any(|g| g.kind == PageKind::Official) {
                official += 1;
            } else if p.pages.iter().any(|g| g.kind == PageKind::Claimed) {
                claimed += 1;
            } else {
                without.push(PracticeRef { code: p.code.to_string(), name: p.name.clone() });
            }
        }
        without.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.code.cmp(&b.code)));
        let registered: Option<f64> =
            t.practices.iter().map(|p| directory.registered.get(p.code.as_str()).copied()).sum();

        // The tenant's weeks: reach and engagements summed over its pages, week by week.
        let mut q = ReportQuery::new(Kind::Reach);
        q.tenant = Some(scope.to_string());
        (q.from, q.to) = (from, to);
        let answer = report::query(store, config, access, &q).await?;
        let (week, reach, engagements) = (
            Col::of(&answer.batch, "week_ending"),
            Col::of(&answer.batch, "reach"),
            Col::of(&answer.batch, "engagements"),
        );
        let mut weeks: BTreeMap<i32, WeekSums> = BTreeMap::new();
        for i in 0..answer.batch.num_rows() {
            let Some(w) = week.day(i) else { continue };
            let e = weeks.entry(w).or_default();
            let add = |acc: &mut Option<f64>, v: Option<f64>| {
                if let Some(v) = v {
                    *acc = Some(acc.unwrap_or(0.0) + v);
                }
            };
            add(&mut e.0, reach.num(i));
            add(&mut e.1, engagements.num(i));
        }
        let n = weeks.len();
        let mean = |f: fn(&WeekSums) -> Option<f64>| {
            let vals: Vec<f64> = weeks.values().filter_map(f).collect();
            (!vals.is_empty()).then(|| vals.iter().sum::<f64>() / vals.len() as f64)
        };
        let weekly_reach = mean(|w| w.0);
        let weekly_engagements = mean(|w| w.1);
        let per_1000 = |v: Option<f64>| v.zip(registered.filter(|r| *r > 0.0)).map(|(v, r)| v / r * 1000.0);
        let practices = t.practices.len();
        out.push(TenantSide {
            tenant: scope.to_string(),
            name: t.name.clone(),
            practices,
            official,
            claimed,
            without_page: without.len(),
            adoption: (practices > 0).then(|| (official + claimed) as f64 / practices as f64),
            weeks: n,
            weekly_reach,
            weekly_engagements,
            registered,
            reach_per_1000: per_1000(weekly_reach),
            engagements_per_1000: per_1000(weekly_engagements),
            practices_without_page: without,
        });
    }
    Ok(out)
}
