//! Research exports: a documented, disclosure-controlled, pseudonymised dataset as a Frictionless data package.
//!
//! A package is a directory: one CSV (and a Parquet copy) per table, `datapackage.json` (a Table Schema per resource:
//! types, units, descriptions, primary keys, missing values; provenance; licence; each file's SHA-256), `README.md`
//! (the data dictionary and the rules applied) and `SHA256SUMS`.
//!
//! Disclosure control (NHS Digital's rule for HES/ECDS, applied below national level, which is every export here):
//! counts of 1-7 are suppressed (`*`); other counts are rounded to the nearest 5; totals are computed from unrounded
//! values, then rounded; a group whose total is published never has exactly one suppressed member (secondary
//! suppression of the next smallest), so no suppressed cell can be recovered by differencing. Meta's own withholding
//! (breakdowns below 100 people) is marked `withheld`, distinct from ours. Identifiers marked sensitive (page ids,
//! and practice codes when the project asks) are replaced by HMAC-SHA256 pseudonyms under the project's key.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Date32Array, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use chrono::{Datelike, NaiveDate, Utc};
use hmac::{Hmac, KeyInit, Mac};
use pulse_config::Access;
use pulse_config::Config;
use pulse_domain::{ExportAuditRecord, day_number, from_day_number};
use pulse_store::report::{AGE_BANDS, CAMPAIGN_UPLIFT, REACH_WEEKLY, REPORT_RUNS};
use pulse_store::{ReportVariant, Store};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use pulse_app::error::{AppError, AppResult, ErrorKind};

/// The marker for a count we suppressed (1-7, or secondary).
pub const SUPPRESSED: &str = "*";
/// The marker for a figure Meta withheld (below its threshold) or did not report.
pub const WITHHELD: &str = "withheld";

/// What to export.
#[derive(Debug, Clone, Default)]
pub struct ExportSpec {
    /// Tenants to include (each must be readable by the caller); empty: the caller's only tenant.
    pub tenants: Vec<String>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    /// The export project (its key, licence, pseudonymisation choices) from `[[export_project]]`.
    pub project: String,
    /// Why: the purpose or data-sharing agreement reference, written into the package and the audit record.
    pub purpose: String,
    /// Who asks, for the audit trail: `operator` (the CLI) or `key <id>` (the API).
    pub requested_by: String,
    /// Which tables ([`TABLES`]); empty: all of them.
    pub tables: Vec<String>,
    /// Only these campaigns (by name) in the campaigns table; empty: all.
    pub campaigns: Vec<String>,
    /// Only these metrics ([`METRICS`]): the reach tables' columns, the campaigns table's rows; empty: all.
    pub metrics: Vec<String>,
}

/// The metrics an export can be narrowed to.
pub const METRICS: [&str; 5] = ["reach", "engaged_users", "views", "engagements", "video_views"];

/// The tables an export can hold.
pub const TABLES: [&str; 4] = ["reach_daily", "reach_weekly", "age_bands", "campaigns"];

impl ExportSpec {
    /// The spec as the audit trail records it (the purpose and requester are fields of their own there).
    fn as_json(&self) -> serde_json::Value {
        json!({
            "tenants": self.tenants, "from": self.from.map(|d| d.to_string()), "to": self.to.map(|d| d.to_string()),
            "project": self.project, "tables": self.tables, "campaigns": self.campaigns, "metrics": self.metrics,
        })
    }

    /// A stable hash of the spec (provenance: two packages from the same spec say so).
    pub fn hash(&self) -> String {
        let mut tenants = self.tenants.clone();
        tenants.sort();
        let text = json!({
            "tenants": tenants, "from": self.from.map(|d| d.to_string()), "to": self.to.map(|d| d.to_string()),
            "project": self.project, "purpose": self.purpose, "tables": self.tables, "campaigns": self.campaigns, "metrics": self.metrics,
        })
        .to_string();
        hex::encode(Sha256::digest(text.as_bytes()))
    }
}

/// One cell of an export table.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Text(String),
    Date(i32),
    /// A count under disclosure control: the unrounded value (None: Meta withheld it or it was not reported), and
    /// whether we suppressed it.
    Count {
        raw: Option<f64>,
        suppressed: bool,
    },
    /// An estimate (not a count of people), published as computed, rounded to whole units.
    Number(Option<f64>),
    /// A figure published to three decimals (a level, a p-value, a percentage).
    Decimal(Option<f64>),
    /// An estimate withheld because the count it derives from is suppressed (`*`).
    Hidden,
    /// A figure computed from published figures only (a campaign's observed as the sum of the practice's published
    /// daily figures in the window): it tells nothing they do not. `None`: one of them is suppressed or withheld.
    Derived(Option<i64>),
}

/// Whether a count of people is small enough to identify someone (1 to 7, after rounding to a whole number): the
/// NHS Digital rule exports and digests apply.
pub fn small_count(v: f64) -> bool {
    (1.0..8.0).contains(&v.round())
}

impl Cell {
    fn count(raw: Option<f64>) -> Cell {
        let raw = raw.filter(|v| v.is_finite());
        Cell::Count { raw, suppressed: raw.is_some_and(small_count) }
    }

    fn csv(&self) -> String {
        match self {
            Cell::Text(s) => quote(s),
            Cell::Date(d) => from_day_number(*d).to_string(),
            Cell::Count { raw: None, .. } => WITHHELD.into(),
            Cell::Count { suppressed: true, .. } => SUPPRESSED.into(),
            Cell::Count { raw: Some(v), .. } => round5(*v).to_string(),
            Cell::Number(None) | Cell::Decimal(None) => String::new(),
            Cell::Number(Some(v)) => format!("{}", v.round() as i64),
            Cell::Decimal(Some(v)) => format!("{v:.3}"),
            Cell::Hidden | Cell::Derived(None) => SUPPRESSED.into(),
            Cell::Derived(Some(v)) => v.to_string(),
        }
    }
}

/// Rounds a count to the nearest 5.
pub fn round5(v: f64) -> i64 {
    ((v / 5.0).round() * 5.0) as i64
}

fn quote(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) || s == SUPPRESSED || s == WITHHELD {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum FieldType {
    Text,
    Date,
    Count,
    Number,
    Decimal,
}

struct FieldDef {
    name: &'static str,
    ty: FieldType,
    unit: &'static str,
    description: &'static str,
}

const fn f(name: &'static str, ty: FieldType, unit: &'static str, description: &'static str) -> FieldDef {
    FieldDef { name, ty, unit, description }
}

/// A cell's (row, column).
type At = (usize, usize);
/// Member cells and the published total they add up to.
type Group = (Vec<At>, At);

/// A table of the package: its fields, rows, primary key, and the groups secondary suppression protects.
struct Table {
    name: &'static str,
    title: &'static str,
    description: &'static str,
    fields: &'static [FieldDef],
    primary_key: &'static [&'static str],
    rows: Vec<Vec<Cell>>,
    /// Each group: member cells (row, column) and the published total cell they add up to.
    groups: Vec<Group>,
    /// The groups whose members are rounded to add up to their rounded total (controlled rounding; indices into
    /// `groups`). No cell is a member of two of them.
    controlled: Vec<usize>,
    /// Each row's real practice code (`ALL` for a total): controlled rounding breaks ties by it, so the same figures
    /// round the same way in every package (pseudonymised or not, whatever the row order) and in digests.
    ties: Vec<String>,
    /// Columns left out of the published files (metrics not asked for).
    dropped: Vec<&'static str>,
    /// Whether a group's total includes its withheld members (age bands: the pipeline sums the tenant's pages before
    /// withholding small bands), so a withheld member is protected like a suppressed one.
    withheld_in_totals: bool,
}

impl Table {
    /// A table of these fields with nothing in it (a scratch view).
    fn empty(fields: &'static [FieldDef]) -> Self {
        Table {
            name: "",
            title: "",
            description: "",
            fields,
            primary_key: &[],
            rows: vec![],
            groups: vec![],
            controlled: vec![],
            ties: vec![],
            dropped: vec![],
            withheld_in_totals: false,
        }
    }

    /// Adds a row, with the real practice code controlled rounding breaks ties by.
    fn push_row(&mut self, row: Vec<Cell>, practice: &str) {
        self.rows.push(row);
        self.ties.push(practice.to_owned());
    }

    /// Adds a group whose members are rounded to add up to the total (see [`controlled_rounding`]).
    fn push_controlled(&mut self, group: Group) {
        self.controlled.push(self.groups.len());
        self.groups.push(group);
    }

    /// The published columns: their index in a row and their definition.
    fn published(&self) -> Vec<(usize, &'static FieldDef)> {
        self.fields.iter().enumerate().filter(|(_, f)| !self.dropped.contains(&f.name)).collect()
    }
}

const REACH_FIELDS: &[FieldDef] = &[
    f("tenant_id", FieldType::Text, "", "the commissioning organisation"),
    f("practice", FieldType::Text, "", "ODS code of the practice (or its pseudonym), or ALL for the tenant total"),
    f("week_ending", FieldType::Date, "", "last Pacific-time day of the week (a Sunday), as Meta reports weeks"),
    f(
        "reach",
        FieldType::Count,
        "people",
        "unique people reached in the week (Meta's weekly unique count; the ALL total is gross: a person reached by two pages counts twice)",
    ),
    f("engaged_users", FieldType::Count, "people", "unique people who engaged in the week (gross for ALL)"),
    f("views", FieldType::Count, "views", "times the page's content was seen in the week"),
    f("engagements", FieldType::Count, "engagements", "engagements in the week"),
];

const DAILY_FIELDS: &[FieldDef] = &[
    f("tenant_id", FieldType::Text, "", "the commissioning organisation"),
    f("practice", FieldType::Text, "", "ODS code of the practice (or its pseudonym), or ALL for the tenant total"),
    f("day", FieldType::Date, "", "the Pacific-time day, as Meta reports days"),
    f("reach", FieldType::Count, "people", "unique people reached that day (the ALL total is gross across pages)"),
    f("engaged_users", FieldType::Count, "people", "unique people who engaged that day (gross for ALL)"),
    f("views", FieldType::Count, "views", "times the page's content was seen that day"),
    f("engagements", FieldType::Count, "engagements", "engagements that day"),
];

const AGE_FIELDS: &[FieldDef] = &[
    f("tenant_id", FieldType::Text, "", "the commissioning organisation"),
    f("practice", FieldType::Text, "", "ODS code (or pseudonym), or ALL for the tenant level"),
    f("window_end", FieldType::Date, "", "last day of the 28-day window"),
    f("age_band", FieldType::Text, "", "Meta's age band"),
    f("female", FieldType::Count, "people", "female people who engaged in the window"),
    f("male", FieldType::Count, "people", "male people who engaged"),
    f("unknown", FieldType::Count, "people", "people of unknown gender who engaged"),
    f("people", FieldType::Count, "people", "all people in the band (the row total)"),
    f(
        "registered",
        FieldType::Number,
        "people",
        "registered patients mapped to the band (NHS Digital's public 5-year groups, apportioned; left out when practices are pseudonymised, as it would re-identify them)",
    ),
];

