//! Workspace keys: random data keys (one per version) and one blind-index
//! key per workspace, stored wrapped in `warden.workspace_keys` under a KEK
//! that HKDF derives from the master key and the workspace id.
//!
//! Unwrapped keys are cached per backend. The cache is dropped
//! - when any backend changes the key table (rotate, shred, rewrap, first
//!   key): those paths send a relcache invalidation for the table, which
//!   every backend processes at its next transaction start, and this backend
//!   at its next command;
//! - when a (sub)transaction aborts, since it may have cached a key whose row
//!   it created and rolled back;
//! - at `DISCARD ALL` (see `context.rs`).
//!
//! Reading and writing the table happens as the extension's owner: the
//! callers (`warden_user`) may not see it.

use crate::backend::{as_extension_owner, select_one, true_now, BackendLocal};
use crate::crypto::{derive_kek, key_wrap_aad, unwrap_key, wrap_key, DataKey, Key32};
use crate::error::WardenError;
use crate::keys::master::{self, MasterKeys};
use pgrx::prelude::*;
use pgrx::Uuid;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// What a stored key is for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum KeyKind {
    Data = 1,
    Index = 2,
}

/// A workspace's keys as far as this backend has needed them.
#[derive(Default)]
struct Cached {
    /// The version new ciphertexts use.
    current: Option<u32>,
    data: HashMap<u32, Rc<DataKey>>,
    index: Option<Rc<Key32>>,
}

/// Per workspace id.
type KeyCache = HashMap<[u8; 16], Cached>;

static CACHE: BackendLocal<RefCell<Option<KeyCache>>> = BackendLocal::new(RefCell::new(None));
/// OID of `warden.workspace_keys` when the cache was filled (the relcache
/// callback compares against it).
static KEY_TABLE: BackendLocal<Cell<pg_sys::Oid>> =
    BackendLocal::new(Cell::new(pg_sys::InvalidOid));

/// The last key used, by (workspace, version): a backend usually works in
/// one workspace at a time, and this skips hashing on every row.
struct LastKey {
    ws: [u8; 16],
    version: u32,
    current: bool,
    key: Rc<DataKey>,
}

static LAST: BackendLocal<RefCell<Option<LastKey>>> = BackendLocal::new(RefCell::new(None));

/// Forgets every unwrapped key in this backend (they zeroize on drop).
pub fn forget_all() {
    *LAST.borrow_mut() = None;
    *CACHE.borrow_mut() = None;
}

fn remember(ws: &[u8; 16], version: u32, current: bool, key: &Rc<DataKey>) {
    *LAST.borrow_mut() = Some(LastKey {
        ws: *ws,
        version,
        current,
        key: key.clone(),
    });
}

fn with_cache<R>(ws: &[u8; 16], f: impl FnOnce(&mut Cached) -> R) -> R {
    let mut cache = CACHE.borrow_mut();
    f(cache
        .get_or_insert_with(HashMap::new)
        .entry(*ws)
        .or_default())
}

/// Registers the relcache callback that drops the cache when another
/// backend (or this one) changes the key table.
pub fn init() {
    // SAFETY: called once from _PG_init with a plain function.
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(key_table_changed), pg_sys::Datum::from(0))
    };
}

#[pg_guard]
unsafe extern "C-unwind" fn key_table_changed(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    let ours = KEY_TABLE.get();
    if relid == pg_sys::InvalidOid || (ours != pg_sys::InvalidOid && relid == ours) {
        forget_all();
    }
}

fn key_table_oid() -> Result<pg_sys::Oid, WardenError> {
    let oid = select_one::<pg_sys::Oid>(
        "SELECT 'warden.workspace_keys'::pg_catalog.regclass::pg_catalog.oid",
        &[],
    )?
    .ok_or_else(|| WardenError::Internal("warden.workspace_keys is missing".into()))?;
    KEY_TABLE.set(oid);
    Ok(oid)
}

/// Tells every backend (this one at its next command) that the key table
/// changed.
pub fn announce_change() -> Result<(), WardenError> {
    let oid = key_table_oid()?;
    // SAFETY: queues an invalidation message; sent at commit.
    unsafe { pg_sys::CacheInvalidateRelcacheByRelid(oid) };
    Ok(())
}

fn aad(ws: &[u8; 16], kind: KeyKind, version: u32) -> [u8; crate::crypto::KEY_WRAP_AAD_LEN] {
    key_wrap_aad(ws, version, kind as u8)
}

