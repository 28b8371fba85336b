-- The claims of one tenant's lease from the last day, for replay (the application finds the holder in force).
-- params: tenant_id, name, since_us
-- example: 'north-staffs', 'digest', 1500000000000000
SELECT holder, acquired_us, expires_us
FROM leases
WHERE tenant_id = ? AND name = ? AND acquired_us >= ?
ORDER BY acquired_us, holder