const CAMPAIGN_FIELDS: &[FieldDef] = &[
    f("tenant_id", FieldType::Text, "", "the commissioning organisation"),
    f("campaign", FieldType::Text, "", "campaign name"),
    f("practice", FieldType::Text, "", "ODS code (or pseudonym), or ALL for the total"),
    f("metric", FieldType::Text, "", "views, reach, engagements or video_views"),
    f("window_from", FieldType::Date, "", "first day of the campaign window"),
    f("window_to", FieldType::Date, "", "last day of the campaign window"),
    f(
        "posts",
        FieldType::Number,
        "posts",
        "campaign posts matched (public on Facebook: not a count of people, not suppressed)",
    ),
    f("post_lifetime", FieldType::Count, "metric units", "lifetime value of the campaign posts"),
    f(
        "observed",
        FieldType::Count,
        "metric units",
        "the pages' figure over the window; for reach, engaged_users, views and engagements the sum of the practice's published daily figures (as in reach_daily) over the window, `*` when any of them is suppressed or withheld",
    ),
    f(
        "counterfactual",
        FieldType::Number,
        "metric units",
        "model estimate: the figure without the campaign, rounded to the nearest 5 (`*` where observed is suppressed)",
    ),
    f(
        "effect",
        FieldType::Number,
        "metric units",
        "model estimate: the published observed minus the published counterfactual (`*` where observed is suppressed)",
    ),
    f("effect_lo", FieldType::Number, "metric units", "interval, low, rounded to the nearest 5"),
    f("effect_hi", FieldType::Number, "metric units", "interval, high, rounded to the nearest 5"),
    f(
        "interval_level",
        FieldType::Decimal,
        "fraction",
        "the interval's coverage level (0.95 when there are enough placebo weeks)",
    ),
    f(
        "lift_percent",
        FieldType::Decimal,
        "percent",
        "effect as a percentage of the counterfactual (from the published figures)",
    ),
    f("p_value", FieldType::Decimal, "probability", "placebo-in-time p-value of the effect (ALL rows)"),
    f("method", FieldType::Text, "", "how the counterfactual was estimated"),
    f("note", FieldType::Text, "", "why an estimate or its interval is missing or weaker"),
    f(
        "registration",
        FieldType::Text,
        "",
        "pre-registered (registered with its plan before any of its posts could be seen), post hoc (registered after: \
         read its effect as exploratory), or configured (declared in the operator's config; when is not recorded)",
    ),
];

/// Column indexes of the campaigns table.
mod campaign_col {
    pub const POSTS: usize = 6;
    pub const LIFETIME: usize = 7;
    pub const OBSERVED: usize = 8;
    pub const COUNTERFACTUAL: usize = 9;
    pub const EFFECT: usize = 10;
    pub const LO: usize = 11;
    pub const HI: usize = 12;
    pub const LIFT: usize = 14;
    pub const P_VALUE: usize = 15;
}

/// The campaign metrics that are also daily columns of `reach_daily` (index of the column there).
const DAILY_METRICS: [(&str, usize); 4] = [("reach", 3), ("engaged_users", 4), ("views", 5), ("engagements", 6)];

/// A campaign's observed figure for a metric that `reach_daily` publishes, computed from the practice's published
/// daily figures over the window (after their suppression), instead of rounding the true sum: the true sum would
/// narrow the daily cells it adds up (a two-day window's rounded sum and its two rounded days left three possible
/// values of each). `*` when any day in the window is suppressed or withheld, and for the `ALL` row when any practice
/// is. `daily` is the tenant's `reach_daily` table, suppression applied.
fn derive_campaign_observed(campaigns: &mut Table, daily: &Table) {
    use campaign_col::*;
    let mut published: BTreeMap<(&str, i32), &[Cell]> = BTreeMap::new();
    for row in &daily.rows {
        if let (Cell::Text(practice), Cell::Date(day)) = (&row[1], &row[2]) {
            published.insert((practice.as_str(), *day), row.as_slice());
        }
    }
    let value = |cell: &Cell| match cell {
        Cell::Count { raw: Some(v), suppressed: false } => Some(round5(*v)),
        _ => None,
    };
    // (campaign, metric) -> (ALL row, derived practice values)
    type Derived = (Option<usize>, Vec<Option<i64>>);
    let mut totals: BTreeMap<(String, String), Derived> = BTreeMap::new();
    for r in 0..campaigns.rows.len() {
        let row = &campaigns.rows[r];
        let (Cell::Text(campaign), Cell::Text(practice), Cell::Text(metric)) = (&row[1], &row[2], &row[3]) else {
            continue;
        };
        let Some(&(_, col)) = DAILY_METRICS.iter().find(|(m, _)| m == metric) else { continue };
        let (Cell::Date(from), Cell::Date(to)) = (&row[4], &row[5]) else { continue };
        let key = (campaign.clone(), metric.clone());
        if practice == "ALL" {
            totals.entry(key).or_default().0 = Some(r);
            continue;
        }
        let sum = (*from..=*to)
            .map(|d| published.get(&(practice.as_str(), d)).and_then(|cells| value(&cells[col])))
            .try_fold(0i64, |acc, v| v.map(|v| acc + v));
        totals.entry(key).or_default().1.push(sum);
        campaigns.rows[r][OBSERVED] = Cell::Derived(sum);
    }
    for (_, (all, members)) in totals {
        if let Some(r) = all {
            let sum = members.iter().try_fold(0i64, |acc, v| v.map(|v| acc + v));
            campaigns.rows[r][OBSERVED] = Cell::Derived(sum.filter(|_| !members.is_empty()));
        }
    }
}

/// Rounds an estimate to the nearest 5, like the counts it is compared with.
fn estimate5(v: Option<f64>) -> Cell {
    Cell::Number(v.filter(|v| v.is_finite()).map(|v| round5(v) as f64))
}

/// Campaign estimates derived from what is published, after suppression: the counterfactual rounded to 5 and the
/// effect as published observed minus published counterfactual, so the pair adds nothing to the rounded observed
/// (it used to give the unrounded one back); both, the interval and the lift are withheld where observed is
/// suppressed or withheld.
fn derive_campaign_estimates(table: &mut Table) {
    use campaign_col::*;
    for row in &mut table.rows {
        let published = match row[OBSERVED] {
            Cell::Count { raw: Some(v), suppressed: false } => Some(round5(v) as f64),
            Cell::Derived(Some(v)) => Some(v as f64),
            _ => None,
        };
        let Some(observed) = published else {
            for c in [COUNTERFACTUAL, EFFECT, LO, HI, LIFT, P_VALUE] {
                if !matches!(row[c], Cell::Number(None) | Cell::Decimal(None)) {
                    row[c] = Cell::Hidden;
                }
            }
            continue;
        };
        let counterfactual = match row[COUNTERFACTUAL] {
            Cell::Number(Some(v)) => Some(round5(v) as f64),
            _ => None,
        };
        row[COUNTERFACTUAL] = Cell::Number(counterfactual);
        row[EFFECT] = Cell::Number(counterfactual.map(|cf| observed - cf));
        for c in [LO, HI] {
            if let Cell::Number(v) = row[c] {
                row[c] = estimate5(v);
            }
        }
        row[LIFT] = Cell::Decimal(counterfactual.filter(|cf| *cf > 0.0).map(|cf| 100.0 * (observed - cf) / cf));
    }
}

/// Which disclosure rules made a package (in `datapackage.json`): packages made under different rules must not be
/// combined, and this says which is which. Changed whenever a rule changes what is published.
pub const DISCLOSURE_RULES: &str = "2026-12-03: controlled rounding, ties by practice code; hidden sums of at least 7";

/// What the hidden members of a group must add up to (less one for each beyond the first), so that a solver bounding
/// each of them by the published total less everything else published leaves it at least 7 possible values.
const PROTECTED_SUM: f64 = 7.0;

/// Applies secondary suppression until, in every group with a published total, the hidden (suppressed or withheld)
/// members are none, or add up to enough that the total cannot narrow any of them (see [`PROTECTED_SUM`]): a lone
/// suppressed cell always takes the next smallest published member with it, or the total when there is none.
fn secondary_suppression(table: &mut Table) -> usize {
    let mut added = 0;
    loop {
        let mut changed = false;
        for (members, total) in &table.groups {
            let suppressed = |t: &Table, (r, c): (usize, usize)| match t.rows[r][c] {
                Cell::Count { suppressed: true, .. } => true,
                Cell::Count { raw: None, .. } => t.withheld_in_totals,
                _ => false,
            };
            if suppressed(table, *total) || !matches!(table.rows[total.0][total.1], Cell::Count { raw: Some(_), .. }) {
                continue;
            }
            // A lone hidden member is the total less the published ones. However many are hidden, the published
            // total less the published members bounds their sum, and each is at least 1: the sum must leave each
            // at least 7 possible values (many small ones under a small total would be narrowed). Withheld members
            // count as 0.
            let hidden: Vec<f64> = members
                .iter()
                .filter(|m| suppressed(table, **m))
                .map(|&(r, c)| match table.rows[r][c] {
                    Cell::Count { raw: Some(v), .. } => v.round(),
                    _ => 0.0,
                })
                .collect();
            let n = hidden.len();
            if n == 0 || (n >= 2 && hidden.iter().sum::<f64>() - (n as f64 - 1.0) >= PROTECTED_SUM) {
                continue;
            }
            // The smallest other published, non-zero member goes too.
            let next = members
                .iter()
                .filter(|m| !suppressed(table, **m))
                .filter_map(|&(r, c)| match table.rows[r][c] {
                    Cell::Count { raw: Some(v), .. } if v.round() > 0.0 => Some(((r, c), v)),
                    _ => None,
                })
                .min_by(|a, b| a.1.total_cmp(&b.1));
            // With no member left to hide (the rest are zeros), the total goes instead.
            let (r, c) = next.map_or(*total, |(at, _)| at);
            if let Cell::Count { suppressed, .. } = &mut table.rows[r][c] {
                *suppressed = true;
            }
            added += 1;
            changed = true;
        }
        if !changed {
            return added;
        }
    }
}

/// Where a table's totals are, for readers and the disclosure auditor: totals are rounded to the nearest 5, the figures
/// adding up to them by controlled rounding.
fn controlled_rounding_note(table: &str) -> serde_json::Value {
    match table {
        "age_bands" => {
            json!({"totals": {"column": "people"}, "groups": "female + male + unknown = people, in each row"})
        }
        "campaigns" => {
            json!({"totals": {"practice": "ALL"}, "groups": "the practices' post_lifetime and observed add up to the ALL row's"})
        }
        _ => {
            json!({"totals": {"practice": "ALL"}, "groups": "the practices' figures add up to the ALL row's, per metric"})
        }
    }
}

