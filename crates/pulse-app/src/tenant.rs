//! Which tenant a request is for, by one rule on every surface: the tenant named (which the access must see), or,
//! when none is named, the access's only tenant. An access that sees several tenants must name one.

use pulse_config::{Access, TenantScope};

use crate::error::{AppError, AppResult};

/// The tenant `named`, or `access`'s only tenant. `field` is where a request names it (`tenant`, `site_id`), `how`
/// says how to name one on this surface; both go into the error when several tenants are visible and none is named.
pub fn resolve(access: &Access, named: Option<&str>, field: &str, how: &str) -> AppResult<TenantScope> {
    match named {
        Some(t) => Ok(access.scope(t)?),
        None => resolve_all(access, &[], field, how).map(|mut s| s.remove(0)),
    }
}

/// The tenants `named` (each must be visible), or `access`'s only tenant when none is named.
pub fn resolve_all(access: &Access, named: &[String], field: &str, how: &str) -> AppResult<Vec<TenantScope>> {
    if !named.is_empty() {
        return named.iter().map(|t| access.scope(t).map_err(AppError::from)).collect();
    }
    let scopes = access.scopes();
    if scopes.len() == 1 {
        return Ok(scopes);
    }
    let names: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    Err(AppError::bad_request(format!("{} tenants are visible here ({}); name which", scopes.len(), names.join(", ")))
        .with_hint(how.to_owned())
        .at(field))
}

#[cfg(test)]
mod tests {
    use pulse_domain::TenantId;

    use super::*;

    fn operator(tenants: &[&str]) -> Access {
        pulse_config::testing::operator(tenants.iter().map(|t| TenantId::new(*t).unwrap()))
    }

    #[test]
    fn the_only_tenant_or_the_one_named() {
        let one = operator(&["alpha"]);
        assert_eq!(resolve(&one, None, "tenant", "").unwrap().to_string(), "alpha");
        let two = operator(&["alpha", "beta"]);
        assert_eq!(resolve(&two, Some("beta"), "tenant", "").unwrap().to_string(), "beta");
        let e = resolve(&two, None, "site_id", "set site_id").unwrap_err();
        assert!(e.message.contains("2 tenants are visible here (alpha, beta); name which"), "{}", e.message);
        assert_eq!(e.field.as_deref(), Some("site_id"));
        assert!(resolve(&two, Some("gamma"), "tenant", "").is_err(), "a tenant the access cannot see");
        let analyst = two.analyst("alpha").unwrap();
        assert_eq!(resolve(&analyst, None, "tenant", "").unwrap().to_string(), "alpha");
        assert!(resolve(&analyst, Some("beta"), "tenant", "").is_err());
        assert_eq!(resolve_all(&two, &["alpha".into(), "beta".into()], "tenants", "").unwrap().len(), 2);
    }
}
