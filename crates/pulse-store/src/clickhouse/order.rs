//! Rows in the order of their table's sorting key, so that the server finds each block it writes already sorted and
//! skips its own sort (the profile event `MergeTreeDataWriterBlocksAlreadySorted`, on 18.16 and current).
//!
//! The server sorts every part of an insert by the table's `ORDER BY`, comparing strings byte by byte. Profiled
//! during the national ingest benchmark, that sort (`memcmp`, `ColumnString::permute`) was about a sixth of the
//! server's CPU. Here the same order costs a few hash lookups per row and a sort of integers: each string column of
//! the key is ranked among the batch's distinct strings of that column (rows share their strings, `Arc<str>` and
//! `&'static str`, so a batch has few distinct addresses), and a row's key becomes one 128-bit integer.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// One column of a sorting key as the server compares it: a string (bytes, then length, as `str`'s `Ord`), or a
/// number (a `Date` as its day count, an integer).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum KeyPart<'a> {
    Str(&'a str),
    Num(u64),
}

/// The columns of a sorting key, at most [`KEY_PARTS`]; shorter keys end in `Num(0)`, which orders nothing.
pub(crate) const KEY_PARTS: usize = 6;
pub(crate) type SortKey<'a> = [KeyPart<'a>; KEY_PARTS];

/// Hashes a string's address and length: two words, one multiply each (the keys are addresses, not text).
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn write_usize(&mut self, x: usize) {
        self.write_u64(x as u64);
    }
}

type ByAddress<'a> = HashMap<(usize, usize), (&'a str, u64), BuildHasherDefault<AddressHasher>>;

fn address(s: &str) -> (usize, usize) {
    (s.as_ptr() as usize, s.len())
}

/// Bits needed for values up to `max`.
fn bits(max: u64) -> u32 {
    u64::BITS - max.leading_zeros()
}

