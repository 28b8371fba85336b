-- The export audit trail of one tenant, newest first.
-- params: tenant_id
-- example: 'north-staffs'
SELECT export_id, created_at, requested_by, tenants, project, purpose, spec_hash, spec, rows, files
FROM export_audit
WHERE tenant_id = ?
ORDER BY created_at DESC, export_id
