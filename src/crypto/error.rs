//! The one error type of the crypto core.
//!
//! Every message names the problem and nothing else: no key bytes, no
//! plaintext, no input bytes. The only values ever interpolated are single
//! header bytes (format version, algorithm, payload type), which are public
//! format metadata, never secrets.

/// Errors of the crypto core.
///
/// [`CryptoError::AuthenticationFailed`] deliberately covers a wrong key, a
/// wrong or missing context, and tampered ciphertext alike: telling them
/// apart would turn decryption into an oracle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The value is shorter than the smallest valid envelope.
    #[error("ciphertext is truncated")]
    Truncated,
    /// The value does not start with the envelope magic bytes.
    #[error("value is not a pg_warden ciphertext")]
    NotAnEnvelope,
    /// The envelope's format version is not one this build understands.
    #[error("unsupported ciphertext format version {0}")]
    UnsupportedVersion(u8),
    /// The envelope names an algorithm this build does not implement.
    #[error("unknown ciphertext algorithm {0}")]
    UnknownAlgorithm(u8),
    /// The envelope names a payload type this build does not know.
    #[error("unknown ciphertext payload type {0}")]
    UnknownPayloadType(u8),
    /// Wrong key, wrong or missing context, or tampered data.
    #[error("decryption failed: wrong key, wrong context, or tampered ciphertext")]
    AuthenticationFailed,
    /// A hex-encoded key does not have exactly 64 hex characters.
    #[error("key must be exactly 64 hexadecimal characters")]
    BadKeyLength,
    /// A hex-encoded key has the right length but contains a non-hex character.
    #[error("key contains characters that are not hexadecimal digits")]
    BadKeyEncoding,
    /// A wrapped data key does not have the wrapped-key length.
    #[error("wrapped key has the wrong length")]
    BadWrappedKey,
    /// The value is too large for AES-GCM (more than 2^36 bytes).
    #[error("value is too large to encrypt")]
    TooLarge,
    /// The operating system's random number generator failed.
    #[error("operating system random number generator failed")]
    Random,
    /// A sealed token is malformed or its MAC does not verify.
    #[error("sealed token is malformed or forged")]
    BadToken,
}
