//! Cryptographic building blocks for Vern, all thin and audited wrappers
//! around RustCrypto and `vsss-rs`: secret byte containers that zeroize on
//! drop, the 256-bit root key and its Shamir shares, and AES-256-GCM with
//! associated data. Nothing here does I/O or knows where bytes are stored.
#![forbid(unsafe_code)]

mod aead;
mod age;
mod secret;
mod shamir;

pub use crate::age::{AgeError, AgeRecipient};
pub use aead::{AeadError, DataKey, NONCE_LEN, TAG_LEN};
pub use secret::{random_token, sha256, SecretBytes};
pub use shamir::{combine, split, ShamirError, Share, MAX_SHARES};

/// Length in bytes of the root key and of every data key.
pub const KEY_LEN: usize = 32;
