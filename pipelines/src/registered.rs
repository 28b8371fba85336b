//! Registered patients by age, from NHS Digital's "Patients Registered at a GP Practice" CSV files, mapped onto
//! Meta's age bands.
//!
//! The practice-level files (`gp-reg-pat-prac-quin-age.csv`, 5-year groups; `gp-reg-pat-prac-sing-age-*.csv`,
//! single years) have the columns `PUBLICATION, EXTRACT_DATE, ORG_TYPE (or TYPE), [CCG/SUB_ICB codes], ORG_CODE,
//! POSTCODE, SEX, AGE_GROUP_5 (or AGE), NUMBER_OF_PATIENTS`. We need `ORG_CODE`, `SEX` (MALE/FEMALE; ALL rows are
//! totals and skipped), the age column and `NUMBER_OF_PATIENTS`; other columns are ignored.
//!
//! Mapping, stated explicitly: NHS groups are 0_4, 5_9, ..., 90_94 (or 90+), 95+; Meta's bands are 13-17, 18-24,
//! 25-34, 35-44, 45-54, 55-64, 65+. A group straddling two bands is split in proportion to the single years in each
//! (patients assumed uniform within a 5-year group): 10_14 gives 2/5 to 13-17; 15_19 gives 3/5 to 13-17 and 2/5 to
//! 18-24; every group from 65 up goes to 65+. Under-13s belong to no band.

use std::collections::BTreeMap;
use std::path::Path;

use pulse_domain::AgeBand;

use crate::{PipelineError, Result};

/// Registered patients per practice per Meta band: [female, male].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Registered {
    pub practices: BTreeMap<String, [[f64; 2]; 7]>,
}

impl Registered {
    pub fn band(&self, practice: &str, band: usize) -> Option<f64> {
        self.practices.get(practice).map(|b| b[band][0] + b[band][1])
    }
}

/// Parses an age column value: `35_39`, `95+`, `37`, `90+`.
fn age_range(v: &str) -> Option<(u32, Option<u32>)> {
    if let Some(lo) = v.strip_suffix('+') {
        return lo.parse().ok().map(|l| (l, None));
    }
    if let Some((lo, hi)) = v.split_once('_') {
        let (lo, hi) = (lo.parse().ok()?, hi.parse().ok()?);
        return (lo <= hi).then_some((lo, Some(hi)));
    }
    v.parse().ok().map(|a| (a, Some(a)))
}

/// The share of an age range that falls in each Meta band.
pub fn band_shares(lo: u32, hi: Option<u32>) -> [f64; 7] {
    let mut out = [0.0; 7];
    let Some(hi) = hi else {
        // Open groups (90+, 95+) are all over 65.
        out[6] = 1.0;
        return out;
    };
    let width = (hi - lo + 1) as f64;
    for (i, band) in AgeBand::ALL.iter().enumerate() {
        let (b_lo, b_hi) = band.ages();
        let b_hi = b_hi.map_or(u32::MAX, |h| h as u32);
        let overlap_lo = lo.max(b_lo as u32);
        let overlap_hi = hi.min(b_hi);
        if overlap_hi >= overlap_lo {
            out[i] = (overlap_hi - overlap_lo + 1) as f64 / width;
        }
    }
    out
}

