//! The audit trail: recording entries, sealing them per transaction,
//! chaining the seals per workspace, and verifying the chains.
//!
//! Tamper evidence, in three layers, all HMAC-SHA256 under a key derived
//! from the master key:
//! - every entry carries `mac` over every column but `id` and the seal (JSON values as
//!   the text stored: see `json`), so an edited or an inserted entry does
//!   not verify;
//! - at commit, each transaction that wrote entries seals them per
//!   workspace: the MAC of its entry MACs, in order, and their count, on
//!   its last entry there (`seal_entries`, `seal_mac`: that entry is never
//!   written before commit). A deleted entry breaks its transaction's
//!   seal;
//! - seals are chained per workspace in blocks: a block covers every seal
//!   whose transaction id lies in `[from_txid, to_txid)` and MACs them with
//!   the previous block's MAC. `to_txid` is a snapshot's xmin, below which
//!   every transaction has finished, so no seal can appear in a chained
//!   range later. A deleted transaction (entries and seal) breaks its block.
//!
//! Writers never wait for each other: entries and seals are written without
//! locks. Chaining takes the chain's advisory lock with a *try*-lock at
//! commit (whoever gets it chains what has settled; the others go on), and
//! for certain in `verify_audit()` and `purge_audit()`. So every committed
//! entry ends up covered by a block; until then (the time between two
//! commits in the workspace), a deletion of a whole transaction would go
//! unnoticed.
//!
//! The audit key derives from the master key (HKDF), so an audited write
//! needs the master key, and a cluster restored with the same master key
//! verifies.

mod denial;
pub mod json;
pub use denial::record_denial;

use crate::append;
use crate::backend::{as_extension_owner, execute, select, select_one, BackendLocal};
use crate::context;
use crate::crypto::{fields_mac, Key32, MAC_LEN};
use crate::error::WardenError;
use crate::keys::master;
use pgrx::prelude::*;
use pgrx::Uuid;
use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;

const ENTRY_LABEL: &[u8] = b"pg_warden/v1/audit-entry";
const SEAL_LABEL: &[u8] = b"pg_warden/v1/audit-seal";

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
    pub action: String,
    pub target: Option<String>,
    /// JSON texts (stored as `json`).
    pub row_key: Option<Vec<u8>>,
    pub old_values: Option<Vec<u8>>,
    pub new_values: Option<Vec<u8>>,
    pub detail: Option<Vec<u8>>,
}

/// An entry with every stored column computed, MAC included.
struct Ready {
    at: i64,
    txn_seq: i32,
    workspace: Option<[u8; 16]>,
    actor: Option<[u8; 16]>,
    db_role: String,
    action: String,
    target: Option<String>,
    /// JSON texts.
    row_key: Option<Vec<u8>>,
    old_values: Option<Vec<u8>>,
    new_values: Option<Vec<u8>>,
    detail: Option<Vec<u8>>,
    mac: [u8; MAC_LEN],
    /// The subtransaction that made it: gone if that one rolls back.
    subxact: pg_sys::SubTransactionId,
    /// Its JSON values' bytes, as `[start, end)` of the transaction's
    /// running total.
    bytes: (usize, usize),
    /// On the last entry of the transaction in its workspace, set at
    /// commit: the seal (entries, MAC).
    seal: Option<(i32, [u8; MAC_LEN])>,
}

/// A written entry, as its seal needs it.
struct Written {
    workspace: Option<[u8; 16]>,
    txn_seq: i32,
    mac: [u8; MAC_LEN],
    subxact: pg_sys::SubTransactionId,
}

/// What this transaction has recorded: entries not yet written (row
/// triggers buffer them; the statement's end writes them in one INSERT),
/// and entries written, to seal at commit.
struct Pending {
    txid: i64,
    next_seq: i32,
    unwritten: Vec<Ready>,
    /// Bytes of JSON values recorded in this transaction (a running total:
    /// each entry knows where its own bytes start and end in it).
    recorded_bytes: usize,
    written: Vec<Written>,
    /// The subtransactions of entries a failed flush took with it (an
    /// error caught by a savepoint): while any of them is still part of
    /// the transaction, it cannot commit (its trail would miss them).
    lost: Vec<pg_sys::SubTransactionId>,
}

/// Entries buffered before a write is forced (bounds memory in huge
/// statements).
const MAX_BUFFERED: usize = 10_000;

/// Bytes of JSON values buffered before a write is forced (bounds memory
/// when rows are large: 10,000 rows of a megabyte each would otherwise be
/// held at once). Like the count, it applies to what a write could take:
/// the current subtransaction's entries (inside a savepoint, those of the
/// levels above wait for their level or commit).
const MAX_BUFFERED_BYTES: usize = 16 << 20;

static PENDING: BackendLocal<RefCell<Option<Pending>>> = BackendLocal::new(RefCell::new(None));

/// Set only while `warden.purge_audit()` deletes.
static PURGING: BackendLocal<Cell<bool>> = BackendLocal::new(Cell::new(false));

pub fn purging() -> bool {
    PURGING.get()
}

