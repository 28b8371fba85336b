//! What kind of Facebook page a practice has.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::DomainError;

/// Whether the practice runs the page or claimed it after the public created it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PageKind {
    #[default]
    Official,
    /// An unofficial page created by the public that the practice has since claimed.
    Claimed,
}

impl PageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PageKind::Official => "official",
            PageKind::Claimed => "claimed",
        }
    }
}

impl FromStr for PageKind {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "official" => Ok(PageKind::Official),
            "claimed" => Ok(PageKind::Claimed),
            _ => Err(DomainError::PageKind(s.to_owned())),
        }
    }
}
