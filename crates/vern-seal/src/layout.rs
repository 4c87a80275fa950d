//! Where the seal keeps its own state in storage. These keys are named here
//! once so that no other code invents them.

/// Keys under this prefix never pass through the barrier: they hold the seal
/// configuration and the keyring, which the barrier is built from.
pub(crate) const RESERVED_PREFIX: &str = "core/seal/";

/// Seal configuration (share count, threshold), stored in clear because it
/// is read while sealed to answer `seal-status`; it holds nothing secret.
pub(crate) const SEAL_CONFIG: &str = "core/seal/config";

/// The keyring, encrypted under the root key: not under the barrier, whose
/// keys it holds.
pub(crate) const KEYRING: &str = "core/seal/keyring";

/// SHA-256 of the root token, behind the barrier.
pub(crate) const ROOT_TOKEN: &str = "core/auth/root-token";

/// Associated data of the keyring ciphertext: binds it to its row.
pub(crate) const KEYRING_AAD: &[u8] = b"vern-keyring-v1\0core/seal/keyring";