/// The stored fields of an entry as the MAC sees them.
pub struct MacFields<'a> {
    pub at: i64,
    pub txid: i64,
    pub txn_seq: i32,
    pub workspace: Option<[u8; 16]>,
    pub actor: Option<[u8; 16]>,
    pub db_role: &'a str,
    pub action: &'a str,
    pub target: Option<&'a str>,
    /// JSON values: their text, as stored.
    pub row_key: Option<&'a [u8]>,
    pub old_values: Option<&'a [u8]>,
    pub new_values: Option<&'a [u8]>,
    pub detail: Option<&'a [u8]>,
}

impl MacFields<'_> {
    pub fn mac(&self, key: &Key32) -> [u8; MAC_LEN] {
        // A NULL is distinguished from an empty value by a presence byte.
        fn opt(v: Option<&[u8]>) -> Vec<u8> {
            v.map_or_else(Vec::new, |b| [&[1u8][..], b].concat())
        }
        let (ws, actor) = (
            self.workspace.map(|w| w.to_vec()),
            self.actor.map(|a| a.to_vec()),
        );
        fields_mac(
            key,
            ENTRY_LABEL,
            &[
                &self.at.to_be_bytes(),
                &self.txid.to_be_bytes(),
                &self.txn_seq.to_be_bytes(),
                &opt(ws.as_deref()),
                &opt(actor.as_deref()),
                self.db_role.as_bytes(),
                self.action.as_bytes(),
                &opt(self.target.map(str::as_bytes)),
                &opt(self.row_key),
                &opt(self.old_values),
                &opt(self.new_values),
                &opt(self.detail),
            ],
        )
    }
}

/// The role name the current user acts as.
fn current_role_name() -> String {
    // SAFETY: reads this backend's current user id.
    role_name(unsafe { pg_sys::GetUserId() })
}

/// A role's name (empty if it no longer exists).
pub fn role_name(role: pg_sys::Oid) -> String {
    cached_name(role, NameKind::Role, || {
        // SAFETY: catalog lookup by OID; NULL when missing.
        unsafe {
            let ptr = pg_sys::GetUserNameFromId(role, true);
            if ptr.is_null() {
                String::new()
            } else {
                std::ffi::CStr::from_ptr(ptr).to_string_lossy().into_owned()
            }
        }
    })
}

