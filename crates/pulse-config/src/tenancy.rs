//! Tenant isolation as a type: every read or write of tenant data takes a [`TenantScope`], and the only way to get
//! one is [`Access::scope`], which checks that the tenant exists and that the principal may see it.
//!
//! `TenantScope` has no public constructor, no `Deserialize` and no `From<&str>`, so a tenant id typed by a user
//! (a URL segment, a CLI flag) cannot reach the store without passing the check. This is PostHog's `team_id` guard
//! moved into the type system.

use std::collections::BTreeSet;
use std::fmt;

use pulse_domain::TenantId;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The operator running `pulse` with the deployment's config file: every configured tenant, read and write.
    Operator,
    /// A regional network (an AHSN) benchmarking across tenants: these tenants, read-only.
    Admin { tenants: BTreeSet<TenantId> },
    /// A tenant analyst: their own tenant only, read-only.
    Analyst { tenant: TenantId },
}

/// The proof that a principal may read one tenant's data. Reads of facts and reports take it.
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

/// The proof that a principal may write one tenant's data (ingest, pipelines). Only the operator gets one, so code
/// holding an analyst's or an admin's access cannot write, whatever it does. It reads like a [`TenantScope`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WriteScope {
    read: TenantScope,
}

impl WriteScope {
    /// The read scope of the same tenant.
    pub fn read(&self) -> &TenantScope {
        &self.read
    }

    pub fn tenant(&self) -> &TenantId {
        self.read.tenant()
    }

    pub fn as_str(&self) -> &str {
        self.read.as_str()
    }
}

impl std::ops::Deref for WriteScope {
    type Target = TenantScope;
    fn deref(&self) -> &TenantScope {
        &self.read
    }
}

impl fmt::Display for WriteScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
    #[error("tenant `{0}` is not among the tenants this key may read")]
    NotGranted(String),
    #[error("writing tenant `{0}`'s data needs the operator's access; analysts and admins read only")]
    ReadOnly(String),
}

/// The authorisation check: the principal and the set of configured tenants.
///
/// The operator's access comes from a parsed config, and from nowhere else. Outside this crate this does not compile:
///
/// ```compile_fail,E0624
/// let tenant = pulse_domain::TenantId::new("stoke").unwrap();
/// let access = pulse_config::Access::operator([tenant]); // private: use `Config::operator_access`
/// ```
///
/// while this does, and refuses a tenant the config does not declare:
///
/// ```
/// let config = pulse_config::parse("[[tenant]]\nid = \"stoke\"\nname = \"Stoke\"\n", "pulse.toml".as_ref()).unwrap();
/// assert!(config.operator_access().write_scope("stoke").is_ok());
/// assert!(config.operator_access().write_scope("elsewhere").is_err());
/// ```
///
/// There is no constructor taking an arbitrary principal: the operator's access comes from the deployment's config
/// ([`Access::operator`]), and analyst or admin access only by narrowing it ([`Access::analyst`], [`Access::admin`]),
/// so a narrower access can never see a tenant the deployment does not have.
#[derive(Debug, Clone)]
pub struct Access {
    principal: Principal,
    tenants: BTreeSet<TenantId>,
}

impl Access {
    /// The operator's access: every configured tenant, read and write. Private to this crate: the only way to
    /// get it is [`crate::Config::operator_access`], so no code can mint write access for a tenant the deployment's
    /// config does not declare (tests parse a config too: `testing::operator`, behind the `testing` feature).
    pub(crate) fn operator(tenants: impl IntoIterator<Item = TenantId>) -> Self {
        Self { principal: Principal::Operator, tenants: tenants.into_iter().collect() }
    }

    /// An analyst's access narrowed from this one: `tenant` only, read-only.
    pub fn analyst(&self, tenant: &str) -> Result<Access, AccessDenied> {
        let scope = self.scope(tenant)?;
        Ok(Access { principal: Principal::Analyst { tenant: scope.tenant.clone() }, tenants: self.tenants.clone() })
    }

