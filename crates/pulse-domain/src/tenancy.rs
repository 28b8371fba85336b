//! Tenant isolation as a type: every read or write of tenant data takes a [`TenantScope`], and the only way to get
//! one is [`Access::scope`], which checks that the tenant exists and that the principal may see it.
//!
//! `TenantScope` has no public constructor, no `Deserialize` and no `From<&str>`, so a tenant id typed by a user
//! (a URL segment, a CLI flag) cannot reach the store without passing the check. This is PostHog's `team_id` guard
//! moved into the type system.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{DomainError, TenantId};

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The operator running `pulse` with the deployment's config file: every configured tenant.
    Operator,
    /// A regional network (an AHSN) benchmarking across tenants: every configured tenant, read-only by convention.
    Admin,
    /// A tenant analyst: their own tenant only.
    Analyst { tenant: TenantId },
}

/// The proof that a principal may act on one tenant's data.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantScope {
    tenant: TenantId,
}

impl TenantScope {
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    pub fn as_str(&self) -> &str {
        self.tenant.as_str()
    }
}

impl fmt::Display for TenantScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tenant.as_str())
    }
}

/// Why a scope was refused. Analysts are not told which other tenants exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessDenied {
    #[error("tenant `{0}` is not configured; `pulse config check` lists the configured tenants")]
    UnknownTenant(String),
    #[error("`{requested}` is not a valid tenant id: {reason}")]
    InvalidTenant { requested: String, reason: String },
    #[error("tenant `{requested}` is not visible to this analyst (scoped to `{own}`)")]
    OtherTenant { requested: String, own: String },
}

/// The authorisation check. Built from the set of configured tenants and the principal.
#[derive(Debug, Clone)]
pub struct Access {
    principal: Principal,
    tenants: BTreeSet<TenantId>,
}

impl Access {
    pub fn new(principal: Principal, tenants: impl IntoIterator<Item = TenantId>) -> Self {
        Self { principal, tenants: tenants.into_iter().collect() }
    }

    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// Checks `requested` (raw user input is fine here) and returns the scope to pass to the store.
    pub fn scope(&self, requested: &str) -> Result<TenantScope, AccessDenied> {
        let tenant = TenantId::new(requested)
            .map_err(|e| AccessDenied::InvalidTenant { requested: requested.to_owned(), reason: e.to_string() })?;
        if let Principal::Analyst { tenant: own } = &self.principal
            && own != &tenant
        {
            return Err(AccessDenied::OtherTenant { requested: requested.to_owned(), own: own.to_string() });
        }
        if !self.tenants.contains(&tenant) {
            return Err(AccessDenied::UnknownTenant(requested.to_owned()));
        }
        Ok(TenantScope { tenant })
    }

    /// Every scope this principal may use, in tenant order.
    pub fn scopes(&self) -> Vec<TenantScope> {
        self.tenants
            .iter()
            .filter(|t| match &self.principal {
                Principal::Analyst { tenant } => tenant == *t,
                Principal::Operator | Principal::Admin => true,
            })
            .map(|t| TenantScope { tenant: t.clone() })
            .collect()
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn tenants() -> Vec<TenantId> {
        vec![TenantId::new("north-staffs").unwrap(), TenantId::new("stoke").unwrap()]
    }

    #[test]
    fn operator_sees_configured_tenants_only() {
        let access = Access::new(Principal::Operator, tenants());
        assert_eq!(access.scope("stoke").unwrap().as_str(), "stoke");
        assert_eq!(access.scope("elsewhere").unwrap_err(), AccessDenied::UnknownTenant("elsewhere".into()));
        assert!(matches!(access.scope("../stoke"), Err(AccessDenied::InvalidTenant { .. })));
        assert_eq!(access.scopes().len(), 2);
    }

    #[test]
    fn analyst_is_confined_to_their_tenant() {
        let access = Access::new(Principal::Analyst { tenant: TenantId::new("stoke").unwrap() }, tenants());
        assert!(access.scope("stoke").is_ok());
        let err = access.scope("north-staffs").unwrap_err();
        assert!(matches!(err, AccessDenied::OtherTenant { .. }));
        // An analyst asking for a tenant that does not exist is told the same as for one that does.
        assert!(matches!(access.scope("nowhere").unwrap_err(), AccessDenied::OtherTenant { .. }));
        assert_eq!(access.scopes().iter().map(|s| s.as_str()).collect::<Vec<_>>(), vec!["stoke"]);
    }
}
