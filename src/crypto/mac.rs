//! MACs over a sequence of fields, for the audit trail: HMAC-SHA256 with a
//! domain label and every field length-prefixed, so no two different
//! sequences of fields ever hash the same bytes.

use super::keys::Key32;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const MAC_LEN: usize = 32;

/// HMAC-SHA256(key, label ‖ for each field: u64 big-endian length ‖ bytes).
pub fn fields_mac(key: &Key32, label: &[u8], fields: &[&[u8]]) -> [u8; MAC_LEN] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key.expose()).expect("HMAC takes any key length");
    mac.update(&(label.len() as u64).to_be_bytes());
    mac.update(label);
    for field in fields {
        mac.update(&(field.len() as u64).to_be_bytes());
        mac.update(field);
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_unambiguous_and_keyed() {
        let k = Key32::from_bytes([7; 32]);
        let m = |l: &[u8], f: &[&[u8]]| fields_mac(&k, l, f);
        assert_eq!(m(b"x", &[b"ab", b"c"]), m(b"x", &[b"ab", b"c"]));
        assert_ne!(m(b"x", &[b"ab", b"c"]), m(b"x", &[b"a", b"bc"]));
        assert_ne!(m(b"x", &[b"ab"]), m(b"x", &[b"ab", b""]));
        assert_ne!(m(b"x", &[b"ab"]), m(b"y", &[b"ab"]));
        assert_ne!(
            m(b"x", &[b"ab"]),
            fields_mac(&Key32::from_bytes([8; 32]), b"x", &[b"ab"])
        );
    }
}
