//! Blind indexes: a keyed HMAC of a value for equality lookups through an
//! ordinary btree index, without storing the value.
//!
//! ```text
//! blind_index = HMAC-SHA256(index_key,
//!     "pg_warden/v1/blind-index" ‖ 0x00
//!     ‖ len(context) u64 BE ‖ context
//!     ‖ len(value)   u64 BE ‖ value)
//! ```
//!
//! Both fields are length-prefixed, so `("ab", "c")` and `("a", "bc")`
//! hash differently; the label separates blind indexes from every other
//! HMAC the extension computes.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::keys::Key32;

/// Domain-separation label (followed by a 0x00 byte).
const LABEL: &[u8] = b"pg_warden/v1/blind-index\0";

/// Length of a blind index in bytes.
pub const BLIND_INDEX_LEN: usize = 32;

/// HMAC-SHA256 of `(context, value)` under `index_key`.
pub fn blind_index(index_key: &Key32, context: &[u8], value: &[u8]) -> [u8; BLIND_INDEX_LEN] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(index_key.expose())
        .expect("HMAC accepts keys of any length");
    mac.update(LABEL);
    mac.update(&(context.len() as u64).to_be_bytes());
    mac.update(context);
    mac.update(&(value.len() as u64).to_be_bytes());
    mac.update(value);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key32 {
        Key32::from_bytes(core::array::from_fn(|i| i as u8))
    }

    /// Pinned output, cross-checked with Python's `hmac` module over the
    /// documented message.
    #[test]
    fn known_answer_vector() {
        assert_eq!(
            hex::encode(blind_index(&key(), b"users.email", b"jane@example.com")),
            "7c78def89a6003d85191d5c96f4a4b597ed80c397c42ed34ce866889e463b0a1"
        );
    }

    #[test]
    fn deterministic() {
        assert_eq!(
            blind_index(&key(), b"users.email", b"a@b.c"),
            blind_index(&key(), b"users.email", b"a@b.c")
        );
    }

    #[test]
    fn key_separation() {
        let other = Key32::from_bytes([0x77; 32]);
        assert_ne!(
            blind_index(&key(), b"users.email", b"a@b.c"),
            blind_index(&other, b"users.email", b"a@b.c")
        );
    }

    #[test]
    fn context_separation() {
        let k = key();
        assert_ne!(
            blind_index(&k, b"users.email", b"a@b.c"),
            blind_index(&k, b"users.login", b"a@b.c")
        );
        assert_ne!(
            blind_index(&k, b"", b"a@b.c"),
            blind_index(&k, b"x", b"a@b.c")
        );
    }

    #[test]
    fn unambiguous_encoding() {
        let k = key();
        assert_ne!(blind_index(&k, b"ab", b"c"), blind_index(&k, b"a", b"bc"));
        assert_ne!(blind_index(&k, b"", b"ab"), blind_index(&k, b"ab", b""));
        assert_ne!(blind_index(&k, b"", b""), blind_index(&k, b"\0", b""));
        // Values that differ only in a length-like prefix.
        let mut v = 3u64.to_be_bytes().to_vec();
        v.extend_from_slice(b"abc");
        assert_ne!(blind_index(&k, b"", &v), blind_index(&k, b"abc", b""));
    }

    #[test]
    fn values_differ() {
        let k = key();
        assert_ne!(blind_index(&k, b"c", b"a"), blind_index(&k, b"c", b"b"));
        assert_ne!(blind_index(&k, b"c", b"a"), blind_index(&k, b"c", b"A"));
    }

    #[test]
    fn differs_from_plain_hmac_of_value() {
        // The label and encoding are really in the MAC input.
        let k = key();
        let mut plain = <Hmac<Sha256> as Mac>::new_from_slice(k.expose()).unwrap();
        plain.update(b"a@b.c");
        let plain: [u8; 32] = plain.finalize().into_bytes().into();
        assert_ne!(blind_index(&k, b"", b"a@b.c"), plain);
    }
}
