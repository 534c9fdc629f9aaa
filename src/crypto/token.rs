//! MAC-sealed tokens: a payload that a client can carry (in a setting, in a
//! `SET LOCAL x = '...'` literal) but cannot forge or edit.
//!
//! ```text
//! token = "v1." ‖ lowerhex(payload) ‖ "." ‖ lowerhex(tag)
//! tag   = HMAC-SHA256(seal_key, "pg_warden/v1/sealed-token" ‖ 0x00 ‖ payload)
//! ```
//!
//! Only the characters `v 1 . 0-9 a-f` appear: safe inside a single-quoted
//! SQL literal and a GUC value with no escaping. Opening accepts only this
//! canonical form (lowercase hex), so each payload has exactly one valid
//! token. The payload is authenticated, not encrypted: it is readable by
//! anyone who can `SHOW` the setting.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::error::CryptoError;
use super::keys::Key32;

/// Token prefix, naming the format version.
const PREFIX: &str = "v1.";
/// Domain-separation label of the MAC input (followed by a 0x00 byte).
const LABEL: &[u8] = b"pg_warden/v1/sealed-token\0";
/// Hex length of the HMAC-SHA256 tag.
const TAG_HEX_LEN: usize = 64;

fn mac(key: &Key32, payload: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose())
        .expect("HMAC accepts keys of any length");
    mac.update(LABEL);
    mac.update(payload);
    mac
}

