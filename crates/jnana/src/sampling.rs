//! How the next token is chosen from the logits, defined so that any engine can do it where the
//! logits are: the CPU here ([`choose`]), the GPU engine in one kernel that reads back a single
//! id. The random number is drawn once per token by the generation ([`Choice`]) and handed to
//! whichever engine chooses, so a seed gives the same answer on every engine.
//!
//! The rules (candle's `LogitsProcessor` is close, but its top-p sorts the vocabulary and its draw
//! happens inside it, which a GPU cannot share):
//! - the repeat penalty divides positive logits of recent tokens by it and multiplies negative
//!   ones (as candle's `apply_repeat_penalty`), each token once;
//! - greedy picks the largest logit, the lowest id on a tie;
//! - otherwise `p = softmax(logits / temperature)`; top-k keeps the ids at least as likely as the
//!   k-th; top-p keeps id `i` when the ids strictly more likely than it hold less than `top_p`
//!   of the mass (the smallest such "nucleus", ties kept together); the draw `u ∈ [0, 1)` then
//!   picks the first kept id, in id order, whose running sum of kept probabilities passes
//!   `u × their total`.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The choice of one token, with its random number already drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub pick: Pick,
    /// Choose among the first `within` ids only (the tokenizer's vocabulary when the logits are
    /// padded past it).
    pub within: usize,
    /// 1.0 disables it.
    pub penalty: f32,
    /// Distinct ids the penalty applies to.
    pub penalized: Vec<u32>,
}

