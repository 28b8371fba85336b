//! The campaign counterfactual measured on the case-study world with a national pool around it.
//!
//! `cargo test --release --workspace --test counterfactual -- --nocapture`

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{Duration, NaiveDate};
use pulse_pipelines::campaign::{Series, estimate_with_donors, significant};
use pulse_pipelines::donors::{Block, pool};
use pulse_pipelines::frames::day_number;
use pulse_sim::{Scenario, World};

const METRICS: [&str; 4] = ["reach", "views", "engagements", "video_views"];
const CASE_TENANTS: [&str; 2] = ["north-staffs", "stoke"];

fn scenario(seed: u64, with_campaigns: bool) -> Scenario {
    let base = include_str!("../../crates/pulse-sim/scenarios/case-study.toml");
    let mut text = String::new();
    let mut skip = false;
    for line in base.lines() {
        if line.starts_with("[[campaign]]") {
            skip = !with_campaigns;
        } else if line.starts_with('[') {
            skip = false;
        }
        if skip {
            continue;
        }
        text.push_str(line);
        text.push('\n');
        if line.starts_with("participation") {
            text.push_str("tenants = [\"north-staffs\", \"stoke\"]\n");
        }
    }
    for (i, (id, n)) in [("cheshire", 38), ("derby", 44), ("shropshire", 30), ("wolves", 36)].iter().enumerate() {
        text.push_str(&format!(
            "\n[[tenant]]\nid = \"{id}\"\nname = \"{id}\"\ncode_prefix = \"N{}0\"\npractices = {n}\nfacebook_share = 0.67\nlist_size = [2500, 15000]\n",
            i + 1
        ));
    }
    text = text.replace("seed = 2017", &format!("seed = {seed}"));
    Scenario::parse(&text, Path::new("case-study-national.toml")).unwrap()
}

/// Every page's daily figures for the four metrics over [from, to].
fn all_series(world: &World, from: NaiveDate, to: NaiveDate) -> BTreeMap<&'static str, Series> {
    let mut out: BTreeMap<&'static str, Series> = METRICS.iter().map(|m| (*m, Series::new())).collect();
    for p in &world.pages {
        let mut d = from;
        while d <= to {
            let f = world.day(p.index, d);
            for (m, v) in METRICS.iter().zip([f.reach, f.views, f.engagements, f.video_views]) {
                out.get_mut(m).unwrap().entry(p.id.clone()).or_default().insert(day_number(d), v as f64);
            }
            d += Duration::days(1);
        }
    }
    out
}

fn tenant_of(world: &World, page: usize) -> &str {
    world.tenants[world.practices[world.pages[page].practice].tenant].id.as_str()
}

/// The series of one tenant's pages.
fn pages_of(world: &World, series: &Series, tenant: &str) -> Series {
    let of: BTreeMap<&str, &str> = world.pages.iter().map(|p| (p.id.as_str(), tenant_of(world, p.index))).collect();
    series.iter().filter(|(p, _)| of[p.as_str()] == tenant).map(|(p, s)| (p.clone(), s.clone())).collect()
}

/// Every tenant's block of one metric (sums over its pages: what the pool is built from).
fn tenant_blocks(world: &World, series: &Series) -> Vec<Block> {
    world.tenants.iter().map(|t| Block::of(t.id.as_str(), &pages_of(world, series, t.id.as_str()))).collect()
}

#[derive(Default)]
struct Tally {
    bias: BTreeMap<String, Vec<f64>>,
    covered: BTreeMap<String, (usize, usize)>,
    page_covered: BTreeMap<String, (usize, usize)>,
    null_sig: (usize, usize),
    /// Per campaign: null estimates significant, all null estimates, and their placebo windows' count.
    null_by_campaign: BTreeMap<String, (usize, usize, usize)>,
    methods: BTreeMap<String, usize>,
}