pub fn load(path: &Path) -> Result<Registered> {
    let shown = path.display().to_string();
    let err = |line: u64, msg: String| PipelineError::Input(format!("{shown}:{line}: {msg}"));
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| PipelineError::Input(format!("cannot read registered-patients file {shown}: {e}; download gp-reg-pat-prac-quin-age.csv from NHS Digital's \"Patients Registered at a GP Practice\"")))?;
    let headers = reader.headers().map_err(|e| err(1, e.to_string()))?.clone();
    let find = |names: &[&str]| headers.iter().position(|h| names.contains(&h));
    let org = find(&["ORG_CODE", "CODE"]).ok_or_else(|| {
        err(1, "no ORG_CODE column: is this a practice-level Patients Registered at a GP Practice file?".into())
    })?;
    let sex = find(&["SEX"]).ok_or_else(|| err(1, "no SEX column".into()))?;
    let age = find(&["AGE_GROUP_5", "AGE"]).ok_or_else(|| err(1, "no AGE_GROUP_5 (or AGE) column".into()))?;
    let count = find(&["NUMBER_OF_PATIENTS"]).ok_or_else(|| err(1, "no NUMBER_OF_PATIENTS column".into()))?;
    let org_type = find(&["ORG_TYPE", "TYPE"]);
    let mut out = Registered::default();
    for record in reader.records() {
        let record = record.map_err(|e| err(e.position().map_or(0, |p| p.line()), e.to_string()))?;
        let line = record.position().map_or(0, |p| p.line());
        if let Some(t) = org_type.and_then(|i| record.get(i))
            && !(t == "GP" || t == "GP_PRAC" || t.is_empty())
        {
            continue;
        }
        let s = match record.get(sex).unwrap_or("") {
            "FEMALE" | "F" => 0,
            "MALE" | "M" => 1,
            "ALL" => continue,
            other => return Err(err(line, format!("SEX `{other}` is not MALE, FEMALE or ALL"))),
        };
        let group = record.get(age).unwrap_or("");
        if group == "ALL" {
            continue;
        }
        let (lo, hi) = age_range(group)
            .ok_or_else(|| err(line, format!("age `{group}` is not an age group like 35_39 or 95+")))?;
        let n: f64 = record.get(count).unwrap_or("").parse().map_err(|_| {
            err(line, format!("NUMBER_OF_PATIENTS `{}` is not a number", record.get(count).unwrap_or("")))
        })?;
        let code = record.get(org).unwrap_or("").to_owned();
        let bands = out.practices.entry(code).or_insert([[0.0; 2]; 7]);
        for (i, share) in band_shares(lo, hi).iter().enumerate() {
            bands[i][s] += n * share;
        }
    }
    if out.practices.is_empty() {
        return Err(err(0, "no practice rows (ORG_TYPE GP, SEX MALE/FEMALE) found".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn straddling_groups_are_split_by_single_years() {
        assert_eq!(band_shares(10, Some(14)), [0.4, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(band_shares(15, Some(19)), [0.6, 0.4, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(band_shares(35, Some(39)), [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]);
        assert_eq!(band_shares(95, None), [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
        assert_eq!(band_shares(0, Some(4)), [0.0; 7]);
        assert_eq!(band_shares(37, Some(37))[3], 1.0);
    }

    #[test]
    fn loads_the_fixture_in_nhs_digitals_format() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gp-reg-pat-prac-quin-age.csv");
        let r = load(&path).unwrap();
        assert_eq!(r.practices.len(), 2);
        // M83001: 35_39 and 40_44 (F 310 + 295, M 290 + 281) land in 35-44.
        let b = r.practices["M83001"][3];
        assert_eq!(b, [605.0, 571.0]);
        // 15_19 (F 200, M 210): 3/5 to 13-17, 2/5 to 18-24; with 20_24 (F 250, M 240).
        let teen = r.practices["M83001"][1];
        assert!((teen[0] - (80.0 + 250.0)).abs() < 1e-9 && (teen[1] - (84.0 + 240.0)).abs() < 1e-9, "{teen:?}");
    }

    #[test]
    fn a_malformed_file_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.csv");
        std::fs::write(&p, "PUBLICATION,EXTRACT_DATE,ORG_TYPE,ORG_CODE,POSTCODE,SEX,AGE_GROUP_5,NUMBER_OF_PATIENTS\nGP_PRAC_PAT_LIST,01MAR2018,GP,M83001,ST1 1AA,FEMALE,35_39,lots\n").unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("bad.csv:2: NUMBER_OF_PATIENTS `lots`"), "{e}");
        std::fs::write(&p, "ORG_CODE,SEX,AGE_BAND,NUMBER_OF_PATIENTS\n").unwrap();
        assert!(load(&p).unwrap_err().to_string().contains("no AGE_GROUP_5"));
    }
}
