//! MACs over a sequence of fields, for the audit trail: HMAC-SHA256 with a
//! domain label and every field length-prefixed, so no two different
//! sequences of fields ever hash the same bytes.

use super::keys::Key32;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const MAC_LEN: usize = 32;

/// HMAC-SHA256(key, label ‖ for each field: u64 big-endian length ‖ bytes).
pub fn fields_mac(key: &Key32, label: &[u8], fields: &[&[u8]]) -> [u8; MAC_LEN] {
    let mut mac = FieldsMac::new(key, label);
    for field in fields {
        mac.field(field);
    }
    mac.finish()
}

/// [`fields_mac`] fed one field at a time (a batch of audit entries is
/// MAC'ed without gathering its fields first).
pub struct FieldsMac(Hmac<Sha256>);

impl FieldsMac {
    /// Starts a MAC under `key` with a domain `label` (itself the first
    /// field).
    pub fn new(key: &Key32, label: &[u8]) -> FieldsMac {
        let mut mac = FieldsMac(
            <Hmac<Sha256> as Mac>::new_from_slice(key.expose()).expect("HMAC takes any key length"),
        );
        mac.field(label);
        mac
    }

    /// The next field: its length (u64 big-endian), then its bytes.
    pub fn field(&mut self, bytes: &[u8]) -> &mut FieldsMac {
        self.0.update(&(bytes.len() as u64).to_be_bytes());
        self.0.update(bytes);
        self
    }

    /// One field made of several parts (its bytes are their concatenation,
    /// `len` long in all): a long field hashed where it lies.
    pub fn field_in_parts<'a>(
        &mut self,
        len: usize,
        parts: impl IntoIterator<Item = &'a [u8]>,
    ) -> &mut FieldsMac {
        self.0.update(&(len as u64).to_be_bytes());
        for part in parts {
            self.0.update(part);
        }
        self
    }

    /// An optional field: absent, an empty field; present, a field of a
    /// 0x01 byte then its bytes (so absent and empty differ).
    pub fn optional(&mut self, bytes: Option<&[u8]>) -> &mut FieldsMac {
        match bytes {
            None => self.field(&[]),
            Some(b) => {
                self.0.update(&(b.len() as u64 + 1).to_be_bytes());
                self.0.update(&[1]);
                self.0.update(b);
                self
            }
        }
    }

    pub fn finish(self) -> [u8; MAC_LEN] {
        self.0.finalize().into_bytes().into()
    }
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
        assert_ne!(m(b"x", &[b"ab"]), m(b"x", &[b"y"]));
        assert_ne!(m(b"x", &[b"ab"]), m(b"y", &[b"ab"]));
        assert_ne!(
            m(b"x", &[b"ab"]),
            fields_mac(&Key32::from_bytes([8; 32]), b"x", &[b"ab"])
        );
    }

    #[test]
    fn a_field_in_parts_is_the_field() {
        let k = Key32::from_bytes([7; 32]);
        let mut m = FieldsMac::new(&k, b"x");
        m.field_in_parts(5, [&b"ab"[..], b"", b"cde"]);
        assert_eq!(m.finish(), fields_mac(&k, b"x", &[b"abcde"]));
    }

    #[test]
    fn optional_fields_are_a_presence_byte_and_the_bytes() {
        let k = Key32::from_bytes([7; 32]);
        let streamed = |v: Option<&[u8]>| {
            let mut m = FieldsMac::new(&k, b"x");
            m.optional(v);
            m.finish()
        };
        assert_eq!(streamed(None), fields_mac(&k, b"x", &[b""]));
        assert_eq!(streamed(Some(b"ab")), fields_mac(&k, b"x", &[b"\x01ab"]));
        assert_ne!(streamed(None), streamed(Some(b"")));
    }
}
