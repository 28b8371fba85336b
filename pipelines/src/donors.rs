//! The national donor pool: other tenants' pages as a counterfactual's reference, only ever as sums.
//!
//! A tenant's campaign may have few pages that did not take part (two thirds of the case study's did). Other
//! tenants' pages carry what hit every page in the country (the season, a Facebook change, a national news day), so
//! their mean is a reference a page's counterfactual can be scaled to. They are other tenants' data: each tenant's
//! contribution is reduced to a [`Block`] (per day, the sum over its pages and how many pages it is) before anything
//! else sees it, and a pool is the mean per page over whole blocks:
//!
//! - a block counts on a day only when at least [`MIN_POOL_PAGES`] of its pages have that day, so two pools that
//!   differ by whole blocks (one campaign's pool leaves out a tenant that took part, another's does not) never differ
//!   by fewer than that many pages;
//! - and only when no one page holds more than [`MAX_PAGE_SHARE`] of its sum that day (ten pages of which nine are
//!   dormant would otherwise be one page's series);
//! - a pool has a day only when at least [`MIN_POOL_TENANTS`] blocks (so at least `3 × 10` pages) count on it;
//! - the asking tenant's own block, and the blocks of tenants that took part in the campaign, are never in it.

use std::collections::{BTreeMap, BTreeSet};

use crate::campaign::{Donors, Series};

/// Pages a tenant's block needs on a day to count on it.
pub const MIN_POOL_PAGES: usize = 10;
/// Tenants' blocks a pool needs on a day to have it.
pub const MIN_POOL_TENANTS: usize = 3;
/// The largest share of a block's daily sum one page may hold for the block to count that day.
pub const MAX_PAGE_SHARE: f64 = 0.5;

/// One tenant's contribution for one metric: per day, the sum over its pages with that day and how many they are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Block {
    pub tenant: String,
    pub days: BTreeMap<i32, (f64, usize)>,
}

impl Block {
    /// The block of a tenant's pages' daily series (the pages are summed here and not kept).
    /// A day on which one page holds more than [`MAX_PAGE_SHARE`] of the sum is left out of the block.
    pub fn of(tenant: &str, pages: &Series) -> Block {
        let mut days: BTreeMap<i32, (f64, usize, f64)> = BTreeMap::new();
        for page in pages.values() {
            for (d, v) in page {
                let e = days.entry(*d).or_default();
                e.0 += v;
                e.1 += 1;
                e.2 = e.2.max(*v);
            }
        }
        let days = days
            .into_iter()
            .filter(|(_, (sum, _, max))| *max <= MAX_PAGE_SHARE * sum)
            .map(|(d, (sum, n, _))| (d, (sum, n)))
            .collect();
        Block { tenant: tenant.to_owned(), days }
    }
}

