//! AES-GCM nonces: 96 random bits per encryption, never repeated across
//! processes.
//!
//! A `getrandom(2)` call per encryption is safe but costs a system call
//! (about 0.5 µs here, more than the cipher). [`NonceGenerator`] instead
//! draws from ChaCha20 (a CSPRNG, `rand_chacha`) seeded from the OS, and
//! reseeds whenever the process id it is given differs from the one it was
//! seeded in. PostgreSQL backends are `fork()`ed from the postmaster: a
//! generator seeded before a fork and carried into two backends would give
//! both the same stream. Keyed to the process id, a generator seeded in the
//! postmaster (or any parent) is reseeded in each child before its first
//! nonce, so that cannot happen. GCM needs nonces to be unique, not secret.

use super::error::CryptoError;
use super::NONCE_LEN;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use zeroize::Zeroizing;

/// A nonce that came from the OS or a [`NonceGenerator`]; nothing else can
/// make one (a caller-chosen nonce is how GCM gets broken).
pub struct FreshNonce(pub(super) [u8; NONCE_LEN]);

impl FreshNonce {
    /// Straight from `getrandom(2)` (for rare operations such as key
    /// wrapping, and for callers without a generator).
    pub fn from_os() -> Result<FreshNonce, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(|_| CryptoError::Random)?;
        Ok(FreshNonce(nonce))
    }
}

/// Per-process nonce source; see the module documentation.
#[derive(Default)]
pub struct NonceGenerator {
    seeded: Option<(u32, ChaCha20Rng)>,
}

impl NonceGenerator {
    pub const fn new() -> NonceGenerator {
        NonceGenerator { seeded: None }
    }

    /// A fresh nonce in process `pid` (the caller's current process id).
    pub fn next(&mut self, pid: u32) -> Result<FreshNonce, CryptoError> {
        let rng = match &mut self.seeded {
            Some((seeded_in, rng)) if *seeded_in == pid => rng,
            slot => {
                let mut seed = Zeroizing::new([0u8; 32]);
                getrandom::getrandom(&mut *seed).map_err(|_| CryptoError::Random)?;
                &mut slot.insert((pid, ChaCha20Rng::from_seed(*seed))).1
            }
        };
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        Ok(FreshNonce(nonce))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn unique_within_a_process() {
        let mut g = NonceGenerator::new();
        let mut seen = HashSet::new();
        for _ in 0..100_000 {
            assert!(seen.insert(g.next(7).unwrap().0));
        }
    }

    #[test]
    fn a_generator_carried_into_another_process_reseeds() {
        // Simulates fork(): the same generator state, used under two pids.
        let mut parent = NonceGenerator::new();
        parent.next(100).unwrap();
        let mut child_a = NonceGenerator {
            seeded: parent.seeded.clone(),
        };
        let mut child_b = NonceGenerator {
            seeded: parent.seeded.clone(),
        };
        let a: Vec<_> = (0..1000).map(|_| child_a.next(201).unwrap().0).collect();
        let b: Vec<_> = (0..1000).map(|_| child_b.next(202).unwrap().0).collect();
        let set: HashSet<_> = a.iter().chain(b.iter()).collect();
        assert_eq!(set.len(), 2000, "two forked children repeated nonces");
        // Without a pid change the copies would have collided: the test
        // can fail.
        let mut same_a = NonceGenerator {
            seeded: parent.seeded.clone(),
        };
        let mut same_b = NonceGenerator {
            seeded: parent.seeded.clone(),
        };
        assert_eq!(same_a.next(100).unwrap().0, same_b.next(100).unwrap().0);
    }
}
