//! One-sided Fisher exact test for "is this factor over-represented among the complaint units?".
//!
//! The 2×2 table of a factor: of the `n` complaint units, `a` have it; of the `big_n` units of
//! the population (the complaint units included), `k` have it. Under the null hypothesis (the
//! factor has nothing to do with the complaint) `a` is hypergeometric, and the p-value is the
//! upper tail P(X ≥ a) — ties (X = a) included, which is what makes the test exact and
//! conservative. Computed in log space (log-binomials as sums of logs over the shorter side,
//! then log-sum-exp over the tail) so that 10 M-unit populations neither overflow nor lose the
//! tiny p-values that rank the real cause first.

/// ln C(n, k), exact to rounding: a sum of `min(k, n-k)` logarithms.
pub fn ln_choose(n: u64, k: u64) -> f64 {
    if k > n {
        return f64::NEG_INFINITY;
    }
    let k = k.min(n - k);
    let mut s = 0.0;
    for i in 0..k {
        s += ((n - i) as f64).ln() - ((k - i) as f64).ln();
    }
    s
}

/// P(X ≥ a) for X ~ Hypergeometric(population `big_n`, successes `k`, draws `n`): the one-sided
/// (alternative "greater") Fisher exact p-value of the table [[a, n-a], [k-a, big_n-k-n+a]].
/// Inconsistent counts (a > n, a > k, n > big_n, k > big_n) are clamped into the support so the
/// answer stays a probability.
pub fn p_upper(big_n: u64, k: u64, n: u64, a: u64) -> f64 {
    let n = n.min(big_n);
    let k = k.min(big_n);
    // Support of X: max(0, n + k - N) ..= min(n, k).
    let lo = (n + k).saturating_sub(big_n);
    let hi = n.min(k);
    if a <= lo {
        return 1.0;
    }
    if a > hi {
        return 0.0;
    }
    let ln_total = ln_choose(big_n, n);
    // ln P(X = x), then the ratio recurrence P(x+1)/P(x) = (k-x)(n-x) / ((x+1)(N-k-n+x+1)).
    // N-k-n+x+1 is summed before it is subtracted: x > lo keeps it ≥ 1, but N-k-n alone is
    // negative whenever k + n > N (a common factor and a large complaint set).
    let mut ln_p = ln_choose(k, a) + ln_choose(big_n - k, n - a) - ln_total;
    let mut terms = Vec::with_capacity((hi - a + 1) as usize);
    terms.push(ln_p);
    for x in a..hi {
        ln_p += ((k - x) as f64).ln() + ((n - x) as f64).ln()
            - ((x + 1) as f64).ln()
            - ((big_n + x + 1 - k - n) as f64).ln();
        terms.push(ln_p);
    }
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = terms.iter().map(|t| (t - max).exp()).sum();
    (max + sum.ln()).exp().min(1.0)
}

/// How much more often the factor appears among the complaint units than in the population:
/// (a / n) / (k / N); `None` when a denominator is zero.
pub fn lift(big_n: u64, k: u64, n: u64, a: u64) -> Option<f64> {
    if n == 0 || k == 0 || big_n == 0 {
        return None;
    }
    Some((a as f64 / n as f64) / (k as f64 / big_n as f64))
}

#[cfg(test)]
mod tests {
    use super::{lift, p_upper};

    /// Relative agreement with the independent value.
    fn close(got: f64, want: f64) {
        close_to(got, want, 1e-9);
    }

    fn close_to(got: f64, want: f64, tol: f64) {
        let rel = if want == 0.0 {
            got.abs()
        } else {
            ((got - want) / want).abs()
        };
        assert!(rel < tol, "got {got:e}, want {want:e} (rel {rel:e})");
    }

    // Provenance of every expected value: scipy 1.17.1,
    //   python3 -c "from scipy.stats import hypergeom, fisher_exact;
    //     print(hypergeom.sf(a-1, N, K, n), fisher_exact([[a, n-a], [K-a, N-K-n+a]],
    //     alternative='greater')[1])"
    // (both agree to the last digit where both were computed).

    #[test]
    fn small_table_matches_scipy() {
        // N=1000, K=50, n=10, a=5: table [[5, 5], [45, 945]].
        close(p_upper(1000, 50, 10, 5), 5.341195257017983e-05);
    }

    #[test]
    fn ties_are_included_in_the_tail() {
        // N=30, K=15, n=10, a=5: table [[5, 5], [10, 10]] — exactly the expected count; P(X ≥ 5).
        close(p_upper(30, 15, 10, 5), 0.6500749625187406);
        // N=20, K=10, n=10, a=10: table [[10, 0], [0, 10]] — the tail is the single tie term.
        close(p_upper(20, 10, 10, 10), 5.412544112234515e-06);
    }

    #[test]
    fn factor_in_every_unit_carries_no_evidence() {
        // N=100, K=100, n=10, a=10: table [[10, 0], [90, 0]]; scipy: 1.0.
        close(p_upper(100, 100, 10, 10), 1.0);
        assert_eq!(lift(100, 100, 10, 10), Some(1.0));
    }

    /// k + n > N: most of the population has the factor and the complaint set is large (the
    /// demo's screw supplier among 10 failures of 40 drives). Expected values: exact rational
    /// sums, python3 -c "from math import comb; from fractions import Fraction;
    /// print(float(sum(Fraction(comb(K,x)*comb(N-K,n-x), comb(N,n)) for x in range(a, min(n,K)+1))))"
    #[test]
    fn common_factor_in_a_large_complaint_set() {
        // N=40, K=35, n=10, a=10: table [[10, 0], [25, 5]].
        close(p_upper(40, 35, 10, 10), 0.21657183499288762);
        // N=40, K=35, n=10, a=9: table [[9, 1], [26, 4]].
        close(p_upper(40, 35, 10, 9), 0.6330561330561331);
        // N=20, K=12, n=10, a=8: table [[8, 2], [4, 6]].
        close(p_upper(20, 12, 10, 8), 0.0849011669445106);
    }

    #[test]
    fn one_unit() {
        // N=1000, K=1, n=1, a=1: table [[1, 0], [0, 999]]; scipy: 0.001.
        close(p_upper(1000, 1, 1, 1), 0.001);
        // N=1000, K=500, n=1, a=1: table [[1, 0], [499, 500]]; scipy: 0.5.
        close(p_upper(1000, 500, 1, 1), 0.5);
    }

    #[test]
    fn absent_factor_is_p_one() {
        // N=50, K=20, n=5, a=0: table [[0, 5], [20, 25]]; scipy: 1.0.
        close(p_upper(50, 20, 5, 0), 1.0);
    }

    #[test]
    fn ten_million_units_keep_tiny_p_values() {
        // N=10_000_000, K=1000, n=100, a=20: scipy hypergeom.sf(19, 1e7, 1000, 100).
        // ln p ≈ -137: the 1e-9 relative error seen here is 1e-11 relative in log space
        // (rounding of ~300 summed logarithms), far below what could change a ranking.
        close_to(
            p_upper(10_000_000, 1000, 100, 20),
            4.3939903446582295e-60,
            1e-7,
        );
    }

    #[test]
    fn lift_is_the_ratio_of_rates() {
        // 5 of 10 complaint units vs 50 of 1000: 0.5 / 0.05.
        let l = lift(1000, 50, 10, 5).unwrap_or_default();
        assert!((l - 10.0).abs() < 1e-12, "{l}");
        assert_eq!(lift(1000, 0, 10, 0), None);
    }
}
