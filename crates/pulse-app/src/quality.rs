//! What the data-quality page and the digest say about a tenant's tokens beyond the quality report: when they were
//! last checked. Every ingest run checks each page's token (a page whose token fails is reported as needing
//! re-authorisation), so the latest run's end is when "every token works" was last true or false.

use chrono::{DateTime, Utc};
use pulse_config::Access;
use pulse_store::Store;

use crate::error::{AppError, AppResult};

/// When an ingest run last checked `tenant`'s page tokens; `None` when no ingest has run for it. The tenant must be
/// one `access` may read.
pub async fn last_token_check<S: Store>(store: &S, access: &Access, tenant: &str) -> AppResult<Option<DateTime<Utc>>> {
    let scope = access.scope(tenant).map_err(AppError::from)?;
    let runs = store.read_runs(&scope).await?;
    Ok(runs.iter().map(|r| r.finished_at.max(r.started_at)).max())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use pulse_domain::{IngestRunRecord, PracticeCode, RunStatus};

    fn run(start: DateTime<Utc>, end: DateTime<Utc>) -> IngestRunRecord {
        IngestRunRecord {
            run_id: format!("run-{start}"),
            practice: PracticeCode::new("M83001").unwrap(),
            started_at: start,
            finished_at: end,
            requests: 1,
            retries: 0,
            throttled_ms: 0,
            rows_written: 1,
            errors: 0,
            pages_needing_reauth: 0,
            status: RunStatus::Ok,
            message: String::new(),
        }
    }

    #[tokio::test]
    async fn the_latest_run_is_when_tokens_were_last_checked_and_other_tenants_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = pulse_store::lake::LakeStore::open(dir.path()).unwrap();
        let access = pulse_config::testing::operator(["north", "south"]);
        assert_eq!(last_token_check(&store, &access, "north").await.unwrap(), None, "no run yet");
        let at = |h| Utc.with_ymd_and_hms(2018, 3, 26, h, 0, 0).unwrap();
        for (tenant, start, end) in [("north", 6, 7), ("north", 9, 8), ("south", 20, 21)] {
            let scope = access.write_scope(tenant).unwrap();
            store.record_run(&scope, &[run(at(start), at(end))]).await.unwrap();
        }
        // The later of a run's start and end, over the tenant's runs only.
        assert_eq!(last_token_check(&store, &access, "north").await.unwrap(), Some(at(9)));
        assert_eq!(last_token_check(&store, &access, "south").await.unwrap(), Some(at(21)));
        let north_only = pulse_config::testing::operator(["north"]);
        assert!(last_token_check(&store, &north_only, "south").await.is_err(), "another tenant's runs are not read");
    }
}
