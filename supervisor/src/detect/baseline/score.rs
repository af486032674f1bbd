//! Scoring a sequence against a baseline, by each `Method`, with its explanation: the most
//! anomalous frame, the n-grams in it training never saw, and for kNN the nearest training
//! sequence and what the scored one has more of.

use std::collections::HashMap;

use super::{symbols_of, Method, Model, Profile, FRAME, N};

/// The score of one sequence and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// In [0, 1]; higher is more anomalous.
    pub score: f64,
    /// Position (index in the sequence) where the worst frame ends.
    pub at: usize,
    /// The syscalls of the worst frame (at most `FRAME`).
    pub window: Vec<u32>,
    /// n-grams of the worst frame training never saw (the shortest new one ending at each
    /// position, shortest first, at most 5).
    pub unseen: Vec<Vec<u32>>,
    /// kNN only: the nearest training sequence and what this one has more of.
    pub nearest: Option<Nearest>,
}

/// The training sequence most like the scored one.
#[derive(Debug, Clone, PartialEq)]
pub struct Nearest {
    /// Where it came from (`cordon learn`'s input).
    pub label: String,
    /// The syscalls and pairs the scored sequence has most more of than the nearest (by share
    /// of the sequence): the symbols, the count here, the count in the nearest. At most 3.
    pub excess: Vec<(Vec<u32>, u32, u32)>,
}

/// Profiles by feature, for the kNN dot products.
#[derive(Debug, Clone)]
pub struct Index {
    postings: HashMap<u64, Vec<(u32, f32)>, std::hash::BuildHasherDefault<super::Identity>>,
    norms: Vec<f64>,
}

impl Index {
    fn of(profiles: &[Profile]) -> Index {
        let mut postings: HashMap<u64, Vec<(u32, f32)>, _> = HashMap::default();
        for (j, p) in profiles.iter().enumerate() {
            let j = u32::try_from(j).expect("fewer than 2^32 profiles");
            for &(k, c) in &p.0 {
                postings.entry(k).or_insert_with(Vec::new).push((j, c as f32));
            }
        }
        Index {
            postings,
            norms: profiles.iter().map(Profile::norm).collect(),
        }
    }
}

impl Model {
    pub fn score(&self, seq: &[u32], method: Method) -> Score {
        let mut s = match method {
            Method::Knn => self.score_knn(seq),
            Method::Frames => self.score_frames(seq),
            Method::Stide => self.score_stide(seq),
        };
        if s.score > 0.0 {
            s.unseen = self.unseen(seq, s.at, s.window.len());
        }
        s
    }

    fn score_frames(&self, seq: &[u32]) -> Score {
        if seq.is_empty() {
            return nothing();
        }
        let frame = FRAME.min(seq.len());
        let mut ring = [0.0f64; FRAME];
        let mut sum = 0.0;
        let (mut best, mut at) = (-1.0, 0);
        for i in 0..seq.len() {
            let a = self.anomaly(seq, i);
            sum += a - ring[i % frame];
            ring[i % frame] = a;
            if i + 1 >= frame {
                let mean = sum / frame as f64;
                if mean > best + 1e-12 {
                    best = mean;
                    at = i;
                }
            }
        }
        Score {
            score: best.clamp(0.0, 1.0),
            at,
            window: seq[at + 1 - frame..=at].to_vec(),
            unseen: Vec::new(),
            nearest: None,
        }
    }

    fn score_stide(&self, seq: &[u32]) -> Score {
        if seq.len() < N {
            let unseen = self.known(seq, seq.len().saturating_sub(1)) < seq.len();
            return Score {
                score: if unseen { 1.0 } else { 0.0 },
                at: seq.len().saturating_sub(1),
                window: seq.to_vec(),
                unseen: Vec::new(),
                nearest: None,
            };
        }
        let mut miss = 0usize;
        let mut first = None;
        for i in N - 1..seq.len() {
            if self.known(seq, i) < N {
                miss += 1;
                first.get_or_insert(i);
            }
        }
        let at = first.unwrap_or(N - 1);
        Score {
            score: miss as f64 / (seq.len() + 1 - N) as f64,
            at,
            window: seq[at + 1 - N..=at].to_vec(),
            unseen: Vec::new(),
            nearest: None,
        }
    }