/// A stored key row.
struct Stored {
    version: u32,
    wrapped: Vec<u8>,
    master_key_id: String,
}

/// Reads one key row: a given version, or the highest.
fn read(ws: &[u8; 16], kind: KeyKind, version: Option<u32>) -> Result<Option<Stored>, WardenError> {
    read_as_of(ws, kind, version, Snapshot::Statement)
}

/// Which rows a read sees.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Snapshot {
    /// The statement's (read-only SPI): what STABLE callers must use.
    Statement,
    /// Everything committed so far (read-write SPI takes a new snapshot in
    /// READ COMMITTED): for the volatile paths that waited for the key lock
    /// and must see what the holder committed. (Under REPEATABLE READ, the
    /// transaction's snapshot: an insert that conflicts with a key it
    /// cannot see fails with 40001; see also `shredded_now`.)
    Latest,
}

fn read_as_of(
    ws: &[u8; 16],
    kind: KeyKind,
    version: Option<u32>,
    snapshot: Snapshot,
) -> Result<Option<Stored>, WardenError> {
    key_table_oid()?;
    let uuid = Uuid::from_bytes(*ws);
    as_extension_owner(|| {
        Spi::connect_mut(|client| {
            const QUERY: &str = "SELECT version, wrapped, master_key_id FROM warden.workspace_keys
                  WHERE workspace_id OPERATOR(pg_catalog.=) $1
                    AND kind OPERATOR(pg_catalog.=) $2
                    AND ($3 IS NULL OR version OPERATOR(pg_catalog.=) $3)
                  ORDER BY version DESC LIMIT 1";
            let args = [
                uuid.into(),
                (kind as i16).into(),
                version.map(|v| v as i32).into(),
            ];
            let rows = match snapshot {
                Snapshot::Statement => client.select(QUERY, None, &args)?,
                Snapshot::Latest => client.update(QUERY, None, &args)?,
            };
            if rows.is_empty() {
                return Ok(None);
            }
            let row = rows.first();
            let version = row.get::<i32>(1)?.unwrap_or_default();
            let wrapped = row.get::<Vec<u8>>(2)?.unwrap_or_default();
            let master_key_id = row.get::<String>(3)?.unwrap_or_default();
            Ok(Some(Stored {
                version: version as u32,
                wrapped,
                master_key_id,
            }))
        })
    })
}

/// Whether the workspace was crypto-shredded.
pub fn is_shredded(ws: &[u8; 16]) -> Result<bool, WardenError> {
    let uuid = Uuid::from_bytes(*ws);
    as_extension_owner(|| {
        Ok(select_one::<bool>(
            "SELECT EXISTS (SELECT FROM warden.shredded_workspaces
                             WHERE workspace_id OPERATOR(pg_catalog.=) $1)",
            &[uuid.into()],
        )?
        .unwrap_or(false))
    })
}

/// Whether the workspace is shredded, as of now (see `true_now`): for the
/// operations serialized by [`lock_keys`], at any isolation level.
fn shredded_now(ws: &[u8; 16]) -> Result<bool, WardenError> {
    exists_now(
        c"SELECT EXISTS (SELECT FROM warden.shredded_workspaces
                          WHERE workspace_id OPERATOR(pg_catalog.=) $1)",
        ws,
    )
}

/// Whether any key of the workspace is left, as of now.
fn keys_left_now(ws: &[u8; 16]) -> Result<bool, WardenError> {
    exists_now(
        c"SELECT EXISTS (SELECT FROM warden.workspace_keys
                          WHERE workspace_id OPERATOR(pg_catalog.=) $1)",
        ws,
    )
}

/// `query` about workspace `$1`, as of now, as the extension's owner.
fn exists_now(query: &std::ffi::CStr, ws: &[u8; 16]) -> Result<bool, WardenError> {
    let uuid = Uuid::from_bytes(*ws);
    as_extension_owner(|| true_now(query, &[uuid.into()]))
}

fn unwrap_stored(
    master: &MasterKeys,
    ws: &[u8; 16],
    kind: KeyKind,
    stored: &Stored,
) -> Result<Key32, WardenError> {
    // A shred deletes the workspace's keys; one still found (put back by
    // hand, say) is refused all the same.
    if is_shredded(ws)? {
        return Err(WardenError::Shredded(Uuid::from_bytes(*ws).to_string()));
    }
    if stored.master_key_id != master.id {
        return Err(WardenError::WrappedByOtherMasterKey(
            stored.master_key_id.clone(),
        ));
    }
    let kek = derive_kek(&master.master, ws);
    unwrap_key(&kek, &stored.wrapped, &aad(ws, kind, stored.version))
        .map_err(|_| WardenError::KeyUnwrapFailed)
}

