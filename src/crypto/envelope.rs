//! The self-describing ciphertext envelope stored in `bytea` columns.
//!
//! # Format (version 1) — a public, stable format
//!
//! ```text
//! offset  len  field
//!      0    2  magic            0x57 0x44 ("WD")
//!      2    1  format version   1
//!      3    1  algorithm        1 = AES-256-GCM
//!      4    1  payload type     1 = bytea, 2 = text, 3 = jsonb
//!      5   16  workspace id     UUID bytes, network order
//!     21    4  key version      u32 big-endian
//!     25   12  nonce            random, from the OS per encryption
//!     37    n  ciphertext       AES-256-GCM (CTR), same length as plaintext
//!   37+n   16  tag              GCM tag
//! ```
//!
//! The header is bytes `0..37` (everything before the ciphertext); the
//! smallest envelope (empty plaintext) is 53 bytes. Reading the header
//! needs no key ([`parse`]).
//!
//! # Associated data
//!
//! ```text
//! AAD = header (37 bytes, verbatim)
//!     ‖ 0x00                                  when there is no context
//!     ‖ 0x01 ‖ len(context) u64 BE ‖ context  when there is one
//! ```
//!
//! Authenticating the verbatim header means the workspace id, key version,
//! payload type (and version, algorithm, nonce) cannot be edited without
//! the tag failing. The context flag byte distinguishes "no context" from
//! an empty context, and the length prefix keeps the encoding unambiguous.

use std::fmt;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use zeroize::{Zeroize, Zeroizing};

use super::error::CryptoError;
use super::keys::Key32;
use super::nonce::FreshNonce;
use super::{NONCE_LEN, TAG_LEN};

/// Envelope magic: "WD".
pub const MAGIC: [u8; 2] = [0x57, 0x44];
/// The only format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Algorithm byte of AES-256-GCM with a 96-bit nonce and 128-bit tag.
pub const ALGORITHM_AES_256_GCM: u8 = 1;
/// Length of the header (everything before the ciphertext), nonce included.
pub const HEADER_LEN: usize = 2 + 1 + 1 + 1 + 16 + 4 + NONCE_LEN;
/// Bytes an envelope adds to its plaintext (header + tag); also the length
/// of the smallest valid envelope.
pub const ENVELOPE_OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// Associated data up to this length is built on the stack (no allocation
/// for the usual short contexts such as `'invoices.amount:' || id`).
const AAD_STACK_LEN: usize = 256;

/// What the plaintext was before encryption, so decryption can refuse to
/// return the wrong SQL type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PayloadType {
    /// `bytea`
    Bytea = 1,
    /// `text`
    Text = 2,
    /// `jsonb`
    Jsonb = 3,
}

impl PayloadType {
    /// The wire byte.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// Parses the wire byte.
    pub const fn from_u8(b: u8) -> Result<PayloadType, CryptoError> {
        match b {
            1 => Ok(PayloadType::Bytea),
            2 => Ok(PayloadType::Text),
            3 => Ok(PayloadType::Jsonb),
            other => Err(CryptoError::UnknownPayloadType(other)),
        }
    }

    /// The SQL type name (`"bytea"`, `"text"`, `"jsonb"`).
    pub const fn name(self) -> &'static str {
        match self {
            PayloadType::Bytea => "bytea",
            PayloadType::Text => "text",
            PayloadType::Jsonb => "jsonb",
        }
    }
}

impl From<PayloadType> for u8 {
    fn from(p: PayloadType) -> u8 {
        p.as_u8()
    }
}

impl TryFrom<u8> for PayloadType {
    type Error = CryptoError;
    fn try_from(b: u8) -> Result<PayloadType, CryptoError> {
        PayloadType::from_u8(b)
    }
}

/// The public fields of an envelope header (the nonce is kept apart, see
/// [`Envelope::nonce`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnvelopeHeader {
    /// Format version; [`FORMAT_VERSION`].
    pub format_version: u8,
    /// Algorithm; [`ALGORITHM_AES_256_GCM`].
    pub algorithm: u8,
    /// What the plaintext was.
    pub payload_type: PayloadType,
    /// Workspace whose key encrypted this value.
    pub workspace_id: [u8; 16],
    /// Version of that workspace's data key.
    pub key_version: u32,
}

impl EnvelopeHeader {
    /// A header for the current format and algorithm.
    pub const fn new(
        payload_type: PayloadType,
        workspace_id: [u8; 16],
        key_version: u32,
    ) -> EnvelopeHeader {
        EnvelopeHeader {
            format_version: FORMAT_VERSION,
            algorithm: ALGORITHM_AES_256_GCM,
            payload_type,
            workspace_id,
            key_version,
        }
    }

    /// Serializes the header with `nonce`; refuses a version or algorithm
    /// this build cannot write (it would produce an unreadable envelope).
    fn encode(&self, nonce: &[u8; NONCE_LEN]) -> Result<[u8; HEADER_LEN], CryptoError> {
        if self.format_version != FORMAT_VERSION {
            return Err(CryptoError::UnsupportedVersion(self.format_version));
        }
        if self.algorithm != ALGORITHM_AES_256_GCM {
            return Err(CryptoError::UnknownAlgorithm(self.algorithm));
        }
        let mut h = [0u8; HEADER_LEN];
        h[0..2].copy_from_slice(&MAGIC);
        h[2] = self.format_version;
        h[3] = self.algorithm;
        h[4] = self.payload_type.as_u8();
        h[5..21].copy_from_slice(&self.workspace_id);
        h[21..25].copy_from_slice(&self.key_version.to_be_bytes());
        h[25..37].copy_from_slice(nonce);
        Ok(h)
    }
}

