//! Fisher's noncentral hypergeometric law: how one tick's bad events split between canary and primary.
//!
//! A tick saw `bad` bad events among `canary + primary` requests. If each request of a variant goes bad
//! independently with that variant's probability, the number the canary holds, given `bad`, follows Fisher's
//! noncentral hypergeometric law whose only parameter is the odds ratio ω of the two probabilities. The rate
//! the variants share (a database both call, a shared incident) drops out; that is why the judge conditions.

use statrs::function::factorial::ln_binomial;

/// Below this (in nats, relative to the mode's term) the terms of the normalizing sum are dropped: e^-36 is
/// about 2e-16, so what is dropped is below f64's resolution of the sum.
const CUT: f64 = 36.0;

/// One tick's counts as the law sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    pub canary_requests: u64,
    pub primary_requests: u64,
    /// Bad events of both variants together.
    pub bad: u64,
}

impl Table {
    /// The values the canary's share of the bad events can take.
    pub fn support(&self) -> (u64, u64) {
        let low = self.bad.saturating_sub(self.primary_requests);
        let high = self.canary_requests.min(self.bad);
        (low, high)
    }

    /// True when the split is forced (no bad events, no requests on one side, everything bad): the tick
    /// says nothing about the odds ratio.
    pub fn is_degenerate(&self) -> bool {
        let (low, high) = self.support();
        low >= high
    }

    /// ln(term(y + 1) / term(y)) at odds ratio 1, for y in [low, high).
    fn ln_step(&self, y: u64) -> f64 {
        let (nc, np, e) = (
            self.canary_requests as f64,
            self.primary_requests as f64,
            self.bad as f64,
        );
        let y = y as f64;
        ((nc - y) * (e - y) / ((y + 1.0) * (np - e + y + 1.0))).ln()
    }

    /// ln C(nc, y) + ln C(np, bad - y): the term at odds ratio 1, unnormalized.
    fn ln_base(&self, y: u64) -> f64 {
        ln_binomial(self.canary_requests, y) + ln_binomial(self.primary_requests, self.bad - y)
    }

    /// The most likely value of the canary's share at odds ratio `omega`: the largest y whose term is at
    /// least its predecessor's, from the quadratic that the ratio of successive terms makes.
    fn mode(&self, omega: f64) -> u64 {
        let (low, high) = self.support();
        let (m1, m2, n) = (
            self.canary_requests as f64,
            self.primary_requests as f64,
            self.bad as f64,
        );
        let a = omega - 1.0;
        let b = -(omega * (m1 + n + 2.0) + m2 - n);
        let c = omega * (m1 + 1.0) * (n + 1.0);
        let root = if a.abs() < 1e-12 {
            -c / b
        } else {
            // The smaller root, in the form that does not cancel.
            2.0 * c / (-b + (b * b - 4.0 * a * c).max(0.0).sqrt())
        };
        let mut y = (root.floor().max(0.0) as u64).clamp(low, high);
        // Rounding can leave the estimate one off: settle it on the terms themselves.
        let ln_omega = omega.ln();
        while y < high && self.ln_step(y) + ln_omega > 0.0 {
            y += 1;
        }
        while y > low && self.ln_step(y - 1) + ln_omega < 0.0 {
            y -= 1;
        }
        y
    }

    /// ln P(canary holds `x` of the bad events | odds ratio `omega`). `x` must lie in the support.
    pub fn ln_pmf(&self, x: u64, omega: f64) -> f64 {
        let (low, high) = self.support();
        debug_assert!(low <= x && x <= high, "{x} outside [{low}, {high}]");
        if low >= high {
            return 0.0;
        }
        let ln_omega = omega.ln();
        let mode = self.mode(omega);
        // The normalizing sum, relative to the mode's term, walking out from the mode both ways until the
        // terms no longer count. The law is unimodal, so the terms only shrink on the way out.
        let mut sum = 1.0;
        let mut relative = 0.0;
        let mut y = mode;
        while y < high {
            relative += self.ln_step(y) + ln_omega;
            y += 1;
            if relative < -CUT {
                break;
            }
            sum += relative.exp();
        }
        relative = 0.0;
        y = mode;
        while y > low {
            relative -= self.ln_step(y - 1) + ln_omega;
            y -= 1;
            if relative < -CUT {
                break;
            }
            sum += relative.exp();
        }
        let x_over_mode =
            self.ln_base(x) - self.ln_base(mode) + (x as f64 - mode as f64) * ln_omega;
        x_over_mode - sum.ln()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct summation over the whole support, for small tables.
    fn direct(table: &Table, x: u64, omega: f64) -> f64 {
        let (low, high) = table.support();
        let terms: Vec<f64> = (low..=high)
            .map(|y| table.ln_base(y) + y as f64 * omega.ln())
            .collect();
        let max = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let total = max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln();
        table.ln_base(x) + x as f64 * omega.ln() - total
    }

    #[test]
    fn the_law_sums_to_one_and_agrees_with_direct_summation() {
        let tables = [
            Table {
                canary_requests: 30,
                primary_requests: 270,
                bad: 7,
            },
            Table {
                canary_requests: 500,
                primary_requests: 500,
                bad: 900,
            },
            Table {
                canary_requests: 3,
                primary_requests: 1000,
                bad: 40,
            },
            Table {
                canary_requests: 2000,
                primary_requests: 18000,
                bad: 150,
            },
        ];
        for table in tables {
            let (low, high) = table.support();
            for omega in [0.05, 0.5, 1.0, 1.25, 3.0, 50.0] {
                let total: f64 = (low..=high).map(|x| table.ln_pmf(x, omega).exp()).sum();
                assert!(
                    (total - 1.0).abs() < 1e-9,
                    "{table:?} ω={omega}: sums to {total}"
                );
                for x in [low, (low + high) / 2, high] {
                    let (ours, theirs) = (table.ln_pmf(x, omega), direct(&table, x, omega));
                    assert!(
                        (ours - theirs).abs() < 1e-8 * (1.0 + theirs.abs()),
                        "{table:?} x={x} ω={omega}: {ours} against {theirs}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_mode_is_the_largest_term() {
        let table = Table {
            canary_requests: 400,
            primary_requests: 600,
            bad: 120,
        };
        for omega in [0.1, 1.0, 2.0, 50.0] {
            let mode = table.mode(omega);
            let (low, high) = table.support();
            let best = (low..=high)
                .max_by(|a, b| table.ln_pmf(*a, omega).total_cmp(&table.ln_pmf(*b, omega)))
                .unwrap();
            assert_eq!(mode, best, "ω={omega}");
        }
    }

    #[test]
    fn a_forced_split_carries_no_information() {
        for table in [
            Table {
                canary_requests: 10,
                primary_requests: 90,
                bad: 0,
            },
            Table {
                canary_requests: 0,
                primary_requests: 90,
                bad: 5,
            },
            Table {
                canary_requests: 10,
                primary_requests: 90,
                bad: 100,
            },
        ] {
            assert!(table.is_degenerate(), "{table:?}");
            let (low, _) = table.support();
            assert_eq!(table.ln_pmf(low, 7.0), 0.0);
        }
    }
}
