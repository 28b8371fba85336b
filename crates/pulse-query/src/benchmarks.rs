//! Peer benchmarks: each practice's weekly engagements per 1,000 registered patients against the deciles of practices
//! of similar list size across every tenant that opted in (`benchmark = true` under its `[[tenant]]`). Only opted-in
//! tenants contribute and only they see benchmarks. Another tenant's practices are never shown, one by one or as a
//! series: a band's deciles are given only when at least [`MIN_TENANTS`] tenants and [`MIN_PRACTICES`] practices are in
//! it, and otherwise withheld with the reason.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Duration, NaiveDate};
use pulse_app::columns::Col;
use pulse_app::error::{AppError, AppResult, ErrorKind};
use pulse_app::report::{self, Kind, ReportQuery};
use pulse_config::{Access, Config};
use pulse_store::Store;
use serde::Serialize;

use crate::Directory;

/// A band's deciles are shown only with practices of at least this many tenants in it...
pub const MIN_TENANTS: usize = 3;
/// ...and at least this many practices.
pub const MIN_PRACTICES: usize = 10;
/// The weeks compared when no range is asked for: the last 13 of the tenant's reports.
pub const DEFAULT_WEEKS: i64 = 13;

/// List-size bands: (label, lowest registered patients, highest exclusive).
pub const BANDS: &[(&str, f64, f64)] = &[
    ("under 5,000 patients", 0.0, 5_000.0),
    ("5,000 to 9,999", 5_000.0, 10_000.0),
    ("10,000 to 14,999", 10_000.0, 15_000.0),
    ("15,000 and over", 15_000.0, f64::INFINITY),
];

pub const MEASURE: &str = "engagements per week per 1,000 registered patients";

/// One practice's rate: the input to the deciles.
#[derive(Debug, Clone, PartialEq)]
pub struct PracticeRate {
    pub tenant: String,
    pub practice: String,
    pub registered: f64,
    pub rate: f64,
}

/// A list-size band across the opted-in tenants.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Band {
    pub band: String,
    /// Practices (and their tenants) with a rate in the band, across the opted-in tenants.
    pub practices: usize,
    pub tenants: usize,
    /// The 10th to 90th percentiles (nine cut points), when shown.
    pub deciles: Option<Vec<f64>>,
    /// Why the deciles are withheld.
    pub withheld: Option<String>,
}

/// One of the caller's tenant's practices against its band.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct OwnPractice {
    pub code: String,
    pub name: String,
    pub registered: f64,
    pub band: String,
    pub rate: f64,
    /// 1 (lowest tenth of its band) to 10 (highest), when the band's deciles are shown.
    pub decile: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Benchmarks {
    pub tenant: String,
    #[schema(value_type = String)]
    pub from: NaiveDate,
    #[schema(value_type = String)]
    pub to: NaiveDate,
    pub measure: String,
    pub min_tenants: usize,
    pub min_practices: usize,
    /// Tenants taking part (their number only).
    pub tenants_opted_in: usize,
    pub bands: Vec<Band>,
    pub practices: Vec<OwnPractice>,
    /// What the reader should know: practices left out (no list size, no figures), tenants without reports.
    pub notes: Vec<String>,
}

fn band_of(registered: f64) -> &'static str {
    BANDS.iter().find(|(_, lo, hi)| registered >= *lo && registered < *hi).map_or(BANDS[0].0, |b| b.0)
}

/// The `p` quantile of sorted values by linear interpolation between order statistics (R's type 7).
fn quantile(sorted: &[f64], p: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * p;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    sorted[lo] + (h - h.floor()) * (sorted[hi] - sorted[lo])
}

/// The bands and the tenant's own practices placed in them, from every opted-in tenant's practice rates. Pure: the
/// disclosure rule is here, and tested here.
pub fn compare(
    rates: &[PracticeRate],
    tenant: &str,
    names: &BTreeMap<String, String>,
) -> (Vec<Band>, Vec<OwnPractice>) {
    let mut bands = Vec::new();
    let mut cuts: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for (label, _, _) in BANDS {
        let members: Vec<&PracticeRate> = rates.iter().filter(|r| band_of(r.registered) == *label).collect();
        let tenants: BTreeSet<&str> = members.iter().map(|r| r.tenant.as_str()).collect();
        let mut values: Vec<f64> = members.iter().map(|r| r.rate).filter(|v| v.is_finite()).collect();
        values.sort_by(f64::total_cmp);
        let withheld = if tenants.len() < MIN_TENANTS || values.len() < MIN_PRACTICES {
            Some(format!(
                "{} practices of {} tenants: deciles are shown from {MIN_PRACTICES} practices of {MIN_TENANTS} tenants",
                values.len(),
                tenants.len()
            ))
        } else {
            None
        };
        let deciles: Option<Vec<f64>> =
            withheld.is_none().then(|| (1..=9).map(|d| quantile(&values, f64::from(d) / 10.0)).collect());
        if let Some(d) = &deciles {
            cuts.insert(label, d.clone());
        }
        bands.push(Band {
            band: (*label).to_owned(),
            practices: values.len(),
            tenants: tenants.len(),
            deciles,
            withheld,
        });
    }
    let mut own: Vec<OwnPractice> = rates
        .iter()
        .filter(|r| r.tenant == tenant)
        .map(|r| {
            let band = band_of(r.registered);
            let decile = cuts.get(band).map(|c| 1 + c.iter().filter(|cut| r.rate >= **cut).count() as u8);
            OwnPractice {
                code: r.practice.clone(),
                name: names.get(&r.practice).cloned().unwrap_or_else(|| r.practice.clone()),
                registered: r.registered,
                band: band.to_owned(),
                rate: r.rate,
                decile,
            }
        })
        .collect();
    own.sort_by(|a, b| b.rate.total_cmp(&a.rate).then_with(|| a.code.cmp(&b.code)));
    (bands, own)
}

