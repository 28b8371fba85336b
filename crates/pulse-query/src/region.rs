//! The regional view: a key's tenants side by side (reach and engagements per 1,000 registered patients over a
//! range) with each tenant's adoption of social media: practices with an official page, with a claimed page (one the
//! public created that the practice has since claimed), and with none, listed by name so someone can follow them up.
//! The case study's headline is adoption ("over two-thirds of practices now use social media").

use std::collections::BTreeMap;

use chrono::NaiveDate;
use pulse_app::columns::Col;
use pulse_app::error::{AppResult, ErrorKind};
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
    /// What the reader should know: reports not computed yet, list sizes unknown.
    pub notes: Vec<String>,
    /// The average week's reach summed over the tenant's pages (gross: a person reached by two pages counts twice).
    pub weekly_reach: Option<f64>,
    /// The average week's engagements summed over the tenant's pages.
    pub weekly_engagements: Option<f64>,
    /// Registered patients of the tenant's practices whose list size is known, with a page or not (a note says how
    /// many are unknown).
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
type WeekSums = (crate::Sum, crate::Sum);

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
        // Pages connected through an invitation for practices the config lists without one count too, as the
        // practice manager said they are.
        let connected: Vec<(String, String)> = pulse_app::vault::entries(store, &scope)
            .await?
            .into_values()
            .filter(|e| !e.removed)
            .map(|e| (e.practice, e.kind.unwrap_or_else(|| "official".into())))
            .collect();
        let connected_kind = |code: &str, kind: &str| connected.iter().any(|(p, k)| p == code && k == kind);
        for p in &t.practices {
            let code = p.code.as_str();
            if p.pages.iter().any(|g| g.kind == PageKind::Official)
                || (p.pages.is_empty() && connected_kind(code, "official"))
            {
                official += 1;
            } else if p.pages.iter().any(|g| g.kind == PageKind::Claimed)
                || (p.pages.is_empty() && connected_kind(code, "claimed"))
            {
                claimed += 1;
            } else {
                without.push(PracticeRef { code: p.code.to_string(), name: p.name.clone() });
            }
        }
        without.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.code.cmp(&b.code)));
        let mut notes = Vec::new();
        let known: Vec<f64> =
            t.practices.iter().filter_map(|p| directory.registered.get(p.code.as_str()).copied()).collect();
        let registered = (!known.is_empty()).then(|| known.iter().sum::<f64>());
        if known.len() < t.practices.len() {
            notes.push(format!(
                "list size unknown for {} of {} practices: per 1,000 figures are over the others' patients",
                t.practices.len() - known.len(),
                t.practices.len()
            ));
        }

        // The tenant's weeks: reach and engagements summed over its pages, week by week.
        let mut q = ReportQuery::new(Kind::Reach);
        q.tenant = Some(scope.to_string());
        (q.from, q.to) = (from, to);
        // A tenant whose reports are not computed yet is shown as such; the others are still answered.
        let answer = match report::query(store, config, access, &q).await {
            Ok(a) => Some(a),
            Err(e) if e.kind == ErrorKind::NotReady => {
                notes.push("reports not computed yet: `pulse jobs run` computes them after an ingest".to_owned());
                None
            }
            Err(e) => return Err(e),
        };
        let empty = arrow::record_batch::RecordBatch::new_empty(std::sync::Arc::new(arrow::datatypes::Schema::empty()));
        let batch = answer.as_ref().map_or(&empty, |a| &a.batch);
        let (week, reach, engagements) =
            (Col::of(batch, "week_ending"), Col::of(batch, "reach"), Col::of(batch, "engagements"));
        let mut weeks: BTreeMap<i32, WeekSums> = BTreeMap::new();
        for i in 0..batch.num_rows() {
            let Some(w) = week.day(i) else { continue };
            let e = weeks.entry(w).or_default();
            e.0.add(reach.num(i));
            e.1.add(engagements.num(i));
        }
        // Weeks with a figure: a week whose pages all lack one (an API era without it) is not a week of zero.
        let n = weeks.values().filter(|w| w.0.0.is_some() || w.1.0.is_some()).count();
        let mean = |f: fn(&WeekSums) -> Option<f64>| {
            let vals: Vec<f64> = weeks.values().filter_map(f).collect();
            (!vals.is_empty()).then(|| vals.iter().sum::<f64>() / vals.len() as f64)
        };
        let weekly_reach = mean(|w| w.0.0);
        let weekly_engagements = mean(|w| w.1.0);
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
            notes,
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

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[store]
lake_dir = "lake"

[[tenant]]
id = "north"
name = "North"

[[tenant.practice]]
code = "M83001"
name = "Both Kinds"
list_size = 5000

[[tenant.practice.page]]
id = "1001"
kind = "claimed"

[[tenant.practice.page]]
id = "1002"
kind = "official"

[[tenant.practice]]
code = "M83002"
name = "Claimed Only"

[[tenant.practice.page]]
id = "1003"
kind = "claimed"

[[tenant.practice]]
code = "M83003"
name = "Zed Surgery"

[[tenant.practice]]
code = "M83004"
name = "Abbey Surgery"

[[tenant]]
id = "south"
name = "South"
"#;

    /// Adoption is counted once per practice (official wins over claimed); practices without a page are listed by
    /// name; a tenant without computed reports is shown with a note, not an error for the whole view; unknown list
    /// sizes are said.
    #[tokio::test]
    async fn adoption_is_counted_per_practice_and_a_tenant_without_reports_does_not_break_the_view() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pulse.toml");
        std::fs::write(&path, CONFIG).unwrap();
        let config = pulse_config::load(&path).unwrap();
        let store = pulse_app::open::store(&config).unwrap();
        let directory = Directory::load(&config).unwrap();
        let sides = side_by_side(&store, &config, &directory, &config.operator_access(), None, None).await.unwrap();
        assert_eq!(sides.len(), 2);
        let north = &sides[0];
        assert_eq!((north.practices, north.official, north.claimed, north.without_page), (4, 1, 1, 2));
        assert_eq!(north.adoption, Some(0.5));
        let names: Vec<&str> = north.practices_without_page.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["Abbey Surgery", "Zed Surgery"]);
        assert_eq!(north.registered, Some(5000.0));
        assert_eq!((north.weeks, north.weekly_reach, north.reach_per_1000), (0, None, None));
        assert!(north.notes.iter().any(|n| n.contains("reports not computed yet")), "{:?}", north.notes);
        assert!(north.notes.iter().any(|n| n.contains("list size unknown for 3 of 4")), "{:?}", north.notes);
        let south = &sides[1];
        assert_eq!((south.practices, south.adoption), (0, None));
    }
}
