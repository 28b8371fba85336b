//! Age bands and genders as Meta reports them in breakdown keys such as `F.25-34`, `M.65+`, `U.18-24`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::DomainError;

/// Meta's age bands, in order. Penetration joins these to NHS registered-patient age groups explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AgeBand {
    #[serde(rename = "13-17")]
    A13_17,
    #[serde(rename = "18-24")]
    A18_24,
    #[serde(rename = "25-34")]
    A25_34,
    #[serde(rename = "35-44")]
    A35_44,
    #[serde(rename = "45-54")]
    A45_54,
    #[serde(rename = "55-64")]
    A55_64,
    #[serde(rename = "65+")]
    A65Plus,
}

impl AgeBand {
    pub const ALL: [AgeBand; 7] = [
        AgeBand::A13_17,
        AgeBand::A18_24,
        AgeBand::A25_34,
        AgeBand::A35_44,
        AgeBand::A45_54,
        AgeBand::A55_64,
        AgeBand::A65Plus,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AgeBand::A13_17 => "13-17",
            AgeBand::A18_24 => "18-24",
            AgeBand::A25_34 => "25-34",
            AgeBand::A35_44 => "35-44",
            AgeBand::A45_54 => "45-54",
            AgeBand::A55_64 => "55-64",
            AgeBand::A65Plus => "65+",
        }
    }

    /// Inclusive lower and upper age of the band (`None` upper for 65+).
    pub fn ages(self) -> (u8, Option<u8>) {
        match self {
            AgeBand::A13_17 => (13, Some(17)),
            AgeBand::A18_24 => (18, Some(24)),
            AgeBand::A25_34 => (25, Some(34)),
            AgeBand::A35_44 => (35, Some(44)),
            AgeBand::A45_54 => (45, Some(54)),
            AgeBand::A55_64 => (55, Some(64)),
            AgeBand::A65Plus => (65, None),
        }
    }
}

impl fmt::Display for AgeBand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AgeBand {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AgeBand::ALL.into_iter().find(|b| b.as_str() == s).ok_or_else(|| DomainError::AgeBand(s.to_owned()))
    }
}

/// Gender as Meta buckets it: female, male, unknown/unspecified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Gender {
    #[serde(rename = "F")]
    Female,
    #[serde(rename = "M")]
    Male,
    #[serde(rename = "U")]
    Unknown,
}

impl Gender {
    pub const ALL: [Gender; 3] = [Gender::Female, Gender::Male, Gender::Unknown];

    pub fn as_str(self) -> &'static str {
        match self {
            Gender::Female => "F",
            Gender::Male => "M",
            Gender::Unknown => "U",
        }
    }
}

/// A parsed breakdown key such as `F.25-34`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgeGenderKey {
    pub gender: Gender,
    pub band: AgeBand,
}

impl AgeGenderKey {
    pub fn new(gender: Gender, band: AgeBand) -> Self {
        Self { gender, band }
    }
}

impl fmt::Display for AgeGenderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.gender.as_str(), self.band.as_str())
    }
}

impl FromStr for AgeGenderKey {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || DomainError::AgeGenderKey(s.to_owned());
        let (g, band) = s.split_once('.').ok_or_else(err)?;
        let gender = match g {
            "F" => Gender::Female,
            "M" => Gender::Male,
            "U" => Gender::Unknown,
            _ => return Err(err()),
        };
        let band = band.parse::<AgeBand>().map_err(|_| err())?;
        Ok(Self { gender, band })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_meta_key_and_round_trips() {
        for g in Gender::ALL {
            for b in AgeBand::ALL {
                let key = AgeGenderKey::new(g, b);
                let text = key.to_string();
                assert_eq!(text.parse::<AgeGenderKey>().unwrap(), key, "{text}");
            }
        }
        assert_eq!("M.65+".parse::<AgeGenderKey>().unwrap(), AgeGenderKey::new(Gender::Male, AgeBand::A65Plus));
    }

    #[test]
    fn rejects_anything_else_with_a_clear_error() {
        for bad in ["", "F", "F.", "F.25-35", "X.25-34", "f.25-34", "F25-34", "F.65", "F.65-", "F.25-34 ", "M.65+.1"] {
            let err = bad.parse::<AgeGenderKey>().unwrap_err();
            assert_eq!(err, DomainError::AgeGenderKey(bad.to_owned()));
            assert!(err.to_string().contains("such as F.25-34"));
        }
    }

    #[test]
    fn bands_are_ordered_by_age() {
        let mut sorted = AgeBand::ALL;
        sorted.sort();
        assert_eq!(sorted, AgeBand::ALL);
        assert_eq!(AgeBand::A65Plus.ages(), (65, None));
    }
}