fn measure(seeds: std::ops::Range<u64>, use_donors: bool) -> Tally {
    let mut t = Tally::default();
    for seed in seeds {
        let world = World::new(scenario(seed, true), Some(seed));
        let quiet = World::new(scenario(seed, false), Some(seed));
        let from = NaiveDate::from_ymd_opt(2017, 1, 1).unwrap();
        let to = NaiveDate::from_ymd_opt(2018, 5, 22).unwrap();
        let series = all_series(&world, from, to);
        let quiet_series = all_series(&quiet, from, to);
        let windows: Vec<(i32, i32)> =
            world.campaigns.iter().map(|c| (day_number(c.start), day_number(c.start) + c.days as i32 - 1)).collect();
        let blocks_of = |all: &BTreeMap<&'static str, Series>| -> BTreeMap<&'static str, Vec<Block>> {
            METRICS.iter().map(|m| (*m, tenant_blocks(&world, &all[m]))).collect()
        };
        let blocks = blocks_of(&series);
        let quiet_blocks = blocks_of(&quiet_series);
        let took_part: std::collections::BTreeSet<String> = CASE_TENANTS.iter().map(|t| t.to_string()).collect();
        for (ci, c) in world.campaigns.iter().enumerate() {
            let exclude: Vec<(i32, i32)> = windows.iter().copied().filter(|w| *w != windows[ci]).collect();
            for tenant in CASE_TENANTS {
                let mine: Vec<usize> =
                    world.pages.iter().filter(|p| tenant_of(&world, p.index) == tenant).map(|p| p.index).collect();
                let treated: Vec<String> =
                    mine.iter().filter(|p| c.pages.contains(p)).map(|p| world.pages[*p].id.clone()).collect();
                let controls: Vec<String> =
                    mine.iter().filter(|p| !c.pages.contains(p)).map(|p| world.pages[*p].id.clone()).collect();
                for metric in METRICS {
                    if metric == "video_views" && c.kind != pulse_sim::scenario::CampaignKind::Video {
                        continue;
                    }
                    let key = format!("{} / {tenant} / {metric}", c.name);
                    let truth_of = |p: usize| -> f64 {
                        (0..c.days as i64)
                            .map(|d| world.campaign_increment(ci, p, c.start + Duration::days(d)))
                            .map(|x| match metric {
                                "reach" => x.reach,
                                "views" => x.views,
                                "engagements" => x.engagements,
                                _ => x.video_views,
                            })
                            .sum()
                    };
                    let donors = if use_donors { pool(&blocks[metric], tenant, &took_part) } else { None };
                    let est = estimate_with_donors(
                        &series[metric],
                        &treated,
                        &controls,
                        donors.as_ref(),
                        c.start,
                        c.days,
                        &exclude,
                    )
                    .unwrap();
                    let method: String =
                        est.method.split(';').next().unwrap().chars().filter(|c| !c.is_ascii_digit()).collect();
                    *t.methods.entry(method).or_default() += 1;
                    let truth: f64 = mine.iter().filter(|p| c.pages.contains(p)).map(|p| truth_of(*p)).sum();
                    t.bias.entry(key.clone()).or_default().push((est.effect - truth) / truth);
                    let e = t.covered.entry(key.clone()).or_default();
                    e.0 += usize::from(est.interval.unwrap().contains(truth));
                    e.1 += 1;
                    for p in mine.iter().filter(|p| c.pages.contains(p)) {
                        let (_, _, _, iv) = est.pages[&world.pages[*p].id];
                        let e = t.page_covered.entry(key.clone()).or_default();
                        e.0 += usize::from(iv.unwrap().contains(truth_of(*p)));
                        e.1 += 1;
                    }
                    let quiet_donors = if use_donors { pool(&quiet_blocks[metric], tenant, &took_part) } else { None };
                    let null = estimate_with_donors(
                        &quiet_series[metric],
                        &treated,
                        &controls,
                        quiet_donors.as_ref(),
                        c.start,
                        c.days,
                        &exclude,
                    )
                    .unwrap();
                    t.null_sig.0 += usize::from(significant(&null));
                    t.null_sig.1 += 1;
                    let e = t.null_by_campaign.entry(c.name.clone()).or_default();
                    e.0 += usize::from(significant(&null));
                    e.1 += 1;
                    e.2 += null.placebos;
                }
            }
        }
    }
    t
}

impl Tally {
    fn merge(mut self, other: Tally) -> Tally {
        for (k, v) in other.bias {
            self.bias.entry(k).or_default().extend(v);
        }
        for (k, (c, n)) in other.covered {
            let e = self.covered.entry(k).or_default();
            e.0 += c;
            e.1 += n;
        }
        for (k, (c, n)) in other.page_covered {
            let e = self.page_covered.entry(k).or_default();
            e.0 += c;
            e.1 += n;
        }
        self.null_sig.0 += other.null_sig.0;
        self.null_sig.1 += other.null_sig.1;
        for (k, (s, n, p)) in other.null_by_campaign {
            let e = self.null_by_campaign.entry(k).or_default();
            e.0 += s;
            e.1 += n;
            e.2 += p;
        }
        for (k, v) in other.methods {
            *self.methods.entry(k).or_default() += v;
        }
        self
    }
}