impl Choice {
    /// The most likely of the first `within` ids, no penalty.
    pub fn greedy(within: usize) -> Self {
        Self {
            pick: Pick::Greedy,
            within,
            penalty: 1.0,
            penalized: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pick {
    Greedy,
    Draw {
        temperature: f32,
        top_k: Option<usize>,
        /// 1.0 keeps every id.
        top_p: f32,
        u: f32,
    },
}

/// The generation's random numbers: one per sampled token, from its seed.
pub struct Draws(ChaCha8Rng);

impl Draws {
    pub fn new(seed: u64) -> Self {
        Self(ChaCha8Rng::seed_from_u64(seed))
    }

    /// A uniform number in `[0, 1)` with 24 random bits (all an `f32` below 1 can hold evenly).
    pub fn uniform(&mut self) -> f32 {
        (self.0.next_u32() >> 8) as f32 / (1u32 << 24) as f32
    }
}

/// Applies the repeat penalty in place.
pub fn penalize(logits: &mut [f32], penalty: f32, ids: &[u32]) {
    if penalty == 1.0 {
        return;
    }
    for &id in ids {
        if let Some(l) = logits.get_mut(id as usize) {
            *l = if *l >= 0.0 {
                *l / penalty
            } else {
                *l * penalty
            };
        }
    }
}

/// The token `choice` picks from `logits` (`[vocab]`, at least `within` long).
pub fn choose(logits: &[f32], choice: &Choice) -> u32 {
    let mut x = logits[..choice.within.min(logits.len())].to_vec();
    penalize(&mut x, choice.penalty, &choice.penalized);
    match choice.pick {
        Pick::Greedy => argmax(&x),
        Pick::Draw {
            temperature,
            top_k,
            top_p,
            u,
        } => {
            let p = softmax(&x, temperature);
            let mut floor = 0.0f32;
            if let Some(k) = top_k.filter(|&k| k > 0 && k < p.len()) {
                // The k-th largest probability.
                floor = floor_below(&p, k as f32, true);
            }
            if top_p < 1.0 {
                floor = floor.max(nucleus_floor(&p, top_p));
            }
            draw(&p, floor, u)
        }
    }
}

/// The lowest id among the largest values.
pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

/// Sums are taken as the GPU kernel takes them, so both engines round alike: the ids split into
/// this many contiguous chunks (its threads), each summed in order, the chunk sums then added
/// pairwise (its workgroup reduction).
const CHUNKS: usize = 256;

fn chunk_len(n: usize) -> usize {
    n.div_ceil(CHUNKS).max(1)
}

fn chunk_sums(p: &[f32], f: impl Fn(f32) -> f32) -> Vec<f32> {
    let mut sums: Vec<f32> = p
        .chunks(chunk_len(p.len()))
        .map(|c| c.iter().fold(0.0, |acc, &v| acc + f(v)))
        .collect();
    sums.resize(CHUNKS, 0.0);
    sums
}

/// Halves `sums` (a power of two long) pairwise, as a GPU workgroup reduction does.
pub(crate) fn pairwise_sum(sums: &mut [f32]) -> f32 {
    let mut half = sums.len() / 2;
    while half > 0 {
        for t in 0..half {
            sums[t] += sums[t + half];
        }
        half /= 2;
    }
    sums[0]
}

fn softmax(x: &[f32], temperature: f32) -> Vec<f32> {
    let max = x
        .iter()
        .map(|&l| l / temperature)
        .fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = x.iter().map(|&l| (l / temperature - max).exp()).collect();
    let sum = pairwise_sum(&mut chunk_sums(&e, |v| v));
    e.iter().map(|v| v / sum).collect()
}

/// The probability mass (or with `count`, the number of ids) strictly above `t`.
fn above(p: &[f32], t: f32, count: bool) -> f32 {
    pairwise_sum(&mut chunk_sums(p, |v| match (v > t, count) {
        (false, _) => 0.0,
        (true, true) => 1.0,
        (true, false) => v,
    }))
}

/// The least probability with less than `limit` strictly above it (ids with `count`, else
/// mass), by bisection on its bits (non-negative floats order like their bits).
fn floor_below(p: &[f32], limit: f32, count: bool) -> f32 {
    if above(p, 0.0, count) < limit {
        return 0.0;
    }
    let (mut lo, mut hi) = (0u32, 1.0f32.to_bits());
    // above(lo) ≥ limit > above(hi) throughout.
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if above(p, f32::from_bits(mid), count) < limit {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    f32::from_bits(hi)
}

/// The smallest probability the nucleus keeps: the least `t` with less than `top_p` of the mass
/// strictly above it.
pub fn nucleus_floor(p: &[f32], top_p: f32) -> f32 {
    floor_below(p, top_p, false)
}

/// The first id (in id order) whose running sum of the kept probabilities (those ≥ `floor`)
/// passes `u` × their total; whole chunks below it are skipped by their sums.
fn draw(p: &[f32], floor: f32, u: f32) -> u32 {
    let kept = |v: f32| if v >= floor && v > 0.0 { v } else { 0.0 };
    let sums = chunk_sums(p, kept);
    let total = sums.iter().fold(0.0f32, |acc, &s| acc + s);
    let last = p.iter().rposition(|&v| kept(v) > 0.0).unwrap_or(0);
    let target = u * total;
    let mut sum = 0.0f32;
    for (c, chunk) in p.chunks(chunk_len(p.len())).enumerate() {
        if sum + sums[c] <= target {
            sum += sums[c];
            continue;
        }
        for (i, &v) in chunk.iter().enumerate() {
            if kept(v) > 0.0 {
                sum += v;
                if sum > target {
                    return (c * chunk_len(p.len()) + i) as u32;
                }
            }
        }
    }
    last as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choice(pick: Pick) -> Choice {
        Choice {
            pick,
            ..Choice::greedy(usize::MAX)
        }
    }

    fn drawn(temperature: f32, top_k: Option<usize>, top_p: f32, u: f32) -> Choice {
        choice(Pick::Draw {
            temperature,
            top_k,
            top_p,
            u,
        })
    }

    #[test]
    fn greedy_takes_the_lowest_id_of_a_tie() {
        assert_eq!(choose(&[1.0, 3.0, 3.0, 2.0], &choice(Pick::Greedy)), 1);
    }

    #[test]
    fn the_penalty_can_change_the_greedy_pick() {
        let mut c = choice(Pick::Greedy);
        c.penalty = 2.0;
        c.penalized = vec![1];
        // 3 / 2 < 2: the penalized leader loses.
        assert_eq!(choose(&[1.0, 3.0, 2.5, -1.0], &c), 2);
        c.penalized = vec![3];
        assert_eq!(choose(&[1.0, 3.0, 2.5, -1.0], &c), 1);
    }

    #[test]
    fn draws_follow_the_probabilities_in_id_order() {
        // p = [0.1, 0.2, 0.3, 0.4]: u splits [0, 1) at 0.1, 0.3, 0.6.
        let logits: Vec<f32> = [0.1f32, 0.2, 0.3, 0.4].iter().map(|p| p.ln()).collect();
        let at = |u| choose(&logits, &drawn(1.0, None, 1.0, u));
        assert_eq!(
            [at(0.05), at(0.15), at(0.45), at(0.65), at(0.999)],
            [0, 1, 2, 3, 3]
        );
    }

    #[test]
    fn the_nucleus_is_the_smallest_set_reaching_top_p() {
        let p = [0.1f32, 0.2, 0.3, 0.4];
        // Above 0.3: 0.4 < 0.5, so 0.3 is kept; above 0.2: 0.7 ≥ 0.5, so 0.2 is not.
        assert_eq!(nucleus_floor(&p, 0.5), 0.3);
        assert_eq!(nucleus_floor(&p, 0.4), 0.4);
        assert_eq!(nucleus_floor(&p, 0.75), 0.2);
        let logits: Vec<f32> = p.iter().map(|p| p.ln()).collect();
        // Kept [0.3, 0.4]: u < 3/7 picks id 2.
        let at = |u| choose(&logits, &drawn(1.0, None, 0.5, u));
        assert_eq!([at(0.0), at(0.42), at(0.43), at(0.99)], [2, 2, 3, 3]);
    }

    #[test]
    fn top_k_keeps_the_k_most_likely_and_within_cuts_the_vocabulary() {
        let logits = [4.0f32, 1.0, 3.0, 2.0];
        for u in [0.0, 0.3, 0.6, 0.99] {
            let id = choose(&logits, &drawn(1.0, Some(2), 1.0, u));
            assert!(id == 0 || id == 2, "{id}");
        }
        let mut c = drawn(0.5, None, 1.0, 0.99);
        c.within = 2;
        assert!(choose(&logits, &c) < 2);
        let mut c = choice(Pick::Greedy);
        c.within = 3;
        assert_eq!(choose(&[1.0, 2.0, 3.0, 9.0], &c), 2);
    }

    #[test]
    fn a_low_temperature_approaches_greedy() {
        let logits = [1.0f32, 2.0, 1.5];
        for u in [0.001, 0.5, 0.999] {
            assert_eq!(choose(&logits, &drawn(0.01, None, 1.0, u)), 1);
        }
    }

    #[test]
    fn draws_repeat_for_a_seed_and_stay_in_range() {
        let (mut a, mut b) = (Draws::new(7), Draws::new(7));
        let xs: Vec<f32> = (0..1000).map(|_| a.uniform()).collect();
        assert!(xs.iter().all(|&x| (0.0..1.0).contains(&x)));
        assert_eq!(xs, (0..1000).map(|_| b.uniform()).collect::<Vec<_>>());
        let mean = xs.iter().sum::<f32>() / 1000.0;
        assert!((mean - 0.5).abs() < 0.05, "{mean}");
    }
}