/// The pool for a campaign of `tenant`'s: the mean per page over the blocks of the other tenants that did not take
/// part, on the days at least [`MIN_POOL_TENANTS`] blocks of at least [`MIN_POOL_PAGES`] pages each have. `None`
/// when no day qualifies.
pub fn pool(blocks: &[Block], tenant: &str, took_part: &BTreeSet<String>) -> Option<Donors> {
    let mut days: BTreeMap<i32, (f64, usize, usize)> = BTreeMap::new();
    for b in blocks.iter().filter(|b| b.tenant != tenant && !took_part.contains(&b.tenant)) {
        for (d, (sum, n)) in &b.days {
            if *n >= MIN_POOL_PAGES {
                let e = days.entry(*d).or_default();
                e.0 += sum;
                e.1 += n;
                e.2 += 1;
            }
        }
    }
    days.retain(|_, (_, _, tenants)| *tenants >= MIN_POOL_TENANTS);
    let pages = days.values().map(|(_, n, _)| *n).min()?;
    let tenants = days.values().map(|(_, _, t)| *t).min()?;
    let mean = days.into_iter().map(|(d, (sum, n, _))| (d, sum / n as f64)).collect();
    Some(Donors { mean, pages, tenants })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (splitmix64) for the property test.
    struct Gen(u64);
    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Random national worlds: 1-7 tenants of 1-25 pages whose days start and stop at random, some pages dwarfing
    /// the rest. For every pool a tenant can be given: each of its days rests on at least 3 other tenants' blocks of
    /// at least 10 pages each, none holding more than half its block's sum (so two pools, which differ by whole
    /// blocks, never differ by fewer than 10 pages), none of the asking tenant's or of a tenant that took part; the
    /// pool is exactly the mean over those blocks; and moving values between one tenant's pages (its rows) while
    /// keeping its daily sums leaves the pool's common days unchanged.
    #[test]
    fn a_pool_never_rests_on_fewer_than_10_pages_or_3_tenants_and_never_on_a_row() {
        let mut g = Gen(7);
        let mut pools = 0;
        for _ in 0..300 {
            let tenants = 1 + g.below(7) as usize;
            let mut pages_of: Vec<(String, Series)> = Vec::new();
            for t in 0..tenants {
                let mut s = Series::new();
                for p in 0..(1 + g.below(25)) {
                    let (from, to) = (g.below(30) as i32, 30 + g.below(30) as i32);
                    // Now and then a page that dwarfs the rest (a viral post, or nine dormant pages beside it).
                    let big = if g.below(6) == 0 { 20.0 } else { 1.0 };
                    let page: BTreeMap<i32, f64> = (from..to).map(|d| (d, big * g.below(1000) as f64)).collect();
                    s.insert(format!("t{t}p{p}"), page);
                }
                pages_of.push((format!("t{t}"), s));
            }
            let blocks: Vec<Block> = pages_of.iter().map(|(t, s)| Block::of(t, s)).collect();
            for asking in 0..tenants {
                let asking = format!("t{asking}");
                let took_part: BTreeSet<String> =
                    (0..tenants).filter(|_| g.below(4) == 0).map(|t| format!("t{t}")).collect();
                let Some(pool) = pool(&blocks, &asking, &took_part) else { continue };
                pools += 1;
                // The promise's own numbers, not the constants: a change to either must fail here.
                assert!(pool.pages >= 30 && pool.tenants >= 3);
                for (d, mean) in &pool.mean {
                    let behind: Vec<&(String, Series)> = pages_of
                        .iter()
                        .filter(|(t, _)| *t != asking && !took_part.contains(t))
                        .filter(|(_, s)| {
                            let values: Vec<f64> = s.values().filter_map(|p| p.get(d).copied()).collect();
                            let (sum, max) = (values.iter().sum::<f64>(), values.iter().copied().fold(0.0, f64::max));
                            values.len() >= 10 && max <= 0.5 * sum
                        })
                        .collect();
                    assert!(behind.len() >= 3, "day {d} rests on {} tenants", behind.len());
                    let (sum, n) = behind
                        .iter()
                        .flat_map(|(_, s)| s.values().filter_map(|p| p.get(d)))
                        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
                    assert!((mean - sum / n as f64).abs() < 1e-9);
                }
                // Rows moved within each tenant, sums kept: the pool cannot tell.
                let moved: Vec<Block> = pages_of
                    .iter()
                    .map(|(t, s)| {
                        let mut s = s.clone();
                        let ids: Vec<String> = s.keys().cloned().collect();
                        if ids.len() >= 2 {
                            for d in 0..60 {
                                let (a, b) = (&ids[0], &ids[1]);
                                if s[a].contains_key(&d) && s[b].contains_key(&d) {
                                    let x = g.below(500) as f64;
                                    *s.get_mut(a).unwrap().get_mut(&d).unwrap() += x;
                                    *s.get_mut(b).unwrap().get_mut(&d).unwrap() -= x;
                                }
                            }
                        }
                        Block::of(t, &s)
                    })
                    .collect();
                // Moving rows can only change which days a page dominates; on the days both pools have from the same blocks,
                // they agree.
                if let Some(again) = super::pool(&moved, &asking, &took_part) {
                    let same_blocks = |d: &i32| {
                        blocks.iter().zip(&moved).all(|(a, b)| a.days.contains_key(d) == b.days.contains_key(d))
                    };
                    for (d, v) in again.mean.iter().filter(|(d, _)| pool.mean.contains_key(d) && same_blocks(d)) {
                        assert!((v - pool.mean[d]).abs() < 1e-6);
                    }
                }
            }
        }
        assert!(pools > 50, "only {pools} pools were formed: the test tried too little");
    }
}