/// The goals over 200 seeds of the case-study world with four further tenants in the national pool (both campaigns,
/// both case-study tenants, every metric the campaign can move: 14 estimates a seed), each seed's null twin (the same
/// world without the campaigns) estimated on the same pages and days:
///
/// - 95% intervals cover the injected truth 94-97% of the time, per tenant and per page (over all estimates);
/// - null campaigns are significant in at most 5% of cases;
/// - the mean relative bias over all estimates is within 3%, so is the mean over the combinations of each one's
///   |mean relative bias| (the "mean |relative bias|"), and each campaign, tenant and metric's mean is within
///   3% plus 3 standard errors of 0. One estimate's error is 20-50% of the effect (two days of a page's
///   overdispersed audience), so 200 seeds resolve a single combination's bias only to a few points; and reach,
///   views and engagements of one campaign and tenant come from the same audience draws, so their means move
///   together (seeds 0-99 put the heart weekend in north-staffs at -7% to -10%, seeds 100-199 at +3% to +6%).
///
/// Set `PULSE_CF_SEEDS` for another number of seeds, `PULSE_CF_FIRST_SEED` to start elsewhere than seed 0, and
/// `PULSE_CF_DONORS=0` to measure without the pool.
#[test]
fn the_counterfactual_is_unbiased_and_its_intervals_cover_per_tenant_and_per_page() {
    let n: u64 = std::env::var("PULSE_CF_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
    let donors = std::env::var("PULSE_CF_DONORS").map_or(true, |v| v != "0");
    let first: u64 = std::env::var("PULSE_CF_FIRST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let half = first + n / 2;
    let t = std::thread::scope(|s| {
        let a = s.spawn(move || measure(first..half, donors));
        let b = measure(half..first + n, donors);
        a.join().unwrap().merge(b)
    });
    for (m, k) in &t.methods {
        println!("{k:5} x {m}");
    }
    for (c, (sig, n, placebos)) in &t.null_by_campaign {
        println!(
            "{c}: null campaigns significant {:.1}% ({sig}/{n}), {:.1} placebo windows on average",
            100.0 * *sig as f64 / *n as f64,
            *placebos as f64 / *n as f64
        );
    }
    let (mut all, mut covered, mut page_covered, mut abs_means) = (Vec::new(), (0, 0), (0, 0), Vec::new());
    for (k, b) in &t.bias {
        let mean = b.iter().sum::<f64>() / b.len() as f64;
        abs_means.push(mean.abs());
        let se = (b.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (b.len() - 1).max(1) as f64).sqrt()
            / (b.len() as f64).sqrt();
        let (c, cn) = t.covered[k];
        let (pc, pn) = t.page_covered[k];
        println!(
            "{k}: bias {:+.1}% (se {:.1})  tenant coverage {:.1}%  page coverage {:.1}%",
            mean * 100.0,
            se * 100.0,
            100.0 * c as f64 / cn as f64,
            100.0 * pc as f64 / pn as f64
        );
        assert!(mean.abs() <= 0.03 + 3.0 * se, "{k}: bias {mean} (se {se})");
        all.extend(b.iter().copied());
        covered = (covered.0 + c, covered.1 + cn);
        page_covered = (page_covered.0 + pc, page_covered.1 + pn);
    }
    let bias = all.iter().sum::<f64>() / all.len() as f64;
    // The goal's "mean |relative bias|": each campaign, tenant and metric's mean bias, made absolute, averaged.
    let mean_abs = abs_means.iter().sum::<f64>() / abs_means.len() as f64;
    let tenant_rate = covered.0 as f64 / covered.1 as f64;
    let page_rate = page_covered.0 as f64 / page_covered.1 as f64;
    let null_rate = t.null_sig.0 as f64 / t.null_sig.1 as f64;
    println!(
        "counterfactual over {n} seeds ({} estimates{}): mean relative bias {:+.2}%, mean |relative bias| of the {} combinations {:.2}%; 95% intervals cover {:.1}% per tenant ({}/{}), {:.1}% per page ({}/{}); null campaigns significant {:.1}% ({}/{})",
        all.len(),
        if donors { ", national donor pool offered" } else { ", no donor pool" },
        bias * 100.0,
        abs_means.len(),
        mean_abs * 100.0,
        tenant_rate * 100.0,
        covered.0,
        covered.1,
        page_rate * 100.0,
        page_covered.0,
        page_covered.1,
        null_rate * 100.0,
        t.null_sig.0,
        t.null_sig.1
    );
    assert!(bias.abs() <= 0.03, "mean relative bias {bias}");
    assert!(mean_abs <= 0.03, "mean |relative bias| over combinations {mean_abs}");
    assert!((0.94..=0.97).contains(&tenant_rate), "tenant coverage {tenant_rate}");
    assert!((0.94..=0.97).contains(&page_rate), "page coverage {page_rate}");
    assert!(null_rate <= 0.05, "null campaigns significant {null_rate}");
}

/// The planner with the national donor pool among its candidates is calibrated: over 250 seeds of the case-study world
/// without campaigns, each case-study tenant plans both campaign weekends (reach, 2 days, 85% of its pages) with the
/// pool of every other tenant (a plan cannot know who will take part); a campaign of exactly the planned MDE is then
/// added to the test's own draw of participating pages (in proportion to each page's level over the 8 weeks before)
/// and estimated as a campaign would be, with the pool less the other case-study tenant (it took part). The goal is
/// detection about 80% of the time (75-85%): 1,000 campaigns, a binomial standard deviation of 1.4 points.
#[test]
fn plans_offered_the_pool_detect_campaigns_of_their_mde_about_80_percent_of_the_time() {
    use pulse_pipelines::campaign::plan_with_donors;
    // `PULSE_PLAN_SEEDS` for another number of seeds (250 by default, about 3 minutes on 2 cores: 50 seeds' 200
    // trials resolve the rate only to 2.8 points, 1,000 trials to 1.4).
    let plan_seeds: u64 = std::env::var("PULSE_PLAN_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(250);
    let measure = |seeds: std::ops::Range<u64>| {
        let (mut detected, mut trials, mut pooled) = (0usize, 0usize, 0usize);
        for seed in seeds {
            let world = World::new(scenario(seed, false), Some(seed));
            let from = NaiveDate::from_ymd_opt(2017, 1, 1).unwrap();
            let to = NaiveDate::from_ymd_opt(2018, 5, 22).unwrap();
            let series = all_series(&world, from, to).remove("reach").unwrap();
            let blocks = tenant_blocks(&world, &series);
            for (ti, tenant) in CASE_TENANTS.iter().enumerate() {
                let mine = pages_of(&world, &series, tenant);
                let pages: Vec<String> = mine.keys().cloned().collect();
                let plan_pool = pool(&blocks, tenant, &Default::default());
                let took_part: std::collections::BTreeSet<String> =
                    CASE_TENANTS.iter().map(|t| t.to_string()).collect();
                let estimate_pool = pool(&blocks, tenant, &took_part);
                for start in
                    [NaiveDate::from_ymd_opt(2018, 3, 10).unwrap(), NaiveDate::from_ymd_opt(2018, 5, 19).unwrap()]
                {
                    let planned = plan_with_donors(&mine, plan_pool.as_ref(), start, 2, 0.85, &[], seed).unwrap();
                    assert!(planned.level >= 0.95 && planned.mde > 0.0, "{planned:?}");
                    assert!(planned.method.contains("and the national donor pool (sums"), "{}", planned.method);
                    // The test's own draw: a run of pages in name order from an offset that moves with the seed.
                    let offset = ((seed * 7 + ti as u64 * 13) % pages.len() as u64) as usize;
                    let mut order: Vec<String> = pages.iter().cycle().skip(offset).take(pages.len()).cloned().collect();
                    let controls = order.split_off(planned.participants);
                    let treated = order;
                    let s = day_number(start);
                    let level = |p: &String| (s - 56..s).filter_map(|d| mine[p].get(&d)).sum::<f64>();
                    let total: f64 = treated.iter().map(level).sum();
                    let mut injected = mine.clone();
                    for p in &treated {
                        let part = level(p) / total;
                        for d in s..s + 2 {
                            *injected.get_mut(p).unwrap().get_mut(&d).unwrap() += planned.mde * part / 2.0;
                        }
                    }
                    let est =
                        estimate_with_donors(&injected, &treated, &controls, estimate_pool.as_ref(), start, 2, &[])
                            .unwrap();
                    pooled += usize::from(est.method.starts_with("the ratio to the national donor pool"));
                    trials += 1;
                    detected += usize::from(est.interval.is_some_and(|i| i.lo > 0.0));
                }
            }
        }
        (detected, trials, pooled)
    };
    let ((d1, t1, p1), (d2, t2, p2)) = std::thread::scope(|s| {
        let a = s.spawn(|| measure(0..plan_seeds / 2));
        let b = measure(plan_seeds / 2..plan_seeds);
        (a.join().unwrap(), b)
    });
    let (detected, trials, pooled) = (d1 + d2, t1 + t2, p1 + p2);
    let rate = detected as f64 / trials as f64;
    println!(
        "planner calibration with the donor pool over {plan_seeds} seeds, 85% of pages taking part: {detected}/{trials} campaigns of the planned MDE detected ({:.1}%, the plan promises 80%); the pool chosen for {pooled} of their estimates",
        rate * 100.0
    );
    // The goal is 75-85%: 75.9% (759/1000) over the 250 seeds (the first 50 alone: 72.0%, 144/200). Inside it, but
    // below the 80% promised: a pool tenant's plan is slightly optimistic, for a reason not yet established.
    assert!((0.75..=0.85).contains(&rate), "detected {rate}");
}