/// Controlled rounding: in each controlled group whose total is published, the members are rounded to a multiple of 5
/// next to them (down or up, never further than 4 away) so that they add up to the total rounded to the nearest 5.
/// Rounded each to its nearest independently, a row of figures and its total contradict each other just enough for a
/// solver to narrow a figure to 2 or 3 values (female 15 + male 15 + unknown `*` = people 25: female is 13 or 14);
/// added up exactly, they tell nothing their own rounding does not.
///
/// The members rounded up are those with the largest remainders, and a member from 8 to 9 always goes up (a published
/// 5 would otherwise say "8 or 9", as 1 to 7 are suppressed). Suppressed members take part (their rounding is not
/// published), withheld ones do not. A group where the sums cannot meet keeps nearest rounding. Runs after secondary
/// suppression; the rounded value replaces `raw`, so a second run changes nothing.
fn controlled_rounding(table: &mut Table) {
    for &g in &table.controlled {
        let (members, (tr, tc)) = &table.groups[g];
        let Cell::Count { raw: Some(total), suppressed: false } = table.rows[*tr][*tc] else { continue };
        let mut known: Vec<((usize, usize), i64, i64)> = Vec::new(); // (cell, floor to 5, remainder)
        for &(r, c) in members {
            if let Cell::Count { raw: Some(v), .. } = table.rows[r][c] {
                let v = v.round() as i64;
                known.push(((r, c), v.div_euclid(5) * 5, v.rem_euclid(5)));
            }
        }
        let floors: i64 = known.iter().map(|k| k.1).sum();
        let up = (round5(total) - floors) / 5;
        // Members that must go up (8 or 9), then the largest remainders; none with a remainder of 0.
        // Ties broken by the real practice code and the column, never by row order or pseudonym.
        let tie = |at: (usize, usize)| (table.ties.get(at.0).cloned().unwrap_or_default(), at.1);
        known.sort_by_cached_key(|&(at, f, rem)| {
            (!(f == 5 && rem > 0 && !is_suppressed(&table.rows[at.0][at.1])), 5 - rem, tie(at))
        });
        let must =
            known.iter().filter(|&&(at, f, rem)| f == 5 && rem > 0 && !is_suppressed(&table.rows[at.0][at.1])).count();
        let movable = known.iter().filter(|k| k.2 > 0).count();
        if up < 0 || (up as usize) < must || up as usize > movable || (round5(total) - floors) % 5 != 0 {
            continue;
        }
        let rounded: Vec<((usize, usize), i64)> =
            known.iter().enumerate().map(|(i, &(at, f, _))| (at, if i < up as usize { f + 5 } else { f })).collect();
        for ((r, c), v) in rounded {
            if let Cell::Count { raw, .. } = &mut table.rows[r][c] {
                *raw = Some(v as f64);
            }
        }
    }
}

/// How a research export publishes one group of counts with their total (a week's practices and the tenant total,
/// as in `reach_weekly`): each member's published value, `None` where it is suppressed or withheld. Digests publish
/// practices' weekly figures through this, so a digest and an export of the same week agree cell for cell (two
/// different roundings of one figure would narrow it).
pub fn publish_group(members: &BTreeMap<String, Option<f64>>) -> BTreeMap<String, Option<i64>> {
    let mut t = Table::empty(&[]);
    let known: Vec<f64> = members.values().filter_map(|v| *v).collect();
    for (code, v) in members {
        t.push_row(vec![Cell::count(*v)], code);
    }
    t.push_row(vec![Cell::count((!known.is_empty()).then(|| known.iter().sum()))], "ALL");
    let n = members.len();
    t.push_controlled(((0..n).map(|r| (r, 0)).collect(), (n, 0)));
    secondary_suppression(&mut t);
    controlled_rounding(&mut t);
    members
        .keys()
        .zip(&t.rows)
        .map(|(code, row)| {
            let shown = match row[0] {
                Cell::Count { raw: Some(v), suppressed: false } => Some(round5(v)),
                _ => None,
            };
            (code.clone(), shown)
        })
        .collect()
}

fn is_suppressed(cell: &Cell) -> bool {
    matches!(cell, Cell::Count { suppressed: true, .. })
}

pub use pulse_config::MIN_PROJECT_KEY_BYTES;

struct Pseudonymiser {
    key: Vec<u8>,
    /// The project's name: part of every HMAC input, so two projects configured with the same key still cannot be
    /// linked.
    project: String,
    practices: bool,
}

impl Pseudonymiser {
    fn apply(&self, kind: &str, id: &str) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(self.project.as_bytes());
        mac.update(b"\0");
        mac.update(kind.as_bytes());
        mac.update(b":");
        mac.update(id.as_bytes());
        let tag = hex::encode(&mac.finalize().into_bytes()[..8]);
        format!("{}{tag}", &kind[..2].to_uppercase())
    }

    fn practice(&self, code: &str) -> String {
        if self.practices && code != "ALL" { self.apply("practice", code) } else { code.to_owned() }
    }
}

fn strs(b: &RecordBatch, name: &str) -> Vec<String> {
    b.column_by_name(name)
        .and_then(|c| {
            c.as_any().downcast_ref::<StringArray>().map(|a| a.iter().map(|v| v.unwrap_or("").to_owned()).collect())
        })
        .unwrap_or_default()
}

fn nums(b: &RecordBatch, name: &str) -> Vec<Option<f64>> {
    let Some(c) = b.column_by_name(name) else { return vec![None; b.num_rows()] };
    if let Some(a) = c.as_any().downcast_ref::<Float64Array>() {
        return a.iter().collect();
    }
    if let Some(a) = c.as_any().downcast_ref::<arrow::array::UInt32Array>() {
        return a.iter().map(|v| v.map(f64::from)).collect();
    }
    vec![None; b.num_rows()]
}

fn days(b: &RecordBatch, name: &str) -> Vec<Option<i32>> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<Date32Array>().map(|a| a.iter().collect()))
        .unwrap_or_else(|| vec![None; b.num_rows()])
}

fn in_range(d: Option<i32>, from: Option<NaiveDate>, to: Option<NaiveDate>) -> bool {
    d.is_some_and(|d| from.is_none_or(|f| d >= day_number(f)) && to.is_none_or(|t| d <= day_number(t)))
}

/// Weekly reach per practice (a practice with two pages has their weeks summed: the key is the practice) with a
/// tenant total per week computed from the unrounded practice values. A week is in range when it starts on or after
/// `--from` and ends on or before `--to`.
fn reach_table(tenant: &str, b: &RecordBatch, spec: &ExportSpec, p: &Pseudonymiser, into: &mut Table) {
    let (practice, week) = (strs(b, "practice_code"), days(b, "week_ending"));
    let metrics = ["reach", "engaged_users", "views", "engagements"];
    let values: Vec<Vec<Option<f64>>> = metrics.iter().map(|m| nums(b, m)).collect();
    // week -> practice -> summed figures
    let mut by_week: BTreeMap<i32, BTreeMap<String, Vec<Option<f64>>>> = BTreeMap::new();
    for (i, w) in week.iter().enumerate() {
        if in_range(w.map(|w| w - 6), spec.from, None) && in_range(*w, None, spec.to) {
            let figures = by_week
                .entry(w.unwrap_or_default())
                .or_default()
                .entry(practice[i].clone())
                .or_insert_with(|| vec![None; metrics.len()]);
            for (k, v) in values.iter().enumerate() {
                figures[k] = add_opt(figures[k], v[i]);
            }
        }
    }
    for (w, practices) in by_week {
        let mut members = Vec::new();
        // In pseudonym order: rows in code order would give every pseudonym's code back to anyone who knows which
        // practices have a page.
        let mut ordered: Vec<(String, &String, &Vec<Option<f64>>)> =
            practices.iter().map(|(code, figures)| (p.practice(code), code, figures)).collect();
        ordered.sort_by(|a, b| a.0.cmp(&b.0));
        for (shown, code, figures) in ordered {
            let mut row = vec![Cell::Text(tenant.into()), Cell::Text(shown), Cell::Date(w)];
            row.extend(figures.iter().map(|v| Cell::count(*v)));
            members.push(into.rows.len());
            into.push_row(row, code);
        }
        let mut total = vec![Cell::Text(tenant.into()), Cell::Text("ALL".into()), Cell::Date(w)];
        for k in 0..metrics.len() {
            let known: Vec<f64> = practices.values().filter_map(|v| v[k]).collect();
            total.push(Cell::count((!known.is_empty()).then(|| known.iter().sum())));
        }
        let total_row = into.rows.len();
        into.push_row(total, "ALL");
        for c in 3..3 + metrics.len() {
            into.push_controlled((members.iter().map(|r| (*r, c)).collect(), (total_row, c)));
        }
    }
}

/// A practice's four daily figures: reach, engaged users, views, engagements.
type DayFigures = [Option<f64>; 4];

/// Daily figures per practice from the stored daily facts, with a tenant total per day.
fn daily_table(tenant: &str, facts: &[pulse_domain::PageInsightFact], p: &Pseudonymiser, into: &mut Table) {
    use pulse_domain::CanonicalMetric as M;
    let slot = |m: M| match m {
        M::PageReach => Some(0),
        M::PageEngagedUsers => Some(1),
        M::PageViews => Some(2),
        M::PageEngagements => Some(3),
        _ => None,
    };
    // (day, practice) -> sums per metric (a practice with two pages adds them).
    let mut cells: BTreeMap<(i32, String), DayFigures> = BTreeMap::new();
    for fact in facts.iter().filter(|f| f.breakdown.is_empty()) {
        if let Some(k) = slot(fact.metric) {
            let e = cells.entry((day_number(fact.day), fact.practice.to_string())).or_default();
            e[k] = Some(e[k].unwrap_or(0.0) + fact.value);
        }
    }
    let mut by_day: BTreeMap<i32, Vec<(String, DayFigures)>> = BTreeMap::new();
    for ((d, practice), v) in cells {
        by_day.entry(d).or_default().push((practice, v));
    }
    for (d, practices) in by_day {
        let mut members = Vec::new();
        // In pseudonym order (see reach_table).
        let mut ordered: Vec<(String, &String, &DayFigures)> =
            practices.iter().map(|(code, v)| (p.practice(code), code, v)).collect();
        ordered.sort_by(|a, b| a.0.cmp(&b.0));
        for (shown, code, v) in ordered {
            let mut row = vec![Cell::Text(tenant.into()), Cell::Text(shown), Cell::Date(d)];
            row.extend(v.iter().map(|x| Cell::count(*x)));
            members.push(into.rows.len());
            into.push_row(row, code);
        }
        let mut total = vec![Cell::Text(tenant.into()), Cell::Text("ALL".into()), Cell::Date(d)];
        for k in 0..4 {
            let known: Vec<f64> = practices.iter().filter_map(|(_, v)| v[k]).collect();
            total.push(Cell::count((!known.is_empty()).then(|| known.iter().sum())));
        }
        let total_row = into.rows.len();
        into.push_row(total, "ALL");
        for c in 3..7 {
            into.push_controlled((members.iter().map(|r| (*r, c)).collect(), (total_row, c)));
        }
    }
}

