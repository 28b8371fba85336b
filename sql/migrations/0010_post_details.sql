-- The post-performance report names each post as a reader knows it: when it was posted, the start of its text and
-- its permalink (practices' posts are public on their pages). Mirrors POST_PERFORMANCE in
-- crates/pulse-store/src/report.rs. Rows written before this migration have empty values until the next jobs run.

ALTER TABLE report_post_performance /*ON_CLUSTER*/ ADD COLUMN posted_at String DEFAULT '' AFTER tenant_rank;

ALTER TABLE report_post_performance /*ON_CLUSTER*/ ADD COLUMN excerpt String DEFAULT '' AFTER posted_at;

ALTER TABLE report_post_performance /*ON_CLUSTER*/ ADD COLUMN permalink String DEFAULT '' AFTER excerpt;
