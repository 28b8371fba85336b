-- One tenant's operational events of one stream, oldest first (an event id written twice counts once).
-- params: tenant_id, stream
-- example: 'north-staffs', 'schedule'
SELECT id, key, at_us, any(body) AS body
FROM state_events
WHERE tenant_id = ? AND stream = ?
GROUP BY id, key, at_us
ORDER BY at_us, id