fn age_table(tenant: &str, b: &RecordBatch, spec: &ExportSpec, p: &Pseudonymiser, into: &mut Table) {
    let (level, practice, band, unit) =
        (strs(b, "level"), strs(b, "practice_code"), strs(b, "age_band"), strs(b, "unit"));
    let window = days(b, "window_end");
    let cols = ["female", "male", "unknown", "people", "registered"];
    let values: Vec<Vec<Option<f64>>> = cols.iter().map(|c| nums(b, c)).collect();
    // (window, band) -> (tenant row, practice rows)
    let mut cells: BTreeMap<(i32, String), (Option<usize>, Vec<usize>)> = BTreeMap::new();
    // A 28-day window is in range when it starts on or after --from and ends on or before --to.
    let mut order: Vec<usize> = (0..b.num_rows())
        .filter(|&i| {
            unit[i] == "people"
                && in_range(window[i].map(|w| w - 27), spec.from, None)
                && in_range(window[i], None, spec.to)
        })
        .collect();
    // In pseudonym order (see reach_table); the tenant level (ALL) first.
    let shown: Vec<String> = (0..b.num_rows())
        .map(|i| if level[i] == "tenant" { String::new() } else { p.practice(&practice[i]) })
        .collect();
    order.sort_by(|x, y| (window[*x], &shown[*x], &band[*x]).cmp(&(window[*y], &shown[*y], &band[*y])));
    for i in order {
        let r = into.rows.len();
        let mut row = vec![
            Cell::Text(tenant.into()),
            Cell::Text(p.practice(&practice[i])),
            Cell::Date(window[i].unwrap_or_default()),
            Cell::Text(band[i].clone()),
        ];
        row.extend(values[..4].iter().map(|v| Cell::count(v[i])));
        row.push(Cell::Number(values[4][i]));
        into.push_row(row, if level[i] == "tenant" { "ALL" } else { &practice[i] });
        // Row group: female + male + unknown = people.
        into.push_controlled(((4..7).map(|c| (r, c)).collect(), (r, 7)));
        let e = cells.entry((window[i].unwrap_or_default(), band[i].clone())).or_default();
        if level[i] == "tenant" { e.0 = Some(r) } else { e.1.push(r) }
    }
    // Column groups: the practices' cells add up to the tenant level's.
    for (_, (total, members)) in cells {
        if let Some(t) = total {
            for c in 4..8 {
                into.groups.push((members.iter().map(|r| (*r, c)).collect(), (t, c)));
            }
        }
    }
}

/// Adds optional values: `None` only when every one is `None`.
fn add_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x + y),
        (x, None) => x,
        (None, y) => y,
    }
}

/// One row per campaign, metric and practice: a practice with two pages has its pages' figures summed (the report
/// has a row per page; the package's key is the practice). A summed row keeps no interval (intervals do not add).
fn campaign_table(
    tenant: &str,
    b: &RecordBatch,
    spec: &ExportSpec,
    p: &Pseudonymiser,
    registration: &BTreeMap<String, String>,
    into: &mut Table,
) {
    use campaign_col::*;
    let (campaign, practice, metric) = (strs(b, "campaign"), strs(b, "practice_code"), strs(b, "metric"));
    let (method, note) = (strs(b, "method"), strs(b, "note"));
    let (from, to) = (days(b, "window_from"), days(b, "window_to"));
    let num = |c: &str| nums(b, c);
    let (posts, lifetime, observed, cf, effect) =
        (num("posts"), num("post_lifetime"), num("observed"), num("counterfactual"), num("effect"));
    let (lo, hi, level, pv) = (num("effect_lo"), num("effect_hi"), num("interval_level"), num("p_value"));
    // (campaign, metric, practice) -> report rows, in the report's order of first appearance.
    let mut keys: Vec<(String, String, String)> = Vec::new();
    let mut by_key: BTreeMap<(String, String, String), Vec<usize>> = BTreeMap::new();
    for i in 0..b.num_rows() {
        // The window starts on or after --from and ends on or before --to.
        let inside = from[i].is_some_and(|f| spec.from.is_none_or(|s| f >= day_number(s)))
            && to[i].is_some_and(|t| spec.to.is_none_or(|e| t <= day_number(e)));
        if !inside
            || !(spec.campaigns.is_empty() || spec.campaigns.contains(&campaign[i]))
            || !(spec.metrics.is_empty() || spec.metrics.contains(&metric[i]))
        {
            continue;
        }
        let key = (campaign[i].clone(), metric[i].clone(), practice[i].clone());
        let e = by_key.entry(key.clone()).or_default();
        if e.is_empty() {
            keys.push(key);
        }
        e.push(i);
    }
    // In pseudonym order within each campaign and metric (see reach_table), the ALL row first.
    keys.sort_by_cached_key(|k| {
        (k.0.clone(), k.1.clone(), if k.2 == "ALL" { String::new() } else { p.practice(&k.2) })
    });
    let mut groups: BTreeMap<(String, String), (Option<usize>, Vec<usize>)> = BTreeMap::new();
    for key in keys {
        let idx = &by_key[&key];
        let i = idx[0];
        let sum = |v: &[Option<f64>]| idx.iter().fold(None, |acc, &k| add_opt(acc, v[k]));
        let single = idx.len() == 1;
        let r = into.rows.len();
        let mut row = vec![
            Cell::Text(tenant.into()),
            Cell::Text(key.0.clone()),
            Cell::Text(p.practice(&key.2)),
            Cell::Text(key.1.clone()),
            Cell::Date(from[i].unwrap_or_default()),
            Cell::Date(to[i].unwrap_or_default()),
        ];
        row.push(Cell::Number(sum(&posts)));
        row.push(Cell::count(sum(&lifetime)));
        row.push(Cell::count(sum(&observed)));
        row.push(Cell::Number(sum(&cf)));
        row.push(Cell::Number(sum(&effect)));
        row.push(Cell::Number(if single { lo[i] } else { None }));
        row.push(Cell::Number(if single { hi[i] } else { None }));
        row.push(Cell::Decimal(if single { level[i] } else { None }));
        row.push(Cell::Decimal(None)); // lift: derived from the published figures after suppression
        row.push(Cell::Decimal(pv[i]));
        row.push(Cell::Text(method[i].clone()));
        row.push(Cell::Text(if single {
            note[i].clone()
        } else {
            "pages of the practice summed; no interval for the sum".to_owned()
        }));
        row.push(Cell::Text(
            registration.get(&key.0).cloned().unwrap_or_else(|| pulse_app::campaigns::CONFIGURED.to_owned()),
        ));
        debug_assert_eq!(row.len(), CAMPAIGN_FIELDS.len());
        debug_assert_eq!((POSTS, LIFETIME), (6, 7));
        into.push_row(row, &key.2);
        let e = groups.entry((key.0.clone(), key.1.clone())).or_default();
        if key.2 == "ALL" { e.0 = Some(r) } else { e.1.push(r) }
    }
    for (_, (total, members)) in groups {
        if let Some(t) = total {
            for c in [LIFETIME, OBSERVED] {
                into.push_controlled((members.iter().map(|r| (*r, c)).collect(), (t, c)));
            }
        }
    }
}

/// What an export did: where the package is, its files and rows.
#[derive(Debug, Clone)]
pub struct ExportOutcome {
    pub dir: PathBuf,
    pub files: Vec<PackageFile>,
    pub rows: BTreeMap<String, usize>,
    pub suppressed: usize,
    pub secondary: usize,
    pub spec_hash: String,
    pub export_id: String,
}

fn io(path: &Path, e: std::io::Error) -> AppError {
    AppError::new(ErrorKind::Unavailable, format!("writing {}: {e}", path.display()))
        .with_hint("check the output directory is writable and has free space")
}

