//! Typed identifiers. Each is validated once, at the edge, so the rest of the code never re-checks a string.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::DomainError;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $validate:path) => {
        $(#[$doc])*
        ///
        /// Shared, not copied: a clone is a reference count (ingest stamps every fact with its page and practice).
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates and wraps `value`.
            pub fn new(value: impl Into<String>) -> Result<Self, DomainError> {
                let value = value.into();
                $validate(&value)?;
                Ok(Self(Arc::from(value)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = DomainError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::new(raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// A tenant (a commissioning organisation such as a CCG/ICB). Used in paths and SQL, so it is a slug.
    TenantId,
    validate_tenant
);
string_id!(
    /// An ODS-style practice code: one uppercase letter and five digits (`M83001`).
    PracticeCode,
    validate_practice
);
string_id!(
    /// A Facebook page id (digits).
    PageId,
    validate_page
);
string_id!(
    /// A Facebook post id, `<page id>_<post number>`.
    PostId,
    validate_post
);

fn validate_tenant(v: &str) -> Result<(), DomainError> {
    let ok = (1..=64).contains(&v.len())
        && v.starts_with(|c: char| c.is_ascii_lowercase())
        && v.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok { Ok(()) } else { Err(DomainError::TenantId(v.to_owned())) }
}

fn validate_practice(v: &str) -> Result<(), DomainError> {
    let b = v.as_bytes();
    let ok = b.len() == 6 && b[0].is_ascii_uppercase() && b[1..].iter().all(u8::is_ascii_digit);
    if ok { Ok(()) } else { Err(DomainError::PracticeCode(v.to_owned())) }
}

fn validate_page(v: &str) -> Result<(), DomainError> {
    let ok = (1..=20).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit());
    if ok { Ok(()) } else { Err(DomainError::PageId(v.to_owned())) }
}

fn validate_post(v: &str) -> Result<(), DomainError> {
    let ok = match v.split_once('_') {
        Some((page, post)) => {
            validate_page(page).is_ok()
                && !post.is_empty()
                && post.len() <= 24
                && post.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    };
    if ok { Ok(()) } else { Err(DomainError::PostId(v.to_owned())) }
}

impl PostId {
    /// The page a post belongs to, from the id's prefix.
    pub fn page_id(&self) -> PageId {
        let (page, _) = self.0.split_once('_').expect("validated at construction");
        PageId(Arc::from(page))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn practice_codes_are_one_letter_and_five_digits() {
        assert!(PracticeCode::new("M83001").is_ok());
        for bad in ["m83001", "M8300", "M830011", "MM3001", "883001", "M8300A", "", "M83 01"] {
            let err = PracticeCode::new(bad).unwrap_err();
            assert_eq!(err, DomainError::PracticeCode(bad.to_owned()), "{bad}");
        }
        assert!(PracticeCode::new("X").unwrap_err().to_string().contains("one letter and five digits"));
    }

    #[test]
    fn tenant_ids_are_slugs_safe_for_paths() {
        assert!(TenantId::new("north-staffs").is_ok());
        assert!(TenantId::new("icb_2024").is_ok());
        for bad in ["", "North", "../etc", "a/b", "1abc", "a b", &"x".repeat(65)] {
            assert!(TenantId::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn post_ids_carry_their_page() {
        let post = PostId::new("1000001_42").unwrap();
        assert_eq!(post.page_id().as_str(), "1000001");
        for bad in ["1000001", "_42", "1000001_", "abc_1", "1_2_3"] {
            assert!(PostId::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_deserialize_with_validation() {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct P {
            code: PracticeCode,
        }
        let err = serde_json::from_str::<P>(r#"{"code":"bad"}"#).err();
        assert!(err.is_some());
    }
}
