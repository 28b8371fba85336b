//! Deterministic randomness: every value is a pure function of (seed, what, where), so the world is generated
//! lazily in any order and the same seed always gives the same bytes. No external RNG crate, so a dependency update
//! can never change a scenario's numbers.

/// SplitMix64's finaliser: a strong 64-bit mix.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hashes a seed and a list of keys into one stream seed.
pub fn key(seed: u64, parts: &[u64]) -> u64 {
    parts.iter().fold(mix(seed), |acc, p| mix(acc ^ p.wrapping_mul(0x2545_F491_4F6C_DD1D)))
}

/// Hashes a string into a key part.
pub fn text(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

/// A small generator for one (seed, key) stream.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64, parts: &[u64]) -> Self {
        Rng(key(seed, parts))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Gamma(shape, scale = 1) by Marsaglia and Tsang.
    pub fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            let u = self.uniform().max(1e-300);
            return self.gamma(shape + 1.0) * u.powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = self.uniform();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }

    /// Poisson(lambda): exact for small means, normal approximation above 60.
    pub fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda <= 0.0 {
            return 0;
        }
        if lambda > 60.0 {
            return (lambda + lambda.sqrt() * self.normal()).round().max(0.0) as u64;
        }
        let limit = (-lambda).exp();
        let mut k = 0;
        let mut p = 1.0;
        loop {
            p *= self.uniform();
            if p <= limit {
                return k;
            }
            k += 1;
        }
    }

    /// Over-dispersed count with mean `mean`: Poisson with a Gamma(shape)-distributed rate (negative binomial).
    /// Lower `shape` is noisier; real page reach is far noisier than Poisson.
    pub fn overdispersed(&mut self, mean: f64, shape: f64) -> u64 {
        if mean <= 0.0 {
            return 0;
        }
        let rate = mean * self.gamma(shape) / shape;
        self.poisson(rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_stream_and_different_keys_differ() {
        let a: Vec<u64> = (0..5)
            .map({
                let mut r = Rng::new(7, &[1, 2]);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..5)
            .map({
                let mut r = Rng::new(7, &[1, 2]);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(Rng::new(7, &[1, 3]).next_u64(), Rng::new(7, &[1, 2]).next_u64());
        assert_ne!(Rng::new(8, &[1, 2]).next_u64(), Rng::new(7, &[1, 2]).next_u64());
    }

    #[test]
    fn distributions_have_their_means() {
        let mut r = Rng::new(1, &[]);
        let n = 20_000;
        let mean = |f: &mut dyn FnMut() -> f64| (0..n).map(|_| f()).sum::<f64>() / n as f64;
        assert!((mean(&mut || r.uniform()) - 0.5).abs() < 0.02);
        let mut r = Rng::new(2, &[]);
        assert!((mean(&mut || r.poisson(4.0) as f64) - 4.0).abs() < 0.1);
        let mut r = Rng::new(3, &[]);
        assert!((mean(&mut || r.gamma(3.0)) - 3.0).abs() < 0.1);
        let mut r = Rng::new(4, &[]);
        let m = mean(&mut || r.overdispersed(500.0, 8.0) as f64);
        assert!((m - 500.0).abs() < 10.0, "{m}");
        // Over-dispersion: variance well above the mean.
        let mut r = Rng::new(5, &[]);
        let xs: Vec<f64> = (0..n).map(|_| r.overdispersed(500.0, 8.0) as f64).collect();
        let mu = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mu).powi(2)).sum::<f64>() / n as f64;
        assert!(var > 10.0 * mu, "var {var} mean {mu}");
    }
}
