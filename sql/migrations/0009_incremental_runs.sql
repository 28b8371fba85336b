-- Reports keep all history and a daily pipelines run recomputes only what changed: each run record says when the
-- run started (the next incremental run recomputes the days of facts fetched since), what its inputs were (campaigns
-- and registered patients: a change makes the next run a full one) and whether it was full or incremental.
-- Mirrors REPORT_RUNS in crates/pulse-store/src/report.rs. Rows written before this migration have empty values:
-- the next run after it is a full one.

ALTER TABLE report_runs /*ON_CLUSTER*/ ADD COLUMN started_at String DEFAULT '' AFTER rows;

ALTER TABLE report_runs /*ON_CLUSTER*/ ADD COLUMN inputs String DEFAULT '' AFTER started_at;

ALTER TABLE report_runs /*ON_CLUSTER*/ ADD COLUMN mode String DEFAULT '' AFTER inputs;
