-- The version of a tenant's current slice of a report table (no row: never written).
-- params: tenant_id, report
-- example: 'north-staffs', 'report_reach_weekly'
SELECT current_version
FROM report_slices FINAL
WHERE tenant_id = ? AND report = ?
