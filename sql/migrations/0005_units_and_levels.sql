-- Figures say what they count. Campaign intervals state the nominal level they achieve (95% needs 39 placebo
-- windows; with fewer the level is lower, 90% at 19, and labelled so). Age-band figures say their unit: people, or
-- video watch time in the current API era, which has no page-level demographics.
-- Mirrors CAMPAIGN_UPLIFT and AGE_BANDS in crates/pulse-store/src/report.rs.

ALTER TABLE report_campaign_uplift /*ON_CLUSTER*/ ADD COLUMN interval_level Nullable(Float64) AFTER effect_hi;

ALTER TABLE report_age_bands /*ON_CLUSTER*/ ADD COLUMN unit String AFTER age_band;
