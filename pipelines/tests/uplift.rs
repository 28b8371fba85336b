//! The uplift estimator measured against the simulator's truth across many seeds: interval coverage of the
//! injected effect, and false positives on placebo campaigns with nothing injected. Prints both rates.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{Duration, NaiveDate};
use pulse_pipelines::campaign::{Series, estimate, significant};
use pulse_pipelines::frames::day_number;
use pulse_sim::{Scenario, World};

const SEEDS: u64 = 100;

fn scenario(seed: u64) -> Scenario {
    // Effect sizes vary with the seed: from barely detectable to large.
    let (lo, hi) = [(60, 120), (150, 300), (300, 600), (600, 1000), (100, 900)][(seed % 5) as usize];
    let text = format!(
        r#"
[world]
name = "uplift"
seed = {seed}
api_version = "v2.12"
start = "2017-01-02"
end = "2018-03-31"

[[tenant]]
id = "alpha"
name = "Alpha"
code_prefix = "M83"
practices = 24
facebook_share = 1.0
list_size = [3000, 12000]

[[tenant]]
id = "beta"
name = "Beta"
code_prefix = "M84"
practices = 20
facebook_share = 1.0
list_size = [3000, 12000]

[[campaign]]
name = "test campaign"
kind = "video"
start = "2018-03-10"
days = 2
participation = 0.5
reach_per_page = [{lo}, {hi}]
views_per_reach = 1.3
video_views_per_reach = 0.5
engaged_share = 0.1
message = "test #Campaign"
"#
    );
    Scenario::parse(&text, Path::new("uplift.toml")).unwrap()
}

fn views(world: &World, from: NaiveDate, to: NaiveDate) -> Series {
    let mut s = Series::new();
    for p in &world.pages {
        let mut m = BTreeMap::new();
        let mut d = from;
        while d <= to {
            m.insert(day_number(d), world.day(p.index, d).views as f64);
            d += Duration::days(1);
        }
        s.insert(p.id.clone(), m);
    }
    s
}

#[test]
fn intervals_cover_the_injected_effect_and_placebos_are_rarely_significant() {
    let mut covered = 0;
    let mut false_positives = 0;
    let mut detected = 0;
    for seed in 0..SEEDS {
        let world = World::new(scenario(seed), Some(seed));
        let c = &world.campaigns[0];
        let from = world.start();
        let series = views(&world, from, c.start + Duration::days(3));
        let treated: Vec<String> = c.pages.iter().map(|&p| world.pages[p].id.clone()).collect();
        let controls: Vec<String> =
            world.pages.iter().filter(|p| !c.pages.contains(&p.index)).map(|p| p.id.clone()).collect();
        let truth: f64 = c
            .pages
            .iter()
            .flat_map(|&p| (0..c.days as i64).map(move |d| (p, d)))
            .map(|(p, d)| world.campaign_increment(0, p, c.start + Duration::days(d)).views)
            .sum();
        let est = estimate(&series, &treated, &controls, c.start, c.days, &[]).unwrap();
        let (lo, hi) = est.interval.expect("enough placebo windows");
        if lo <= truth && truth <= hi {
            covered += 1;
        }
        if significant(&est) {
            detected += 1;
        }
        // A placebo campaign: the same pages, ten weeks earlier, when nothing was injected.
        let placebo_start = c.start - Duration::days(70);
        let placebo = estimate(&series, &treated, &controls, placebo_start, c.days, &[]).unwrap();
        if significant(&placebo) {
            false_positives += 1;
        }
    }
    let coverage = covered as f64 / SEEDS as f64;
    let fp = false_positives as f64 / SEEDS as f64;
    println!(
        "uplift over {SEEDS} seeds: 95% interval coverage of the injected effect {:.1}% ({covered}/{SEEDS}); placebo campaigns called significant {:.1}% ({false_positives}/{SEEDS}); real campaigns detected {detected}/{SEEDS}",
        coverage * 100.0,
        fp * 100.0
    );
    assert!((0.90..=0.99).contains(&coverage), "coverage {coverage}");
    assert!(fp <= 0.10, "false positives {fp}");
}
