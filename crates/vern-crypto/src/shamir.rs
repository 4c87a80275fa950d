//! Shamir secret sharing of the root key over GF(256), through `vsss-rs`.
//!
//! A share is one identifier byte followed by 32 share bytes. Shamir itself
//! cannot tell a wrong share from a right one: a combination of wrong shares
//! yields a wrong key, which the seal detects when the key fails to open the
//! keyring.

use crate::secret::SecretBytes;
use crate::KEY_LEN;

/// The most shares one split may produce.
pub const MAX_SHARES: u8 = 255;

/// Length of an encoded share: identifier byte plus key-length payload.
const SHARE_LEN: usize = KEY_LEN + 1;

/// Why a split or a combination was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShamirError {
    /// Threshold and share count are inconsistent.
    #[error("threshold {threshold} of {shares} shares is invalid: need 1 <= threshold <= shares <= {MAX_SHARES}, and threshold >= 2 when shares > 1")]
    Parameters {
        /// Requested threshold.
        threshold: u8,
        /// Requested share count.
        shares: u8,
    },
    /// A share has the wrong length.
    #[error("a share must be {SHARE_LEN} bytes, got {0}")]
    ShareLength(usize),
    /// A share has identifier zero, which no split produces.
    #[error("share identifier 0 is invalid")]
    ZeroIdentifier,
    /// Two shares carry the same identifier.
    #[error("share {0} was given twice")]
    Duplicate(u8),
    /// No shares were given.
    #[error("no shares were given")]
    Empty,
    /// The underlying library rejected the input.
    #[error("shares could not be combined")]
    Combine,
}

/// One share of the root key.
pub type Share = SecretBytes;

/// Splits a 32-byte secret into `shares` shares, any `threshold` of which
/// recover it. A 1-of-1 split returns the secret behind identifier 1.
///
/// The polynomial's coefficients come from a ChaCha20 stream keyed by
/// HMAC-SHA256 of the secret over the parameters, so whoever holds the
/// secret can issue the same share again (a keeper that restarted empty gets
/// back exactly its share) while T−1 shares still reveal nothing: the
/// coefficients are a PRF of the secret, unknown without it.
pub fn split(secret: &SecretBytes, threshold: u8, shares: u8) -> Result<Vec<Share>, ShamirError> {
    let valid = threshold >= 1 && threshold <= shares && !(shares > 1 && threshold < 2);
    if !valid {
        return Err(ShamirError::Parameters { threshold, shares });
    }
    if secret.len() != KEY_LEN {
        return Err(ShamirError::ShareLength(secret.len()));
    }
    if shares == 1 {
        let mut one = Vec::with_capacity(SHARE_LEN);
        one.push(1);
        one.extend_from_slice(secret.expose());
        return Ok(vec![SecretBytes::new(one)]);
    }
    let raw = vsss_rs::Gf256::split_array(
        usize::from(threshold),
        usize::from(shares),
        secret.expose(),
        coefficient_rng(secret, threshold, shares)?,
    )
    .map_err(|_| ShamirError::Parameters { threshold, shares })?;
    Ok(raw.into_iter().map(SecretBytes::new).collect())
}

fn coefficient_rng(
    secret: &SecretBytes,
    threshold: u8,
    shares: u8,
) -> Result<rand_chacha::ChaCha20Rng, ShamirError> {
    use hmac::{Hmac, Mac};
    use rand::SeedableRng;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.expose())
        .map_err(|_| ShamirError::ShareLength(secret.len()))?;
    mac.update(b"vern/shamir-coefficients/v1");
    mac.update(&[threshold, shares]);
    let seed: [u8; 32] = mac.finalize().into_bytes().into();
    Ok(rand_chacha::ChaCha20Rng::from_seed(seed))
}