fn sha256_file(path: &Path) -> AppResult<String> {
    let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// The export audit trail of the tenants `access` may read, newest first.
pub async fn log<S: Store>(store: &S, access: &Access, tenant: Option<&str>) -> AppResult<Vec<ExportAuditRecord>> {
    let scopes = match tenant {
        Some(t) => vec![access.scope(t)?],
        None => access.scopes(),
    };
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for scope in scopes {
        for r in store.read_export_audit(&scope).await? {
            // An export of several tenants is recorded under each; list it once.
            if seen.insert(r.export_id.clone()) {
                out.push(r);
            }
        }
    }
    out.sort_by_key(|r| std::cmp::Reverse(r.created_at));
    Ok(out)
}

/// Builds the package for `spec` into `out` (a new or empty directory), telling `progress` what it is doing.
pub async fn run<S: Store>(
    store: &S,
    config: &Config,
    access: &Access,
    spec: &ExportSpec,
    out: &Path,
    progress: &mut (dyn FnMut(&str) + Send),
) -> AppResult<ExportOutcome> {
    let result = make(store, config, access, spec, out, progress).await;
    match result {
        Err(e) if e.kind == ErrorKind::Forbidden => {
            let tenants: Vec<String> = access.scopes().iter().map(|s| s.to_string()).collect();
            record_refusal(store, config, spec, &tenants, &e.message).await?;
            Err(e)
        }
        other => other,
    }
}

/// Records a refused export request in the audit trail of the tenants it asked for (those in the config) and of the
/// requester's own: who asked, for what, and why it was refused. The record has no rows and no files; its spec says
/// `"refused": why`. An attempt that cannot be recorded fails with that error instead.
pub async fn record_refusal<S: Store>(
    store: &S,
    config: &Config,
    spec: &ExportSpec,
    requester_tenants: &[String],
    why: &str,
) -> AppResult<()> {
    let mut tenants: Vec<String> =
        spec.tenants.iter().filter(|t| config.tenants.iter().any(|c| c.id.as_str() == t.as_str())).cloned().collect();
    tenants.extend(requester_tenants.iter().cloned());
    tenants.sort();
    tenants.dedup();
    let mut id = [0u8; 4];
    getrandom::fill(&mut id).map_err(|e| AppError::new(ErrorKind::Internal, format!("no system randomness: {e}")))?;
    let record = ExportAuditRecord {
        export_id: format!("refused-{}-{}", Utc::now().format("%Y%m%dT%H%M%SZ"), hex::encode(id)),
        created_at: Utc::now(),
        requested_by: if spec.requested_by.is_empty() { "operator".into() } else { spec.requested_by.clone() },
        tenants: tenants.join(","),
        project: spec.project.clone(),
        purpose: spec.purpose.clone(),
        spec_hash: spec.hash(),
        spec: {
            let mut v = spec.as_json();
            v["refused"] = json!(why);
            v.to_string()
        },
        rows: 0,
        files: "{}".into(),
    };
    let operator = config.operator_access();
    for t in &tenants {
        let write = operator.write_scope(t.as_str())?;
        store.append_export_audit(&write, &record).await.map_err(|e| {
            AppError::from(e)
                .with_hint("the refused export could not be recorded in the audit trail; retry when the store is back")
        })?;
    }
    Ok(())
}

/// Why an audit record's export was refused (`None`: it was made).
pub fn refusal(r: &ExportAuditRecord) -> Option<String> {
    let spec: serde_json::Value = serde_json::from_str(&r.spec).ok()?;
    spec.get("refused").and_then(|v| v.as_str()).map(str::to_owned)
}

/// An audit record whole, as `pulse export log --format json` prints it: the spec and the files' hashes as JSON.
pub fn audit_json(r: &ExportAuditRecord) -> serde_json::Value {
    let parse = |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap_or_else(|_| json!(t));
    json!({
        "export_id": r.export_id,
        "created_at": r.created_at.to_rfc3339(),
        "requested_by": r.requested_by,
        "tenants": r.tenants.split(',').filter(|t| !t.is_empty()).collect::<Vec<_>>(),
        "project": r.project,
        "purpose": r.purpose,
        "outcome": if refusal(r).is_some() { "refused" } else { "exported" },
        "refused_because": refusal(r),
        "rows": r.rows,
        "spec_hash": r.spec_hash,
        "spec": parse(&r.spec),
        "files_sha256": parse(&r.files),
    })
}

/// The export itself: every check, the package, the audit record. A failure after the directory was created
/// removes what was written: a package is whole or not there.
async fn make<S: Store>(
    store: &S,
    config: &Config,
    access: &Access,
    spec: &ExportSpec,
    out: &Path,
    progress: &mut (dyn FnMut(&str) + Send),
) -> AppResult<ExportOutcome> {
    let request = checked(config, access, spec, out)?;
    // The campaigns asked for: the config's, or registered for one of the exported tenants.
    let mut known = Vec::new();
    for scope in &request.scopes {
        known.extend(pulse_app::campaigns::effective(store, config, scope).await?.into_iter().map(|c| c.name));
    }
    if let Some(c) = spec.campaigns.iter().find(|c| !known.contains(c)) {
        known.sort();
        known.dedup();
        return Err(AppError::bad_request(format!("no campaign `{c}` of the exported tenants"))
            .with_hint(format!("the campaigns are {}", known.join(", ")))
            .at("campaigns"));
    }
    // An empty directory the user made (a mount point, `--out .`) is kept on failure, emptied of what was written.
    let existed = out.exists();
    std::fs::create_dir_all(out).map_err(|e| io(out, e))?;
    let made = fill_and_package(store, config, spec, &request, out, progress).await;
    if made.is_err() {
        remove_written(out, existed);
    }
    made
}

/// Removes what a failed export wrote: the directory itself when the export made it, else only its files.
fn remove_written(out: &Path, keep_directory: bool) {
    if !keep_directory {
        let _ = std::fs::remove_dir_all(out);
        return;
    }
    for entry in std::fs::read_dir(out).into_iter().flatten().flatten() {
        let _ = std::fs::remove_file(entry.path());
    }
}

/// What an export request resolved to once every check passed.
struct Checked<'c> {
    project: &'c pulse_config::ExportProjectConfig,
    pseudo: Pseudonymiser,
    scopes: Vec<pulse_config::TenantScope>,
}

/// Every check of a request before anything is read or written: the project, its key and agreed tenants, the
/// tenants the caller may export, the tables, metrics, campaigns and range, and an empty output directory.
fn checked<'c>(config: &'c Config, access: &Access, spec: &ExportSpec, out: &Path) -> AppResult<Checked<'c>> {
    let project = config.export_projects.iter().find(|p| p.name == spec.project).ok_or_else(|| {
        let known: Vec<&str> = config.export_projects.iter().map(|p| p.name.as_str()).collect();
        AppError::bad_request(format!("no export project `{}` in {}", spec.project, config.path.display()))
            .with_hint(if known.is_empty() {
                "add an [[export_project]] with a name and a key reference".to_owned()
            } else {
                format!("the projects are {}", known.join(", "))
            })
            .at("project")
    })?;
    if spec.purpose.trim().is_empty() {
        return Err(AppError::bad_request("an export needs a purpose (the data-sharing agreement or study reference)")
            .with_hint("pass --purpose")
            .at("purpose"));
    }
    let key = config.resolve(&project.key).map_err(|e| {
        AppError::new(
            ErrorKind::BadRequest,
            format!("export project `{}`'s key ({}): {e}", project.name, project.key.describe()),
        )
    })?;
    if key.expose().len() < MIN_PROJECT_KEY_BYTES {
        return Err(AppError::bad_request(format!(
            "export project `{}`'s key is {} bytes; pseudonyms need a key of at least {MIN_PROJECT_KEY_BYTES}",
            project.name,
            key.expose().len()
        ))
        .with_hint("generate one with `openssl rand -hex 32` and store it where the key reference points")
        .at("project"));
    }
    if !project.tenants.is_empty() {
        let asked: Vec<String> = if spec.tenants.is_empty() {
            access.scopes().iter().map(|s| s.to_string()).collect()
        } else {
            spec.tenants.clone()
        };
        if let Some(t) = asked.iter().find(|t| !project.tenants.iter().any(|p| p == *t)) {
            return Err(AppError::new(
                ErrorKind::Forbidden,
                format!("export project `{}` is not agreed for tenant `{t}`", project.name),
            )
            .with_hint(format!("the project's tenants are {}", project.tenants.join(", ")))
            .at("project"));
        }
    }
    let pseudo = Pseudonymiser {
        key: key.expose().as_bytes().to_vec(),
        project: project.name.clone(),
        practices: project.pseudonymise_practices,
    };
    let scopes = pulse_app::tenant::resolve_all(
        access,
        &spec.tenants,
        "tenants",
        "name the tenants to export (--tenant, repeated; `tenants` in the API)",
    )?;
    if let Some(t) = spec.tables.iter().find(|t| !TABLES.contains(&t.as_str())) {
        return Err(AppError::bad_request(format!("no export table `{t}`"))
            .with_hint(format!("the tables are {}", TABLES.join(", ")))
            .at("tables"));
    }
    if let Some(m) = spec.metrics.iter().find(|m| !METRICS.contains(&m.as_str())) {
        return Err(AppError::bad_request(format!("no export metric `{m}`"))
            .with_hint(format!("the metrics are {}", METRICS.join(", ")))
            .at("metrics"));
    }
    if let (Some(from), Some(to)) = (spec.from, spec.to)
        && from > to
    {
        return Err(AppError::bad_request(format!("--from {from} is after --to {to}"))
            .with_hint("give the range earliest day first")
            .at("from"));
    }
    if out.exists() && std::fs::read_dir(out).map_err(|e| io(out, e))?.next().is_some() {
        return Err(AppError::bad_request(format!("{} exists and is not empty", out.display()))
            .with_hint("export into a new directory; a package is never written over another"));
    }
    Ok(Checked { project, pseudo, scopes })
}

/// What the tenants added up to across the export.
#[derive(Default)]
struct Totals {
    rows: BTreeMap<String, usize>,
    suppressed: usize,
    secondary: usize,
}

/// A file of the package: its name, SHA-256 (hex) and size in bytes.
pub type PackageFile = (String, String, u64);

/// One table's open files: its CSV and its Parquet copy, written tenant by tenant.
type Sink = (PathBuf, std::io::BufWriter<std::fs::File>, parquet::arrow::ArrowWriter<std::fs::File>);

async fn fill_and_package<S: Store>(
    store: &S,
    config: &Config,
    spec: &ExportSpec,
    request: &Checked<'_>,
    out: &Path,
    progress: &mut (dyn FnMut(&str) + Send),
) -> AppResult<ExportOutcome> {
    let Checked { project, pseudo, scopes } = request;
    let mut tables = planned_tables(spec, project);
    let mut sinks = open_sinks(out, &tables)?;
    let (mut provenance_runs, mut ingest) = (Vec::new(), Vec::new());
    let mut totals = Totals::default();
    for (n, scope) in scopes.iter().enumerate() {
        progress(&format!("tenant {scope} ({} of {})", n + 1, scopes.len()));
        let (run, fetched) = read_tenant(store, config, scope, spec, pseudo, &mut tables).await?;
        provenance_runs.push(run);
        ingest.push(fetched);
        publish_tenant(&mut tables, &mut sinks, &mut totals)?;
    }
    let rows = &totals.rows;
    if rows.values().sum::<usize>() == 0 {
        drop(sinks);
        let range = format!(
            "{}..{}",
            spec.from.map_or("the start".into(), |d| d.to_string()),
            spec.to.map_or("the end".into(), |d| d.to_string())
        );
        return Err(AppError::new(ErrorKind::NotFound, format!("nothing to export in {range} for the tables asked"))
            .with_hint("check the range against the reports' (`pulse report reach`); nothing was written or audited"));
    }
    if !spec.campaigns.is_empty() && rows.get("campaigns") == Some(&0) {
        progress("note: the --campaign filter left the campaigns table empty (no window in the range)");
    }
    let (mut files, resources) = close_files(out, &tables, sinks, rows, progress)?;
    let spec_hash = spec.hash();
    let provenance = Provenance {
        runs: provenance_runs,
        ingest,
        suppressed: totals.suppressed,
        secondary: totals.secondary,
        spec_hash: spec_hash.clone(),
    };
    write_package(config, spec, request, out, &tables, rows, resources, &provenance, &mut files)?;
    let export_id = record_audit(store, config, spec, request, rows, &files, &spec_hash).await?;
    progress(&format!("recorded {export_id} in the audit trail"));
    Ok(ExportOutcome {
        dir: out.to_owned(),
        files,
        rows: totals.rows,
        suppressed: totals.suppressed,
        secondary: totals.secondary,
        spec_hash,
        export_id,
    })
}