/// A parsed, not yet authenticated envelope borrowing its bytes.
///
/// Everything here is untrusted until [`open`] succeeds; the header may
/// still be used to route decryption (which workspace, which key version).
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    header: EnvelopeHeader,
    header_bytes: &'a [u8; HEADER_LEN],
    nonce: &'a [u8; NONCE_LEN],
    ciphertext: &'a [u8],
    tag: &'a [u8; TAG_LEN],
}

impl<'a> Envelope<'a> {
    /// The decoded header.
    pub fn header(&self) -> &EnvelopeHeader {
        &self.header
    }

    /// The verbatim 37 header bytes (nonce included).
    pub fn header_bytes(&self) -> &'a [u8; HEADER_LEN] {
        self.header_bytes
    }

    /// The 96-bit nonce.
    pub fn nonce(&self) -> &'a [u8; NONCE_LEN] {
        self.nonce
    }

    /// The ciphertext without the tag.
    pub fn ciphertext(&self) -> &'a [u8] {
        self.ciphertext
    }

    /// The 128-bit GCM tag.
    pub fn tag(&self) -> &'a [u8; TAG_LEN] {
        self.tag
    }

    /// Length of the plaintext this envelope decrypts to.
    pub fn plaintext_len(&self) -> usize {
        self.ciphertext.len()
    }
}

/// Parses an envelope without any key.
///
/// Checks, in order: magic, format version, algorithm, payload type, and
/// that the value is at least header + tag long. Never panics, never
/// indexes out of bounds, whatever the input.
pub fn parse(bytes: &[u8]) -> Result<Envelope<'_>, CryptoError> {
    // Magic. A value shorter than the magic is not an envelope, except a
    // prefix of it, which is a truncated one.
    let Some((magic, after_magic)) = bytes.split_first_chunk::<2>() else {
        return Err(if MAGIC.starts_with(bytes) && !bytes.is_empty() {
            CryptoError::Truncated
        } else {
            CryptoError::NotAnEnvelope
        });
    };
    if *magic != MAGIC {
        return Err(CryptoError::NotAnEnvelope);
    }
    // Version first: a later version may lay out everything after it
    // differently.
    let Some((&version, after_version)) = after_magic.split_first() else {
        return Err(CryptoError::Truncated);
    };
    if version != FORMAT_VERSION {
        return Err(CryptoError::UnsupportedVersion(version));
    }
    let Some((&algorithm, after_algorithm)) = after_version.split_first() else {
        return Err(CryptoError::Truncated);
    };
    if algorithm != ALGORITHM_AES_256_GCM {
        return Err(CryptoError::UnknownAlgorithm(algorithm));
    }
    let Some((&payload, _)) = after_algorithm.split_first() else {
        return Err(CryptoError::Truncated);
    };
    let payload_type = PayloadType::from_u8(payload)?;

    let Some((header_bytes, body)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(CryptoError::Truncated);
    };
    let Some((ciphertext, tag)) = body.split_last_chunk::<TAG_LEN>() else {
        return Err(CryptoError::Truncated);
    };

    // Fixed-size sub-slices of a fixed-size array: cannot fail.
    let (_, rest) = header_bytes
        .split_first_chunk::<5>()
        .ok_or(CryptoError::Truncated)?;
    let (workspace_id, rest) = rest
        .split_first_chunk::<16>()
        .ok_or(CryptoError::Truncated)?;
    let (key_version, rest) = rest
        .split_first_chunk::<4>()
        .ok_or(CryptoError::Truncated)?;
    let nonce: &[u8; NONCE_LEN] = rest.try_into().map_err(|_| CryptoError::Truncated)?;

    Ok(Envelope {
        header: EnvelopeHeader {
            format_version: version,
            algorithm,
            payload_type,
            workspace_id: *workspace_id,
            key_version: u32::from_be_bytes(*key_version),
        },
        header_bytes,
        nonce,
        ciphertext,
        tag,
    })
}

/// True when `bytes` parses as an envelope. The extension's own write
/// paths use this to refuse encrypting a value twice (dump/restore and
/// `ON CONFLICT` re-fire triggers).
pub fn looks_like_envelope(bytes: &[u8]) -> bool {
    parse(bytes).is_ok()
}

/// A data key with its AES-256-GCM key schedule expanded once.
///
/// Build one per (workspace, key version) and cache it: expanding the key
/// per row would cost more than the encryption itself. The AES round keys
/// are zeroized on drop (the `aes` crate's `zeroize` feature, enabled by
/// this module's Cargo dependencies; see the integration notes in `mod.rs`).
pub struct DataKey {
    cipher: Aes256Gcm,
}

