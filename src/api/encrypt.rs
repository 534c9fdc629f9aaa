//! Field encryption under the acting workspace's key: `encrypt`,
//! `decrypt`, `decrypt_bytea`, `decrypt_jsonb`, `reencrypt`, `blind_index`,
//! `envelope_info`.
//!
//! NULL in, NULL out for the value; a NULL context string means none. (The
//! functions are not declared STRICT, because the optional context defaults
//! to NULL and STRICT would turn every call without one into NULL.)
//! Invoker rights: keys are read as the extension's owner inside, so the
//! per-row path pays no SECURITY DEFINER overhead.

use super::fmgr;
use crate::backend::BackendLocal;
use crate::context;
use crate::crypto::{
    self, envelope, DataKey, Envelope, EnvelopeHeader, FreshNonce, NonceGenerator, PayloadType,
    ENVELOPE_OVERHEAD,
};
use crate::error::{raise, SqlResult, WardenError};
use crate::keys::workspace;
use pgrx::prelude::*;
use pgrx::{JsonB, Uuid};
use std::cell::RefCell;
use std::rc::Rc;
use zeroize::Zeroize;

/// The acting workspace; encryption needs one.
fn acting_workspace() -> Result<[u8; 16], WardenError> {
    context::with_current(|c| c.map(|c| c.workspace_id))?.ok_or(WardenError::NoContext)
}

/// What sealing a new value of `payload` under the acting workspace's
/// current key needs: the key, the header, a fresh nonce.
fn prepare_seal(
    payload: PayloadType,
) -> Result<(Rc<DataKey>, EnvelopeHeader, FreshNonce), WardenError> {
    let ws = acting_workspace()?;
    let (version, key) = workspace::current_data_key(&ws)?;
    let header = EnvelopeHeader::new(payload, ws, version);
    // SAFETY: MyProcPid is set at process start, before any SQL runs.
    let nonce = NONCES
        .borrow_mut()
        .next(unsafe { pg_sys::MyProcPid } as u32)?;
    Ok((key, header, nonce))
}

fn seal(
    payload: PayloadType,
    plaintext: &[u8],
    context: Option<&[u8]>,
) -> Result<Vec<u8>, WardenError> {
    let (key, header, nonce) = prepare_seal(payload)?;
    Ok(envelope::seal_with(
        &key, &header, plaintext, context, nonce,
    )?)
}

/// [`seal`] straight into a new `bytea` in the current memory context (the
/// per-row path: one allocation, no copy).
fn seal_to_bytea(
    payload: PayloadType,
    plaintext: &[u8],
    context: Option<&[u8]>,
) -> Result<*mut pg_sys::varlena, WardenError> {
    let len = ENVELOPE_OVERHEAD + plaintext.len();
    if len > fmgr::MAX_VARLENA_DATA {
        return Err(WardenError::TooLarge(plaintext.len()));
    }
    let (key, header, nonce) = prepare_seal(payload)?;
    // SAFETY: inside a function call; len checked above.
    let (bytea, out) = unsafe { fmgr::new_varlena(len) };
    envelope::seal_into(&key, &header, plaintext, context, nonce, out)?;
    Ok(bytea)
}

/// This backend's nonce source (reseeded if it finds itself in another
/// process, see `crypto/nonce.rs`).
static NONCES: BackendLocal<RefCell<NonceGenerator>> =
    BackendLocal::new(RefCell::new(NonceGenerator::new()));

/// Parses a ciphertext of the acting workspace and finds its key.
fn opening(ciphertext: &[u8]) -> Result<(Envelope<'_>, Rc<DataKey>), WardenError> {
    let env = envelope::parse(ciphertext).map_err(|e| WardenError::NotCiphertext(e.to_string()))?;
    let header = *env.header();
    let ws = acting_workspace()?;
    if header.workspace_id != ws {
        return Err(WardenError::WrongWorkspace(
            Uuid::from_bytes(header.workspace_id).to_string(),
        ));
    }
    let key = workspace::data_key(&ws, header.key_version)?;
    Ok((env, key))
}

/// Parses and authenticates a ciphertext of the acting workspace.
fn open(
    ciphertext: &[u8],
    context: Option<&[u8]>,
) -> Result<(PayloadType, zeroize::Zeroizing<Vec<u8>>), WardenError> {
    let (env, key) = opening(ciphertext)?;
    let plaintext =
        envelope::open_with(&key, &env, context).map_err(|_| WardenError::DecryptionFailed)?;
    Ok((env.header().payload_type, plaintext))
}

