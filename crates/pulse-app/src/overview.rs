//! A tenant's weeks at a glance: weekly gross reach and engaged users, the latest week against the week before and
//! the same week a year earlier. The dashboard's first page; the weekly digest will tell the same figures.

use chrono::NaiveDate;
use pulse_config::Access;
use pulse_config::Config;
use pulse_store::Store;

use crate::error::AppResult;
use crate::report::{self, Kind, ReportQuery};

/// One week of the tenant's roll-up.
#[derive(Debug, Clone, PartialEq)]
pub struct Week {
    pub ending: NaiveDate,
    pub reach: Option<f64>,
    pub engaged_users: Option<f64>,
    pub views: Option<f64>,
    pub pages: u32,
}

/// The weeks in range and the comparisons for the latest one.
#[derive(Debug, Clone)]
pub struct Overview {
    pub tenant: String,
    pub weeks: Vec<Week>,
    pub latest: Option<Week>,
    pub previous: Option<Week>,
    /// The week ending 52 weeks before the latest.
    pub last_year: Option<Week>,
}

/// `(now - before) / before`, when both exist and `before` is not zero.
pub fn change(now: Option<f64>, before: Option<f64>) -> Option<f64> {
    match (now, before) {
        (Some(n), Some(b)) if b != 0.0 => Some((n - b) / b),
        _ => None,
    }
}

/// The overview of `tenant` (or the access's only tenant) over `from..=to` (the whole report when not given). The
/// comparisons look outside the range when they need to (last year's week).
pub async fn weekly<S: Store>(
    store: &S,
    config: &Config,
    access: &Access,
    tenant: Option<&str>,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> AppResult<Overview> {
    let mut q = ReportQuery::new(Kind::ReachTenant);
    q.tenant = tenant.map(str::to_owned);
    q.sort = Some("week_ending".into());
    let answer = report::query(store, config, access, &q).await?;
    let b = &answer.batch;
    let num = |name: &str, i: usize| {
        b.column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<arrow::array::Float64Array>())
            .filter(|a| !arrow::array::Array::is_null(*a, i))
            .map(|a| a.value(i))
    };
    let all: Vec<Week> = (0..b.num_rows())
        .filter_map(|i| {
            let ending = b
                .column_by_name("week_ending")?
                .as_any()
                .downcast_ref::<arrow::array::Date32Array>()?
                .value_as_date(i)?;
            let pages = b
                .column_by_name("pages")
                .and_then(|c| c.as_any().downcast_ref::<arrow::array::UInt32Array>())
                .map_or(0, |a| a.value(i));
            Some(Week {
                ending,
                reach: num("gross_reach", i),
                engaged_users: num("gross_engaged_users", i),
                views: num("views", i),
                pages,
            })
        })
        .collect();
    let weeks: Vec<Week> = all
        .iter()
        .filter(|w| from.is_none_or(|f| w.ending >= f) && to.is_none_or(|t| w.ending <= t))
        .cloned()
        .collect();
    let latest = weeks.last().cloned();
    let find = |d: NaiveDate| all.iter().find(|w| w.ending == d).cloned();
    let previous = latest.as_ref().and_then(|l| find(l.ending - chrono::Duration::days(7)));
    let last_year = latest.as_ref().and_then(|l| find(l.ending - chrono::Duration::days(364)));
    Ok(Overview { tenant: answer.tenant, weeks, latest, previous, last_year })
}
