-- Ingest run summaries of one tenant, newest first.
-- params: tenant_id
-- example: 'north-staffs'
SELECT run_id, practice_code, started_at, finished_at, requests, retries, throttled_ms, rows_written, errors,
       pages_needing_reauth, status, message, version
FROM ingest_runs FINAL
WHERE tenant_id = ?
ORDER BY started_at DESC, run_id, practice_code
