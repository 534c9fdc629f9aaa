//! [`Key32`]: a 256-bit secret that wipes itself.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use super::error::CryptoError;

/// Length of every key handled by the crypto core, in bytes.
pub const KEY_LEN: usize = 32;

/// A 32-byte secret key (master key, KEK, DEK, index key, seal key).
///
/// * zeroized on drop (`ZeroizeOnDrop`);
/// * `Debug` prints `Key32(..)`, never the bytes;
/// * not `Clone`/`Copy`: every copy of key bytes is one more place to wipe.
///   Share a key with a reference or an `Rc`/`Arc` instead.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Key32([u8; KEY_LEN]);

impl Key32 {
    /// A fresh random key from the operating system's CSPRNG.
    ///
    /// Uses `getrandom` directly: each call is a `getrandom(2)` system call
    /// (or a read of the kernel's pool), with no random-generator state kept
    /// in user space. PostgreSQL backends are `fork()`ed from the
    /// postmaster; a userspace generator seeded before the fork (for example
    /// in `_PG_init` of a preloaded library) would hand the same stream to
    /// every backend. The kernel cannot be forked, so this cannot repeat.
    pub fn random() -> Result<Key32, CryptoError> {
        let mut key = Key32::zeroed();
        getrandom::getrandom(&mut key.0).map_err(|_| CryptoError::Random)?;
        Ok(key)
    }

    /// Takes ownership of raw key bytes.
    ///
    /// The array is moved in by value, so the caller's copy is a separate
    /// place in memory: wipe it (or build it inside a `Zeroizing`) if it
    /// held a real key.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Key32 {
        Key32(bytes)
    }

    /// Parses exactly 64 hex digits (either case), ignoring surrounding
    /// ASCII whitespace such as the trailing newline of a key file.
    ///
    /// Decodes straight into the returned key's own (zeroizing) buffer.
    /// Errors never echo the input.
    pub fn from_hex(text: &str) -> Result<Key32, CryptoError> {
        Key32::from_hex_bytes(text.as_bytes())
    }

    /// [`Key32::from_hex`] for raw bytes (for example a key file read into a
    /// `Zeroizing<Vec<u8>>`), so no `String` copy of the key text is needed.
    pub fn from_hex_bytes(text: &[u8]) -> Result<Key32, CryptoError> {
        let trimmed = text.trim_ascii();
        if trimmed.len() != 2 * KEY_LEN {
            return Err(CryptoError::BadKeyLength);
        }
        let mut key = Key32::zeroed();
        // On error `key` is dropped, and so zeroized, with whatever was
        // already decoded.
        hex::decode_to_slice(trimmed, &mut key.0).map_err(|_| CryptoError::BadKeyEncoding)?;
        Ok(key)
    }

    /// The key bytes. Keep the borrow short and never copy them out.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// An all-zero key to be filled in place by a sibling module (HKDF
    /// output, unwrapped key), so key bytes never pass through a temporary.
    pub(super) fn zeroed() -> Key32 {
        Key32([0u8; KEY_LEN])
    }

    /// Mutable access for filling a [`Key32::zeroed`] key in place.
    pub(super) fn expose_mut(&mut self) -> &mut [u8; KEY_LEN] {
        &mut self.0
    }
}

impl fmt::Debug for Key32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key32(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn expected() -> [u8; 32] {
        core::array::from_fn(|i| i as u8)
    }

    #[test]
    fn hex_valid() {
        assert_eq!(Key32::from_hex(HEX).unwrap().expose(), &expected());
    }

    #[test]
    fn hex_uppercase_and_mixed_case() {
        let upper = HEX.to_ascii_uppercase();
        assert_eq!(Key32::from_hex(&upper).unwrap().expose(), &expected());
        let mixed: String = HEX
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 2 == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        assert_eq!(Key32::from_hex(&mixed).unwrap().expose(), &expected());
    }

    #[test]
    fn hex_surrounding_whitespace_is_trimmed() {
        for s in [
            format!("{HEX}\n"),
            format!("{HEX}\r\n"),
            format!("  {HEX}\t\n"),
            format!("\n{HEX}"),
        ] {
            assert_eq!(Key32::from_hex(&s).unwrap().expose(), &expected(), "{s:?}");
        }
        assert_eq!(
            Key32::from_hex_bytes(format!("{HEX}\n").as_bytes())
                .unwrap()
                .expose(),
            &expected()
        );
    }

    #[test]
    fn hex_wrong_length() {
        assert_eq!(
            Key32::from_hex(&HEX[..63]).unwrap_err(),
            CryptoError::BadKeyLength
        );
        assert_eq!(
            Key32::from_hex(&format!("{HEX}0")).unwrap_err(),
            CryptoError::BadKeyLength
        );
        assert_eq!(Key32::from_hex("").unwrap_err(), CryptoError::BadKeyLength);
        assert_eq!(
            Key32::from_hex("\n\n").unwrap_err(),
            CryptoError::BadKeyLength
        );
        assert_eq!(
            Key32::from_hex(&format!("{HEX}{HEX}")).unwrap_err(),
            CryptoError::BadKeyLength
        );
    }

    #[test]
    fn hex_non_hex_characters() {
        let mut bad = HEX.to_string();
        bad.replace_range(10..11, "g");
        assert_eq!(
            Key32::from_hex(&bad).unwrap_err(),
            CryptoError::BadKeyEncoding
        );
        // Interior whitespace is not trimmed.
        let spaced = format!("{} {}", &HEX[..32], &HEX[33..]);
        assert_eq!(
            Key32::from_hex(&spaced).unwrap_err(),
            CryptoError::BadKeyEncoding
        );
        // "0x" prefix is not accepted.
        let prefixed = format!("0x{}", &HEX[2..]);
        assert_eq!(
            Key32::from_hex(&prefixed).unwrap_err(),
            CryptoError::BadKeyEncoding
        );
        // 64 bytes that include a multi-byte UTF-8 character.
        let utf8 = format!("{}é", &HEX[..62]);
        assert_eq!(utf8.len(), 64);
        assert_eq!(
            Key32::from_hex(&utf8).unwrap_err(),
            CryptoError::BadKeyEncoding
        );
    }

    #[test]
    fn errors_do_not_echo_input() {
        let mut bad = HEX.to_string();
        bad.replace_range(0..1, "z");
        let msg = Key32::from_hex(&bad).unwrap_err().to_string();
        assert!(!msg.contains('z'), "{msg}");
        assert!(!msg.contains("0102"), "{msg}");
        let msg = Key32::from_hex(&HEX[..63]).unwrap_err().to_string();
        assert!(!msg.contains("0102"), "{msg}");
    }

    #[test]
    fn debug_hides_bytes() {
        let k = Key32::from_bytes([0xab; 32]);
        let s = format!("{k:?}");
        assert_eq!(s, "Key32(..)");
        assert!(!s.to_lowercase().contains("ab"));
    }

    #[test]
    fn random_keys_differ() {
        let a = Key32::random().unwrap();
        let b = Key32::random().unwrap();
        assert_ne!(a.expose(), b.expose());
        assert_ne!(a.expose(), &[0u8; 32]);
    }

    #[test]
    fn zeroize_wipes() {
        let mut k = Key32::from_bytes([0x5a; 32]);
        k.zeroize();
        assert_eq!(k.expose(), &[0u8; 32]);
    }

    #[test]
    fn key32_is_zeroize_on_drop() {
        fn assert_zod<T: ZeroizeOnDrop>() {}
        assert_zod::<Key32>();
    }
}
