//! Fréchet distance between Gaussian fits of two sets of feature vectors (the FVD formula).
//!
//! `d² = |μa − μb|² + tr(Σa + Σb − 2 (Σa^½ Σb Σa^½)^½)`. Feature dimensions here are tens, so a
//! Jacobi eigen-solver is exact enough and needs no linear-algebra dependency.

use crate::error::{EvalError, Result};

/// Mean and covariance (divided by `n - 1`) of row vectors of equal length.
fn gaussian(rows: &[Vec<f64>]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let d = rows[0].len();
    let n = rows.len() as f64;
    let mut mean = vec![0.0; d];
    for r in rows {
        for (m, x) in mean.iter_mut().zip(r) {
            *m += x / n;
        }
    }
    let mut cov = vec![vec![0.0; d]; d];
    for r in rows {
        for i in 0..d {
            for j in 0..d {
                cov[i][j] += (r[i] - mean[i]) * (r[j] - mean[j]) / (n - 1.0);
            }
        }
    }
    (mean, cov)
}

/// Eigenvalues and eigenvectors (columns of the returned matrix) of a symmetric matrix.
fn symmetric_eigen(a: &[Vec<f64>]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = a.len();
    let mut m = a.to_vec();
    let mut v = vec![vec![0.0; n]; n];
    for (i, row) in v.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i][j] * m[i][j])
            .sum();
        let scale: f64 = (0..n).map(|i| m[i][i] * m[i][i]).sum::<f64>() + off;
        if off <= 1e-30 * scale.max(1e-300) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if m[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (m[q][q] - m[p][p]) / (2.0 * m[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for row in m.iter_mut() {
                    let (mkp, mkq) = (row[p], row[q]);
                    row[p] = c * mkp - s * mkq;
                    row[q] = s * mkp + c * mkq;
                }
                let (row_p, row_q) = (m[p].clone(), m[q].clone());
                for k in 0..n {
                    m[p][k] = c * row_p[k] - s * row_q[k];
                    m[q][k] = s * row_p[k] + c * row_q[k];
                }
                for row in v.iter_mut() {
                    let (vkp, vkq) = (row[p], row[q]);
                    row[p] = c * vkp - s * vkq;
                    row[q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| m[i][i]).collect(), v)
}

/// Square root of a symmetric positive semi-definite matrix (negative rounding noise clamped).
fn sqrt_psd(a: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = a.len();
    let (vals, vecs) = symmetric_eigen(a);
    let mut out = vec![vec![0.0; n]; n];
    for (k, &l) in vals.iter().enumerate() {
        let s = l.max(0.0).sqrt();
        for i in 0..n {
            for j in 0..n {
                out[i][j] += vecs[i][k] * s * vecs[j][k];
            }
        }
    }
    out
}

fn matmul(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = a.len();
    let mut out = vec![vec![0.0; n]; n];
    for i in 0..n {
        for k in 0..n {
            for j in 0..n {
                out[i][j] += a[i][k] * b[k][j];
            }
        }
    }
    out
}

/// Fréchet distance `d²` (squared, as FVD reports it) between Gaussian fits of `real` and
/// `generated`, each a list of equal-length feature vectors. 0 for identical distributions.
pub fn frechet_distance(real: &[Vec<f64>], generated: &[Vec<f64>]) -> Result<f64> {
    if real.len() < 2 || generated.len() < 2 {
        return Err(EvalError::TooFewClips {
            real: real.len(),
            generated: generated.len(),
        });
    }
    let (ma, ca) = gaussian(real);
    let (mb, cb) = gaussian(generated);
    let mean_term: f64 = ma.iter().zip(&mb).map(|(a, b)| (a - b) * (a - b)).sum();
    let sa = sqrt_psd(&ca);
    let mut inner = matmul(&matmul(&sa, &cb), &sa);
    // Symmetrise away rounding so the eigen-solver sees a symmetric matrix.
    let n = inner.len();
    let transposed: Vec<Vec<f64>> = (0..n)
        .map(|j| (0..n).map(|i| inner[i][j]).collect())
        .collect();
    for (row, trow) in inner.iter_mut().zip(&transposed) {
        for (x, t) in row.iter_mut().zip(trow) {
            *x = 0.5 * (*x + t);
        }
    }
    let (vals, _) = symmetric_eigen(&inner);
    let cross: f64 = vals.iter().map(|l| l.max(0.0).sqrt()).sum();
    let trace: f64 = (0..n).map(|i| ca[i][i] + cb[i][i]).sum();
    Ok((mean_term + trace - 2.0 * cross).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }

    #[test]
    fn identical_sets_are_at_distance_zero() {
        let mut s = 7;
        let a: Vec<Vec<f64>> = (0..20)
            .map(|_| (0..5).map(|_| lcg(&mut s)).collect())
            .collect();
        assert!(frechet_distance(&a, &a).unwrap() < 1e-9);
    }

    #[test]
    fn matches_the_closed_form_for_diagonal_gaussians() {
        // Two point sets with exact diagonal covariances: d² = |Δμ|² + Σ (σa − σb)².
        let a = vec![
            vec![1.0, 0.0],
            vec![-1.0, 0.0],
            vec![0.0, 2.0],
            vec![0.0, -2.0],
        ];
        let b: Vec<Vec<f64>> = a
            .iter()
            .map(|r| vec![3.0 * r[0] + 1.0, r[1] - 2.0])
            .collect();
        // var_a = (2/3, 8/3), var_b = (6, 8/3); mean shift (1, -2).
        let (sa, sb) = ((2.0f64 / 3.0).sqrt(), 6.0f64.sqrt());
        let expected = 1.0 + 4.0 + (sa - sb).powi(2);
        let got = frechet_distance(&a, &b).unwrap();
        assert!((got - expected).abs() < 1e-9, "{got} vs {expected}");
    }

    #[test]
    fn eigen_reconstructs_a_dense_symmetric_matrix() {
        let a = vec![
            vec![4.0, 1.0, 0.5],
            vec![1.0, 3.0, 0.2],
            vec![0.5, 0.2, 1.0],
        ];
        let r = sqrt_psd(&a);
        let back = matmul(&r, &r);
        for i in 0..3 {
            for j in 0..3 {
                assert!((back[i][j] - a[i][j]).abs() < 1e-10);
            }
        }
    }

    #[test]
    fn too_few_clips_is_a_typed_error() {
        let one = vec![vec![1.0]];
        assert!(matches!(
            frechet_distance(&one, &one),
            Err(EvalError::TooFewClips { real: 1, .. })
        ));
    }
}