/// The practice rates of one tenant over `from..=to`: each practice's mean weekly engagements (its pages summed)
/// per 1,000 registered patients, over the weeks ending in the range that have a figure.
async fn tenant_rates<S: Store>(
    store: &S,
    config: &Config,
    directory: &Directory,
    tenant: &str,
    from: NaiveDate,
    to: NaiveDate,
    notes: &mut Vec<String>,
) -> AppResult<Vec<PracticeRate>> {
    let access = config.operator_access();
    let mut q = ReportQuery::new(Kind::Reach);
    q.tenant = Some(tenant.to_owned());
    (q.from, q.to) = (Some(from), Some(to));
    let answer = match report::query(store, config, &access, &q).await {
        Ok(a) => a,
        Err(e) if e.kind == ErrorKind::NotReady => {
            notes.push("a tenant taking part has no reports computed yet: its practices are not in the deciles".into());
            return Ok(Vec::new());
        }
        Err(e) => return Err(e),
    };
    let b = &answer.batch;
    let (code, week, engagements) = (Col::of(b, "practice_code"), Col::of(b, "week_ending"), Col::of(b, "engagements"));
    let mut weeks: BTreeMap<String, BTreeMap<i32, f64>> = BTreeMap::new();
    for i in 0..b.num_rows() {
        if let (Some(w), Some(e)) = (week.day(i), engagements.num(i)) {
            *weeks.entry(code.text(i).to_owned()).or_default().entry(w).or_default() += e;
        }
    }
    let mut unknown = 0;
    let mut out = Vec::new();
    for (practice, by_week) in weeks {
        let Some(registered) = directory.registered.get(&practice).copied().filter(|r| *r > 0.0) else {
            unknown += 1;
            continue;
        };
        let mean = by_week.values().sum::<f64>() / by_week.len() as f64;
        out.push(PracticeRate { tenant: tenant.to_owned(), practice, registered, rate: mean / registered * 1000.0 });
    }
    if unknown > 0 {
        notes.push(format!("{unknown} practices with figures but no known list size are left out"));
    }
    Ok(out)
}

