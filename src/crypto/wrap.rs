//! Wrapping random data keys under a workspace KEK (AES-256-GCM).
//!
//! Wrapped layout (60 bytes): `nonce (12) ‖ encrypted key (32) ‖ tag (16)`.
//! The nonce is fresh from the OS for every wrap. The caller binds the
//! wrapped key to its row through the associated data (see
//! [`key_wrap_aad`]), so a wrapped key copied to another workspace, version
//! or kind does not unwrap.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use zeroize::Zeroizing;

use super::error::CryptoError;
use super::keys::{Key32, KEY_LEN};
use super::{NONCE_LEN, TAG_LEN};

/// Length of a wrapped key: nonce ‖ encrypted key ‖ tag.
pub const WRAPPED_KEY_LEN: usize = NONCE_LEN + KEY_LEN + TAG_LEN;

/// Length of [`key_wrap_aad`]'s output.
pub const KEY_WRAP_AAD_LEN: usize = 16 + 4 + 1;

/// The canonical associated data of a wrapped key:
/// `workspace id (16) ‖ key version (u32 big-endian) ‖ key kind (1)`.
/// Fixed length, so the encoding is unambiguous.
pub fn key_wrap_aad(
    workspace_id: &[u8; 16],
    key_version: u32,
    key_kind: u8,
) -> [u8; KEY_WRAP_AAD_LEN] {
    let mut aad = [0u8; KEY_WRAP_AAD_LEN];
    aad[..16].copy_from_slice(workspace_id);
    aad[16..20].copy_from_slice(&key_version.to_be_bytes());
    aad[20] = key_kind;
    aad
}

/// Encrypts `dek` under `kek` with a random nonce; returns 60 bytes.
pub fn wrap_key(kek: &Key32, dek: &Key32, aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::getrandom(&mut nonce).map_err(|_| CryptoError::Random)?;
    let cipher = Aes256Gcm::new(kek.expose().into());

    // Holds the plaintext key until encrypted in place: zeroizing, in case
    // encryption fails.
    let mut out = Zeroizing::new(Vec::with_capacity(WRAPPED_KEY_LEN));
    out.extend_from_slice(&nonce);
    out.extend_from_slice(dek.expose());
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), aad, &mut out[NONCE_LEN..])
        .map_err(|_| CryptoError::TooLarge)?;
    out.extend_from_slice(&tag);
    Ok(std::mem::take(&mut *out))
}

/// Decrypts a wrapped key. Any mismatch (wrong KEK, wrong AAD, tampering)
/// is [`CryptoError::AuthenticationFailed`]; a wrong length is
/// [`CryptoError::BadWrappedKey`].
pub fn unwrap_key(kek: &Key32, wrapped: &[u8], aad: &[u8]) -> Result<Key32, CryptoError> {
    let (nonce, rest) = wrapped
        .split_first_chunk::<NONCE_LEN>()
        .ok_or(CryptoError::BadWrappedKey)?;
    let (ct, tag) = rest
        .split_first_chunk::<KEY_LEN>()
        .ok_or(CryptoError::BadWrappedKey)?;
    let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| CryptoError::BadWrappedKey)?;

    let cipher = Aes256Gcm::new(kek.expose().into());
    // Decrypt straight into the key's own zeroizing buffer.
    let mut key = Key32::zeroed();
    key.expose_mut().copy_from_slice(ct);
    cipher
        .decrypt_in_place_detached(
            Nonce::from_slice(nonce),
            aad,
            key.expose_mut(),
            Tag::from_slice(tag),
        )
        .map_err(|_| CryptoError::AuthenticationFailed)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WS: [u8; 16] = [7; 16];

    fn kek() -> Key32 {
        Key32::from_bytes([0x4b; 32])
    }

    #[test]
    fn round_trip() {
        let dek = Key32::random().unwrap();
        let aad = key_wrap_aad(&WS, 1, 1);
        let w = wrap_key(&kek(), &dek, &aad).unwrap();
        assert_eq!(w.len(), WRAPPED_KEY_LEN);
        assert_eq!(w.len(), 60);
        let back = unwrap_key(&kek(), &w, &aad).unwrap();
        assert_eq!(back.expose(), dek.expose());
    }

    #[test]
    fn key_bytes_not_visible_and_nonce_random() {
        let dek = Key32::from_bytes([0xd5; 32]);
        let aad = key_wrap_aad(&WS, 1, 1);
        let a = wrap_key(&kek(), &dek, &aad).unwrap();
        let b = wrap_key(&kek(), &dek, &aad).unwrap();
        assert_ne!(a, b);
        assert_ne!(a[..NONCE_LEN], b[..NONCE_LEN]);
        assert!(!a.windows(4).any(|w| w == [0xd5; 4]));
    }

    #[test]
    fn aad_binding() {
        let dek = Key32::random().unwrap();
        let aad = key_wrap_aad(&WS, 3, 1);
        let w = wrap_key(&kek(), &dek, &aad).unwrap();
        let mut other_ws = WS;
        other_ws[0] ^= 0x80;
        for bad in [
            key_wrap_aad(&other_ws, 3, 1),
            key_wrap_aad(&WS, 4, 1),
            key_wrap_aad(&WS, 3, 2),
        ] {
            assert_eq!(
                unwrap_key(&kek(), &w, &bad).unwrap_err(),
                CryptoError::AuthenticationFailed
            );
        }
        assert_eq!(
            unwrap_key(&kek(), &w, b"").unwrap_err(),
            CryptoError::AuthenticationFailed
        );
    }

    #[test]
    fn aad_layout() {
        let aad = key_wrap_aad(&[0xaa; 16], 0x0102_0304, 9);
        let mut want = vec![0xaa; 16];
        want.extend_from_slice(&[1, 2, 3, 4, 9]);
        assert_eq!(aad.to_vec(), want);
    }

    #[test]
    fn wrong_kek_refused() {
        let dek = Key32::random().unwrap();
        let w = wrap_key(&kek(), &dek, b"x").unwrap();
        assert_eq!(
            unwrap_key(&Key32::from_bytes([0x4c; 32]), &w, b"x").unwrap_err(),
            CryptoError::AuthenticationFailed
        );
    }

    #[test]
    fn every_bit_flip_and_length_refused() {
        let dek = Key32::random().unwrap();
        let w = wrap_key(&kek(), &dek, b"aad").unwrap();
        for i in 0..w.len() * 8 {
            let mut m = w.clone();
            m[i / 8] ^= 1 << (i % 8);
            assert_eq!(
                unwrap_key(&kek(), &m, b"aad").unwrap_err(),
                CryptoError::AuthenticationFailed,
                "bit {i}"
            );
        }
        for n in 0..w.len() {
            assert_eq!(
                unwrap_key(&kek(), &w[..n], b"aad").unwrap_err(),
                CryptoError::BadWrappedKey
            );
        }
        let mut longer = w.clone();
        longer.push(0);
        assert_eq!(
            unwrap_key(&kek(), &longer, b"aad").unwrap_err(),
            CryptoError::BadWrappedKey
        );
    }
}