/// A schema's name (empty if it no longer exists).
pub fn schema_name(schema: pg_sys::Oid) -> String {
    cached_name(schema, NameKind::Schema, || {
        // SAFETY: catalog lookup by OID; NULL when missing.
        unsafe {
            let ptr = pg_sys::get_namespace_name(schema);
            if ptr.is_null() {
                String::new()
            } else {
                std::ffi::CStr::from_ptr(ptr).to_string_lossy().into_owned()
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
    names: std::collections::HashMap<(NameKind, pg_sys::Oid), String>,
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

fn cached_name(oid: pg_sys::Oid, kind: NameKind, lookup: impl FnOnce() -> String) -> String {
    let seen = NAMES_CHANGED.get();
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
            return name.clone();
        }
    }
    // Not borrowed here: the lookup may process invalidations.
    let name = lookup();
    if let Some(names) = &mut *NAMES.borrow_mut() {
        // Kept only if nothing changed meanwhile.
        if names.seen == seen && NAMES_CHANGED.get() == seen {
            names.names.insert((kind, oid), name.clone());
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

/// Records one entry: computed and MAC'ed now, written at the end of the
/// statement ([`flush`]) or when the buffer is full.
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
    db_role: String,
) -> Result<(), WardenError> {
    let keys = master::current()?;
    // SAFETY: assign (or return) this transaction's id; read the statement
    // start and the current subtransaction.
    let (txid, at, subxact) = unsafe {
        (
            pg_sys::GetTopFullTransactionId().value as i64,
            pg_sys::GetCurrentStatementStartTimestamp(),
            pg_sys::GetCurrentSubTransactionId(),
        )
    };
    let Entry {
        action,
        target,
        row_key,
        old_values,
        new_values,
        detail,
        ..
    } = entry;
    let size: usize = [&row_key, &old_values, &new_values, &detail]
        .iter()
        .map(|v| v.as_ref().map_or(0, Vec::len))
        .sum();
    let full = {
        let mut pending = PENDING.borrow_mut();
        let p = match &mut *pending {
            Some(p) if p.txid == txid => p,
            slot => slot.insert(Pending {
                txid,
                next_seq: 0,
                unwritten: Vec::new(),
                recorded_bytes: 0,
                written: Vec::new(),
                lost: Vec::new(),
            }),
        };
        p.next_seq += 1;
        let mac = MacFields {
            at,
            txid,
            txn_seq: p.next_seq,
            workspace,
            actor,
            db_role: &db_role,
            action: &action,
            target: target.as_deref(),
            row_key: row_key.as_deref(),
            old_values: old_values.as_deref(),
            new_values: new_values.as_deref(),
            detail: detail.as_deref(),
        }
        .mac(&keys.audit);
        let ready = Ready {
            at,
            txn_seq: p.next_seq,
            workspace,
            actor,
            db_role,
            action,
            target,
            row_key,
            old_values,
            new_values,
            detail,
            mac,
            subxact,
            bytes: (p.recorded_bytes, p.recorded_bytes + size),
            seal: None,
        };
        p.recorded_bytes += size;
        p.unwritten.push(ready);
        // What a write now would take: the current subtransaction's share.
        let from = writable_from(&p.unwritten, subxact);
        let bytes = p.unwritten.last().map_or(0, |last| last.bytes.1)
            - p.unwritten
                .get(from)
                .map_or(p.recorded_bytes, |first| first.bytes.0);
        p.unwritten.len() - from >= MAX_BUFFERED || bytes >= MAX_BUFFERED_BYTES
    };
    if full {
        flush(None)?;
    }
    Ok(())
}

/// Records a key-management event in the workspace's chain (or, for
/// cluster-wide operations, outside any workspace).
pub fn key_event(
    action: &str,
    workspace: Option<[u8; 16]>,
    detail: serde_json::Value,
) -> Result<(), WardenError> {
    record(Entry {
        workspace: Some(workspace),
        action: action.to_string(),
        target: Some("warden.workspace_keys".into()),
        row_key: None,
        old_values: None,
        new_values: None,
        detail: Some(json_text(&detail)),
    })
}

/// Writes the buffered entries (as the trail's owner): when the buffer is
/// full, and at commit (with the seals). Rows are appended straight to the
/// tables and their indexes (see `crate::append`): no statement to plan or
/// executor to start for a handful of rows.
///
/// Only entries recorded in the current subtransaction (or one it has
/// released) are written: a row written here is rolled back with this
/// subtransaction, so an entry recorded outside it, written here, would
/// vanish with a `ROLLBACK TO` while the transaction still counts it.
/// Those wait (in their own subtransaction's share of the buffer) for a
/// write at their level, at the latest at commit.
fn flush(seals: Option<Vec<Seal>>) -> Result<(), WardenError> {
    // SAFETY: reads the current subtransaction's id.
    let current = unsafe { pg_sys::GetCurrentSubTransactionId() };
    let (txid, mut batch) = match &mut *PENDING.borrow_mut() {
        Some(p) => {
            let from = writable_from(&p.unwritten, current);
            let mut batch = p.unwritten.split_off(from);
            if seals.is_none() {
                // The newest entries stay at the end of the buffer, where
                // they were (still the current subtransaction's share).
                p.unwritten.extend(hold_back(&mut batch));
            }
            (p.txid, batch)
        }
        None => return Ok(()),
    };
    for seal in seals.unwrap_or_default() {
        // There is one: a workspace's last entry is never written before
        // commit (hold_back), and if it is rolled back, so is every entry
        // of the workspace a write took after the one now last.
        let last = batch
            .iter_mut()
            .rev()
            .find(|e| e.workspace == seal.workspace)
            .ok_or(WardenError::AuditEntriesLost)?;
        last.seal = Some((seal.entries, seal.mac));
    }
    if batch.is_empty() {
        return Ok(());
    }
    let mut in_flight = InFlight(Some(
        batch
            .iter()
            .map(|e| Written {
                workspace: e.workspace,
                txn_seq: e.txn_seq,
                mac: e.mac,
                subxact: e.subxact,
            })
            .collect(),
    ));
    as_extension_owner(|| write_entries(txid, &batch))?;
    let written = in_flight.0.take().unwrap_or_default();
    if let Some(p) = &mut *PENDING.borrow_mut() {
        p.written.extend(written);
    }
    Ok(())
}

/// Takes out of a mid-statement batch the last entry of each workspace:
/// it stays buffered, to carry the transaction's seal at commit. (What it
/// holds back is the workspace's newest entry: the batch is the buffer's
/// tail.)
fn hold_back(batch: &mut Vec<Ready>) -> Vec<Ready> {
    let mut seen: Vec<Option<[u8; 16]>> = Vec::new();
    let mut last = vec![false; batch.len()];
    for (i, e) in batch.iter().enumerate().rev() {
        if !seen.contains(&e.workspace) {
            seen.push(e.workspace);
            last[i] = true;
        }
    }
    let mut held = Vec::with_capacity(seen.len());
    let mut rest = Vec::with_capacity(batch.len());
    for (is_last, e) in last.into_iter().zip(batch.drain(..)) {
        if is_last {
            held.push(e);
        } else {
            rest.push(e);
        }
    }
    *batch = rest;
    held
}

fn write_entries(txid: i64, batch: &[Ready]) -> Result<(), WardenError> {
    use append::Value::{self, Bytea, Int4, Int8, Json, Null, Text, TimestampTz};
    fn text(v: &Option<String>) -> Value<'_> {
        v.as_deref().map_or(Null, Text)
    }
    fn json(v: &Option<Vec<u8>>) -> Value<'_> {
        v.as_deref().map_or(Null, Json)
    }
    fn uuid(v: &Option<[u8; 16]>) -> Value<'_> {
        v.as_ref().map_or(Null, Value::Uuid)
    }
    let mut log = append::Appender::open(
        c"audit_log",
        &[
            "txid",
            "at",
            "txn_seq",
            "workspace_id",
            "actor",
            "db_role",
            "action",
            "target",
            "row_key",
            "old_values",
            "new_values",
            "detail",
            "mac",
            "seal_entries",
            "seal_mac",
        ],
    )?;
    for e in batch {
        log.append(&[
            Int8(txid),
            TimestampTz(e.at),
            Int4(e.txn_seq),
            uuid(&e.workspace),
            uuid(&e.actor),
            Text(&e.db_role),
            Text(&e.action),
            text(&e.target),
            json(&e.row_key),
            json(&e.old_values),
            json(&e.new_values),
            json(&e.detail),
            Bytea(&e.mac),
            e.seal.map_or(Null, |(n, _)| Int4(n)),
            e.seal.as_ref().map_or(Null, |(_, m)| Bytea(m)),
        ])?;
    }
    log.finish();
    Ok(())
}

/// Where the entries of subtransaction `current` (and of the ones it has
/// released) begin in the buffer. They are its tail: the buffer is in
/// recording order, subtransaction ids only grow, and an entry recorded
/// before `current` began has a smaller id.
fn writable_from(unwritten: &[Ready], current: pg_sys::SubTransactionId) -> usize {
    unwritten.partition_point(|e| e.subxact < current)
}

/// A flush under way: if it does not finish (a PostgreSQL error unwinds
/// through it, or it returns one), its entries are gone with the failed
/// subtransaction; they are remembered as lost.
struct InFlight(Option<Vec<Written>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(unwritten) = self.0.take() {
            if let Some(p) = &mut *PENDING.borrow_mut() {
                p.lost.extend(unwritten.iter().map(|w| w.subxact));
            }
        }
    }
}

/// A transaction's seal in one workspace: how many entries, and the MAC
/// over theirs.
struct Seal {
    workspace: Option<[u8; 16]>,
    entries: i32,
    mac: [u8; MAC_LEN],
}

/// A subtransaction rolled back: so did what it recorded.
pub fn forget_subtransaction(subxact: pg_sys::SubTransactionId) {
    if let Some(p) = &mut *PENDING.borrow_mut() {
        p.unwritten.retain(|e| e.subxact < subxact);
        p.written.retain(|e| e.subxact < subxact);
        p.lost.retain(|s| *s < subxact);
    }
}

const BLOCK_LABEL: &[u8] = b"pg_warden/v1/audit-block";

/// The chain key a workspace's rows are indexed by (no workspace: nil).
const NIL: &str = "'00000000-0000-0000-0000-000000000000'::pg_catalog.uuid";

/// `COALESCE(<column>, nil) = COALESCE($n, nil)`: the rows of one chain.
fn in_chain(column: &str, param: &str) -> String {
    format!("COALESCE({column}, {NIL}) OPERATOR(pg_catalog.=) COALESCE({param}, {NIL})")
}

/// An advisory lock key for a workspace's chain.
fn chain_lock_key(workspace: Option<[u8; 16]>) -> i64 {
    let bytes = workspace.unwrap_or([0; 16]);
    // 0x5744 ("WD") in the top bits keeps clear of applications' keys.
    i64::from_be_bytes(bytes[..8].try_into().unwrap()) ^ 0x5744_0000_0000_0000
}

/// The MAC of a transaction's seal: its entry MACs, in order.
fn seal_mac(
    key: &Key32,
    workspace: Option<[u8; 16]>,
    txid: i64,
    entry_macs: &[Vec<u8>],
) -> [u8; MAC_LEN] {
    let ws = workspace.map_or_else(Vec::new, |w| w.to_vec());
    let (txid, count) = (txid.to_be_bytes(), (entry_macs.len() as u64).to_be_bytes());
    let mut fields: Vec<&[u8]> = vec![&ws, &txid, &count];
    fields.extend(entry_macs.iter().map(Vec::as_slice));
    fields_mac(key, SEAL_LABEL, &fields)
}

/// A seal as a block covers it.
struct SealRow {
    txid: i64,
    entries: i32,
    mac: Vec<u8>,
}

/// A block of the chain.
struct Block {
    workspace: Option<[u8; 16]>,
    seq: i64,
    from_txid: i64,
    to_txid: i64,
    /// A purge mark's JSON text.
    purge: Option<String>,
    prev_mac: Option<Vec<u8>>,
}

impl Block {
    fn mac(&self, key: &Key32, seals: &[SealRow]) -> [u8; MAC_LEN] {
        let ws = self.workspace.map_or_else(Vec::new, |w| w.to_vec());
        let (seq, from, to) = (
            self.seq.to_be_bytes(),
            self.from_txid.to_be_bytes(),
            self.to_txid.to_be_bytes(),
        );
        let count = (seals.len() as u64).to_be_bytes();
        let per_seal: Vec<Vec<u8>> = seals
            .iter()
            .map(|s| [&s.txid.to_be_bytes()[..], &s.entries.to_be_bytes(), &s.mac].concat())
            .collect();
        let mut fields: Vec<&[u8]> = vec![
            &ws,
            &seq,
            &from,
            &to,
            self.purge.as_deref().unwrap_or("").as_bytes(),
            self.prev_mac.as_deref().unwrap_or(&[]),
            &count,
        ];
        fields.extend(per_seal.iter().map(Vec::as_slice));
        fields_mac(key, BLOCK_LABEL, &fields)
    }
}

/// Just before commit: writes what is still buffered and the seals, one
/// per workspace (in one statement, without any lock: concurrent writers in
/// a workspace never wait for each other). Then, if no other transaction is
/// chaining that workspace right now (a try-lock, never a wait), the seals
/// of every transaction that has finished are appended to its chain.
pub fn seal_transaction() -> Result<(), WardenError> {
    if PENDING.borrow().is_none() {
        return Ok(());
    }
    // Commit-time callbacks run without an active snapshot; queries need one.
    // SAFETY: pushed and popped around our queries; an error aborts the
    // transaction, which clears the snapshot stack.
    unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
    let sealed = seal_and_chain();
    unsafe { pg_sys::PopActiveSnapshot() };
    sealed
}

fn seal_and_chain() -> Result<(), WardenError> {
    let keys = master::current()?;
    let seals = {
        let pending = PENDING.borrow();
        let Some(p) = pending.as_ref() else {
            return Ok(());
        };
        if !p.lost.is_empty() {
            return Err(WardenError::AuditEntriesLost);
        }
        let mut all: Vec<(Option<[u8; 16]>, i32, [u8; MAC_LEN])> = p
            .written
            .iter()
            .map(|w| (w.workspace, w.txn_seq, w.mac))
            .chain(p.unwritten.iter().map(|e| (e.workspace, e.txn_seq, e.mac)))
            .collect();
        all.sort_by_key(|(ws, seq, _)| (*ws, *seq));
        all.chunk_by(|a, b| a.0 == b.0)
            .map(|chunk| {
                let macs: Vec<Vec<u8>> = chunk.iter().map(|(_, _, m)| m.to_vec()).collect();
                Seal {
                    workspace: chunk[0].0,
                    entries: macs.len() as i32,
                    mac: seal_mac(&keys.audit, chunk[0].0, p.txid, &macs),
                }
            })
            .collect::<Vec<Seal>>()
    };
    if seals.is_empty() {
        *PENDING.borrow_mut() = None;
        return Ok(());
    }
    let workspaces: Vec<Option<[u8; 16]>> = seals.iter().map(|s| s.workspace).collect();
    flush(Some(seals))?;
    *PENDING.borrow_mut() = None;
    // Another transaction's view of the last block could be stale outside
    // READ COMMITTED: chain only there (others will).
    // SAFETY: plain backend global.
    let read_committed = unsafe { pg_sys::XactIsoLevel } <= pg_sys::XACT_READ_COMMITTED as i32;
    if read_committed && due_to_chain() {
        for workspace in workspaces {
            as_extension_owner(|| {
                let locked = select_one::<bool>(
                    "SELECT pg_catalog.pg_try_advisory_xact_lock($1)",
                    &[chain_lock_key(workspace).into()],
                )?;
                if locked == Some(true) {
                    chain(&keys.audit, workspace)?;
                }
                Ok(())
            })?;
        }
    }
    Ok(())
}

/// When this backend last tried to chain (a transaction start time).
static LAST_CHAINING: BackendLocal<Cell<i64>> = BackendLocal::new(Cell::new(i64::MIN));

/// How often a backend that keeps committing audited transactions tries to
/// chain (microseconds).
const CHAIN_INTERVAL: i64 = 1_000_000;

/// A backend tries to chain at its first audited commit after a second has
/// passed since it last tried: chaining costs a few queries, and any
/// committer (or verify_audit) chains what every backend has sealed so far.
/// So the seals of committed transactions wait at most about a second for
/// a block while writes go on; a quiet backend chains at every commit.
fn due_to_chain() -> bool {
    // SAFETY: reads the transaction's start time.
    let now = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    let due = now.saturating_sub(LAST_CHAINING.get()) >= CHAIN_INTERVAL;
    if due {
        LAST_CHAINING.set(now);
    }
    due
}

/// The newest block of a chain: (seq, to_txid, mac); (0, 0, none) if none.
fn last_block(workspace: Option<[u8; 16]>) -> Result<(i64, i64, Option<Vec<u8>>), WardenError> {
    let query = format!(
        "SELECT seq, to_txid, mac FROM warden.audit_blocks WHERE {} ORDER BY seq DESC LIMIT 1",
        in_chain("workspace_id", "$1")
    );
    select(&query, &[workspace.map(Uuid::from_bytes).into()], |rows| {
        if rows.is_empty() {
            return Ok((0, 0, None));
        }
        let row = rows.first();
        Ok((
            row.get::<i64>(1)?.unwrap_or(0),
            row.get::<i64>(2)?.unwrap_or(0),
            row.get::<Vec<u8>>(3)?,
        ))
    })
}

/// The seals of a chain with `from <= txid < to`, in txid order.
fn seals_between(
    workspace: Option<[u8; 16]>,
    from: i64,
    to: i64,
) -> Result<Vec<SealRow>, WardenError> {
    // Spelled to match the partial index audit_log_seals (workspace_id, txid).
    let chain = match workspace {
        Some(_) => "workspace_id OPERATOR(pg_catalog.=) $1",
        None => "workspace_id IS NULL AND $1::pg_catalog.uuid IS NULL",
    };
    let query = format!(
        "SELECT txid, seal_entries, seal_mac FROM warden.audit_log
          WHERE {chain} AND seal_mac IS NOT NULL
            AND txid OPERATOR(pg_catalog.>=) $2 AND txid OPERATOR(pg_catalog.<) $3
          ORDER BY txid"
    );
    select(
        &query,
        &[
            workspace.map(Uuid::from_bytes).into(),
            from.into(),
            to.into(),
        ],
        |rows| {
            let mut out = Vec::new();
            for row in rows {
                out.push(SealRow {
                    txid: row.get::<i64>(1)?.unwrap_or(0),
                    entries: row.get::<i32>(2)?.unwrap_or(0),
                    mac: row.get::<Vec<u8>>(3)?.unwrap_or_default(),
                });
            }
            Ok(out)
        },
    )
}

/// Appends a block covering the seals of every transaction older than this
/// statement's snapshot horizon (they have all finished, so no seal can
/// still appear below it). The caller holds the chain's lock.
fn chain(key: &Key32, workspace: Option<[u8; 16]>) -> Result<(), WardenError> {
    let (seq, from, prev) = last_block(workspace)?;
    let frontier = select_one::<i64>(
        "SELECT pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())::text::bigint",
        &[],
    )?
    .unwrap_or(0);
    if frontier <= from {
        return Ok(());
    }
    let seals = seals_between(workspace, from, frontier)?;
    if seals.is_empty() {
        return Ok(());
    }
    let block = Block {
        workspace,
        seq: seq + 1,
        from_txid: from,
        to_txid: frontier,
        purge: None,
        prev_mac: prev,
    };
    insert_block(&block, &block.mac(key, &seals), seals.len())
}

fn insert_block(block: &Block, mac: &[u8], seals: usize) -> Result<(), WardenError> {
    execute(
        "INSERT INTO warden.audit_blocks (workspace_id, seq, from_txid, to_txid, seals, purge, prev_mac, mac)
         VALUES ($1, $2, $3, $4, $5, $6::pg_catalog.json, $7, $8)",
        &[
            block.workspace.map(Uuid::from_bytes).into(),
            block.seq.into(),
            block.from_txid.into(),
            block.to_txid.into(),
            (seals as i32).into(),
            block.purge.as_deref().into(),
            block.prev_mac.clone().into(),
            mac.to_vec().into(),
        ],
    )?;
    Ok(())
}

/// Forgets what an aborted transaction wrote.
pub fn forget_pending() {
    *PENDING.borrow_mut() = None;
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

/// Every chain's workspace (NULL: outside any workspace).
fn chains() -> Result<Vec<Option<[u8; 16]>>, WardenError> {
    Spi::connect(|client| {
        let mut out = Vec::new();
        for row in client.select(
            "SELECT DISTINCT workspace_id FROM warden.audit_log
             UNION SELECT DISTINCT workspace_id FROM warden.audit_blocks",
            None,
            &[],
        )? {
            out.push(row.get::<Uuid>(1)?.map(|u| *u.as_bytes()));
        }
        out.sort();
        Ok(out)
    })
}

/// The verification of one chain.
pub struct ChainReport {
    pub workspace: Option<[u8; 16]>,
    pub entries: i64,
    pub first_broken_id: Option<i64>,
}

/// Chains what has settled, then verifies every chain (as the trail's owner).
pub fn verify() -> Result<Vec<ChainReport>, WardenError> {
    let keys = master::current()?;
    as_extension_owner(|| {
        let mut reports = Vec::new();
        for workspace in chains()? {
            Spi::run_with_args(
                "SELECT pg_catalog.pg_advisory_xact_lock($1)",
                &[chain_lock_key(workspace).into()],
            )?;
            chain(&keys.audit, workspace)?;
            reports.push(verify_chain(&keys.audit, workspace)?);
        }
        Ok(reports)
    })
}

/// An entry as stored, for verification.
struct StoredEntry {
    id: i64,
    txid: i64,
    mac: Vec<u8>,
    valid: bool,
}

fn stored_entries(
    key: &Key32,
    workspace: Option<[u8; 16]>,
) -> Result<Vec<StoredEntry>, WardenError> {
    Spi::connect(|client| {
        let mut out = Vec::new();
        for row in client.select(
            &format!(
                "SELECT id, at, txid, txn_seq, workspace_id, actor, db_role, action, target,
                        row_key::text, old_values::text, new_values::text, detail::text, mac
                   FROM warden.audit_log WHERE {}
                  ORDER BY txid, txn_seq, id",
                in_chain("workspace_id", "$1")
            ),
            None,
            &[workspace.map(Uuid::from_bytes).into()],
        )? {
            let text =
                |i: usize| -> Result<Option<String>, WardenError> { Ok(row.get::<String>(i)?) };
            let stored_mac = row.get::<Vec<u8>>(14)?.unwrap_or_default();
            let (db_role, action) = (text(7)?.unwrap_or_default(), text(8)?.unwrap_or_default());
            let (target, row_key, old_values) = (text(9)?, text(10)?, text(11)?);
            let (new_values, detail) = (text(12)?, text(13)?);
            let txid = row.get::<i64>(3)?.unwrap_or_default();
            let computed = MacFields {
                at: row
                    .get::<TimestampWithTimeZone>(2)?
                    .map_or(0, pg_sys::TimestampTz::from),
                txid,
                txn_seq: row.get::<i32>(4)?.unwrap_or_default(),
                workspace: row.get::<Uuid>(5)?.map(|u| *u.as_bytes()),
                actor: row.get::<Uuid>(6)?.map(|u| *u.as_bytes()),
                db_role: &db_role,
                action: &action,
                target: target.as_deref(),
                row_key: row_key.as_deref().map(str::as_bytes),
                old_values: old_values.as_deref().map(str::as_bytes),
                new_values: new_values.as_deref().map(str::as_bytes),
                detail: detail.as_deref().map(str::as_bytes),
            }
            .mac(key);
            out.push(StoredEntry {
                id: row.get::<i64>(1)?.unwrap_or_default(),
                txid,
                valid: computed.as_slice() == stored_mac.as_slice(),
                mac: stored_mac,
            });
        }
        Ok(out)
    })
}

fn verify_chain(key: &Key32, workspace: Option<[u8; 16]>) -> Result<ChainReport, WardenError> {
    let entries = stored_entries(key, workspace)?;
    let all_seals = seals_between(workspace, i64::MIN, i64::MAX)?;
    let blocks: Vec<(Block, Vec<u8>)> = Spi::connect(|client| {
        let mut out = Vec::new();
        for row in client.select(
            &format!(
                "SELECT seq, from_txid, to_txid, purge::text, prev_mac, mac FROM warden.audit_blocks
                  WHERE {} ORDER BY seq",
                in_chain("workspace_id", "$1")
            ),
            None,
            &[workspace.map(Uuid::from_bytes).into()],
        )? {
            let purge = row.get::<String>(4)?;
            let block = Block {
                workspace,
                seq: row.get::<i64>(1)?.unwrap_or(0),
                from_txid: row.get::<i64>(2)?.unwrap_or(0),
                to_txid: row.get::<i64>(3)?.unwrap_or(0),
                purge,
                prev_mac: row.get::<Vec<u8>>(5)?,
            };
            out.push((block, row.get::<Vec<u8>>(6)?.unwrap_or_default()));
        }
        Ok::<_, WardenError>(out)
    })?;

    // The lowest entry id of a problem.
    let mut broken: Option<i64> = entries.iter().filter(|e| !e.valid).map(|e| e.id).min();
    let mut flag = |id: Option<i64>| {
        if let Some(id) = id {
            broken = Some(broken.map_or(id, |b| b.min(id)));
        }
    };
    // Where a problem at transaction `txid` shows: its first entry, or the
    // first entry after it when none of its own is left.
    let at_or_after = |txid: i64| {
        entries
            .iter()
            .filter(|e| e.txid >= txid)
            .map(|e| e.id)
            .min()
    };

    // Seals: each must match its transaction's entries.
    let mut sealed = BTreeSet::new();
    for seal in &all_seals {
        let macs: Vec<Vec<u8>> = entries
            .iter()
            .filter(|e| e.txid == seal.txid)
            .map(|e| e.mac.clone())
            .collect();
        if seal.entries as usize != macs.len()
            || seal_mac(key, workspace, seal.txid, &macs).as_slice() != seal.mac
        {
            flag(at_or_after(seal.txid));
        }
        sealed.insert(seal.txid);
    }
    // Entries no seal covers were inserted behind pg_warden's back (or
    // their seal was deleted).
    flag(
        entries
            .iter()
            .filter(|e| !sealed.contains(&e.txid))
            .map(|e| e.id)
            .min(),
    );

    // Blocks: a contiguous chain of txid ranges, each MAC'ed over the seals
    // in its range and the previous block. A purge mark says where the
    // chain now starts.
    let anchor = blocks.iter().rev().find_map(|(b, _)| {
        let purge: serde_json::Value = serde_json::from_str(b.purge.as_deref()?).ok()?;
        let through = purge.get("purged_through_seq")?.as_i64()?;
        Some((
            through,
            hex::decode(purge.get("anchor_mac")?.as_str()?).ok()?,
        ))
    });
    let (mut expected_seq, mut expected_prev) = match &anchor {
        Some((through, mac)) => (through + 1, Some(mac.clone())),
        None => (1, None),
    };
    let mut expected_from: Option<i64> = anchor.is_none().then_some(0);
    for (block, mac) in &blocks {
        let seals: Vec<SealRow> = all_seals
            .iter()
            .filter(|s| {
                block.purge.is_none() && s.txid >= block.from_txid && s.txid < block.to_txid
            })
            .map(|s| SealRow {
                txid: s.txid,
                entries: s.entries,
                mac: s.mac.clone(),
            })
            .collect();
        let linked = block.seq == expected_seq
            && block.prev_mac == expected_prev
            && expected_from.is_none_or(|f| f == block.from_txid);
        if !linked || block.mac(key, &seals).as_slice() != mac.as_slice() {
            flag(at_or_after(block.from_txid));
        }
        expected_seq = block.seq + 1;
        expected_prev = Some(mac.clone());
        expected_from = Some(block.to_txid);
    }
    Ok(ChainReport {
        workspace,
        entries: entries.len() as i64,
        first_broken_id: broken,
    })
}

/// Deletes, per chain, the longest run of oldest blocks whose entries are
/// all older than `before` (with their seals and entries), after appending
/// a purge mark that records where the chain now starts. Returns the number
/// of entries deleted.
pub fn purge(before: TimestampWithTimeZone) -> Result<i64, WardenError> {
    let keys = master::current()?;
    as_extension_owner(|| {
        while_purging(|| {
            let mut deleted = 0i64;
            for workspace in chains()? {
                let ws = workspace.map(Uuid::from_bytes);
                Spi::run_with_args(
                    "SELECT pg_catalog.pg_advisory_xact_lock($1)",
                    &[chain_lock_key(workspace).into()],
                )?;
                chain(&keys.audit, workspace)?;
                // The last block before the first one holding an entry at
                // or after `before` (or a purge mark, which ends the run).
                let through = select_one::<i64>(
                    &format!(
                        "SELECT max(b.seq) FROM warden.audit_blocks AS b
                          WHERE {chain_b} AND b.purge IS NULL
                            AND b.seq OPERATOR(pg_catalog.<) COALESCE((
                                SELECT min(k.seq) FROM warden.audit_blocks AS k
                                 WHERE {chain_k} AND (k.purge IS NOT NULL OR EXISTS (
                                       SELECT FROM warden.audit_log AS e
                                        WHERE {chain_e}
                                          AND e.txid OPERATOR(pg_catalog.>=) k.from_txid
                                          AND e.txid OPERATOR(pg_catalog.<) k.to_txid
                                          AND e.at OPERATOR(pg_catalog.>=) $2))),
                                9223372036854775807)",
                        chain_b = in_chain("b.workspace_id", "$1"),
                        chain_k = in_chain("k.workspace_id", "$1"),
                        chain_e = in_chain("e.workspace_id", "$1"),
                    ),
                    &[ws.into(), before.into()],
                )?;
                let Some(through) = through else { continue };
                let (anchor, up_to) = Spi::connect(|client| {
                    let rows = client.select(
                        &format!(
                            "SELECT mac, to_txid FROM warden.audit_blocks
                              WHERE {} AND seq OPERATOR(pg_catalog.=) $2",
                            in_chain("workspace_id", "$1")
                        ),
                        None,
                        &[ws.into(), through.into()],
                    )?;
                    let row = rows.first();
                    Ok::<_, WardenError>((
                        row.get::<Vec<u8>>(1)?.unwrap_or_default(),
                        row.get::<i64>(2)?.unwrap_or(0),
                    ))
                })?;
                let n = select_one::<i64>(
                    &format!(
                        "SELECT count(*) FROM warden.audit_log WHERE {} AND txid OPERATOR(pg_catalog.<) $2",
                        in_chain("workspace_id", "$1")
                    ),
                    &[ws.into(), up_to.into()],
                )?
                .unwrap_or(0);
                // The mark goes on the chain first, then what it covers goes.
                let (seq, last_to, prev) = last_block(workspace)?;
                let purge = serde_json::json!({
                    "before": before.to_string(),
                    "purged_through_seq": through,
                    "anchor_mac": hex::encode(&anchor),
                    "entries": n,
                });
                let mark = Block {
                    workspace,
                    seq: seq + 1,
                    from_txid: last_to,
                    to_txid: last_to,
                    purge: Some(purge.to_string()),
                    prev_mac: prev,
                };
                insert_block(&mark, &mark.mac(&keys.audit, &[]), 0)?;
                let chain_rows = in_chain("workspace_id", "$1");
                Spi::run_with_args(
                    &format!("DELETE FROM warden.audit_log WHERE {chain_rows} AND txid OPERATOR(pg_catalog.<) $2"),
                    &[ws.into(), up_to.into()],
                )?;
                Spi::run_with_args(
                    &format!("DELETE FROM warden.audit_blocks WHERE {chain_rows} AND seq OPERATOR(pg_catalog.<=) $2"),
                    &[ws.into(), through.into()],
                )?;
                deleted += n;
            }
            Ok(deleted)
        })
    })
}
