-- Campaign intervals state the nominal level they achieve: 95% needs 39 placebo windows, and with fewer the
-- interval is wider-tailed (90% at 19) and labelled so. Mirrors CAMPAIGN_UPLIFT in crates/pulse-store/src/report.rs.

ALTER TABLE report_campaign_uplift /*ON_CLUSTER*/ ADD COLUMN interval_level Nullable(Float64) AFTER effect_hi;