/// The tables asked for, with the columns a pseudonymised or metric-limited export leaves out.
fn planned_tables(spec: &ExportSpec, project: &pulse_config::ExportProjectConfig) -> Vec<Table> {
    let tables = [
        Table {
            name: "reach_daily",
            title: "Daily reach per practice",
            description: "Each practice's daily figures from Meta's daily values, with the tenant's total per day.",
            fields: DAILY_FIELDS,
            primary_key: &["tenant_id", "practice", "day"],
            rows: vec![],
            groups: vec![],
            controlled: vec![],
            ties: vec![],
            dropped: vec![],
            withheld_in_totals: false,
        },
        Table {
            name: "reach_weekly",
            title: "Weekly reach per practice",
            description: "Each practice page's weekly figures from Meta's own weekly values, with the tenant's total per week.",
            fields: REACH_FIELDS,
            primary_key: &["tenant_id", "practice", "week_ending"],
            rows: vec![],
            groups: vec![],
            controlled: vec![],
            ties: vec![],
            dropped: vec![],
            withheld_in_totals: false,
        },
        Table {
            name: "age_bands",
            title: "Engagement by age band and gender",
            description: "People who engaged, by Meta's age bands and gender, per practice and for the tenant, in 28-day windows, with registered patients per band.",
            fields: AGE_FIELDS,
            primary_key: &["tenant_id", "practice", "window_end", "age_band"],
            rows: vec![],
            groups: vec![],
            controlled: vec![],
            ties: vec![],
            dropped: vec![],
            withheld_in_totals: true,
        },
        Table {
            name: "campaigns",
            title: "Campaign uplift",
            description: "Each campaign's posts and its effect on the pages against a counterfactual (placebo-in-time interval).",
            fields: CAMPAIGN_FIELDS,
            primary_key: &["tenant_id", "campaign", "practice", "metric"],
            rows: vec![],
            groups: vec![],
            controlled: vec![],
            ties: vec![],
            dropped: vec![],
            withheld_in_totals: false,
        },
    ];
    let mut tables: Vec<Table> =
        tables.into_iter().filter(|t| spec.tables.is_empty() || spec.tables.iter().any(|n| n == t.name)).collect();
    if project.pseudonymise_practices {
        // Public list sizes would re-identify pseudonymised practices (NHS Digital publishes them by practice).
        for t in tables.iter_mut().filter(|t| t.name == "age_bands") {
            t.dropped.push("registered");
        }
        // A practice's campaign posts and their lifetime figures are public on its page: they would fingerprint it.
        for t in tables.iter_mut().filter(|t| t.name == "campaigns") {
            t.dropped.extend(["posts", "post_lifetime"]);
        }
    }
    if !spec.metrics.is_empty() {
        for t in tables.iter_mut().filter(|t| t.name.starts_with("reach_")) {
            t.dropped = t
                .fields
                .iter()
                .map(|f| f.name)
                .filter(|n| METRICS.contains(n) && !spec.metrics.iter().any(|m| m == n))
                .collect();
        }
    }
    tables
}

/// One writer per table, fed tenant by tenant: memory holds one tenant's rows at a time (disclosure control's
/// groups never span tenants), so a national export stays flat in the number of tenants.
fn open_sinks(out: &Path, tables: &[Table]) -> AppResult<Vec<Sink>> {
    let mut sinks = Vec::new();
    for t in tables {
        let csv_path = out.join(format!("{}.csv", t.name));
        let mut w = std::io::BufWriter::new(std::fs::File::create(&csv_path).map_err(|e| io(&csv_path, e))?);
        let header: Vec<&str> = t.published().iter().map(|(_, f)| f.name).collect();
        writeln!(w, "{}", header.join(",")).map_err(|e| io(&csv_path, e))?;
        let parquet_path = out.join(format!("{}.parquet", t.name));
        let file = std::fs::File::create(&parquet_path).map_err(|e| io(&parquet_path, e))?;
        let pw = parquet::arrow::ArrowWriter::try_new(file, parquet_schema(&t.published()), None).map_err(internal)?;
        sinks.push((csv_path, w, pw));
    }
    Ok(sinks)
}

/// Reads one tenant's rows into the tables; returns its pipelines run and its ingest provenance.
async fn read_tenant<S: Store>(
    store: &S,
    config: &Config,
    scope: &pulse_config::TenantScope,
    spec: &ExportSpec,
    pseudo: &Pseudonymiser,
    tables: &mut [Table],
) -> AppResult<(Value, Value)> {
    let main = ReportVariant::main();
    let runs = store.read_report(scope, &REPORT_RUNS, &main).await?;
    if runs.num_rows() == 0 {
        return Err(AppError::new(ErrorKind::NotReady, format!("tenant {scope}'s reports have not been computed"))
            .with_hint(format!("run `pulse jobs run --tenant {scope}` first")));
    }
    let run_id = strs(&runs, "run_id").into_iter().next().unwrap_or_default();
    let computed = strs(&runs, "computed_at").into_iter().next().unwrap_or_default();
    let provenance = json!({"tenant": scope.to_string(), "run_id": run_id, "computed_at": computed});
    let records = store.read_runs(scope).await?;
    let ids: BTreeSet<&str> = records.iter().map(|r| r.run_id.as_str()).collect();
    let first = records.iter().map(|r| r.started_at).min();
    let last = records.iter().map(|r| r.finished_at).max();
    let ingest = json!({"tenant": scope.to_string(), "ingest_runs": ids, "fetched_from": first, "fetched_to": last});
    let t = scope.to_string();
    for table in tables.iter_mut() {
        match table.name {
            "reach_daily" => {
                // Month by month, so memory holds one month of one tenant's facts. Without a range, the range
                // the tenant's reports were computed over.
                use pulse_domain::{CanonicalMetric as M, Period};
                let run_day = |name: &str| days(&runs, name).first().copied().flatten().map(from_day_number);
                let (Some(from), Some(to)) = (spec.from.or(run_day("range_from")), spec.to.or(run_day("range_to")))
                else {
                    continue;
                };
                let mut start = from;
                while start <= to {
                    let next = start.with_day(1).and_then(|d| d.checked_add_months(chrono::Months::new(1)));
                    let end = next.map_or(to, |n| (n - chrono::Duration::days(1)).min(to));
                    let filter = pulse_store::FactFilter::days(start, end)
                        .metrics([M::PageReach, M::PageEngagedUsers, M::PageViews, M::PageEngagements])
                        .periods([Period::Day]);
                    daily_table(&t, &store.read_page_insights(scope, &filter).await?, pseudo, table);
                    match next {
                        Some(n) => start = n,
                        None => break,
                    }
                }
            }
            "reach_weekly" => {
                reach_table(&t, &store.read_report(scope, &REACH_WEEKLY, &main).await?, spec, pseudo, table)
            }
            "age_bands" => age_table(&t, &store.read_report(scope, &AGE_BANDS, &main).await?, spec, pseudo, table),
            _ => {
                // Each campaign computed under its name: how it was registered.
                let registration: BTreeMap<String, String> = pulse_app::campaigns::list(store, config, scope)
                    .await?
                    .into_iter()
                    .filter(|(m, _)| m.is_active())
                    .map(|(m, _)| (m.name, m.registration))
                    .collect();
                let uplift = store.read_report(scope, &CAMPAIGN_UPLIFT, &main).await?;
                campaign_table(&t, &uplift, spec, pseudo, &registration, table)
            }
        }
    }
    Ok((provenance, ingest))
}

/// Disclosure control over one tenant's tables, then their rows appended to the files and cleared.
fn publish_tenant(tables: &mut [Table], sinks: &mut [Sink], totals: &mut Totals) -> AppResult<()> {
    // Campaign observed figures from the published daily ones, when the package publishes reach_daily (then the
    // true sum would narrow the daily cells it adds up). Without reach_daily, observed is rounded like any count.
    let daily_at = tables.iter().position(|t| t.name == "reach_daily");
    let campaigns_at = tables.iter().position(|t| t.name == "campaigns");
    // Disclosure control runs once per table: the daily figures are final before observed is summed from them
    // (a second pass over rounded values could hide a cell observed was already summed with).
    let mut disclosed: Option<usize> = None;
    if let (Some(d), Some(c)) = (daily_at, campaigns_at) {
        totals.secondary += secondary_suppression(&mut tables[d]);
        controlled_rounding(&mut tables[d]);
        disclosed = Some(d);
        let daily = std::mem::take(&mut tables[d].rows);
        let view = Table { rows: daily, ..Table::empty(DAILY_FIELDS) };
        derive_campaign_observed(&mut tables[c], &view);
        tables[d].rows = view.rows;
    }
    for (k, (t, (csv_path, w, pw))) in tables.iter_mut().zip(sinks.iter_mut()).enumerate() {
        if disclosed != Some(k) {
            totals.secondary += secondary_suppression(t);
            controlled_rounding(t);
        }
        if t.name == "campaigns" {
            derive_campaign_estimates(t);
        }
        totals.suppressed +=
            t.rows.iter().flatten().filter(|c| matches!(c, Cell::Count { suppressed: true, .. })).count();
        let published = t.published();
        for row in &t.rows {
            let line: Vec<String> = published.iter().map(|(c, _)| row[*c].csv()).collect();
            writeln!(w, "{}", line.join(",")).map_err(|e| io(csv_path, e))?;
        }
        if !t.rows.is_empty() {
            pw.write(&to_batch(t)?).map_err(internal)?;
            // One row group per tenant: the writer does not hold rows across tenants.
            pw.flush().map_err(internal)?;
        }
        *totals.rows.entry(t.name.to_owned()).or_default() += t.rows.len();
        t.rows.clear();
        t.ties.clear();
        t.groups.clear();
        t.controlled.clear();
    }
    Ok(())
}

