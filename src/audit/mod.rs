//! The audit trail: recording entries, writing them, sealing them per
//! transaction, chaining the seals per workspace, and verifying the chains.
//!
//! Storage: an entry is a row of `warden.audit_entries`, except the rows
//! of a statement that changes many rows of one table (64 or more, with
//! one action): those go to `warden.audit_batches`, up to 1,024 entries a
//! row, their JSON values in `json[]` columns (see `pending`). The view
//! `warden.audit_log` shows both as one row per entry.
//!
//! Tamper evidence, in three layers, all HMAC-SHA256 under a key derived
//! from the master key (see `macs`):
//! - every entry, and every batch, carries `mac` over every column but
//!   the seal, `id` included (JSON values as the text stored: see `json`),
//!   so an edited, inserted or re-numbered entry or batch does not verify;
//! - at commit, each transaction that wrote entries seals them per
//!   workspace: their count and the MAC of its rows' MACs, in order, on
//!   its last row there (`seal_entries`, `seal_mac`: that row is never
//!   written before commit). A deleted entry or batch breaks its
//!   transaction's seal;
//! - seals are chained per workspace in blocks (see `chain`). A deleted
//!   transaction (rows and seal) breaks its block; a seal also names the
//!   newest block its writer knew of, so blocks deleted and made again
//!   over fewer transactions break the seals written after them.
//!
//! Writers never wait for each other: rows and seals are written without
//! locks, and chaining takes a *try*-lock at commit. So every committed
//! entry ends up covered by a block; until then (the time between two
//! commits in the workspace), a deletion of a whole transaction would go
//! unnoticed.
//!
//! The audit key derives from the master key (HKDF), so an audited write
//! needs the master key, and a cluster restored with the same master key
//! verifies.

mod chain;
mod denial;
pub mod json;
mod macs;
mod pending;
pub use chain::{purge, verify};
pub use denial::record_denial;

use crate::backend::BackendLocal;
use crate::context;
use crate::error::WardenError;
use pgrx::prelude::*;
use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// The JSON text of a value built in Rust (an event's detail, a purge
/// mark): what is stored, as `json`, and MAC'ed.
pub fn json_text(value: &serde_json::Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

/// One event, before it is written.
pub struct Entry {
    /// The chain it belongs to: `None` for the acting context's workspace;
    /// `Some` for an operation on a given workspace (key management).
    pub workspace: Option<Option<[u8; 16]>>,
    pub action: Cow<'static, str>,
    pub target: Option<Rc<str>>,
    /// JSON texts (stored as `json`).
    pub row_key: Option<Vec<u8>>,
    pub old_values: Option<Vec<u8>>,
    pub new_values: Option<Vec<u8>>,
    pub detail: Option<Vec<u8>>,
}

/// Set only while `warden.purge_audit()` deletes.
static PURGING: BackendLocal<Cell<bool>> = BackendLocal::new(Cell::new(false));

pub fn purging() -> bool {
    PURGING.get()
}

/// Runs `f` with deletion from the trail allowed (purge only).
fn while_purging<T>(f: impl FnOnce() -> Result<T, WardenError>) -> Result<T, WardenError> {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            PURGING.set(false);
        }
    }
    PURGING.set(true);
    let _reset = Reset;
    f()
}

/// The role name the current user acts as.
fn current_role_name() -> Rc<str> {
    // SAFETY: reads this backend's current user id.
    role_name(unsafe { crate::backend::unguarded::GetUserId() })
}

/// A role's name (empty if it no longer exists).
pub fn role_name(role: pg_sys::Oid) -> Rc<str> {
    cached_name(role, NameKind::Role, || {
        // SAFETY: catalog lookup by OID; NULL when missing.
        unsafe {
            let ptr = pg_sys::GetUserNameFromId(role, true);
            if ptr.is_null() {
                Rc::from("")
            } else {
                Rc::from(std::ffi::CStr::from_ptr(ptr).to_string_lossy())
            }
        }
    })
}