impl DataKey {
    /// Expands `key`. The `Key32` itself is not retained.
    pub fn new(key: &Key32) -> DataKey {
        DataKey {
            cipher: Aes256Gcm::new(key.expose().into()),
        }
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// Length of the associated data for `context`.
fn aad_len(context: Option<&[u8]>) -> usize {
    HEADER_LEN + 1 + context.map_or(0, |c| 8 + c.len())
}

/// Writes the associated data into `out`, which is exactly
/// [`aad_len`]`(context)` long.
fn write_aad(out: &mut [u8], header: &[u8; HEADER_LEN], context: Option<&[u8]>) {
    let (h, rest) = out.split_at_mut(HEADER_LEN);
    h.copy_from_slice(header);
    match context {
        None => rest.copy_from_slice(&[0x00]),
        Some(c) => {
            let (flag, rest) = rest.split_at_mut(1);
            flag[0] = 0x01;
            let (len, body) = rest.split_at_mut(8);
            len.copy_from_slice(&(c.len() as u64).to_be_bytes());
            body.copy_from_slice(c);
        }
    }
}

/// Runs `f` with the associated data, built on the stack when it is short.
fn with_aad<R>(header: &[u8; HEADER_LEN], context: Option<&[u8]>, f: impl FnOnce(&[u8]) -> R) -> R {
    let n = aad_len(context);
    if n <= AAD_STACK_LEN {
        let mut buf = [0u8; AAD_STACK_LEN];
        write_aad(&mut buf[..n], header, context);
        f(&buf[..n])
    } else {
        let mut buf = vec![0u8; n];
        write_aad(&mut buf, header, context);
        f(&buf)
    }
}

/// Encrypts `plaintext` into a new envelope with a fresh random nonce.
///
/// Convenience form that expands `dek` on every call; per-row code should
/// cache a [`DataKey`] and call [`seal_with`].
pub fn seal(
    dek: &Key32,
    header: &EnvelopeHeader,
    plaintext: &[u8],
    context: Option<&[u8]>,
) -> Result<Vec<u8>, CryptoError> {
    seal_with(
        &DataKey::new(dek),
        header,
        plaintext,
        context,
        FreshNonce::from_os()?,
    )
}

/// Encrypts `plaintext` under a cached [`DataKey`] with a fresh random
/// nonce (from a [`NonceGenerator`](super::NonceGenerator) on hot paths).
/// One allocation.
pub fn seal_with(
    key: &DataKey,
    header: &EnvelopeHeader,
    plaintext: &[u8],
    context: Option<&[u8]>,
    nonce: FreshNonce,
) -> Result<Vec<u8>, CryptoError> {
    seal_with_nonce(key, header, &nonce.0, plaintext, context)
}

/// [`seal_with`] writing into a caller's buffer (e.g. a `bytea` being
/// built in PostgreSQL memory, so the per-row path allocates once): `out`
/// must be exactly [`ENVELOPE_OVERHEAD`]` + plaintext.len()` bytes. On
/// error `out` holds no plaintext.
pub fn seal_into(
    key: &DataKey,
    header: &EnvelopeHeader,
    plaintext: &[u8],
    context: Option<&[u8]>,
    nonce: FreshNonce,
    out: &mut [u8],
) -> Result<(), CryptoError> {
    seal_into_with_nonce(key, header, &nonce.0, plaintext, context, out)
}

/// [`seal_with`] with a caller-chosen nonce. Private: a repeated nonce
/// under one key breaks GCM; only tests pin it for known-answer vectors.
fn seal_with_nonce(
    key: &DataKey,
    header: &EnvelopeHeader,
    nonce: &[u8; NONCE_LEN],
    plaintext: &[u8],
    context: Option<&[u8]>,
) -> Result<Vec<u8>, CryptoError> {
    if plaintext.len() as u64 > aes_gcm::P_MAX {
        return Err(CryptoError::TooLarge);
    }
    let mut out = vec![0u8; ENVELOPE_OVERHEAD + plaintext.len()];
    seal_into_with_nonce(key, header, nonce, plaintext, context, &mut out)?;
    Ok(out)
}

fn seal_into_with_nonce(
    key: &DataKey,
    header: &EnvelopeHeader,
    nonce: &[u8; NONCE_LEN],
    plaintext: &[u8],
    context: Option<&[u8]>,
    out: &mut [u8],
) -> Result<(), CryptoError> {
    if plaintext.len() as u64 > aes_gcm::P_MAX || out.len() != ENVELOPE_OVERHEAD + plaintext.len() {
        return Err(CryptoError::TooLarge);
    }
    let header_bytes = header.encode(nonce)?;
    let (head, rest) = out.split_at_mut(HEADER_LEN);
    let (body, tag_out) = rest.split_at_mut(plaintext.len());
    head.copy_from_slice(&header_bytes);
    body.copy_from_slice(plaintext);
    let result = with_aad(&header_bytes, context, |aad| {
        key.cipher
            .encrypt_in_place_detached(Nonce::from_slice(nonce), aad, body)
    });
    match result {
        Ok(tag) => {
            tag_out.copy_from_slice(&tag);
            Ok(())
        }
        Err(_) => {
            // The buffer may still hold plaintext.
            body.zeroize();
            Err(CryptoError::TooLarge)
        }
    }
}

/// Decrypts and authenticates an envelope. Expands `dek` on every call;
/// per-row code should cache a [`DataKey`] and call [`open_with`].
pub fn open(
    dek: &Key32,
    envelope: &Envelope<'_>,
    context: Option<&[u8]>,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    open_with(&DataKey::new(dek), envelope, context)
}

/// Decrypts and authenticates an envelope under a cached [`DataKey`].
///
/// Wrong key, wrong/missing/extra context and any tampering all give
/// [`CryptoError::AuthenticationFailed`], indistinguishably. The plaintext
/// is returned in a buffer that zeroizes on drop. One allocation.
pub fn open_with(
    key: &DataKey,
    envelope: &Envelope<'_>,
    context: Option<&[u8]>,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let mut buf = Zeroizing::new(vec![0u8; envelope.ciphertext.len()]);
    open_into(key, envelope, context, &mut buf)?;
    Ok(buf)
}

/// [`open_with`] writing the plaintext into a caller's buffer of exactly
/// the ciphertext's length (see [`Envelope::plaintext_len`]). On failure
/// `out` is zeroed: it never holds unauthenticated plaintext.
pub fn open_into(
    key: &DataKey,
    envelope: &Envelope<'_>,
    context: Option<&[u8]>,
    out: &mut [u8],
) -> Result<(), CryptoError> {
    if out.len() != envelope.ciphertext.len() {
        return Err(CryptoError::Truncated);
    }
    out.copy_from_slice(envelope.ciphertext);
    with_aad(envelope.header_bytes, context, |aad| {
        key.cipher.decrypt_in_place_detached(
            Nonce::from_slice(envelope.nonce),
            aad,
            out,
            Tag::from_slice(envelope.tag),
        )
    })
    .map_err(|_| {
        out.zeroize();
        CryptoError::AuthenticationFailed
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const WS: [u8; 16] = [
        0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78, 0x87, 0x96, 0xa5, 0xb4, 0xc3, 0xd2, 0xe1,
        0xf0,
    ];

    fn dek() -> Key32 {
        Key32::from_bytes([0x3d; 32])
    }

    fn hdr(p: PayloadType) -> EnvelopeHeader {
        EnvelopeHeader::new(p, WS, 7)
    }

    fn open_bytes(
        key: &Key32,
        bytes: &[u8],
        ctx: Option<&[u8]>,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        open(key, &parse(bytes)?, ctx)
    }

    /// Asserts `bytes` is refused: a parse error or AuthenticationFailed.
    fn assert_refused(key: &Key32, bytes: &[u8], ctx: Option<&[u8]>, what: &str) {
        match parse(bytes) {
            Err(_) => {}
            Ok(env) => assert_eq!(
                open(key, &env, ctx).unwrap_err(),
                CryptoError::AuthenticationFailed,
                "{what}"
            ),
        }
    }

    #[test]
    fn round_trip_each_payload_type() {
        let k = dek();
        for p in [PayloadType::Bytea, PayloadType::Text, PayloadType::Jsonb] {
            for ctx in [None, Some(&b""[..]), Some(&b"invoices.amount:42"[..])] {
                let pt = format!("secret for {}", p.name());
                let ct = seal(&k, &hdr(p), pt.as_bytes(), ctx).unwrap();
                assert_eq!(ct.len(), ENVELOPE_OVERHEAD + pt.len());
                let env = parse(&ct).unwrap();
                assert_eq!(env.header(), &hdr(p));
                assert_eq!(env.plaintext_len(), pt.len());
                assert_eq!(&**open(&k, &env, ctx).unwrap(), pt.as_bytes());
            }
        }
    }

    #[test]
    fn cached_data_key_matches_convenience_form() {
        let k = dek();
        let dk = DataKey::new(&k);
        let ct = seal_with(
            &dk,
            &hdr(PayloadType::Text),
            b"abc",
            Some(b"c"),
            FreshNonce::from_os().unwrap(),
        )
        .unwrap();
        assert_eq!(
            &**open(&k, &parse(&ct).unwrap(), Some(b"c")).unwrap(),
            b"abc"
        );
        let ct = seal(&k, &hdr(PayloadType::Text), b"abc", Some(b"c")).unwrap();
        assert_eq!(
            &**open_with(&dk, &parse(&ct).unwrap(), Some(b"c")).unwrap(),
            b"abc"
        );
    }

    #[test]
    fn into_buffers_match_the_allocating_forms() {
        let k = dek();
        let dk = DataKey::new(&k);
        let pt = b"a 64-byte field, more or less, as a bench would write it......";
        for ctx in [None, Some(&b"invoices.amount:42"[..])] {
            let mut out = vec![0u8; ENVELOPE_OVERHEAD + pt.len()];
            let nonce = FreshNonce::from_os().unwrap();
            seal_into(&dk, &hdr(PayloadType::Text), pt, ctx, nonce, &mut out).unwrap();
            // The allocating reader opens what the buffer form wrote...
            assert_eq!(&**open_bytes(&k, &out, ctx).unwrap(), &pt[..]);
            // ...and the buffer reader what the allocating writer wrote.
            let ct = seal(&k, &hdr(PayloadType::Text), pt, ctx).unwrap();
            let mut plain = vec![0u8; pt.len()];
            open_into(&dk, &parse(&ct).unwrap(), ctx, &mut plain).unwrap();
            assert_eq!(plain, pt);
        }
    }

    #[test]
    fn into_buffers_of_the_wrong_length_are_refused() {
        let dk = DataKey::new(&dek());
        let h = hdr(PayloadType::Bytea);
        for len in [0, ENVELOPE_OVERHEAD + 2, ENVELOPE_OVERHEAD + 4] {
            let mut out = vec![0u8; len];
            let nonce = FreshNonce::from_os().unwrap();
            assert!(seal_into(&dk, &h, b"abc", None, nonce, &mut out).is_err());
            assert!(
                out.iter().all(|&b| b == 0),
                "nothing written into a wrong buffer"
            );
        }
        let ct = seal_with(&dk, &h, b"abc", None, FreshNonce::from_os().unwrap()).unwrap();
        let mut short = [0u8; 2];
        assert!(open_into(&dk, &parse(&ct).unwrap(), None, &mut short).is_err());
    }

    #[test]
    fn failed_open_into_leaves_no_plaintext() {
        let dk = DataKey::new(&dek());
        let ct = seal_with(
            &dk,
            &hdr(PayloadType::Text),
            b"top secret",
            Some(b"right"),
            FreshNonce::from_os().unwrap(),
        )
        .unwrap();
        let mut out = [0xAAu8; 10];
        let err = open_into(&dk, &parse(&ct).unwrap(), Some(b"wrong"), &mut out).unwrap_err();
        assert_eq!(err, CryptoError::AuthenticationFailed);
        assert_eq!(out, [0u8; 10]);
    }

    #[test]
    fn empty_plaintext() {
        let k = dek();
        let ct = seal(&k, &hdr(PayloadType::Bytea), b"", None).unwrap();
        assert_eq!(ct.len(), ENVELOPE_OVERHEAD);
        assert_eq!(ct.len(), 53);
        let pt = open_bytes(&k, &ct, None).unwrap();
        assert!(pt.is_empty());
        // The tag still authenticates the header and context.
        assert_refused(&k, &ct, Some(b""), "empty pt, context added");
    }

    #[test]
    fn large_plaintext() {
        let k = dek();
        let pt: Vec<u8> = (0..(1usize << 20) + 13)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let ct = seal(&k, &hdr(PayloadType::Bytea), &pt, Some(b"big")).unwrap();
        assert_eq!(ct.len(), pt.len() + ENVELOPE_OVERHEAD);
        assert_eq!(&**open_bytes(&k, &ct, Some(b"big")).unwrap(), &pt[..]);
        let mut bad = ct.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x01;
        assert_refused(&k, &bad, Some(b"big"), "flip in large ciphertext");
    }

    #[test]
    fn same_plaintext_twice_differs() {
        let k = dek();
        let a = seal(&k, &hdr(PayloadType::Text), b"same", None).unwrap();
        let b = seal(&k, &hdr(PayloadType::Text), b"same", None).unwrap();
        assert_ne!(a, b);
        assert_ne!(parse(&a).unwrap().nonce(), parse(&b).unwrap().nonce());
        assert_ne!(
            parse(&a).unwrap().ciphertext(),
            parse(&b).unwrap().ciphertext()
        );
    }

    #[test]
    fn plaintext_never_appears_in_ciphertext() {
        let k = dek();
        let pt = b"4111-1111-1111-1111 Jane Q. Customer, 221B Baker Street, London";
        for ctx in [None, Some(&b"cards.pan:1"[..])] {
            let ct = seal(&k, &hdr(PayloadType::Text), pt, ctx).unwrap();
            for w in 4..=8 {
                for needle in pt.windows(w) {
                    assert!(
                        !ct.windows(w).any(|h| h == needle),
                        "{w}-byte plaintext window visible"
                    );
                }
            }
        }
    }

    #[test]
    fn header_layout_is_the_documented_one() {
        let k = dek();
        let ct = seal(
            &k,
            &EnvelopeHeader::new(PayloadType::Jsonb, WS, 0x0102_0304),
            b"{}",
            None,
        )
        .unwrap();
        assert_eq!(HEADER_LEN, 37);
        assert_eq!(&ct[0..2], b"WD");
        assert_eq!(ct[2], 1);
        assert_eq!(ct[3], 1);
        assert_eq!(ct[4], 3);
        assert_eq!(&ct[5..21], &WS);
        assert_eq!(&ct[21..25], &[1, 2, 3, 4]);
        let env = parse(&ct).unwrap();
        assert_eq!(&ct[25..37], env.nonce());
        assert_eq!(&ct[..37], env.header_bytes());
        assert_eq!(&ct[37..39], env.ciphertext());
        assert_eq!(&ct[39..], env.tag());
        assert_eq!(env.header().key_version, 0x0102_0304);
        assert_eq!(env.header().workspace_id, WS);
        assert_eq!(env.header().payload_type, PayloadType::Jsonb);
    }

    /// Known-answer vector: fixed key, nonce, header, context and plaintext.
    /// Computed once and cross-checked with Python `cryptography`'s AESGCM
    /// over the documented AAD; pins the public format.
    #[test]
    fn known_answer_vector() {
        let k = Key32::from_bytes(core::array::from_fn(|i| i as u8));
        let dk = DataKey::new(&k);
        let nonce: [u8; 12] = core::array::from_fn(|i| 0xc0 + i as u8);
        let header = EnvelopeHeader::new(PayloadType::Text, WS, 1);
        let ct = seal_with_nonce(&dk, &header, &nonce, b"hello", Some(b"t.c:1")).unwrap();
        assert_eq!(hex::encode(&ct), "57440101020f1e2d3c4b5a69788796a5b4c3d2e1f000000001c0c1c2c3c4c5c6c7c8c9cacb682d4b0b18bdc9f3a93e67495ba05cb80da6f902f9");
        let ct = seal_with_nonce(&dk, &header, &nonce, b"hello", None).unwrap();
        assert_eq!(hex::encode(&ct), "57440101020f1e2d3c4b5a69788796a5b4c3d2e1f000000001c0c1c2c3c4c5c6c7c8c9cacb682d4b0b18db12039a26d10e2275fca81991b2429f");
    }

    #[test]
    fn every_single_bit_flip_is_refused() {
        let k = dek();
        for (pt, ctx) in [
            (&b""[..], None),
            (&b"x"[..], Some(&b"ctx"[..])),
            (&b"a somewhat longer secret value"[..], Some(&b""[..])),
            (&b"{\"a\": 1}"[..], None),
        ] {
            for p in [PayloadType::Bytea, PayloadType::Text, PayloadType::Jsonb] {
                let ct = seal(&k, &hdr(p), pt, ctx).unwrap();
                assert!(open_bytes(&k, &ct, ctx).is_ok());
                for bit in 0..ct.len() * 8 {
                    let mut m = ct.clone();
                    m[bit / 8] ^= 1 << (bit % 8);
                    assert_refused(&k, &m, ctx, &format!("bit {bit} of {}", ct.len()));
                }
            }
        }
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        let k = dek();
        for pt in [&b""[..], &b"0123456789abcdef0123"[..]] {
            let ct = seal(&k, &hdr(PayloadType::Bytea), pt, Some(b"c")).unwrap();
            for n in 0..ct.len() {
                assert_refused(&k, &ct[..n], Some(b"c"), &format!("prefix {n}"));
                // Dropping bytes from the front is refused too.
                assert_refused(&k, &ct[ct.len() - n..], Some(b"c"), &format!("suffix {n}"));
            }
            for extra in [&[0u8][..], &[0xff; 16][..]] {
                let mut longer = ct.clone();
                longer.extend_from_slice(extra);
                assert_refused(&k, &longer, Some(b"c"), "appended bytes");
            }
        }
        // Short prefixes get the specific errors.
        let ct = seal(&k, &hdr(PayloadType::Bytea), b"", None).unwrap();
        assert_eq!(parse(&[]).unwrap_err(), CryptoError::NotAnEnvelope);
        assert_eq!(parse(&ct[..1]).unwrap_err(), CryptoError::Truncated);
        for n in 2..ct.len() {
            assert_eq!(parse(&ct[..n]).unwrap_err(), CryptoError::Truncated, "{n}");
        }
    }

    #[test]
    fn wrong_key_refused() {
        let ct = seal(&dek(), &hdr(PayloadType::Text), b"secret", None).unwrap();
        let other = Key32::from_bytes([0x3e; 32]);
        assert_eq!(
            open_bytes(&other, &ct, None).unwrap_err(),
            CryptoError::AuthenticationFailed
        );
        assert_eq!(
            open_bytes(&Key32::random().unwrap(), &ct, None).unwrap_err(),
            CryptoError::AuthenticationFailed
        );
    }

    #[test]
    fn context_binding() {
        let k = dek();
        let ct = seal(
            &k,
            &hdr(PayloadType::Text),
            b"42.00",
            Some(b"invoices.amount:1"),
        )
        .unwrap();
        assert!(open_bytes(&k, &ct, Some(b"invoices.amount:1")).is_ok());
        for wrong in [
            Some(&b"invoices.amount:2"[..]),
            Some(&b"invoices.amount:"[..]),
            Some(&b"invoices.amount:10"[..]),
            Some(&b"invoices.total:1"[..]),
            Some(&b""[..]),
            None,
        ] {
            assert_eq!(
                open_bytes(&k, &ct, wrong).unwrap_err(),
                CryptoError::AuthenticationFailed,
                "{wrong:?}"
            );
        }
        // Context given when none was used.
        let ct = seal(&k, &hdr(PayloadType::Text), b"42.00", None).unwrap();
        assert!(open_bytes(&k, &ct, None).is_ok());
        for wrong in [Some(&b""[..]), Some(&b"\0"[..]), Some(&b"x"[..])] {
            assert_eq!(
                open_bytes(&k, &ct, wrong).unwrap_err(),
                CryptoError::AuthenticationFailed
            );
        }
    }

    #[test]
    fn none_and_empty_context_are_distinct() {
        let k = dek();
        let empty = seal(&k, &hdr(PayloadType::Bytea), b"v", Some(b"")).unwrap();
        assert!(open_bytes(&k, &empty, Some(b"")).is_ok());
        assert_eq!(
            open_bytes(&k, &empty, None).unwrap_err(),
            CryptoError::AuthenticationFailed
        );
        let none = seal(&k, &hdr(PayloadType::Bytea), b"v", None).unwrap();
        assert_eq!(
            open_bytes(&k, &none, Some(b"")).unwrap_err(),
            CryptoError::AuthenticationFailed
        );
        // The AAD encodings themselves differ.
        assert_ne!(aad_len(None), aad_len(Some(b"")));
    }

    #[test]
    fn long_context_uses_heap_aad_and_still_binds() {
        let k = dek();
        let long = vec![b'c'; 5000];
        let ct = seal(&k, &hdr(PayloadType::Text), b"v", Some(&long)).unwrap();
        assert_eq!(&**open_bytes(&k, &ct, Some(&long)).unwrap(), b"v");
        let mut other = long.clone();
        other[4999] = b'd';
        assert_refused(&k, &ct, Some(&other), "last context byte");
        assert_refused(&k, &ct, Some(&long[..4999]), "shorter context");
        // Context right at the stack/heap boundary, both sides.
        for n in [
            AAD_STACK_LEN - HEADER_LEN - 9,
            AAD_STACK_LEN - HEADER_LEN - 8,
        ] {
            let c = vec![b'z'; n];
            let ct = seal(&k, &hdr(PayloadType::Text), b"v", Some(&c)).unwrap();
            assert_eq!(&**open_bytes(&k, &ct, Some(&c)).unwrap(), b"v");
            assert_refused(&k, &ct, Some(&c[1..]), "boundary context");
        }
    }

    #[test]
    fn editing_header_fields_is_refused() {
        let k = dek();
        let ct = seal(&k, &hdr(PayloadType::Text), b"secret", None).unwrap();

        // Another (valid) workspace id.
        let mut m = ct.clone();
        m[5..21].copy_from_slice(&[0x99; 16]);
        assert_eq!(parse(&m).unwrap().header().workspace_id, [0x99; 16]);
        assert_eq!(
            open_bytes(&k, &m, None).unwrap_err(),
            CryptoError::AuthenticationFailed
        );

        // Another key version (e.g. to route to another key).
        for v in [0u32, 6, 8, u32::MAX] {
            let mut m = ct.clone();
            m[21..25].copy_from_slice(&v.to_be_bytes());
            assert_eq!(parse(&m).unwrap().header().key_version, v);
            assert_eq!(
                open_bytes(&k, &m, None).unwrap_err(),
                CryptoError::AuthenticationFailed
            );
        }

        // Another valid payload type (text → bytea / jsonb).
        for p in [PayloadType::Bytea, PayloadType::Jsonb] {
            let mut m = ct.clone();
            m[4] = p.as_u8();
            assert_eq!(
                open_bytes(&k, &m, None).unwrap_err(),
                CryptoError::AuthenticationFailed
            );
        }
    }

    #[test]
    fn parse_errors_are_specific() {
        let k = dek();
        let ct = seal(&k, &hdr(PayloadType::Text), b"v", None).unwrap();
        let with = |i: usize, b: u8| {
            let mut m = ct.clone();
            m[i] = b;
            m
        };
        assert_eq!(
            parse(&with(0, b'X')).unwrap_err(),
            CryptoError::NotAnEnvelope
        );
        assert_eq!(
            parse(&with(1, b'X')).unwrap_err(),
            CryptoError::NotAnEnvelope
        );
        assert_eq!(
            parse(&with(2, 2)).unwrap_err(),
            CryptoError::UnsupportedVersion(2)
        );
        assert_eq!(
            parse(&with(2, 0)).unwrap_err(),
            CryptoError::UnsupportedVersion(0)
        );
        assert_eq!(
            parse(&with(3, 2)).unwrap_err(),
            CryptoError::UnknownAlgorithm(2)
        );
        assert_eq!(
            parse(&with(4, 0)).unwrap_err(),
            CryptoError::UnknownPayloadType(0)
        );
        assert_eq!(
            parse(&with(4, 4)).unwrap_err(),
            CryptoError::UnknownPayloadType(4)
        );
        assert_eq!(
            parse(b"hello world").unwrap_err(),
            CryptoError::NotAnEnvelope
        );
        assert_eq!(parse(b"W").unwrap_err(), CryptoError::Truncated);
        assert_eq!(parse(b"X").unwrap_err(), CryptoError::NotAnEnvelope);
        // A version-2 header that is too short still reports the version.
        assert_eq!(
            parse(&[0x57, 0x44, 2]).unwrap_err(),
            CryptoError::UnsupportedVersion(2)
        );
    }

    #[test]
    fn payload_type_conversions() {
        for p in [PayloadType::Bytea, PayloadType::Text, PayloadType::Jsonb] {
            assert_eq!(PayloadType::try_from(u8::from(p)).unwrap(), p);
        }
        assert_eq!(PayloadType::Bytea.as_u8(), 1);
        assert_eq!(PayloadType::Text.as_u8(), 2);
        assert_eq!(PayloadType::Jsonb.as_u8(), 3);
        for b in (0u8..=255).filter(|b| !(1..=3).contains(b)) {
            assert_eq!(
                PayloadType::try_from(b).unwrap_err(),
                CryptoError::UnknownPayloadType(b)
            );
        }
    }

    #[test]
    fn seal_refuses_unwritable_headers() {
        let k = dek();
        let mut h = hdr(PayloadType::Text);
        h.format_version = 2;
        assert_eq!(
            seal(&k, &h, b"v", None).unwrap_err(),
            CryptoError::UnsupportedVersion(2)
        );
        let mut h = hdr(PayloadType::Text);
        h.algorithm = 9;
        assert_eq!(
            seal(&k, &h, b"v", None).unwrap_err(),
            CryptoError::UnknownAlgorithm(9)
        );
    }

    #[test]
    fn looks_like_envelope_detects_double_encryption() {
        let k = dek();
        let ct = seal(&k, &hdr(PayloadType::Bytea), b"v", None).unwrap();
        assert!(looks_like_envelope(&ct));
        let twice = seal(&k, &hdr(PayloadType::Bytea), &ct, None).unwrap();
        assert!(looks_like_envelope(&twice));
        assert!(!looks_like_envelope(b""));
        assert!(!looks_like_envelope(b"plain text value"));
        // Structural check only (no key): shorter than header + tag fails.
        let empty = seal(&k, &hdr(PayloadType::Bytea), b"", None).unwrap();
        assert!(looks_like_envelope(&empty));
        assert!(!looks_like_envelope(&empty[..empty.len() - 1]));
        assert!(!looks_like_envelope(&[0u8; 100]));
        assert!(!looks_like_envelope(
            "WD but plainly a sentence of text".as_bytes()
        ));
    }

    #[test]
    fn nonces_unique_across_many_seals() {
        let dk = DataKey::new(&dek());
        let h = hdr(PayloadType::Bytea);
        let mut seen = HashSet::with_capacity(100_000);
        for _ in 0..100_000 {
            let ct = seal_with(&dk, &h, b"", None, FreshNonce::from_os().unwrap()).unwrap();
            let nonce = *parse(&ct).unwrap().nonce();
            assert!(seen.insert(nonce), "repeated nonce");
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let dk = DataKey::new(&dek());
        assert_eq!(format!("{dk:?}"), "DataKey(..)");
        let ct = seal_with(
            &dk,
            &hdr(PayloadType::Text),
            b"topsecret",
            None,
            FreshNonce::from_os().unwrap(),
        )
        .unwrap();
        let dbg = format!("{:?}", parse(&ct).unwrap());
        assert!(!dbg.contains("topsecret"));
    }

    #[test]
    fn error_messages_never_contain_plaintext_or_input() {
        let k = dek();
        let ct = seal(&k, &hdr(PayloadType::Text), b"topsecret", Some(b"ctx-abc")).unwrap();
        let e = open_bytes(&k, &ct, Some(b"ctx-abd"))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("topsecret") && !e.contains("ctx-ab"), "{e}");
        let e = parse(b"topsecret-not-an-envelope").unwrap_err().to_string();
        assert!(!e.contains("topsecret"), "{e}");
    }

    #[test]
    fn expanded_cipher_zeroizes_on_drop() {
        // Compile-time check that the `aes` crate's `zeroize` feature is on:
        // without it the AES round keys of a cached DataKey would outlive it.
        fn assert_zod<T: zeroize::ZeroizeOnDrop>() {}
        assert_zod::<aes_gcm::aes::Aes256>();
    }

    // ---- fuzzing ---------------------------------------------------------

    /// SplitMix64: a tiny deterministic generator so a failing fuzz run can
    /// be replayed from its printed seed. Test-only; never for keys/nonces.
    struct SplitMix64(u64);

    impl SplitMix64 {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next_u64() % n as u64) as usize
        }
        fn byte(&mut self) -> u8 {
            self.next_u64() as u8
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.byte()).collect()
        }
    }

    fn env_u64(name: &str) -> Option<u64> {
        let v = std::env::var(name).ok()?;
        let v = v.trim();
        match v.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).ok(),
            None => v.parse().ok(),
        }
    }

    /// Feeds `parse` and `open` random byte strings and mutations of valid
    /// envelopes: no panic, and nothing but the untouched originals opens.
    /// Replay with `WARDEN_FUZZ_SEED=<seed>`; `WARDEN_FUZZ_ITERS` sets the
    /// count (default 200 000).
    #[test]
    fn fuzz_parse_and_open() {
        let seed = env_u64("WARDEN_FUZZ_SEED").unwrap_or_else(|| {
            let mut b = [0u8; 8];
            getrandom::getrandom(&mut b).unwrap();
            u64::from_le_bytes(b)
        });
        let iters = env_u64("WARDEN_FUZZ_ITERS").unwrap_or(200_000);
        eprintln!("fuzz_parse_and_open: WARDEN_FUZZ_SEED={seed:#018x} iterations={iters}");
        let mut rng = SplitMix64(seed);

        let k = dek();
        let dk = DataKey::new(&k);
        let ctx: &[u8] = b"t.col:1";
        let originals: Vec<Vec<u8>> = [
            (&b""[..], PayloadType::Bytea),
            (&b"x"[..], PayloadType::Text),
            (
                &b"a 40-byte plaintext for fuzz mutations!!"[..],
                PayloadType::Jsonb,
            ),
        ]
        .iter()
        .map(|(pt, p)| {
            seal_with(&dk, &hdr(*p), pt, Some(ctx), FreshNonce::from_os().unwrap()).unwrap()
        })
        .collect();

        let (mut parsed, mut opened_originals) = (0u64, 0u64);
        for i in 0..iters {
            let input: Vec<u8> = match rng.below(5) {
                // Random bytes.
                0 => {
                    let n = rng.below(200);
                    rng.bytes(n)
                }
                // A plausible header followed by random bytes.
                1 => {
                    let mut v = vec![0x57, 0x44, 1, 1, 1 + rng.below(3) as u8];
                    let n = rng.below(200);
                    v.extend(rng.bytes(n));
                    v.truncate(rng.below(201));
                    v
                }
                // Mutations of a valid envelope.
                2 | 3 => {
                    let mut v = originals[rng.below(originals.len())].clone();
                    for _ in 0..1 + rng.below(4) {
                        match rng.below(6) {
                            0 if !v.is_empty() => {
                                let j = rng.below(v.len());
                                v[j] ^= 1 << rng.below(8);
                            }
                            1 if !v.is_empty() => {
                                let j = rng.below(v.len());
                                v[j] = rng.byte();
                            }
                            2 if !v.is_empty() => {
                                let a = rng.below(v.len());
                                let b = (a + 1 + rng.below(8)).min(v.len());
                                v.drain(a..b);
                            }
                            3 => {
                                let a = rng.below(v.len() + 1);
                                let n = 1 + rng.below(8);
                                let ins = rng.bytes(n);
                                v.splice(a..a, ins);
                            }
                            4 if !v.is_empty() => v.truncate(rng.below(v.len())),
                            _ => {
                                let j = 1 + rng.below(v.len() + 1);
                                let j = j.min(v.len());
                                v.extend_from_within(..j);
                            }
                        }
                    }
                    v
                }
                // Splice: header of one envelope, body of another.
                _ => {
                    let a = &originals[rng.below(originals.len())];
                    let b = &originals[rng.below(originals.len())];
                    let cut = rng.below(a.len().min(b.len()) + 1);
                    let mut v = a[..cut].to_vec();
                    v.extend_from_slice(&b[cut..]);
                    v
                }
            };

            let is_original = originals.contains(&input);
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let env = parse(&input).ok()?;
                let h = *env.header();
                let results = [
                    open_with(&dk, &env, Some(ctx)).is_ok(),
                    open_with(&dk, &env, None).is_ok(),
                    open_with(&dk, &env, Some(b"")).is_ok(),
                ];
                Some((h, results))
            }));
            let fail = |why: &str| -> ! {
                panic!(
                    "fuzz failure ({why}) at iteration {i}, WARDEN_FUZZ_SEED={seed:#018x}, \
                     input={}",
                    hex::encode(&input)
                )
            };
            match outcome {
                Err(_) => fail("panic"),
                Ok(None) => assert!(!is_original, "original failed to parse"),
                Ok(Some((h, [right_ctx, no_ctx, empty_ctx]))) => {
                    parsed += 1;
                    assert_eq!(h.format_version, FORMAT_VERSION);
                    if no_ctx || empty_ctx {
                        fail("opened under a context it was not sealed with");
                    }
                    if is_original {
                        if !right_ctx {
                            fail("untouched original did not open");
                        }
                        opened_originals += 1;
                    } else if right_ctx {
                        fail("garbage or mutated envelope authenticated");
                    }
                }
            }
        }
        eprintln!(
            "fuzz_parse_and_open: {parsed} inputs parsed, {opened_originals} untouched originals opened"
        );
        assert!(parsed > iters / 10, "fuzzer rarely reached open()");
    }
}
