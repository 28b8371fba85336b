-- The research exports' audit trail, append-only: one row per export per tenant it covered (who asked, why, what,
-- how many rows, each file's SHA-256). Rows are only ever inserted; nothing in Practice Pulse updates or deletes them.
CREATE TABLE IF NOT EXISTS export_audit /*ON_CLUSTER*/
(
    tenant_id String,
    export_id String,
    created_at DateTime,
    requested_by String,
    tenants String,
    project String,
    purpose String,
    spec_hash String,
    spec String,
    rows UInt64,
    files String
)
ENGINE = MergeTree()
ORDER BY (tenant_id, created_at, export_id)