    /// The distance between the sequence's profile and the nearest training profile, both
    /// scaled to length 1: `sqrt(1 - cos)`, in [0, 1] (the Euclidean distance over √2). The
    /// square root keeps small distances apart when printed to 4 places: one bad step in a
    /// long trace moves the cosine by 1e-5. The frame printed is the frames method's worst.
    fn score_knn(&self, seq: &[u32]) -> Score {
        if seq.is_empty() {
            return nothing();
        }
        let index = self.index.get_or_init(|| Index::of(&self.profiles));
        let q = Profile::of(seq);
        let mut dots = vec![0.0f64; index.norms.len()];
        for &(k, c) in &q.0 {
            if let Some(post) = index.postings.get(&k) {
                let c = f64::from(c);
                for &(j, cj) in post {
                    dots[j as usize] += c * f64::from(cj);
                }
            }
        }
        let qn = q.norm();
        let best = dots
            .iter()
            .zip(&index.norms)
            .enumerate()
            .map(|(j, (d, n))| (j, d / (n * qn)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let mut s = self.score_frames(seq);
        // (The same profile gives 1 - 1e-16 or so: that is 0.)
        let d = 1.0 - best.map_or(0.0, |b| b.1);
        s.score = if d < 1e-12 { 0.0 } else { d.min(1.0).sqrt() };
        s.nearest = best.map(|(j, _)| self.nearest(&q, j, seq.len()));
        s
    }

    fn nearest(&self, q: &Profile, j: usize, len: usize) -> Nearest {
        let near = &self.profiles[j];
        let near_len: u32 = near.0.iter().filter(|(k, _)| k >> 63 == 1).map(|&(_, c)| c).sum();
        let (len, near_len) = (len.max(1) as f64, f64::from(near_len.max(1)));
        let mut excess: Vec<(f64, u64, u32, u32)> =
            q.0.iter()
                .map(|&(k, c)| {
                    let cn = near.count(k);
                    (f64::from(c) / len - f64::from(cn) / near_len, k, c, cn)
                })
                .filter(|e| e.0 > 0.0)
                .collect();
        excess.sort_by(|a, b| b.0.total_cmp(&a.0));
        Nearest {
            label: self.header.profile_labels[j].clone(),
            excess: excess
                .into_iter()
                .take(3)
                .map(|(_, k, c, cn)| (symbols_of(k), c, cn))
                .collect(),
        }
    }

    /// The shortest n-gram ending at each position of the frame `at + 1 - len ..= at` that
    /// training never saw; shortest first, at most 5, each once.
    fn unseen(&self, seq: &[u32], at: usize, len: usize) -> Vec<Vec<u32>> {
        let mut out: Vec<Vec<u32>> = Vec::new();
        for i in (at + 1).saturating_sub(len)..=at.min(seq.len().saturating_sub(1)) {
            let k = self.known(seq, i);
            if k < N.min(i + 1) {
                let g = seq[i - k..=i].to_vec();
                if !out.contains(&g) {
                    out.push(g);
                }
            }
        }
        out.sort_by_key(Vec::len);
        out.truncate(5);
        out
    }
}

fn nothing() -> Score {
    Score {
        score: 0.0,
        at: 0,
        window: Vec::new(),
        unseen: Vec::new(),
        nearest: None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::Alphabet;
    use super::*;

    fn model(train: &[&[u32]]) -> Model {
        let mut m = Model::new(Alphabet::Syscalls);
        for (i, s) in train.iter().enumerate() {
            m.train(s, &format!("t{i}"));
        }
        m
    }

    #[test]
    fn known_sequences_score_zero_and_new_ones_do_not() {
        let normal: Vec<u32> = (0..200).map(|i| [0, 1, 2, 3, 9][i % 5]).collect();
        let m = model(&[&normal]);
        for method in [Method::Knn, Method::Frames, Method::Stide] {
            assert!(m.score(&normal, method).score < 1e-9, "{method:?}");
        }
        let mut odd = normal.clone();
        for x in &mut odd[100..110] {
            *x = 7;
        }
        let s = m.score(&odd, Method::Frames);
        assert!(s.score > 0.4, "{s:?}");
        assert!(s.window.contains(&7));
        assert!((90..=130).contains(&s.at), "{s:?}");
        assert!(m.score(&odd, Method::Stide).score > 0.0);
        let k = m.score(&odd, Method::Knn);
        assert!(k.score > 0.0 && k.window.contains(&7), "{k:?}");
        // The explanation: 7 was never seen, and the sequence has more 7s than its nearest.
        assert_eq!(k.unseen[0], vec![7]);
        let near = k.nearest.unwrap();
        assert_eq!(near.label, "t0");
        assert!(near
            .excess
            .iter()
            .any(|(syms, c, cn)| syms.contains(&7) && *c > 0 && *cn == 0));
    }

    #[test]
    fn knn_finds_the_nearest_of_several_workloads() {
        let a: Vec<u32> = (0..300).map(|i| [0, 1, 2][i % 3]).collect();
        let b: Vec<u32> = (0..300).map(|i| [5, 6, 7, 8][i % 4]).collect();
        let m = model(&[&a, &b]);
        // Either workload alone is normal; a mixture of their pairs less so; new calls most.
        let a2: Vec<u32> = (0..90).map(|i| [0, 1, 2][i % 3]).collect();
        assert!(m.score(&a2, Method::Knn).score < 0.01);
        assert_eq!(m.score(&a2, Method::Knn).nearest.unwrap().label, "t0");
        let mixed: Vec<u32> = a2.iter().chain(&b[..90]).copied().collect();
        let alien: Vec<u32> = (0..90).map(|i| [40, 41][i % 2]).collect();
        let (sm, sa) = (
            m.score(&mixed, Method::Knn).score,
            m.score(&alien, Method::Knn).score,
        );
        assert!(0.1 < sm && sm < sa && sa == 1.0, "{sm} {sa}");
        // Frequencies matter, not only novelty: the same calls in other proportions.
        let skewed: Vec<u32> = (0..300).map(|i| if i % 10 == 0 { 1 } else { 0 }).collect();
        assert!(m.score(&skewed, Method::Knn).score > 0.3);
    }

    #[test]
    fn back_off_grades_positions() {
        let normal: Vec<u32> = (0..300).map(|i| [0, 1, 2, 3, 4, 5][i % 6]).collect();
        let m = model(&[&normal]);
        let mut alien = normal.clone();
        alien[150] = 99;
        // A syscall never seen scores 1; the positions after it recover one call at a time.
        let a: Vec<f64> = (150..157).map(|i| m.anomaly(&alien, i)).collect();
        assert_eq!(a[0], 1.0);
        for w in a.windows(2) {
            assert!(w[1] < w[0], "{a:?}");
        }
        assert_eq!(a[6], 0.0);
        let mut swapped = normal.clone();
        swapped.swap(150, 151);
        let s = m.score(&swapped, Method::Frames);
        assert!(s.score > 0.0 && s.window.len() == FRAME, "{s:?}");
    }

    #[test]
    fn score_does_not_grow_with_length() {
        let normal: Vec<u32> = (0..60).map(|i| [0, 1, 2][i % 3]).collect();
        let m = model(&[&normal]);
        let long: Vec<u32> = normal.iter().cycle().take(6000).copied().collect();
        for method in [Method::Knn, Method::Frames, Method::Stide] {
            // (kNN: the pairs at the ends make the proportions differ a little: 1 - cos is
            // 1e-4 here, its square root 0.01.)
            let s = m.score(&long, method).score;
            assert!(s < 0.02, "{method:?} {s}");
            let s = m.score(&[0, 1, 2, 5, 5, 5], method).score;
            assert!(s > 0.0 && s <= 1.0, "{method:?} {s}");
        }
    }

    #[test]
    fn empty_sequences_and_models() {
        let m = model(&[]);
        assert_eq!(m.score(&[], Method::Knn).score, 0.0);
        assert_eq!(m.score(&[1, 2], Method::Knn).score, 1.0);
    }
}