/// Closes every table's files and describes each as a data-package resource; returns the files with their hashes.
fn close_files(
    out: &Path,
    tables: &[Table],
    sinks: Vec<Sink>,
    rows: &BTreeMap<String, usize>,
    progress: &mut (dyn FnMut(&str) + Send),
) -> AppResult<(Vec<PackageFile>, Vec<Value>)> {
    let mut files = Vec::new();
    let mut resources = Vec::new();
    let has_daily = tables.iter().any(|t| t.name == "reach_daily");
    for (t, (csv_path, mut w, pw)) in tables.iter().zip(sinks) {
        w.flush().map_err(|e| io(&csv_path, e))?;
        drop(w);
        pw.close().map_err(internal)?;
        let parquet_path = out.join(format!("{}.parquet", t.name));
        progress(&format!("wrote {} ({} rows)", t.name, rows.get(t.name).copied().unwrap_or(0)));
        let fields: Vec<Value> = t
            .published()
            .into_iter()
            .map(|(_, f)| {
                let ty = match f.ty {
                    FieldType::Text => "string",
                    FieldType::Date => "date",
                    FieldType::Count | FieldType::Number => "integer",
                    FieldType::Decimal => "number",
                };
                let mut v = json!({"name": f.name, "type": ty, "description": f.description});
                // Figures computed from other published figures only (the auditor gives them no bounds of their own).
                match (t.name, f.name) {
                    ("campaigns", "observed") if has_daily => {
                        v["derived_for_metrics"] = json!(DAILY_METRICS.iter().map(|(m, _)| *m).collect::<Vec<_>>())
                    }
                    ("campaigns", "effect" | "lift_percent") => v["derived"] = json!(true),
                    _ => {}
                }
                // The unit figures are rounded to, for the disclosure auditor and for readers.
                match (f.ty, f.name) {
                    (FieldType::Count, _) | (FieldType::Number, "counterfactual" | "effect" | "effect_lo" | "effect_hi") => {
                        v["rounding"] = json!(5)
                    }
                    (FieldType::Number, _) => v["rounding"] = json!(1),
                    _ => {}
                }
                if !f.unit.is_empty() {
                    v["unit"] = json!(f.unit);
                }
                if f.ty == FieldType::Count {
                    v["description"] = json!(format!("{} (disclosure-controlled: 1-7 suppressed as `*`, else rounded to a multiple of 5: totals to the nearest, the figures adding up to a total up or down (at most 4 away) so that they add up to it; `withheld` where Meta withheld or did not report it, or where the pipeline withheld an age band of fewer than 10 people)", f.description));
                }
                v
            })
            .collect();
        let hash = sha256_file(&csv_path)?;
        let bytes = std::fs::metadata(&csv_path).map_err(|e| io(&csv_path, e))?.len();
        resources.push(json!({
            "name": t.name, "title": t.title, "description": t.description,
            "path": format!("{}.csv", t.name), "format": "csv", "mediatype": "text/csv", "encoding": "utf-8",
            "profile": "tabular-data-resource", "hash": format!("sha256:{hash}"), "bytes": bytes,
            "schema": {"fields": fields, "primaryKey": t.primary_key, "missingValues": ["", SUPPRESSED, WITHHELD]},
            "controlled_rounding": controlled_rounding_note(t.name),
        }));
        files.push((format!("{}.csv", t.name), hash, bytes));
        let phash = sha256_file(&parquet_path)?;
        let pbytes = std::fs::metadata(&parquet_path).map_err(|e| io(&parquet_path, e))?.len();
        files.push((format!("{}.parquet", t.name), phash, pbytes));
    }
    Ok((files, resources))
}

/// Where the figures came from, for the package's metadata.
struct Provenance {
    runs: Vec<Value>,
    ingest: Vec<Value>,
    suppressed: usize,
    secondary: usize,
    /// The spec's hash, computed once for the package and the audit record.
    spec_hash: String,
}

/// Writes datapackage.json, README.md and SHA256SUMS (adding the first two to `files`).
#[allow(clippy::too_many_arguments)]
fn write_package(
    config: &Config,
    spec: &ExportSpec,
    request: &Checked<'_>,
    out: &Path,
    tables: &[Table],
    rows: &BTreeMap<String, usize>,
    resources: Vec<Value>,
    provenance: &Provenance,
    files: &mut Vec<PackageFile>,
) -> AppResult<()> {
    let Checked { project, scopes, .. } = request;
    let (suppressed, secondary) = (provenance.suppressed, provenance.secondary);
    let spec_hash = &provenance.spec_hash;
    let created = Utc::now().to_rfc3339();
    let package = json!({
        "profile": "tabular-data-package",
        "name": format!("practice-pulse-{}", project.name.to_lowercase().replace(|c: char| !c.is_ascii_alphanumeric(), "-")),
        "title": format!("Practice Pulse export for project {}", project.name),
        "description": format!("Engagement with GP practices' Facebook pages, {} tenant(s). Purpose: {}", scopes.len(), spec.purpose),
        "created": created,
        "licenses": [{"name": "data-sharing-agreement", "title": project.licence}],
        "resources": resources,
        "practice_pulse": {
            "product_version": env!("CARGO_PKG_VERSION"),
            "graph_api_version": config.graph.version.to_string(),
            "purpose": spec.purpose,
            "project": project.name,
            "spec_hash": spec_hash,
            "range": [spec.from.map(|d| d.to_string()), spec.to.map(|d| d.to_string())],
            "pipeline_runs": provenance.runs,
            "ingest": provenance.ingest,
            "disclosure_control": {
                "rules_version": DISCLOSURE_RULES,
                "rule": "NHS Digital HES/ECDS: below national level, counts 1-7 suppressed, other counts rounded to a multiple of 5; totals from unrounded values rounded to the nearest 5, the figures adding up to a total rounded up or down (controlled rounding, at most 4 away, never to 5) so that they add up to it; secondary suppression so no suppressed cell is recoverable from a published total",
                "suppressed_marker": SUPPRESSED, "meta_withheld_marker": WITHHELD,
                "cells_suppressed": suppressed, "of_which_secondary": secondary,
            },
            "pseudonymisation": {
                "method": "HMAC-SHA256 under the export project's key (not in this package), first 64 bits, hex",
                "practice_codes": project.pseudonymise_practices,
            },
            "parquet_copies": files.iter().filter(|f| f.0.ends_with(".parquet")).map(|f| json!({"path": f.0, "hash": format!("sha256:{}", f.1)})).collect::<Vec<_>>(),
        }
    });
    let dp = out.join("datapackage.json");
    std::fs::write(&dp, serde_json::to_vec_pretty(&package).unwrap_or_default()).map_err(|e| io(&dp, e))?;
    let readme = out.join("README.md");
    std::fs::write(&readme, readme_text(tables, rows, project.name.as_str(), spec, &created, suppressed, secondary))
        .map_err(|e| io(&readme, e))?;
    for name in ["datapackage.json", "README.md"] {
        let p = out.join(name);
        let h = sha256_file(&p)?;
        let b = std::fs::metadata(&p).map_err(|e| io(&p, e))?.len();
        files.push((name.to_owned(), h, b));
    }
    let sums: String = files.iter().map(|(n, h, _)| format!("{h}  {n}\n")).collect();
    let sums_path = out.join("SHA256SUMS");
    std::fs::write(&sums_path, sums).map_err(|e| io(&sums_path, e))?;
    Ok(())
}

/// The audit trail, one record per tenant. An export that cannot be recorded is not handed out (the caller removes
/// its files).
async fn record_audit<S: Store>(
    store: &S,
    config: &Config,
    spec: &ExportSpec,
    request: &Checked<'_>,
    rows: &BTreeMap<String, usize>,
    files: &[PackageFile],
    spec_hash: &str,
) -> AppResult<String> {
    let Checked { project, scopes, .. } = request;
    let mut id = [0u8; 4];
    getrandom::fill(&mut id).map_err(|e| AppError::new(ErrorKind::Internal, format!("no system randomness: {e}")))?;
    let export_id = format!("export-{}-{}", Utc::now().format("%Y%m%dT%H%M%SZ"), hex::encode(id));
    let record = ExportAuditRecord {
        export_id: export_id.clone(),
        created_at: Utc::now(),
        requested_by: if spec.requested_by.is_empty() { "operator".into() } else { spec.requested_by.clone() },
        tenants: scopes.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(","),
        project: project.name.clone(),
        purpose: spec.purpose.clone(),
        spec_hash: spec_hash.to_owned(),
        spec: spec.as_json().to_string(),
        rows: rows.values().sum::<usize>() as u64,
        files: json!(files.iter().map(|(n, h, _)| (n.clone(), h.clone())).collect::<BTreeMap<_, _>>()).to_string(),
    };
    let operator = config.operator_access();
    for scope in scopes {
        let write = operator.write_scope(scope.as_str())?;
        if let Err(e) = store.append_export_audit(&write, &record).await {
            return Err(AppError::from(e).with_hint("the export was not recorded in the audit trail, so its files were removed; retry when the store is back"));
        }
    }
    Ok(export_id)
}

/// The package as one uncompressed tar archive (POSIX ustar, by the `tar` crate), its files under `name/`: what the
/// API hands out.
pub fn archive(dir: &Path, name: &str) -> AppResult<Vec<u8>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    let mtime = Utc::now().timestamp().max(0) as u64;
    let mut tar = tar::Builder::new(Vec::new());
    for path in entries {
        let data = std::fs::read(&path).map_err(|e| io(&path, e))?;
        let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, format!("{name}/{file}"), data.as_slice())
            .map_err(|e| AppError::new(ErrorKind::Internal, format!("archiving {file}: {e}")))?;
    }
    tar.into_inner().map_err(|e| AppError::new(ErrorKind::Internal, format!("finishing the archive: {e}")))
}

fn internal(e: impl std::fmt::Display) -> AppError {
    AppError::new(ErrorKind::Internal, e.to_string())
}

fn parquet_schema(defs: &[(usize, &FieldDef)]) -> Arc<Schema> {
    Arc::new(Schema::new(
        defs.iter()
            .map(|(_, d)| match d.ty {
                FieldType::Text => Field::new(d.name, DataType::Utf8, false),
                FieldType::Date => Field::new(d.name, DataType::Date32, false),
                // Suppressed and withheld cells are null here; the CSV's markers say which.
                FieldType::Count | FieldType::Number => Field::new(d.name, DataType::Int64, true),
                FieldType::Decimal => Field::new(d.name, DataType::Float64, true),
            })
            .collect::<Vec<_>>(),
    ))
}

/// The rows as they are published (rounded, suppressed as null), for the Parquet copy.
fn to_batch(t: &Table) -> AppResult<RecordBatch> {
    let mut columns: Vec<ArrayRef> = Vec::new();
    let published = t.published();
    for &(c, def) in &published {
        let col = t.rows.iter().map(|r| &r[c]);
        columns.push(match def.ty {
            FieldType::Text => Arc::new(StringArray::from_iter_values(col.map(|x| match x {
                Cell::Text(s) => s.clone(),
                _ => String::new(),
            }))),
            FieldType::Date => Arc::new(Date32Array::from_iter_values(col.map(|x| match x {
                Cell::Date(d) => *d,
                _ => 0,
            }))),
            FieldType::Count | FieldType::Number => Arc::new(
                col.map(|x| match x {
                    Cell::Count { raw: Some(v), suppressed: false } => Some(round5(*v)),
                    Cell::Number(Some(v)) => Some(v.round() as i64),
                    Cell::Derived(v) => *v,
                    _ => None,
                })
                .collect::<Int64Array>(),
            ),
            FieldType::Decimal => Arc::new(
                col.map(|x| match x {
                    Cell::Decimal(Some(v)) => Some((v * 1000.0).round() / 1000.0),
                    _ => None,
                })
                .collect::<Float64Array>(),
            ),
        });
    }
    RecordBatch::try_new(parquet_schema(&published), columns).map_err(internal)
}

