-- The operational journal and leases: what the scheduler and the digests need to survive restarts and never act twice.
-- state_events: append-only, one row per event (scheduled run started/finished, delivery pending/sent/failed,
-- subscription added/removed); the state of a key is its events read in order. Rows are only ever inserted.
CREATE TABLE IF NOT EXISTS state_events /*ON_CLUSTER*/
(
    tenant_id String,
    stream String,
    key String,
    at_us UInt64,
    id String,
    body String
)
ENGINE = MergeTree()
ORDER BY (tenant_id, stream, at_us, id);

-- leases: every claim, renewal and release of a named lease is a row; the holder is found by replaying them in order
-- (a claim made while another holder's lease is live is void). A row is a few dozen bytes per claim or renewal.
CREATE TABLE IF NOT EXISTS leases /*ON_CLUSTER*/
(
    tenant_id String,
    name String,
    holder String,
    acquired_us UInt64,
    expires_us UInt64
)
ENGINE = MergeTree()
ORDER BY (tenant_id, name, acquired_us, holder)