/// A stored data key, unwrapped and expanded for AES-GCM.
fn unwrap_data_key(ws: &[u8; 16], stored: &Stored) -> Result<Rc<DataKey>, WardenError> {
    let key = unwrap_stored(&*master::current()?, ws, KeyKind::Data, stored)?;
    Ok(Rc::new(DataKey::new(&key)))
}

/// Why a key could not be found.
fn missing(ws: &[u8; 16], version: Option<u32>) -> WardenError {
    match is_shredded(ws) {
        Ok(true) => WardenError::Shredded(Uuid::from_bytes(*ws).to_string()),
        Ok(false) => match version {
            Some(v) => WardenError::UnknownKeyVersion(v),
            None => WardenError::NoKeysYet(Uuid::from_bytes(*ws).to_string()),
        },
        Err(e) => e,
    }
}

/// The data key of `version`, for decryption.
pub fn data_key(ws: &[u8; 16], version: u32) -> Result<Rc<DataKey>, WardenError> {
    take_news();
    let last = LAST
        .borrow()
        .as_ref()
        .filter(|l| l.ws == *ws && l.version == version)
        .map(|l| l.key.clone());
    if let Some(key) = last {
        return Ok(key);
    }
    if let Some(key) = with_cache(ws, |c| c.data.get(&version).cloned()) {
        let current = with_cache(ws, |c| c.current == Some(version));
        remember(ws, version, current, &key);
        return Ok(key);
    }
    let stored =
        read(ws, KeyKind::Data, Some(version))?.ok_or_else(|| missing(ws, Some(version)))?;
    let key = unwrap_data_key(ws, &stored)?;
    with_cache(ws, |c| c.data.insert(version, key.clone()));
    Ok(key)
}

/// The current data key and its version, for encryption. The workspace's
/// first encryption creates its keys (concurrent first uses in several
/// backends converge on one: the losers' inserts do nothing and they read
/// the winner's).
pub fn current_data_key(ws: &[u8; 16]) -> Result<(u32, Rc<DataKey>), WardenError> {
    take_news();
    let last = LAST
        .borrow()
        .as_ref()
        .filter(|l| l.ws == *ws && l.current)
        .map(|l| (l.version, l.key.clone()));
    if let Some(found) = last {
        return Ok(found);
    }
    let cached = with_cache(ws, |c| {
        c.current
            .and_then(|v| c.data.get(&v).map(|k| (v, k.clone())))
    });
    if let Some((version, key)) = cached {
        remember(ws, version, true, &key);
        return Ok((version, key));
    }
    let stored = match read(ws, KeyKind::Data, None)? {
        Some(stored) => stored,
        None => {
            create_first_keys(ws)?;
            read_as_of(ws, KeyKind::Data, None, Snapshot::Latest)?
                .ok_or_else(|| missing(ws, None))?
        }
    };
    let key = unwrap_data_key(ws, &stored)?;
    with_cache(ws, |c| {
        c.current = Some(stored.version);
        c.data.insert(stored.version, key.clone());
    });
    remember(ws, stored.version, true, &key);
    Ok((stored.version, key))
}

/// The workspace's blind-index key (created with its first data key).
pub fn index_key(ws: &[u8; 16]) -> Result<Rc<Key32>, WardenError> {
    take_news();
    if let Some(key) = with_cache(ws, |c| c.index.clone()) {
        return Ok(key);
    }
    let stored = read(ws, KeyKind::Index, Some(1))?.ok_or_else(|| missing(ws, None))?;
    let key = Rc::new(unwrap_stored(
        &*master::current()?,
        ws,
        KeyKind::Index,
        &stored,
    )?);
    with_cache(ws, |c| c.index = Some(key.clone()));
    Ok(key)
}