/// Seals `payload` into a printable token.
pub fn seal_token(key: &Key32, payload: &[u8]) -> String {
    let tag = mac(key, payload).finalize().into_bytes();
    let mut out = String::with_capacity(PREFIX.len() + 2 * payload.len() + 1 + TAG_HEX_LEN);
    out.push_str(PREFIX);
    out.push_str(&hex::encode(payload));
    out.push('.');
    out.push_str(&hex::encode(tag));
    out
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// Verifies a token (in constant time) and returns its payload.
/// Anything malformed, edited or sealed under another key is
/// [`CryptoError::BadToken`]; never panics.
pub fn open_token(key: &Key32, token: &str) -> Result<Vec<u8>, CryptoError> {
    let body = token.strip_prefix(PREFIX).ok_or(CryptoError::BadToken)?;
    let (payload_hex, tag_hex) = body.split_once('.').ok_or(CryptoError::BadToken)?;
    if tag_hex.len() != TAG_HEX_LEN || !is_lower_hex(tag_hex) || !is_lower_hex(payload_hex) {
        return Err(CryptoError::BadToken);
    }
    let payload = hex::decode(payload_hex).map_err(|_| CryptoError::BadToken)?;
    let mut tag = [0u8; TAG_HEX_LEN / 2];
    hex::decode_to_slice(tag_hex, &mut tag).map_err(|_| CryptoError::BadToken)?;
    mac(key, &payload)
        .verify_slice(&tag)
        .map_err(|_| CryptoError::BadToken)?;
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key32 {
        Key32::from_bytes(core::array::from_fn(|i| i as u8))
    }

    const PAYLOAD: &[u8] = b"{\"ws\":\"0f1e\",\"u\":\"42\",\"role\":\"admin\"}";

    #[test]
    fn round_trip() {
        let k = key();
        for p in [PAYLOAD, b"", b"\0\xff\x01"] {
            let t = seal_token(&k, p);
            assert_eq!(open_token(&k, &t).unwrap(), p);
        }
    }

    /// Pinned output, cross-checked with Python's `hmac` module.
    #[test]
    fn known_answer_vector() {
        assert_eq!(
            seal_token(&key(), b"ctx"),
            "v1.637478.129cc07051337561a0255c353bd3a353f920903abe29eca826565355e24e534c"
        );
    }

    #[test]
    fn token_is_printable_and_sql_safe() {
        let t = seal_token(&key(), PAYLOAD);
        assert!(t.starts_with("v1."));
        assert!(t
            .bytes()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f' | b'v' | b'.')));
        assert!(!t.contains('\'') && !t.contains('\\') && !t.contains(' '));
        assert_eq!(t.len(), 3 + 2 * PAYLOAD.len() + 1 + 64);
    }

    #[test]
    fn every_character_tampered_is_rejected() {
        let k = key();
        let t = seal_token(&k, PAYLOAD);
        let alphabet = "0123456789abcdefABCDEFv.x '-";
        for i in 0..t.len() {
            for c in alphabet.chars() {
                let mut m: Vec<char> = t.chars().collect();
                if m[i] == c {
                    continue;
                }
                m[i] = c;
                let m: String = m.into_iter().collect();
                assert_eq!(
                    open_token(&k, &m).unwrap_err(),
                    CryptoError::BadToken,
                    "{m}"
                );
            }
            // Deleting a character.
            let mut d = t.clone();
            d.remove(i);
            assert_eq!(open_token(&k, &d).unwrap_err(), CryptoError::BadToken);
        }
        // Inserting and appending.
        for extra in ["0", "00", ".", " ", "\n"] {
            assert!(open_token(&k, &format!("{t}{extra}")).is_err());
            assert!(open_token(&k, &format!("{extra}{t}")).is_err());
        }
        // Upper-case hex decodes to the same bytes but is not canonical.
        assert!(open_token(&k, &t.to_ascii_uppercase()).is_err());
        let (head, tag) = t.rsplit_once('.').unwrap();
        assert!(open_token(&k, &format!("{head}.{}", tag.to_ascii_uppercase())).is_err());
    }

    #[test]
    fn wrong_key_rejected() {
        let t = seal_token(&key(), PAYLOAD);
        assert_eq!(
            open_token(&Key32::from_bytes([9; 32]), &t).unwrap_err(),
            CryptoError::BadToken
        );
    }

    #[test]
    fn payload_swap_rejected() {
        let k = key();
        let a = seal_token(&k, b"workspace-a");
        let b = seal_token(&k, b"workspace-b");
        let (_, tag_a) = a.rsplit_once('.').unwrap();
        let (head_b, _) = b.rsplit_once('.').unwrap();
        assert!(open_token(&k, &format!("{head_b}.{tag_a}")).is_err());
    }

    #[test]
    fn garbage_rejected_without_panic() {
        let k = key();
        let tag = "0".repeat(64);
        for g in [
            "",
            "v1",
            "v1.",
            "v1..",
            "v2.00.",
            "v1.zz.00",
            "v1.0.00",
            "v1.abc.def",
            "v1.00",
            "v1.é.00",
            "v1.00.00.00",
            &format!("v1.0.{tag}"),
            &format!("v1.00.{tag}"),
            &format!("v1.00.{tag}0"),
            &format!("v1..{tag}"),
            &format!("v1.00.é{}", &tag[2..]),
            "\u{0}",
            "v1.\u{0}.\u{0}",
        ] {
            assert_eq!(
                open_token(&k, g).unwrap_err(),
                CryptoError::BadToken,
                "{g:?}"
            );
        }
        // Random strings.
        let mut b = [0u8; 4096];
        getrandom::getrandom(&mut b).unwrap();
        for chunk in b.chunks(97) {
            let s = String::from_utf8_lossy(chunk);
            assert!(open_token(&k, &s).is_err());
            let s = format!("v1.{}", hex::encode(chunk));
            assert!(open_token(&k, &s).is_err());
        }
    }

    #[test]
    fn label_is_in_the_mac_input() {
        let k = key();
        let t = seal_token(&k, PAYLOAD);
        let mut plain = <Hmac<Sha256> as Mac>::new_from_slice(k.expose()).unwrap();
        plain.update(PAYLOAD);
        let plain = hex::encode(plain.finalize().into_bytes());
        assert!(!t.ends_with(&plain));
    }
}