fn expect(
    found: PayloadType,
    accepted: &[PayloadType],
    wanted: &'static str,
    function: &'static str,
) -> Result<(), WardenError> {
    if accepted.contains(&found) {
        Ok(())
    } else {
        Err(WardenError::WrongPayloadType {
            found: found.name(),
            wanted,
            function,
        })
    }
}

/// `warden.encrypt(value text, context text DEFAULT NULL) RETURNS bytea`:
/// encrypts text under the acting workspace's current key. A plain V1
/// function (see `fmgr.rs`): it runs once per row of an INSERT.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn warden_encrypt_text(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: declared (text, text); fcinfo is the call's.
    unsafe {
        let Some(value) = fmgr::varlena_arg(fcinfo, 0) else {
            return fmgr::return_null(fcinfo);
        };
        let context = fmgr::varlena_arg(fcinfo, 1);
        let bytea = seal_to_bytea(PayloadType::Text, value, context);
        pg_sys::Datum::from(bytea.unwrap_or_else(|e| raise(e)))
    }
}

/// Encrypts bytes. A value that already is a ciphertext is returned
/// unchanged: paths that re-run (restores, triggers re-fired by `ON
/// CONFLICT`) never encrypt twice. With a context, only a genuine one, of
/// the acting workspace, that decrypts with the given context string: bytes
/// merely shaped like one (an application's `prefix || secret`) are
/// refused, never stored as they came. Without a context (a restore
/// replays values with none), a value that parses as a ciphertext passes.
#[pg_extern(name = "encrypt", volatile, parallel_unsafe)]
fn encrypt_bytea(
    value: Option<&[u8]>,
    context: default!(Option<&str>, "NULL"),
) -> SqlResult<Option<Vec<u8>>> {
    let Some(value) = value else { return Ok(None) };
    if let Ok(env) = envelope::parse(value) {
        // Already a ciphertext: returned as is, with or without a context
        // (a restore replays values with none); but a context may not adopt
        // another workspace's ciphertext.
        let acting = context::with_current(|c| c.map(|c| c.workspace_id))?;
        if acting.is_some_and(|ws| ws != env.header().workspace_id) {
            return Err(WardenError::WrongWorkspace(
                Uuid::from_bytes(env.header().workspace_id).to_string(),
            )
            .into());
        }
        if acting.is_some() {
            match open(value, context.map(str::as_bytes)) {
                Ok(_) => {}
                Err(WardenError::DecryptionFailed | WardenError::UnknownKeyVersion(_)) => {
                    return Err(WardenError::EnvelopeNotAuthentic.into())
                }
                Err(e) => return Err(e.into()),
            }
        }
        return Ok(Some(value.to_vec()));
    }
    Ok(Some(seal(
        PayloadType::Bytea,
        value,
        context.map(str::as_bytes),
    )?))
}

/// Encrypts a jsonb document (its canonical text).
#[pg_extern(name = "encrypt", volatile, parallel_unsafe)]
fn encrypt_jsonb(
    value: Option<JsonB>,
    context: default!(Option<&str>, "NULL"),
) -> SqlResult<Option<Vec<u8>>> {
    let Some(JsonB(value)) = value else {
        return Ok(None);
    };
    let text = zeroize::Zeroizing::new(value.to_string());
    Ok(Some(seal(
        PayloadType::Jsonb,
        text.as_bytes(),
        context.map(str::as_bytes),
    )?))
}

/// `warden.decrypt(ciphertext bytea, context text DEFAULT NULL) RETURNS
/// text`: decrypts a text or jsonb ciphertext. A plain V1 function (see
/// `fmgr.rs`): it runs once per row of a SELECT.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn warden_decrypt(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: declared (bytea, text); fcinfo is the call's.
    unsafe { decrypt_call(fcinfo, text_of) }
}

/// `warden.decrypt_bytea(ciphertext bytea, context text DEFAULT NULL)
/// RETURNS bytea`: decrypts any ciphertext to its bytes, straight into the
/// result (a plain V1 function, see `fmgr.rs`: no copy of the plaintext is
/// left behind in freed memory).
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn warden_decrypt_bytea(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: declared (bytea, text); fcinfo is the call's.
    unsafe { decrypt_call(fcinfo, |_, _| Ok(())) }
}

