//! The cryptographic core of pg_warden: pure Rust, no pgrx, no `unsafe`.
//!
//! Everything here is built from RustCrypto crates (`aes-gcm`, `hkdf`,
//! `hmac`, `sha2`), `getrandom` and `zeroize`; nothing is hand-rolled.
//!
//! * [`keys`]: [`Key32`], a 32-byte secret that zeroizes on drop and never
//!   prints its bytes.
//! * [`kdf`]: HKDF-SHA256 from the master key: per-workspace KEKs, the
//!   session-context seal key and the public master key id.
//! * [`wrap`]: random data keys wrapped under a KEK (AES-256-GCM).
//! * [`envelope`]: the self-describing ciphertext `bytea` and its
//!   encryption/decryption.
//! * [`blind`]: blind indexes (HMAC-SHA256) for equality lookups.
//! * [`token`]: MAC-sealed printable tokens for session contexts.
//!
//! # Design choices
//!
//! **Randomness.** Keys, and the nonces of rare operations (wrapping a
//! key), come straight from the kernel (`getrandom(2)`). Per-row nonces
//! come from a ChaCha20 generator seeded from the kernel and reseeded
//! whenever the process id changes (see [`nonce`]): PostgreSQL backends are
//! `fork()`ed from the postmaster, and a generator seeded before a fork
//! (e.g. in `_PG_init` of a preloaded library) and carried into two
//! backends would repeat nonces; keyed to the process id, it cannot.
//!
//! **Memory.** Every key type zeroizes on drop, and so do AES's round keys
//! inside a cached cipher (the `aes` crate's `zeroize` feature). GHASH's
//! key inside a cached cipher is not wiped: `aes-gcm` 0.10's run-time
//! dispatch keeps it without a destructor (its copies made while a cipher
//! is built are, with `ghash`'s and `polyval`'s `zeroize` features).
//!
//! **The associated data binds the whole header.** AES-GCM authenticates
//! the verbatim 37-byte envelope header (magic, version, algorithm, payload
//! type, workspace id, key version, nonce) plus an optional caller context
//! (e.g. `'invoices.amount:' || id`). Editing the workspace id or key
//! version, relabelling a text value as bytea, or copying a ciphertext to
//! another row or column (another context) makes decryption fail. "No
//! context" and "empty context" are encoded differently.
//!
//! **One error for every authentication failure.** A wrong key, a wrong,
//! missing or extra context and tampered bytes all surface as
//! [`CryptoError::AuthenticationFailed`]. Telling them apart would let an
//! attacker use decryption as an oracle (for instance to learn which
//! context a ciphertext belongs to). Structural problems that need no key
//! (not an envelope, unknown version, truncated) are reported precisely,
//! since anyone can read the header anyway.
//!
//! **Nonce budget.** With random 96-bit nonces NIST SP 800-38D allows at
//! most 2^32 encryptions under one key (keeping the chance of a nonce
//! collision below 2^-32; a collision would leak the XOR of two plaintexts
//! and the GHASH key). Every workspace has its own data key, and every
//! rotation starts a new key version, so each key only ever sees one
//! tenant's writes until its next rotation: 2^32 is about 4.3 billion
//! encryptions, some 136 years at a sustained 1,000 encryptions a second
//! into a single workspace. Rotate long before that (and the integrator may
//! want to force rotation on very hot workspaces).
//!
//! **Caching.** HKDF (~0.5 µs) and AES key expansion cost more than
//! encrypting a short field (~0.1 µs): derive KEKs and build [`DataKey`]s
//! once per key, cache them per backend, and use [`seal_with`] /
//! [`open_with`] per row.

#![forbid(unsafe_code)]

pub mod blind;
pub mod envelope;
pub mod error;
pub mod kdf;
pub mod keys;
pub mod mac;
pub mod nonce;
pub mod token;
pub mod wrap;

/// AES-GCM nonce length in bytes (96 bits).
pub const NONCE_LEN: usize = 12;
/// AES-GCM tag length in bytes (128 bits).
pub const TAG_LEN: usize = 16;

pub use blind::{blind_index, BLIND_INDEX_LEN};
pub use envelope::{
    looks_like_envelope, open, open_into, open_with, parse, seal, seal_into, seal_with, DataKey,
    Envelope, EnvelopeHeader, PayloadType, ALGORITHM_AES_256_GCM, ENVELOPE_OVERHEAD,
    FORMAT_VERSION, HEADER_LEN, MAGIC,
};
pub use error::CryptoError;
pub use kdf::{derive_audit_key, derive_kek, derive_seal_key, master_key_id, MASTER_KEY_ID_LEN};
pub use keys::{Key32, KEY_LEN};
pub use mac::{fields_mac, FieldsMac, MAC_LEN};
pub use nonce::{FreshNonce, NonceGenerator};
pub use token::{open_token, seal_token};
pub use wrap::{key_wrap_aad, unwrap_key, wrap_key, KEY_WRAP_AAD_LEN, WRAPPED_KEY_LEN};