/// A schema's name (empty if it no longer exists).
pub fn schema_name(schema: pg_sys::Oid) -> Rc<str> {
    cached_name(schema, NameKind::Schema, || {
        // SAFETY: catalog lookup by OID; NULL when missing.
        unsafe {
            let ptr = pg_sys::get_namespace_name(schema);
            if ptr.is_null() {
                Rc::from("")
            } else {
                Rc::from(std::ffi::CStr::from_ptr(ptr).to_string_lossy())
            }
        }
    })
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum NameKind {
    Role,
    Schema,
}

/// Role and schema names an audited row needs, looked up once per backend
/// and forgotten whenever the catalogs announce a change to roles or
/// schemas (a rename): every row of a bulk statement would otherwise look
/// both up again.
struct Names {
    /// `NAMES_CHANGED` when these were looked up.
    seen: u64,
    names: std::collections::HashMap<(NameKind, pg_sys::Oid), Rc<str>>,
}

static NAMES: BackendLocal<RefCell<Option<Names>>> = BackendLocal::new(RefCell::new(None));
/// Bumped by the syscache callbacks (which must not touch `NAMES`: they
/// can run during the lookup below).
static NAMES_CHANGED: BackendLocal<Cell<u64>> = BackendLocal::new(Cell::new(0));

/// Changes whenever a role or schema may have been renamed: what names
/// derived from them (a row plan's target) are checked against.
pub fn names_generation() -> u64 {
    NAMES_CHANGED.get()
}

/// A name looked up: what, which, at which `NAMES_CHANGED`, the name.
type NameLookup = (NameKind, pg_sys::Oid, u64, Rc<str>);

/// The last name looked up (every row of a bulk statement asks for the
/// same role): checked before the map.
static LAST_NAME: BackendLocal<RefCell<Option<NameLookup>>> = BackendLocal::new(RefCell::new(None));

fn cached_name(oid: pg_sys::Oid, kind: NameKind, lookup: impl FnOnce() -> Rc<str>) -> Rc<str> {
    let seen = NAMES_CHANGED.get();
    if let Some((k, o, s, name)) = &*LAST_NAME.borrow() {
        if (*k, *o, *s) == (kind, oid, seen) {
            return Rc::clone(name);
        }
    }
    let name = mapped_name(oid, kind, seen, lookup);
    *LAST_NAME.borrow_mut() = Some((kind, oid, seen, Rc::clone(&name)));
    name
}

fn mapped_name(
    oid: pg_sys::Oid,
    kind: NameKind,
    seen: u64,
    lookup: impl FnOnce() -> Rc<str>,
) -> Rc<str> {
    {
        let mut names = NAMES.borrow_mut();
        let names = match &mut *names {
            Some(n) if n.seen == seen => n,
            slot => slot.insert(Names {
                seen,
                names: std::collections::HashMap::new(),
            }),
        };
        if let Some(name) = names.names.get(&(kind, oid)) {
            return Rc::clone(name);
        }
    }
    // Not borrowed here: the lookup may process invalidations.
    let name = lookup();
    if let Some(names) = &mut *NAMES.borrow_mut() {
        // Kept only if nothing changed meanwhile.
        if names.seen == seen && NAMES_CHANGED.get() == seen {
            names.names.insert((kind, oid), Rc::clone(&name));
        }
    }
    name
}

/// Registers the syscache callbacks that keep [`cached_name`] honest.
pub fn init() {
    json::init();
    // SAFETY: called once from _PG_init with a plain function.
    unsafe {
        for cache in [
            pg_sys::SysCacheIdentifier::AUTHOID,
            pg_sys::SysCacheIdentifier::NAMESPACEOID,
        ] {
            pg_sys::CacheRegisterSyscacheCallback(
                cache as i32,
                Some(names_changed),
                pg_sys::Datum::from(0),
            );
        }
    }
}

unsafe extern "C-unwind" fn names_changed(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    // Only a counter: cannot fail, so no guard is needed.
    NAMES_CHANGED.set(NAMES_CHANGED.get().wrapping_add(1));
}

/// Records one entry: buffered now, written at commit (or when the buffer
/// is full).
pub fn record(entry: Entry) -> Result<(), WardenError> {
    let (acting, actor) =
        context::with_current(|c| c.map(|c| (c.workspace_id, c.user_id)))?.unzip();
    let workspace = entry.workspace.unwrap_or(acting);
    record_as(entry, workspace, actor, current_role_name())
}

/// [`record`] on behalf of another session (a denial, written by a
/// background worker after the denied session's transaction is gone).
pub fn record_as(
    entry: Entry,
    workspace: Option<[u8; 16]>,
    actor: Option<[u8; 16]>,
    db_role: Rc<str>,
) -> Result<(), WardenError> {
    use crate::backend::unguarded;
    // SAFETY: reads of backend globals; assigning a transaction id (the
    // first time) can raise, so that goes through the guarded binding.
    let (txid, at, subxact) = unsafe {
        let assigned = unguarded::GetTopFullTransactionIdIfAny().value;
        let txid = if assigned == 0 {
            pg_sys::GetTopFullTransactionId().value
        } else {
            assigned
        };
        (
            txid as i64,
            unguarded::GetCurrentStatementStartTimestamp(),
            unguarded::GetCurrentSubTransactionId(),
        )
    };
    // The master key is needed to write: say so at the transaction's first
    // entry, not at commit.
    if !pending::recording(txid) {
        crate::keys::master::current()?;
    }
    let head = pending::Head::new(
        at,
        workspace,
        actor,
        db_role,
        entry.action,
        entry.target,
        subxact,
    );
    let values = [
        entry.row_key,
        entry.old_values,
        entry.new_values,
        entry.detail,
    ];
    if pending::push(txid, head, values)? {
        pending::flush(false)?;
    }
    Ok(())
}

/// Records a key-management event in the workspace's chain (or, for
/// cluster-wide operations, outside any workspace).
pub fn key_event(
    action: &'static str,
    workspace: Option<[u8; 16]>,
    detail: serde_json::Value,
) -> Result<(), WardenError> {
    record(Entry {
        workspace: Some(workspace),
        action: Cow::Borrowed(action),
        target: Some(Rc::from("warden.workspace_keys")),
        row_key: None,
        old_values: None,
        new_values: None,
        detail: Some(json_text(&detail)),
    })
}

/// Records a change to what is audited (`audit.enabled`, `audit.disabled`)
/// in the chain outside any workspace, which administrators read: turning
/// the trail off for a table leaves a trace.
pub fn config_event(
    action: &'static str,
    target: &str,
    detail: serde_json::Value,
) -> Result<(), WardenError> {
    record(Entry {
        workspace: Some(None),
        action: Cow::Borrowed(action),
        target: Some(Rc::from(target)),
        row_key: None,
        old_values: None,
        new_values: None,
        detail: Some(json_text(&detail)),
    })
}

/// Just before commit: writes what is still buffered, with the seals, one
/// per workspace (without any lock: concurrent writers in a workspace
/// never wait for each other); then chains, if due (see `chain`). Before
/// PREPARE TRANSACTION (`then_chain` false) it does not chain: the chain's
/// lock would stay with the prepared transaction, holding up
/// `verify_audit()` until it is committed or rolled back.
pub fn seal_transaction(then_chain: bool) -> Result<(), WardenError> {
    if !pending::any() {
        return Ok(());
    }
    // Commit-time callbacks run without an active snapshot; queries need one.
    // SAFETY: pushed and popped around our queries; an error aborts the
    // transaction, which clears the snapshot stack.
    unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
    let sealed = pending::flush(true).and_then(|()| {
        let workspaces = pending::workspaces();
        pending::forget();
        if then_chain {
            chain::chain_after_commit(&workspaces)
        } else {
            Ok(())
        }
    });
    unsafe { pg_sys::PopActiveSnapshot() };
    sealed
}

/// A subtransaction rolled back: so did what it recorded.
pub fn forget_subtransaction(subxact: pg_sys::SubTransactionId) {
    pending::forget_subtransaction(subxact);
}

/// Forgets what an aborted (or prepared) transaction recorded, and the
/// chains' heads it read (they may have been its own blocks).
pub fn forget_pending() {
    pending::forget();
    chain::forget_heads();
}