/// A decrypt call `(ciphertext bytea, context text)`: NULL in, NULL out;
/// else the plaintext straight into a new varlena (`text` and `bytea`
/// share the layout) in the current memory context, if `check` accepts its
/// payload type and bytes (they are wiped if not).
///
/// # Safety
/// `fcinfo` is the call's, declared (bytea, text).
unsafe fn decrypt_call(
    fcinfo: pg_sys::FunctionCallInfo,
    check: impl FnOnce(PayloadType, &[u8]) -> Result<(), WardenError>,
) -> pg_sys::Datum {
    // SAFETY: as the caller's.
    unsafe {
        let Some(ciphertext) = fmgr::varlena_arg(fcinfo, 0) else {
            return fmgr::return_null(fcinfo);
        };
        let context = fmgr::varlena_arg(fcinfo, 1);
        let opened = (|| {
            let (env, key) = opening(ciphertext)?;
            // Inside a function call; no longer than the ciphertext.
            let (datum, out) = fmgr::new_varlena(env.plaintext_len());
            envelope::open_into(&key, &env, context, out)
                .map_err(|_| WardenError::DecryptionFailed)?;
            if let Err(e) = check(env.header().payload_type, out) {
                out.zeroize();
                return Err(e);
            }
            Ok(datum)
        })();
        pg_sys::Datum::from(opened.unwrap_or_else(|e| raise(e)))
    }
}

/// What `decrypt` accepts: a text or jsonb payload, valid text in the
/// database's encoding (as `encrypt` took it).
fn text_of(payload: PayloadType, plaintext: &[u8]) -> Result<(), WardenError> {
    expect(
        payload,
        &[PayloadType::Text, PayloadType::Jsonb],
        "text",
        "decrypt_bytea",
    )?;
    // SAFETY: a live buffer of that length; noError: no raise.
    let valid =
        unsafe { pg_sys::pg_verifymbstr(plaintext.as_ptr().cast(), plaintext.len() as i32, true) };
    if valid {
        Ok(())
    } else {
        Err(WardenError::NotText)
    }
}

/// Decrypts a jsonb ciphertext.
#[pg_extern(stable, parallel_restricted)]
fn decrypt_jsonb(
    ciphertext: Option<&[u8]>,
    context: default!(Option<&str>, "NULL"),
) -> SqlResult<Option<JsonB>> {
    let Some(ciphertext) = ciphertext else {
        return Ok(None);
    };
    let (payload, plaintext) = open(ciphertext, context.map(str::as_bytes))?;
    expect(payload, &[PayloadType::Jsonb], "jsonb", "decrypt")?;
    let value = serde_json::from_slice(&plaintext).map_err(|_| WardenError::NotText)?;
    Ok(Some(JsonB(value)))
}

/// Re-encrypts a ciphertext of the acting workspace under its current key
/// version (same payload type and context).
#[pg_extern(volatile, parallel_unsafe)]
fn reencrypt(
    ciphertext: Option<&[u8]>,
    context: default!(Option<&str>, "NULL"),
) -> SqlResult<Option<Vec<u8>>> {
    let Some(ciphertext) = ciphertext else {
        return Ok(None);
    };
    let (payload, plaintext) = open(ciphertext, context.map(str::as_bytes))?;
    Ok(Some(seal(payload, &plaintext, context.map(str::as_bytes))?))
}

/// A keyed HMAC of `value` under the workspace's blind-index key, for
/// equality lookups through an ordinary btree index. Deterministic within
/// a workspace and context; different across them.
#[pg_extern(stable, strict, parallel_restricted)]
fn blind_index(value: &str, context: &str) -> SqlResult<Vec<u8>> {
    let ws = acting_workspace()?;
    let key = workspace::index_key(&ws)?;
    Ok(crypto::blind_index(&key, context.as_bytes(), value.as_bytes()).to_vec())
}

/// What a ciphertext's header says, without any key: format version,
/// algorithm, payload type, workspace, key version.
// pgrx reads the column names from the name!() tuple written out here.
#[allow(clippy::type_complexity)]
#[pg_extern(immutable, strict, parallel_safe)]
fn envelope_info(
    ciphertext: &[u8],
) -> TableIterator<
    'static,
    (
        name!(format_version, i32),
        name!(algorithm, String),
        name!(payload_type, String),
        name!(workspace_id, Uuid),
        name!(key_version, i64),
    ),
> {
    // (pgrx generates no SQL for a Result around a TableIterator: raise.)
    let env = envelope::parse(ciphertext)
        .unwrap_or_else(|e| raise(WardenError::NotCiphertext(e.to_string())));
    let h = *env.header();
    TableIterator::once((
        h.format_version as i32,
        "aes-256-gcm".to_string(),
        h.payload_type.name().to_string(),
        Uuid::from_bytes(h.workspace_id),
        h.key_version as i64,
    ))
}

fmgr::v1_function_info!(
    pg_finfo_warden_encrypt_text,
    pg_finfo_warden_decrypt,
    pg_finfo_warden_decrypt_bytea
);
