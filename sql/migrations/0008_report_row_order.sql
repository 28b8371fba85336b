-- A report reads back in the order the pipelines wrote it (age bands youngest first, weeks in order), as the lake
-- keeps it: each row carries its position in the written batch. Rows written before this migration have 0 and keep
-- the old order (by the first three columns).

ALTER TABLE report_reach_weekly /*ON_CLUSTER*/ ADD COLUMN row_ordinal UInt32 DEFAULT 0;

ALTER TABLE report_reach_tenant_weekly /*ON_CLUSTER*/ ADD COLUMN row_ordinal UInt32 DEFAULT 0;

ALTER TABLE report_age_bands /*ON_CLUSTER*/ ADD COLUMN row_ordinal UInt32 DEFAULT 0;

ALTER TABLE report_campaign_uplift /*ON_CLUSTER*/ ADD COLUMN row_ordinal UInt32 DEFAULT 0;

ALTER TABLE report_campaign_series /*ON_CLUSTER*/ ADD COLUMN row_ordinal UInt32 DEFAULT 0;

ALTER TABLE report_post_performance /*ON_CLUSTER*/ ADD COLUMN row_ordinal UInt32 DEFAULT 0;

ALTER TABLE report_data_quality /*ON_CLUSTER*/ ADD COLUMN row_ordinal UInt32 DEFAULT 0;

ALTER TABLE report_runs /*ON_CLUSTER*/ ADD COLUMN row_ordinal UInt32 DEFAULT 0;