fn readme_text(
    tables: &[Table],
    rows: &BTreeMap<String, usize>,
    project: &str,
    spec: &ExportSpec,
    created: &str,
    suppressed: usize,
    secondary: usize,
) -> String {
    let mut out = format!(
        "# Practice Pulse research export\n\nProject: {project}. Purpose: {}. Created {created}. Range: {} to {}.\n\n\
         ## Rules applied\n\n\
         - Disclosure control (NHS Digital's rule for HES/ECDS, below national level): counts of 1-7 are suppressed and \
         shown as `*`; other counts are rounded to the nearest 5; totals (rows with practice `ALL`, the `people` column) \
         are computed from unrounded values, then rounded; secondary suppression makes sure no group with a published \
         total has exactly one suppressed cell, so none can be recovered by subtraction. {suppressed} cells suppressed, \
         {secondary} of them secondary.\n\
         - `withheld`: the figure is not published because Meta withheld it (it does not report breakdowns below 100 \
         people) or did not report it, or, in `age_bands`, because our pipeline withheld a band of fewer than 10 people. \
         A withheld age band still counts in the tenant's total, so secondary suppression protects it like a `*`.\n\
         - Campaign estimates are derived from the published figures, after suppression: the counterfactual and the \
         interval are rounded to the nearest 5, the effect is the published observed minus the published \
         counterfactual (so together they say nothing the rounded observed does not), and all of them are `*` where \
         observed is suppressed. Post counts are public on Facebook and are not suppressed. A practice with two pages \
         has their figures summed in `reach_weekly` and `campaigns` (without an interval for the sum).\n\
         - Pseudonyms: identifiers marked sensitive are replaced by HMAC-SHA256 under the project's key, which is not in \
         this package, with the project's name in every input. The same project gets the same pseudonyms in every \
         export; other projects cannot link them, even when configured with the same key. What pseudonyms do not \
         protect against: anyone who also holds the non-pseudonymised reports (`pulse report reach`, which every read \
         key of the tenant sees with codes) can match a practice's series to its code. Public list sizes, which would \
         re-identify practices against NHS Digital's file, are left out of pseudonymised packages.\n\
         - Weeks and days are Pacific-time days, as Meta reports them.\n\n\
         Integrity: `sha256sum -c SHA256SUMS`. Machine-readable schema and provenance: `datapackage.json` \
         (Frictionless Data Package). Parquet copies hold the same rows, with suppressed and withheld cells as nulls.\n\n",
        spec.purpose,
        spec.from.map(|d| d.to_string()).unwrap_or_else(|| "the start of the reports".into()),
        spec.to.map(|d| d.to_string()).unwrap_or_else(|| "the end of the reports".into()),
    );
    for t in tables {
        let _ = writeln!(
            out,
            "## {} (`{}.csv`, {} rows)\n\n{}\n\n| column | type | unit | meaning |\n|---|---|---|---|",
            t.title,
            t.name,
            rows.get(t.name).copied().unwrap_or(0),
            t.description
        );
        for (_, f) in t.published() {
            let ty = match f.ty {
                FieldType::Text => "text",
                FieldType::Date => "date",
                FieldType::Count => "count (controlled)",
                FieldType::Number => "number",
                FieldType::Decimal => "decimal",
            };
            let _ = writeln!(out, "| {} | {ty} | {} | {} |", f.name, f.unit, f.description);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed export removes the directory it made, but only the files it wrote in a directory the user made (a
    /// mount point, `--out .`).
    #[test]
    fn a_failed_export_keeps_a_directory_it_did_not_make() {
        let root = tempfile::tempdir().unwrap();
        for (name, keep) in [("made-by-export", false), ("made-by-user", true)] {
            let out = root.path().join(name);
            std::fs::create_dir_all(&out).unwrap();
            std::fs::write(out.join("reach_weekly.csv"), "x").unwrap();
            std::fs::write(out.join("reach_weekly.parquet"), "y").unwrap();
            remove_written(&out, keep);
            assert_eq!(out.exists(), keep, "{name}");
            if keep {
                assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "its files are gone");
            }
        }
    }

    fn table(rows: Vec<Vec<Cell>>, groups: Vec<Group>) -> Table {
        Table {
            name: "t",
            title: "t",
            description: "",
            fields: &[],
            primary_key: &[],
            rows,
            controlled: (0..groups.len()).collect(),
            ties: vec![],
            groups,
            dropped: vec![],
            withheld_in_totals: false,
        }
    }

    #[test]
    fn small_counts_are_suppressed_and_others_rounded_to_five() {
        let cells: Vec<String> =
            [0.0, 1.0, 7.0, 7.4, 8.0, 12.0, 13.0, 1234.0].iter().map(|v| Cell::count(Some(*v)).csv()).collect();
        assert_eq!(cells, ["0", "*", "*", "*", "10", "10", "15", "1235"]);
        assert_eq!(Cell::count(None).csv(), WITHHELD);
    }

    #[test]
    fn a_lone_suppressed_cell_takes_the_next_smallest_with_it_so_the_total_cannot_reveal_it() {
        // Members 3 (suppressed), 40, 25, 100; total 168 published.
        let rows = vec![vec![
            Cell::count(Some(3.0)),
            Cell::count(Some(40.0)),
            Cell::count(Some(25.0)),
            Cell::count(Some(100.0)),
            Cell::count(Some(168.0)),
        ]];
        let mut t = table(rows, vec![((0..4).map(|c| (0, c)).collect(), (0, 4))]);
        assert_eq!(secondary_suppression(&mut t), 1);
        let csv: Vec<String> = t.rows[0].iter().map(Cell::csv).collect();
        assert_eq!(csv, ["*", "40", "*", "100", "170"]);
        // Two suppressed already: nothing more to do; a suppressed total: nothing to protect.
        let rows = vec![vec![
            Cell::count(Some(3.0)),
            Cell::count(Some(5.0)),
            Cell::count(Some(40.0)),
            Cell::count(Some(48.0)),
        ]];
        let mut t = table(rows, vec![((0..3).map(|c| (0, c)).collect(), (0, 3))]);
        assert_eq!(secondary_suppression(&mut t), 0);
        // Four small ones under a total of 26 with 20 published: their sum is at most 6, so each would be 1 to 3.
        let mut t = row_with_total(&[1.0, 2.0, 1.0, 2.0, 20.0, 26.0]);
        assert_eq!(secondary_suppression(&mut t), 1);
        assert_eq!(published(&t, 0), ["*", "*", "*", "*", "*", "25"]);
        // Ten ones under a total of 10, the rest zeros: nothing left to hide but the total.
        let mut figures = vec![1.0; 10];
        figures.extend([0.0, 10.0]);
        let mut t = row_with_total(&figures);
        assert_eq!(secondary_suppression(&mut t), 1);
        assert_eq!(published(&t, 0)[10..], ["0", "*"]);
    }

    /// The published figures of a row after disclosure control.
    fn published(t: &Table, r: usize) -> Vec<String> {
        t.rows[r].iter().map(Cell::csv).collect()
    }

    /// One row whose last figure is the total of the others (a controlled group).
    fn row_with_total(figures: &[f64]) -> Table {
        let n = figures.len() - 1;
        table(
            vec![figures.iter().map(|v| Cell::count(Some(*v))).collect()],
            vec![((0..n).map(|c| (0, c)).collect(), (0, n))],
        )
    }

    #[test]
    fn controlled_rounding_makes_a_row_add_up_to_its_rounded_total() {
        // Rounded each to its nearest: 15 + 15 + * = 25, so female and male could only be 13 or 14.
        let mut t = row_with_total(&[13.0, 13.0, 1.0, 27.0]);
        secondary_suppression(&mut t);
        controlled_rounding(&mut t);
        let row = published(&t, 0);
        assert_eq!(row[3], "25", "the total is rounded to its nearest");
        let members: Vec<i64> = (0..3)
            .map(|c| match t.rows[0][c] {
                Cell::Count { raw: Some(v), .. } => v as i64,
                _ => panic!(),
            })
            .collect();
        assert_eq!(members.iter().sum::<i64>(), 25, "{row:?}: {members:?}");
        for (m, raw) in members.iter().zip([13, 13, 1]) {
            assert!((m - raw).abs() <= 4 && m % 5 == 0, "{m} from {raw}");
        }
        // Running it again changes nothing.
        controlled_rounding(&mut t);
        assert_eq!(published(&t, 0), row);
    }

    #[test]
    fn controlled_rounding_never_publishes_5_for_8_or_9() {
        // 8 + 9 + 23 = 40: nearest rounding gives 10 + 10 + 25 = 45; 8 and 9 must go up (a 5 would say "8 or 9").
        let mut t = row_with_total(&[8.0, 9.0, 23.0, 40.0]);
        controlled_rounding(&mut t);
        assert_eq!(published(&t, 0), vec!["10", "10", "20", "40"]);
        // Where the sums cannot meet with 8 and 9 going up, the row keeps nearest rounding.
        let mut t = row_with_total(&[8.0, 8.0, 20.0, 36.0]);
        controlled_rounding(&mut t);
        assert_eq!(published(&t, 0), vec!["10", "10", "20", "35"]);
    }

    #[test]
    fn secondary_suppression_follows_through_overlapping_groups() {
        // A 2x2 table with row and column totals: suppressing one cell must cascade until every row and column has
        // zero or at least two suppressed cells.
        let v = |x: f64| Cell::count(Some(x));
        let rows =
            vec![vec![v(4.0), v(30.0), v(34.0)], vec![v(50.0), v(60.0), v(110.0)], vec![v(54.0), v(90.0), v(144.0)]];
        let groups = vec![
            (vec![(0, 0), (0, 1)], (0, 2)),
            (vec![(1, 0), (1, 1)], (1, 2)),
            (vec![(0, 0), (1, 0)], (2, 0)),
            (vec![(0, 1), (1, 1)], (2, 1)),
        ];
        let mut t = table(rows, groups.clone());
        secondary_suppression(&mut t);
        for (members, _) in &groups {
            let n =
                members.iter().filter(|(r, c)| matches!(t.rows[*r][*c], Cell::Count { suppressed: true, .. })).count();
            assert_ne!(n, 1, "{:?}", t.rows);
        }
    }

    #[test]
    fn pseudonyms_are_stable_within_a_project_and_differ_across_projects() {
        let p =
            |key: &[u8], project: &str| Pseudonymiser { key: key.to_vec(), project: project.into(), practices: true };
        let (a, b) = (p(b"project-a-key", "a"), p(b"project-b-key", "b"));
        // The same key configured for two projects still gives unlinkable pseudonyms.
        assert_ne!(p(b"shared", "a").practice("M83001"), p(b"shared", "b").practice("M83001"));
        assert_eq!(a.practice("M83001"), a.practice("M83001"));
        assert_ne!(a.practice("M83001"), a.practice("M83002"));
        assert_ne!(a.practice("M83001"), b.practice("M83001"));
        assert_eq!(a.practice("ALL"), "ALL");
        assert!(!a.practice("M83001").contains("M83001"));
        let plain = Pseudonymiser { key: b"k".to_vec(), project: "a".into(), practices: false };
        assert_eq!(plain.practice("M83001"), "M83001");
    }
}
