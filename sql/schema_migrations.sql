-- Which numbered migrations have been applied to this database. Created by `pulse migrate` before anything else.
CREATE TABLE IF NOT EXISTS schema_migrations /*ON_CLUSTER*/
(
    version UInt32,
    name String,
    checksum String,
    applied_at DateTime
)
ENGINE = MergeTree()
ORDER BY version;