/// Inserts a new wrapped key row; false if that (kind, version) exists.
fn insert(
    ws: &[u8; 16],
    kind: KeyKind,
    version: u32,
    master: &MasterKeys,
) -> Result<bool, WardenError> {
    let key = Key32::random()?;
    let wrapped = wrap_key(
        &derive_kek(&master.master, ws),
        &key,
        &aad(ws, kind, version),
    )?;
    let uuid = Uuid::from_bytes(*ws);
    let inserted = as_extension_owner(|| {
        Spi::connect_mut(|client| {
            let rows = client.update(
                "INSERT INTO warden.workspace_keys (workspace_id, kind, version, wrapped, master_key_id)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING 1",
                None,
                &[
                    uuid.into(),
                    (kind as i16).into(),
                    (version as i32).into(),
                    wrapped.into(),
                    master.id.as_str().into(),
                ],
            )?;
            Ok::<_, WardenError>(!rows.is_empty())
        })
    })?;
    announce_change()?;
    Ok(inserted)
}

/// Serializes the operations that create or destroy a workspace's keys
/// (first use, rotation, shredding) with a transaction-level advisory lock,
/// so a key cannot be created beside a concurrent shred. Whoever waited
/// re-reads what the other committed (READ COMMITTED takes a new snapshot
/// per query); under REPEATABLE READ or SERIALIZABLE, whose snapshot cannot
/// see it, waiting is a serialization failure (40001: retry).
fn lock_keys(ws: &[u8; 16]) -> Result<(), WardenError> {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&ws[..8]);
    // 0x574B ("WK") in the top bits: apart from the audit chains' keys.
    let key = (0x574B_i64 << 48) | (i64::from_be_bytes(bytes) & 0x0000_FFFF_FFFF_FFFF);
    let free = select_one::<bool>(
        "SELECT pg_catalog.pg_try_advisory_xact_lock($1)",
        &[key.into()],
    )?
    .unwrap_or(false);
    if free {
        return Ok(());
    }
    select_one::<String>(
        "SELECT pg_catalog.pg_advisory_xact_lock($1)::pg_catalog.text",
        &[key.into()],
    )?;
    // SAFETY: reads this transaction's isolation level.
    if unsafe { pg_sys::XactIsoLevel } >= pg_sys::XACT_REPEATABLE_READ as i32 {
        return Err(WardenError::ConcurrentKeyChange);
    }
    Ok(())
}

/// Takes in the invalidations other backends sent (a rotation, a shred),
/// once per statement: the cached keys are otherwise answered without
/// touching a table, and a long transaction would not see them until its
/// end.
fn take_news() {
    // SAFETY: reads the statement's start; AcceptInvalidationMessages runs
    // our relcache callback, which may clear the caches (none is borrowed).
    unsafe {
        let statement = pg_sys::GetCurrentStatementStartTimestamp();
        if NEWS_TAKEN_AT.get() != statement {
            NEWS_TAKEN_AT.set(statement);
            pg_sys::AcceptInvalidationMessages();
        }
    }
}

static NEWS_TAKEN_AT: BackendLocal<Cell<pg_sys::TimestampTz>> = BackendLocal::new(Cell::new(0));

fn create_first_keys(ws: &[u8; 16]) -> Result<(), WardenError> {
    lock_keys(ws)?;
    if shredded_now(ws)? {
        return Err(WardenError::Shredded(Uuid::from_bytes(*ws).to_string()));
    }
    let master = master::current()?;
    if insert(ws, KeyKind::Data, 1, &master)? {
        crate::audit::key_event("key.create", Some(*ws), serde_json::json!({"version": 1}))?;
    }
    insert(ws, KeyKind::Index, 1, &master)?;
    Ok(())
}

/// A new data key version; old versions keep decrypting. Returns it.
pub fn rotate(ws: &[u8; 16]) -> Result<u32, WardenError> {
    lock_keys(ws)?;
    if shredded_now(ws)? {
        return Err(WardenError::Shredded(Uuid::from_bytes(*ws).to_string()));
    }
    let master = master::current()?;
    let next = match read_as_of(ws, KeyKind::Data, None, Snapshot::Latest)? {
        Some(stored) => stored.version + 1,
        None => {
            create_first_keys(ws)?;
            return Ok(1);
        }
    };
    if !insert(ws, KeyKind::Data, next, &master)? {
        // Another rotation took this version concurrently; ours is the next.
        return rotate(ws);
    }
    forget_all();
    Ok(next)
}

