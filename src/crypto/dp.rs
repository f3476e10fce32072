//! Noise for every number that leaves in aggregate form (BRIEF C12): the
//! exact discrete Laplace sampler of OpenDP (Canonne, Kamath, Steinke
//! 2020), on integers and exact rationals, so no floating-point artefact
//! can leak the true value (Mironov 2012, the flaw of a hand-written
//! floating-point Laplace). OpenDP is built with `use-openssl`: its random
//! bits come from OpenSSL's `RAND_bytes`, a CSPRNG seeded by the operating
//! system, not from `rand`'s thread RNG.

use dashu::integer::IBig;
use dashu::rational::RBig;

/// Why noise could not be drawn (the aggregate is then not released).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpError {
    #[error("epsilon must be a positive finite number")]
    BadEpsilon,
    #[error("the noise sampler failed: {0}")]
    Sampler(String),
    #[error("the noise does not fit in 64 bits")]
    Overflow,
}

/// The scale `sensitivity / ε` of a discrete Laplace mechanism, exact
/// (ε's binary value as a rational).
pub fn laplace_scale(sensitivity: u64, epsilon: f64) -> Result<RBig, DpError> {
    if !epsilon.is_finite() || epsilon <= 0.0 {
        return Err(DpError::BadEpsilon);
    }
    let eps = RBig::try_from(epsilon).map_err(|_| DpError::BadEpsilon)?;
    Ok(RBig::from(sensitivity) / eps)
}

/// One draw of discrete Laplace noise of `scale`: `P(x) ∝ exp(-|x| / scale)`
/// over the integers. A query of L1 sensitivity Δ released with noise of
/// scale Δ/ε is ε-differentially private.
pub fn discrete_laplace(scale: &RBig) -> Result<i64, DpError> {
    let x: IBig = opendp::traits::samplers::sample_discrete_laplace(scale.clone())
        .map_err(|e| DpError::Sampler(e.to_string()))?;
    i64::try_from(x).map_err(|_| DpError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discrete_laplace_is_centred_with_the_right_spread() {
        let scale = laplace_scale(1, 0.5).unwrap_or_else(|e| panic!("{e}"));
        let n = 20_000;
        let xs: Vec<i64> = (0..n)
            .map(|_| discrete_laplace(&scale).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        let mean = xs.iter().sum::<i64>() as f64 / n as f64;
        let mean_abs = xs.iter().map(|x| x.unsigned_abs()).sum::<u64>() as f64 / n as f64;
        // For scale b: E|X| = 2e^(-1/b) / (1 - e^(-2/b)); b = 2 gives 1.919.
        let b: f64 = 2.0;
        let expected = 2.0 * (-1.0 / b).exp() / (1.0 - (-2.0 / b).exp());
        // Standard errors about 0.02 and 0.014: a rounded continuous
        // Laplace (E|X| about 1.98) would not pass.
        assert!(mean.abs() < 0.1, "{mean}");
        assert!(
            (mean_abs - expected).abs() < 0.05,
            "{mean_abs} vs {expected}"
        );
        // P(X = 0) = tanh(1 / (2b)) for the discrete Laplace.
        let zeros = xs.iter().filter(|x| **x == 0).count() as f64 / n as f64;
        let p0 = (1.0 / (2.0 * b)).tanh();
        assert!((zeros - p0).abs() < 0.02, "{zeros} vs {p0}");
        // Not always the same value (a constant would pass the mean).
        assert!(xs.iter().any(|x| *x != xs[0]));
    }

    /// No floating-point noise sampler anywhere in the crate (Mironov
    /// 2012): noise is drawn here, by OpenDP, and nowhere else. Looks for
    /// the marks of an inverse-CDF Laplace or Gaussian on floats.
    #[test]
    fn no_floating_point_sampler_remains() {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir)
                .unwrap_or_else(|e| panic!("{e}"))
                .flatten()
            {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        walk(&root, &mut files);
        assert!(files.len() > 50);
        let marks = [
            concat!(".l", "n()"),
            concat!("gen::<f", "64>"),
            concat!("random::<f", "64>"),
            concat!("gen_range(0", "."),
            concat!("fn lapl", "ace("),
            concat!("fn gauss", "ian("),
            concat!("Uni", "form"),
            concat!("rand_", "distr"),
        ];
        let mut found = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{e}"));
            for m in marks {
                if text.contains(m) {
                    found.push(format!("{}: {m}", f.display()));
                }
            }
        }
        assert!(found.is_empty(), "floating-point sampling: {found:?}");
    }

    #[test]
    fn epsilon_must_be_positive_and_finite() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(laplace_scale(1, bad), Err(DpError::BadEpsilon), "{bad}");
        }
        assert_eq!(
            laplace_scale(3, 0.5),
            Ok(RBig::from(6u8)),
            "sensitivity / epsilon, exactly"
        );
    }
}