/// Recombines shares into the secret. With fewer shares than the threshold
/// the result is a different, useless value: callers must verify it.
pub fn combine(shares: &[Share]) -> Result<SecretBytes, ShamirError> {
    if shares.is_empty() {
        return Err(ShamirError::Empty);
    }
    let mut seen = std::collections::BTreeSet::new();
    for share in shares {
        let (&id, _) = share
            .expose()
            .split_first()
            .filter(|_| share.len() == SHARE_LEN)
            .ok_or(ShamirError::ShareLength(share.len()))?;
        if id == 0 {
            return Err(ShamirError::ZeroIdentifier);
        }
        if !seen.insert(id) {
            return Err(ShamirError::Duplicate(id));
        }
    }
    if let [only] = shares {
        // A threshold of one: the share is its identifier and the secret.
        if let Some((_, secret)) = only.expose().split_first() {
            return Ok(SecretBytes::new(secret.to_vec()));
        }
    }
    let raw: Vec<Vec<u8>> = shares.iter().map(|s| s.expose().to_vec()).collect();
    let result = vsss_rs::Gf256::combine_array(&raw).map_err(|_| ShamirError::Combine);
    // The copies held the shares in clear; wipe them before returning.
    for mut r in raw {
        zeroize::Zeroize::zeroize(&mut r);
    }
    result.map(SecretBytes::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_bad_parameters() {
        let key = SecretBytes::random(KEY_LEN);
        for (t, n) in [(0, 5), (6, 5), (1, 5), (0, 0)] {
            assert!(split(&key, t, n).is_err(), "{t} of {n}");
        }
        assert!(split(&key, 1, 1).is_ok());
    }

    #[test]
    fn splits_are_reproducible_from_the_secret_only() {
        let key = SecretBytes::random(KEY_LEN);
        assert_eq!(split(&key, 3, 5).unwrap(), split(&key, 3, 5).unwrap());
        assert_ne!(split(&key, 3, 5).unwrap(), split(&key, 2, 5).unwrap());
        let other = SecretBytes::random(KEY_LEN);
        assert_ne!(
            split(&key, 3, 5).unwrap()[0],
            split(&other, 3, 5).unwrap()[0]
        );
    }

    #[test]
    fn rejects_malformed_shares() {
        let key = SecretBytes::random(KEY_LEN);
        let shares = split(&key, 3, 5).unwrap();
        assert_eq!(combine(&[]), Err(ShamirError::Empty));
        assert_eq!(
            combine(&[shares[0].clone(), shares[0].clone()]),
            Err(ShamirError::Duplicate(shares[0].expose()[0]))
        );
        assert_eq!(
            combine(&[SecretBytes::new(vec![1; 5])]),
            Err(ShamirError::ShareLength(5))
        );
        assert_eq!(
            combine(&[SecretBytes::new(vec![0; SHARE_LEN])]),
            Err(ShamirError::ZeroIdentifier)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_threshold_subset_recovers_and_fewer_do_not(
            n in 2u8..=10, t_off in 0u8..10, pick in proptest::collection::vec(any::<u8>(), 10), flip in any::<u8>()
        ) {
            let t = 2 + t_off % (n - 1);
            let key = SecretBytes::random(KEY_LEN);
            let shares = split(&key, t, n).unwrap();
            prop_assert_eq!(shares.len(), usize::from(n));

            // Choose a pseudo-random subset of exactly t shares.
            let mut idx: Vec<usize> = (0..usize::from(n)).collect();
            for (i, p) in pick.iter().enumerate().take(usize::from(n)) {
                let j = usize::from(*p) % usize::from(n);
                idx.swap(i, j);
            }
            let subset: Vec<Share> = idx[..usize::from(t)].iter().map(|&i| shares[i].clone()).collect();
            prop_assert_eq!(combine(&subset).unwrap(), key.clone());

            let short = &subset[..usize::from(t) - 1];
            if let Ok(wrong) = combine(short) {
                prop_assert_ne!(wrong, key.clone());
            }

            // A corrupted share yields a different key.
            let mut bad = subset[0].expose().to_vec();
            bad[1 + usize::from(flip) % KEY_LEN] ^= 0x5a;
            let mut corrupted = subset.clone();
            corrupted[0] = SecretBytes::new(bad);
            if let Ok(wrong) = combine(&corrupted) {
                prop_assert_ne!(wrong, key);
            }
        }
    }
}