    /// A regional admin's access narrowed from this one: the tenants named (each must be visible here), read-only.
    pub fn admin<'a>(&self, tenants: impl IntoIterator<Item = &'a str>) -> Result<Access, AccessDenied> {
        let granted = tenants.into_iter().map(|t| self.scope(t).map(|s| s.tenant)).collect::<Result<_, _>>()?;
        Ok(Access { principal: Principal::Admin { tenants: granted }, tenants: self.tenants.clone() })
    }

    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// Checks `requested` (raw user input is fine here) and returns the scope to read with.
    pub fn scope(&self, requested: &str) -> Result<TenantScope, AccessDenied> {
        let tenant = TenantId::new(requested)
            .map_err(|e| AccessDenied::InvalidTenant { requested: requested.to_owned(), reason: e.to_string() })?;
        match &self.principal {
            Principal::Analyst { tenant: own } if own != &tenant => {
                return Err(AccessDenied::OtherTenant { requested: requested.to_owned(), own: own.to_string() });
            }
            Principal::Admin { tenants } if !tenants.contains(&tenant) => {
                return Err(AccessDenied::NotGranted(requested.to_owned()));
            }
            _ => {}
        }
        if !self.tenants.contains(&tenant) {
            return Err(AccessDenied::UnknownTenant(requested.to_owned()));
        }
        Ok(TenantScope { tenant })
    }

    /// Checks `requested` and returns the scope to write with: the operator only.
    pub fn write_scope(&self, requested: &str) -> Result<WriteScope, AccessDenied> {
        let read = self.scope(requested)?;
        match self.principal {
            Principal::Operator => Ok(WriteScope { read }),
            _ => Err(AccessDenied::ReadOnly(requested.to_owned())),
        }
    }

    /// Every scope this principal may read, in tenant order.
    pub fn scopes(&self) -> Vec<TenantScope> {
        self.tenants
            .iter()
            .filter(|t| match &self.principal {
                Principal::Analyst { tenant } => tenant == *t,
                Principal::Admin { tenants } => tenants.contains(*t),
                Principal::Operator => true,
            })
            .map(|t| TenantScope { tenant: t.clone() })
            .collect()
    }

    /// Every scope this principal may write (empty unless it is the operator).
    pub fn write_scopes(&self) -> Vec<WriteScope> {
        match self.principal {
            Principal::Operator => self.scopes().into_iter().map(|read| WriteScope { read }).collect(),
            _ => Vec::new(),
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
        let access = Access::operator(tenants());
        assert_eq!(access.scope("stoke").unwrap().as_str(), "stoke");
        assert_eq!(access.scope("elsewhere").unwrap_err(), AccessDenied::UnknownTenant("elsewhere".into()));
        assert!(matches!(access.scope("../stoke"), Err(AccessDenied::InvalidTenant { .. })));
        assert_eq!(access.scopes().len(), 2);
        assert_eq!(access.write_scope("stoke").unwrap().read().as_str(), "stoke");
        assert_eq!(access.write_scopes().len(), 2);
    }

    #[test]
    fn analyst_is_confined_to_their_tenant_and_cannot_write() {
        let access = Access::operator(tenants()).analyst("stoke").unwrap();
        assert!(access.scope("stoke").is_ok());
        let err = access.scope("north-staffs").unwrap_err();
        assert!(matches!(err, AccessDenied::OtherTenant { .. }));
        // An analyst asking for a tenant that does not exist is told the same as for one that does.
        assert!(matches!(access.scope("nowhere").unwrap_err(), AccessDenied::OtherTenant { .. }));
        assert_eq!(access.scopes().iter().map(|s| s.as_str()).collect::<Vec<_>>(), vec!["stoke"]);
        assert_eq!(access.write_scope("stoke").unwrap_err(), AccessDenied::ReadOnly("stoke".into()));
        assert!(access.write_scopes().is_empty());
        // Narrowing cannot invent a tenant the deployment does not have.
        assert!(Access::operator(tenants()).analyst("elsewhere").is_err());
    }

    #[test]
    fn admin_reads_the_granted_tenants_only() {
        let op = Access::operator(tenants());
        let admin = op.admin(["stoke", "north-staffs"]).unwrap();
        assert_eq!(admin.scopes().len(), 2);
        assert!(admin.write_scope("stoke").is_err());
        let one = op.admin(["stoke"]).unwrap();
        assert_eq!(one.scope("north-staffs").unwrap_err(), AccessDenied::NotGranted("north-staffs".into()));
        assert!(op.admin(["nowhere"]).is_err());
    }
}