/// The benchmarks of `tenant` (one `access` may read, opted in) over `from..=to`, by default the last 13 weeks of
/// its reports.
pub async fn benchmarks<S: Store>(
    store: &S,
    config: &Config,
    directory: &Directory,
    access: &Access,
    tenant: Option<&str>,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> AppResult<Benchmarks> {
    let scope = pulse_app::tenant::resolve(access, tenant, "tenant", "add ?tenant=<id>")?;
    let me = scope.to_string();
    let opted: Vec<&str> = config.tenants.iter().filter(|t| t.benchmark).map(|t| t.id.as_str()).collect();
    if !opted.contains(&me.as_str()) {
        return Err(AppError::forbidden(format!("tenant {me} does not take part in peer benchmarks"))
            .at("tenant")
            .with_hint(
                "benchmarks are shared only among tenants that opt in: the operator sets `benchmark = true` under \
                 its [[tenant]] in the config",
            ));
    }
    let to = match to {
        Some(t) => t,
        None => match report::main_run(store, access, &me).await? {
            Some(run) => run.range_to,
            None => {
                return Err(AppError::new(
                    ErrorKind::NotReady,
                    format!("tenant {me}'s reports have not been computed"),
                )
                .with_hint("an operator runs `pulse jobs run` after an ingest"));
            }
        },
    };
    let from = from.unwrap_or(to - Duration::weeks(DEFAULT_WEEKS) + Duration::days(1));
    if from > to {
        return Err(AppError::bad_request(format!("from {from} is after to {to}")).at("from"));
    }
    let mut notes = Vec::new();
    let mut rates = Vec::new();
    for t in &opted {
        let mut tenant_notes = Vec::new();
        rates.extend(tenant_rates(store, config, directory, t, from, to, &mut tenant_notes).await?);
        // Another tenant's notes are said without naming it (which tenants take part is not told, only how many).
        if *t == me {
            notes.extend(tenant_notes);
        } else if !tenant_notes.is_empty() && !notes.iter().any(|n: &String| n.starts_with("other tenants")) {
            notes.push("other tenants taking part have practices left out (no figures or list size)".into());
        }
    }
    let names = directory.names.get(&me).cloned().unwrap_or_default();
    let (bands, practices) = compare(&rates, &me, &names);
    Ok(Benchmarks {
        tenant: me,
        from,
        to,
        measure: MEASURE.into(),
        min_tenants: MIN_TENANTS,
        min_practices: MIN_PRACTICES,
        tenants_opted_in: opted.len(),
        bands,
        practices,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (splitmix64).
    fn next(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    #[test]
    fn deciles_place_each_practice_and_cut_at_the_tenths() {
        let rates: Vec<PracticeRate> = (0..20)
            .map(|i| PracticeRate {
                tenant: format!("t{}", i % 4),
                practice: format!("P{i:02}"),
                registered: 6_000.0,
                rate: f64::from(i),
            })
            .collect();
        let (bands, own) = compare(&rates, "t0", &BTreeMap::new());
        let band = bands.iter().find(|b| b.band == "5,000 to 9,999").unwrap();
        assert_eq!((band.practices, band.tenants, band.withheld.as_deref()), (20, 4, None));
        let d = band.deciles.as_ref().unwrap();
        assert!((d[0] - 1.9).abs() < 1e-9 && (d[4] - 9.5).abs() < 1e-9 && (d[8] - 17.1).abs() < 1e-9, "{d:?}");
        // t0's practices are 0, 4, 8, 12, 16: deciles 1, 3, 5, 7, 9.
        let placed: Vec<(String, Option<u8>)> = own.iter().map(|p| (p.code.clone(), p.decile)).collect();
        assert_eq!(
            placed,
            [("P16", 9), ("P12", 7), ("P08", 5), ("P04", 3), ("P00", 1)].map(|(c, d)| (c.to_owned(), Some(d))).to_vec()
        );
        // Every other band is empty and says so.
        assert!(bands.iter().filter(|b| b.band != band.band).all(|b| b.deciles.is_none() && b.withheld.is_some()));
    }

    /// Over random pools: no band shows deciles with fewer than 3 tenants or 10 practices; what a tenant gets has
    /// no practice of another tenant; and the deciles are within the band's range (interpolations, not rows).
    #[test]
    fn no_band_of_fewer_than_three_tenants_or_ten_practices_is_shown_and_no_other_tenants_practice_is() {
        let mut state = 7u64;
        for _ in 0..2_000 {
            let tenants = 1 + (next(&mut state) % 5) as usize;
            let n = (next(&mut state) % 40) as usize;
            let rates: Vec<PracticeRate> = (0..n)
                .map(|i| PracticeRate {
                    tenant: format!("t{}", next(&mut state) as usize % tenants),
                    practice: format!("P{i}"),
                    registered: (next(&mut state) % 20_000) as f64 + 1.0,
                    rate: (next(&mut state) % 10_000) as f64 / 100.0,
                })
                .collect();
            let (bands, own) = compare(&rates, "t0", &BTreeMap::new());
            for b in &bands {
                let members: Vec<&PracticeRate> = rates.iter().filter(|r| band_of(r.registered) == b.band).collect();
                let ts: BTreeSet<&str> = members.iter().map(|r| r.tenant.as_str()).collect();
                assert_eq!((b.practices, b.tenants), (members.len(), ts.len()));
                if ts.len() < MIN_TENANTS || members.len() < MIN_PRACTICES {
                    assert!(b.deciles.is_none() && b.withheld.is_some(), "{b:?}");
                } else {
                    let d = b.deciles.as_ref().expect("shown");
                    let lo = members.iter().map(|r| r.rate).fold(f64::INFINITY, f64::min);
                    let hi = members.iter().map(|r| r.rate).fold(f64::NEG_INFINITY, f64::max);
                    assert!(d.len() == 9 && d.windows(2).all(|w| w[0] <= w[1]) && d[0] >= lo && d[8] <= hi);
                }
            }
            let mine: BTreeSet<&str> = rates.iter().filter(|r| r.tenant == "t0").map(|r| r.practice.as_str()).collect();
            assert_eq!(own.len(), mine.len());
            assert!(own.iter().all(|p| mine.contains(p.code.as_str())), "only the tenant's own practices");
            for p in &own {
                let band = bands.iter().find(|b| b.band == p.band).unwrap();
                assert_eq!(p.decile.is_some(), band.deciles.is_some());
            }
        }
    }
}
