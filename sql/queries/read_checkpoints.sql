-- Ingest checkpoints of one tenant, latest per (page, stream).
-- params: tenant_id
-- example: 'north-staffs'
SELECT practice_code, page_id, stream, through_day, version
FROM ingest_checkpoints FINAL
WHERE tenant_id = ?
ORDER BY page_id, stream