/// Destroys every key of the workspace and marks it shredded.
pub fn shred(ws: &[u8; 16]) -> Result<(), WardenError> {
    lock_keys(ws)?;
    let uuid = Uuid::from_bytes(*ws);
    as_extension_owner(|| {
        Spi::run_with_args(
            "DELETE FROM warden.workspace_keys WHERE workspace_id OPERATOR(pg_catalog.=) $1",
            &[uuid.into()],
        )?;
        Spi::run_with_args(
            "INSERT INTO warden.shredded_workspaces (workspace_id) VALUES ($1) ON CONFLICT DO NOTHING",
            &[uuid.into()],
        )?;
        Ok::<_, WardenError>(())
    })?;
    // Under REPEATABLE READ or SERIALIZABLE the DELETE saw the keys of the
    // transaction's snapshot: one created since (a rotation, a first use
    // that committed before this took the lock) would outlive the shred.
    if keys_left_now(ws)? {
        return Err(WardenError::ConcurrentKeyChange);
    }
    announce_change()?;
    forget_all();
    Ok(())
}

/// Re-wraps every key wrapped under the previous master key with the
/// current one; returns how many. Keys already under the current master
/// key are left alone; a key under neither is an error.
pub fn rewrap_all() -> Result<i64, WardenError> {
    let current = master::current()?;
    let previous = master::previous()?;
    let rows: Vec<(Uuid, i16, i32, Vec<u8>, String)> = as_extension_owner(|| {
        Spi::connect_mut(|client| {
            // Waits for transactions still writing keys (a first use or a
            // rotation may wrap under the previous master key until it
            // commits) and keeps new ones out until this one commits.
            client.update(
                "LOCK TABLE warden.workspace_keys IN SHARE ROW EXCLUSIVE MODE",
                None,
                &[],
            )?;
            let mut out = Vec::new();
            for row in client.update(
                "SELECT workspace_id, kind, version, wrapped, master_key_id
                   FROM warden.workspace_keys
                  WHERE master_key_id OPERATOR(pg_catalog.<>) $1
                  ORDER BY 1, 2, 3 FOR UPDATE",
                None,
                &[current.id.as_str().into()],
            )? {
                out.push((
                    row.get::<Uuid>(1)?.unwrap(),
                    row.get::<i16>(2)?.unwrap(),
                    row.get::<i32>(3)?.unwrap(),
                    row.get::<Vec<u8>>(4)?.unwrap(),
                    row.get::<String>(5)?.unwrap(),
                ));
            }
            Ok::<_, WardenError>(out)
        })
    })?;
    // Under REPEATABLE READ or SERIALIZABLE the rows above are those of the
    // transaction's snapshot, taken before the lock was granted: a key
    // written meanwhile would stay under the previous master key, unseen.
    let all_seen = as_extension_owner(|| {
        true_now(
            c"SELECT pg_catalog.count(*) OPERATOR(pg_catalog.=) $2 FROM warden.workspace_keys
               WHERE master_key_id OPERATOR(pg_catalog.<>) $1",
            &[current.id.as_str().into(), (rows.len() as i64).into()],
        )
    })?;
    if !all_seen {
        return Err(WardenError::ConcurrentKeyChange);
    }
    let mut count = 0;
    for (uuid, kind, version, wrapped, master_key_id) in rows {
        let Some(previous) = previous.as_ref().filter(|p| p.id == master_key_id) else {
            return Err(WardenError::WrappedByOtherMasterKey(master_key_id));
        };
        let ws = *uuid.as_bytes();
        let kind = if kind == 1 {
            KeyKind::Data
        } else {
            KeyKind::Index
        };
        let stored = Stored {
            version: version as u32,
            wrapped,
            master_key_id,
        };
        let key = match unwrap_stored(previous, &ws, kind, &stored) {
            Ok(key) => key,
            // A key of a shredded workspace (left by a partial restore,
            // say) is never used again: it is not re-wrapped either.
            Err(WardenError::Shredded(_)) => continue,
            Err(e) => return Err(e),
        };
        let rewrapped = wrap_key(
            &derive_kek(&current.master, &ws),
            &key,
            &aad(&ws, kind, stored.version),
        )?;
        as_extension_owner(|| {
            Spi::run_with_args(
                "UPDATE warden.workspace_keys SET wrapped = $4, master_key_id = $5
                  WHERE workspace_id OPERATOR(pg_catalog.=) $1 AND kind OPERATOR(pg_catalog.=) $2
                    AND version OPERATOR(pg_catalog.=) $3",
                &[
                    uuid.into(),
                    (kind as i16).into(),
                    version.into(),
                    rewrapped.into(),
                    current.id.as_str().into(),
                ],
            )
            .map_err(WardenError::from)
        })?;
        count += 1;
    }
    if count > 0 {
        announce_change()?;
    }
    Ok(count)
}