/// The order of rows `0..n` by `key(i)`, equal keys in their given order; `None` when the key does not fit in 128
/// bits (then the rows go as they are, and the server sorts them as it always did).
pub(crate) fn key_order<'a>(n: usize, key: impl Fn(usize) -> SortKey<'a>) -> Option<Vec<u32>> {
    let n32 = u32::try_from(n).ok()?;
    let mut strings: [ByAddress<'a>; KEY_PARTS] = std::array::from_fn(|_| ByAddress::default());
    // Each number column's least and greatest value: a column is stored as its distance from the least.
    let mut range = [(u64::MAX, 0u64); KEY_PARTS];
    for i in 0..n {
        for (p, part) in key(i).into_iter().enumerate() {
            match part {
                KeyPart::Str(s) => {
                    strings[p].entry(address(s)).or_insert((s, 0));
                }
                KeyPart::Num(x) => range[p] = (range[p].0.min(x), range[p].1.max(x)),
            }
        }
    }
    let mut widths = [0u32; KEY_PARTS];
    for (p, &(least, greatest)) in range.iter().enumerate() {
        if least <= greatest {
            widths[p] = bits(greatest - least);
        }
    }
    // Rank each column's distinct strings by their text (the same text at two addresses takes one rank).
    for (p, column) in strings.iter_mut().enumerate() {
        if column.is_empty() {
            continue;
        }
        let mut texts: Vec<&'a str> = column.values().map(|(s, _)| *s).collect();
        texts.sort_unstable();
        texts.dedup();
        for (s, rank) in column.values_mut() {
            *rank = texts.binary_search(s).expect("every string was collected") as u64;
        }
        widths[p] = widths[p].max(bits(texts.len() as u64 - 1));
    }
    let key_bits: u32 = widths.iter().sum();
    if key_bits > u128::BITS {
        return None;
    }
    let packed = |i: usize| {
        let mut packed = 0u128;
        for (p, part) in key(i).into_iter().enumerate() {
            let value = match part {
                KeyPart::Str(s) => strings[p][&address(s)].1,
                KeyPart::Num(x) => x - range[p].0,
            };
            // A shift by the whole width would overflow; a column of one value has width 0 and adds nothing.
            if widths[p] > 0 {
                packed = (packed << widths[p]) | u128::from(value);
            }
        }
        packed
    };
    // The row's index goes with its key, so an unstable sort keeps equal keys in their given order. Key and index
    // in one word when they fit (the common case: a batch's tenants, metrics, days, pages and breakdowns take
    // about 35 bits), a sort of eight-byte integers; otherwise pairs.
    let index_bits = bits(u64::from(n32.saturating_sub(1)));
    if key_bits + index_bits <= u64::BITS {
        let mut keyed: Vec<u64> = (0..n).map(|i| ((packed(i) as u64) << index_bits) | i as u64).collect();
        keyed.sort_unstable();
        let mask = (1u64 << index_bits) - 1;
        return Some(keyed.into_iter().map(|k| (k & mask) as u32).collect());
    }
    let mut keyed: Vec<(u128, u32)> = (0..n32).map(|i| (packed(i as usize), i)).collect();
    keyed.sort_unstable();
    Some(keyed.into_iter().map(|(_, i)| i).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The order a plain comparison of the parts gives (strings by text, numbers by value), stable.
    fn reference(keys: &[SortKey<'_>]) -> Vec<u32> {
        let cmp = |a: &KeyPart<'_>, b: &KeyPart<'_>| match (a, b) {
            (KeyPart::Str(x), KeyPart::Str(y)) => x.cmp(y),
            (KeyPart::Num(x), KeyPart::Num(y)) => x.cmp(y),
            _ => panic!("a column is a string in one row and a number in another"),
        };
        let mut order: Vec<u32> = (0..keys.len() as u32).collect();
        order.sort_by(|&a, &b| {
            keys[a as usize]
                .iter()
                .zip(&keys[b as usize])
                .map(|(x, y)| cmp(x, y))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        order
    }

    /// A small deterministic generator (no dependency for one test).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, below: u64) -> u64 {
            self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % below
        }
    }

    #[test]
    fn the_packed_order_is_the_order_of_the_parts_for_seeded_keys() {
        // Strings that differ late, by length only, in bytes above ASCII, and the same text at several addresses.
        let words: Vec<String> =
            ["", "a", "ab", "abc", "b", "page_impressions", "page_impressions_unique", "é", "z\u{7f}"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let copies: Vec<String> = words.clone();
        for seed in 0..40u64 {
            let mut rng = Lcg(seed);
            let n = 1 + rng.next(400) as usize;
            let keys: Vec<SortKey<'_>> = (0..n)
                .map(|_| {
                    let word = |rng: &mut Lcg| {
                        let i = rng.next(words.len() as u64) as usize;
                        KeyPart::Str(if rng.next(2) == 0 { &words[i] } else { &copies[i] })
                    };
                    let (a, b) = (word(&mut rng), word(&mut rng));
                    // Narrow numbers, day-like ones, and wide ones (the key then needs more than 64 bits with its index).
                    let day = KeyPart::Num(match seed % 3 {
                        0 => rng.next(3),
                        1 => 700_000 + rng.next(70_000),
                        _ => rng.next(1 << 31) << 20,
                    });
                    let (c, d) = (word(&mut rng), word(&mut rng));
                    [a, b, day, c, d, KeyPart::Num(0)]
                })
                .collect();
            let got = key_order(n, |i| keys[i]).expect("fits in 128 bits");
            assert_eq!(got, reference(&keys), "seed {seed}");
        }
    }

    #[test]
    fn a_key_wider_than_128_bits_is_left_to_the_server() {
        // Six columns each spanning the whole of u64: 384 bits.
        let keys: Vec<SortKey<'_>> = [0, u64::MAX, 7].map(|x| [KeyPart::Num(x); KEY_PARTS]).to_vec();
        assert_eq!(key_order(keys.len(), |i| keys[i]), None);
        // Two such columns fit in 128 bits, with the index beside them.
        let two: Vec<SortKey<'_>> = [u64::MAX, 0, 7, 7]
            .map(|x| {
                [
                    KeyPart::Num(x),
                    KeyPart::Num(u64::MAX - x),
                    KeyPart::Num(0),
                    KeyPart::Num(0),
                    KeyPart::Num(0),
                    KeyPart::Num(0),
                ]
            })
            .to_vec();
        assert_eq!(key_order(two.len(), |i| two[i]), Some(vec![1, 2, 3, 0]));
        assert_eq!(key_order(0, |i| keys[i]), Some(vec![]));
    }
}
