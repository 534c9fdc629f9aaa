//! The audit trail: recording entries, sealing them per transaction into a
//! per-workspace chain, and verifying the chain.
//!
//! Tamper evidence:
//! - every entry carries `mac` = HMAC(audit key, every column but `id`),
//!   with JSON values in a canonical form (keys sorted, compact), so an
//!   edited or an inserted entry does not verify;
//! - at commit, each transaction that wrote entries seals them, per
//!   workspace: a seal MACs the transaction's entry MACs (in order), their
//!   count, and the previous seal of that workspace's chain. A deleted entry
//!   breaks its transaction's seal; a deleted transaction (entries and seal)
//!   breaks the next seal's link.
//!
//! Writers are not serialized for their transactions: entries are written
//! without locks; only the seal, written just before commit, takes a
//! per-workspace transaction-level advisory lock, so commits in one
//! workspace queue only for their last step.
//!
//! The audit key derives from the master key (HKDF), so an audited write
//! needs the master key, and a cluster restored with the same master key
//! verifies.

use crate::backend::{as_extension_owner, select_one, BackendLocal};
use crate::context;
use crate::crypto::{fields_mac, MAC_LEN};
use crate::error::WardenError;
use crate::keys::master;
use pgrx::prelude::*;
use pgrx::Uuid;
use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;

const ENTRY_LABEL: &[u8] = b"pg_warden/v1/audit-entry";
const SEAL_LABEL: &[u8] = b"pg_warden/v1/audit-seal";

/// One event, before it is written.
pub struct Entry {
    /// The chain it belongs to: `None` for the acting context's workspace;
    /// `Some` for an operation on a given workspace (key management).
    pub workspace: Option<Option<[u8; 16]>>,
    pub action: String,
    pub target: Option<String>,
    pub row_key: Option<serde_json::Value>,
    pub old_values: Option<serde_json::Value>,
    pub new_values: Option<serde_json::Value>,
    pub detail: Option<serde_json::Value>,
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
    row_key: Option<String>,
    old_values: Option<String>,
    new_values: Option<String>,
    detail: Option<String>,
    mac: [u8; MAC_LEN],
    /// The subtransaction that made it: gone if that one rolls back.
    subxact: pg_sys::SubTransactionId,
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
    written: Vec<Written>,
}

/// Entries buffered before a write is forced (bounds memory in huge
/// statements).
const MAX_BUFFERED: usize = 10_000;

static PENDING: BackendLocal<RefCell<Option<Pending>>> = BackendLocal::new(RefCell::new(None));

/// Set only while `warden.purge_audit()` deletes.
static PURGING: BackendLocal<Cell<bool>> = BackendLocal::new(Cell::new(false));

pub fn purging() -> bool {
    PURGING.get()
}

/// JSON with object keys sorted at every level and no whitespace: the form
/// MACs are computed over, on write and on verify (after a round trip
/// through `jsonb`, whose own key order and number spelling differ).
pub fn canonical(value: &serde_json::Value) -> String {
    fn sorted(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(map) => {
                let ordered: std::collections::BTreeMap<_, _> =
                    map.iter().map(|(k, v)| (k.clone(), sorted(v))).collect();
                serde_json::Value::Object(ordered.into_iter().collect())
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(sorted).collect())
            }
            other => other.clone(),
        }
    }
    sorted(value).to_string()
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
    pub row_key: Option<&'a str>,
    pub old_values: Option<&'a str>,
    pub new_values: Option<&'a str>,
    pub detail: Option<&'a str>,
}

impl MacFields<'_> {
    pub fn mac(&self, key: &crate::crypto::Key32) -> [u8; MAC_LEN] {
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
                &opt(self.row_key.map(str::as_bytes)),
                &opt(self.old_values.map(str::as_bytes)),
                &opt(self.new_values.map(str::as_bytes)),
                &opt(self.detail.map(str::as_bytes)),
            ],
        )
    }
}

/// A seal as the chain stores it.
pub struct Seal {
    pub workspace: Option<[u8; 16]>,
    pub seq: i64,
    pub txid: i64,
    pub kind: String,
    /// Canonical JSON (purge seals say where the chain restarts).
    pub detail: Option<String>,
    pub prev_mac: Option<Vec<u8>>,
}

impl Seal {
    /// The MAC over this seal's fields and its transaction's entry MACs.
    pub fn mac(&self, key: &crate::crypto::Key32, entry_macs: &[Vec<u8>]) -> [u8; MAC_LEN] {
        let ws = self.workspace.map_or_else(Vec::new, |w| w.to_vec());
        let (seq, txid) = (self.seq.to_be_bytes(), self.txid.to_be_bytes());
        let count = (entry_macs.len() as u64).to_be_bytes();
        let mut fields: Vec<&[u8]> = vec![
            &ws,
            &seq,
            &txid,
            self.kind.as_bytes(),
            self.detail.as_deref().unwrap_or("").as_bytes(),
            self.prev_mac.as_deref().unwrap_or(&[]),
            &count,
        ];
        fields.extend(entry_macs.iter().map(Vec::as_slice));
        fields_mac(key, SEAL_LABEL, &fields)
    }
}

/// The role name the current user acts as.
fn current_role_name() -> String {
    // SAFETY: catalog lookup by this backend's current user id.
    unsafe {
        let ptr = pg_sys::GetUserNameFromId(pg_sys::GetUserId(), true);
        if ptr.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(ptr).to_string_lossy().into_owned()
        }
    }
}

/// Records one entry: computed and MAC'ed now, written at the end of the
/// statement ([`flush`]) or when the buffer is full.
pub fn record(entry: Entry) -> Result<(), WardenError> {
    let keys = master::current()?;
    let (acting, actor) =
        context::with_current(|c| c.map(|c| (c.workspace_id, c.user_id)))?.unzip();
    let workspace = entry.workspace.unwrap_or(acting);
    // SAFETY: assign (or return) this transaction's id; read the statement
    // start and the current subtransaction.
    let (txid, at, subxact) = unsafe {
        (
            pg_sys::GetTopFullTransactionId().value as i64,
            pg_sys::GetCurrentStatementStartTimestamp(),
            pg_sys::GetCurrentSubTransactionId(),
        )
    };
    let db_role = current_role_name();
    let json = |v: &Option<serde_json::Value>| v.as_ref().map(canonical);
    let full = {
        let mut pending = PENDING.borrow_mut();
        let p = match &mut *pending {
            Some(p) if p.txid == txid => p,
            slot => slot.insert(Pending {
                txid,
                next_seq: 0,
                unwritten: Vec::new(),
                written: Vec::new(),
            }),
        };
        p.next_seq += 1;
        let mut ready = Ready {
            at,
            txn_seq: p.next_seq,
            workspace,
            actor,
            db_role,
            action: entry.action,
            target: entry.target,
            row_key: json(&entry.row_key),
            old_values: json(&entry.old_values),
            new_values: json(&entry.new_values),
            detail: json(&entry.detail),
            mac: [0; MAC_LEN],
            subxact,
        };
        ready.mac = MacFields {
            at,
            txid,
            txn_seq: ready.txn_seq,
            workspace,
            actor,
            db_role: &ready.db_role,
            action: &ready.action,
            target: ready.target.as_deref(),
            row_key: ready.row_key.as_deref(),
            old_values: ready.old_values.as_deref(),
            new_values: ready.new_values.as_deref(),
            detail: ready.detail.as_deref(),
        }
        .mac(&keys.audit);
        p.unwritten.push(ready);
        p.unwritten.len() >= MAX_BUFFERED
    };
    if full {
        flush()?;
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
        detail: Some(detail),
    })
}

/// Writes the buffered entries (as the trail's owner) in one INSERT.
pub fn flush() -> Result<(), WardenError> {
    let (txid, batch) = match &mut *PENDING.borrow_mut() {
        Some(p) if !p.unwritten.is_empty() => (p.txid, std::mem::take(&mut p.unwritten)),
        _ => return Ok(()),
    };
    let mut columns = Columns::default();
    for e in &batch {
        columns.at.push(
            TimestampWithTimeZone::try_from(e.at)
                .map_err(|e| WardenError::Internal(e.to_string()))?,
        );
        columns.txn_seq.push(e.txn_seq);
        columns.workspace.push(e.workspace.map(Uuid::from_bytes));
        columns.actor.push(e.actor.map(Uuid::from_bytes));
        columns.db_role.push(Some(e.db_role.clone()));
        columns.action.push(Some(e.action.clone()));
        columns.target.push(e.target.clone());
        columns.row_key.push(e.row_key.clone());
        columns.old_values.push(e.old_values.clone());
        columns.new_values.push(e.new_values.clone());
        columns.detail.push(e.detail.clone());
        columns.mac.push(e.mac.to_vec());
    }
    as_extension_owner(|| {
        Spi::connect_mut(|client| {
            let mut plan = INSERT_PLAN.borrow_mut();
            if plan.is_none() {
                use pgrx::PgBuiltInOids as T;
                let types = [
                    T::INT8OID,
                    T::TIMESTAMPTZARRAYOID,
                    T::INT4ARRAYOID,
                    T::UUIDARRAYOID,
                    T::UUIDARRAYOID,
                    T::TEXTARRAYOID,
                    T::TEXTARRAYOID,
                    T::TEXTARRAYOID,
                    T::TEXTARRAYOID,
                    T::TEXTARRAYOID,
                    T::TEXTARRAYOID,
                    T::TEXTARRAYOID,
                    T::BYTEAARRAYOID,
                ]
                .map(pgrx::PgOid::BuiltIn);
                *plan = Some(client.prepare_mut(INSERT_ENTRIES, &types)?.keep());
            }
            let c = columns;
            client.update(
                plan.as_ref().unwrap(),
                None,
                &[
                    txid.into(),
                    c.at.into(),
                    c.txn_seq.into(),
                    c.workspace.into(),
                    c.actor.into(),
                    c.db_role.into(),
                    c.action.into(),
                    c.target.into(),
                    c.row_key.into(),
                    c.old_values.into(),
                    c.new_values.into(),
                    c.detail.into(),
                    c.mac.into(),
                ],
            )?;
            Ok::<_, WardenError>(())
        })
    })?;
    if let Some(p) = &mut *PENDING.borrow_mut() {
        p.written.extend(batch.into_iter().map(|e| Written {
            workspace: e.workspace,
            txn_seq: e.txn_seq,
            mac: e.mac,
            subxact: e.subxact,
        }));
    }
    Ok(())
}

/// The buffered entries as column arrays, for one INSERT ... unnest.
#[derive(Default)]
struct Columns {
    at: Vec<TimestampWithTimeZone>,
    txn_seq: Vec<i32>,
    workspace: Vec<Option<Uuid>>,
    actor: Vec<Option<Uuid>>,
    db_role: Vec<Option<String>>,
    action: Vec<Option<String>>,
    target: Vec<Option<String>>,
    row_key: Vec<Option<String>>,
    old_values: Vec<Option<String>>,
    new_values: Vec<Option<String>>,
    detail: Vec<Option<String>>,
    mac: Vec<Vec<u8>>,
}

/// A subtransaction rolled back: so did what it recorded.
pub fn forget_subtransaction(subxact: pg_sys::SubTransactionId) {
    if let Some(p) = &mut *PENDING.borrow_mut() {
        p.unwritten.retain(|e| e.subxact < subxact);
        p.written.retain(|e| e.subxact < subxact);
    }
}

const INSERT_ENTRIES: &str = "INSERT INTO warden.audit_log (txid, at, txn_seq, workspace_id, actor,
                                db_role, action, target, row_key, old_values, new_values, detail, mac)
     SELECT $1, u.at, u.txn_seq, u.workspace_id, u.actor, u.db_role, u.action, u.target,
            u.row_key::pg_catalog.jsonb, u.old_values::pg_catalog.jsonb,
            u.new_values::pg_catalog.jsonb, u.detail::pg_catalog.jsonb, u.mac
       FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4),
                      pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($7),
                      pg_catalog.unnest($8), pg_catalog.unnest($9), pg_catalog.unnest($10),
                      pg_catalog.unnest($11), pg_catalog.unnest($12), pg_catalog.unnest($13))
            AS u(at, txn_seq, workspace_id, actor, db_role, action, target, row_key, old_values,
                 new_values, detail, mac)";

/// The entries INSERT, planned once per backend (the plan cache replans it
/// if the table changes).
static INSERT_PLAN: BackendLocal<RefCell<Option<pgrx::spi::OwnedPreparedStatement>>> =
    BackendLocal::new(RefCell::new(None));

/// An advisory lock key for a workspace's chain.
fn chain_lock_key(workspace: Option<[u8; 16]>) -> i64 {
    let bytes = workspace.unwrap_or([0; 16]);
    // 0x5744 ("WD") in the top bits keeps clear of applications' keys.
    i64::from_be_bytes(bytes[..8].try_into().unwrap()) ^ 0x5744_0000_0000_0000
}

const NIL: &str = "'00000000-0000-0000-0000-000000000000'::pg_catalog.uuid";

/// Just before commit: writes what is still buffered, then seals this
/// transaction's entries, per workspace.
pub fn seal_transaction() -> Result<(), WardenError> {
    if PENDING.borrow().is_none() {
        return Ok(());
    }
    // Commit-time callbacks run without an active snapshot; queries need one.
    // SAFETY: pushed and popped around our queries; an error aborts the
    // transaction, which clears the snapshot stack.
    unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
    let sealed = flush().and_then(|()| seal_workspaces());
    unsafe { pg_sys::PopActiveSnapshot() };
    sealed
}

fn seal_workspaces() -> Result<(), WardenError> {
    let Some(pending) = PENDING.borrow_mut().take() else {
        return Ok(());
    };
    let keys = master::current()?;
    let mut written = pending.written;
    written.sort_by_key(|w| (w.workspace, w.txn_seq));
    for chunk in written.chunk_by(|a, b| a.workspace == b.workspace) {
        let macs: Vec<Vec<u8>> = chunk.iter().map(|w| w.mac.to_vec()).collect();
        as_extension_owner(|| {
            append_seal(
                &keys.audit,
                chunk[0].workspace,
                pending.txid,
                "transaction",
                None,
                &macs,
            )
        })?;
    }
    Ok(())
}

/// Appends a seal to a workspace's chain, under the chain's lock.
fn append_seal(
    key: &crate::crypto::Key32,
    workspace: Option<[u8; 16]>,
    txid: i64,
    kind: &str,
    detail: Option<&str>,
    entry_macs: &[Vec<u8>],
) -> Result<(), WardenError> {
    let ws = workspace.map(Uuid::from_bytes);
    Spi::run_with_args(
        "SELECT pg_catalog.pg_advisory_xact_lock($1)",
        &[chain_lock_key(workspace).into()],
    )?;
    let (seq, prev) = Spi::connect(|client| {
        let rows = client.select(
            &format!(
                "SELECT seq, mac FROM warden.audit_seals
                  WHERE COALESCE(workspace_id, {NIL}) OPERATOR(pg_catalog.=) COALESCE($1, {NIL})
                  ORDER BY seq DESC LIMIT 1"
            ),
            None,
            &[ws.into()],
        )?;
        if rows.is_empty() {
            return Ok::<_, WardenError>((1i64, None));
        }
        let row = rows.first();
        Ok((row.get::<i64>(1)?.unwrap_or(0) + 1, row.get::<Vec<u8>>(2)?))
    })?;
    let seal = Seal {
        workspace,
        seq,
        txid,
        kind: kind.to_string(),
        detail: detail.map(str::to_string),
        prev_mac: prev.clone(),
    };
    let mac = seal.mac(key, entry_macs);
    Spi::run_with_args(
        "INSERT INTO warden.audit_seals (workspace_id, seq, txid, entries, kind, detail, prev_mac, mac)
         VALUES ($1, $2, $3, $4, $5, $6::pg_catalog.jsonb, $7, $8)",
        &[
            ws.into(),
            seq.into(),
            txid.into(),
            (entry_macs.len() as i32).into(),
            kind.into(),
            detail.into(),
            prev.into(),
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
pub fn while_purging<T>(f: impl FnOnce() -> Result<T, WardenError>) -> Result<T, WardenError> {
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

/// The verification of one chain.
pub struct ChainReport {
    pub workspace: Option<[u8; 16]>,
    pub entries: i64,
    pub first_broken_id: Option<i64>,
}

/// Verifies every chain (as the trail's owner).
pub fn verify() -> Result<Vec<ChainReport>, WardenError> {
    let keys = master::current()?;
    as_extension_owner(|| {
        let chains: Vec<Option<Uuid>> = Spi::connect(|client| {
            let mut out = Vec::new();
            for row in client.select(
                "SELECT DISTINCT workspace_id FROM warden.audit_log
                 UNION SELECT DISTINCT workspace_id FROM warden.audit_seals",
                None,
                &[],
            )? {
                out.push(row.get::<Uuid>(1)?);
            }
            Ok::<_, WardenError>(out)
        })?;
        let mut reports = Vec::new();
        for ws in chains {
            reports.push(verify_chain(&keys.audit, ws.map(|u| *u.as_bytes()))?);
        }
        reports.sort_by_key(|r| r.workspace);
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

fn verify_chain(
    key: &crate::crypto::Key32,
    workspace: Option<[u8; 16]>,
) -> Result<ChainReport, WardenError> {
    let ws = workspace.map(Uuid::from_bytes);
    let entries: Vec<StoredEntry> = Spi::connect(|client| {
        let mut out = Vec::new();
        for row in client.select(
            &format!(
                "SELECT id, at, txid, txn_seq, workspace_id,
                        actor, db_role, action, target, row_key::text, old_values::text,
                        new_values::text, detail::text, mac
                   FROM warden.audit_log
                  WHERE COALESCE(workspace_id, {NIL}) OPERATOR(pg_catalog.=) COALESCE($1, {NIL})
                  ORDER BY txid, txn_seq, id"
            ),
            None,
            &[ws.into()],
        )? {
            let text =
                |i: usize| -> Result<Option<String>, WardenError> { Ok(row.get::<String>(i)?) };
            let canon = |i: usize| -> Result<Option<String>, WardenError> {
                Ok(text(i)?.map(|t| {
                    serde_json::from_str::<serde_json::Value>(&t)
                        .map(|v| canonical(&v))
                        .unwrap_or(t)
                }))
            };
            let stored_mac = row.get::<Vec<u8>>(14)?.unwrap_or_default();
            let at = row
                .get::<TimestampWithTimeZone>(2)?
                .map_or(0, pg_sys::TimestampTz::from);
            let (db_role, action) = (text(7)?.unwrap_or_default(), text(8)?.unwrap_or_default());
            let (target, row_key, old_values) = (text(9)?, canon(10)?, canon(11)?);
            let (new_values, detail) = (canon(12)?, canon(13)?);
            let computed = MacFields {
                at,
                txid: row.get::<i64>(3)?.unwrap_or_default(),
                txn_seq: row.get::<i32>(4)?.unwrap_or_default(),
                workspace: row.get::<Uuid>(5)?.map(|u| *u.as_bytes()),
                actor: row.get::<Uuid>(6)?.map(|u| *u.as_bytes()),
                db_role: &db_role,
                action: &action,
                target: target.as_deref(),
                row_key: row_key.as_deref(),
                old_values: old_values.as_deref(),
                new_values: new_values.as_deref(),
                detail: detail.as_deref(),
            }
            .mac(key);
            out.push(StoredEntry {
                id: row.get::<i64>(1)?.unwrap_or_default(),
                txid: row.get::<i64>(3)?.unwrap_or_default(),
                valid: computed.as_slice() == stored_mac.as_slice(),
                mac: stored_mac,
            });
        }
        Ok::<_, WardenError>(out)
    })?;
    let seals: Vec<(Seal, Vec<u8>)> = Spi::connect(|client| {
        let mut out = Vec::new();
        for row in client.select(
            &format!(
                "SELECT seq, txid, kind, detail::text, prev_mac, mac FROM warden.audit_seals
                  WHERE COALESCE(workspace_id, {NIL}) OPERATOR(pg_catalog.=) COALESCE($1, {NIL})
                  ORDER BY seq"
            ),
            None,
            &[ws.into()],
        )? {
            let detail = row.get::<String>(4)?.map(|t| {
                serde_json::from_str::<serde_json::Value>(&t)
                    .map(|v| canonical(&v))
                    .unwrap_or(t)
            });
            let seal = Seal {
                workspace,
                seq: row.get::<i64>(1)?.unwrap_or_default(),
                txid: row.get::<i64>(2)?.unwrap_or_default(),
                kind: row.get::<String>(3)?.unwrap_or_default(),
                detail,
                prev_mac: row.get::<Vec<u8>>(5)?,
            };
            out.push((seal, row.get::<Vec<u8>>(6)?.unwrap_or_default()));
        }
        Ok::<_, WardenError>(out)
    })?;

    // The first id of a problem; lower is earlier.
    let mut broken: Option<i64> = entries.iter().filter(|e| !e.valid).map(|e| e.id).min();
    let mut flag = |id: Option<i64>| {
        if let Some(id) = id {
            broken = Some(broken.map_or(id, |b| b.min(id)));
        }
    };
    let first_id_of = |txid: i64| {
        entries
            .iter()
            .filter(|e| e.txid == txid)
            .map(|e| e.id)
            .min()
    };
    // A purge leaves a seal saying where the chain now starts.
    let anchor = seals
        .iter()
        .rev()
        .find(|(s, _)| s.kind == "purge")
        .and_then(|(s, _)| {
            let detail: serde_json::Value = serde_json::from_str(s.detail.as_deref()?).ok()?;
            let through = detail.get("purged_through_seq")?.as_i64()?;
            Some((
                through,
                hex::decode(detail.get("anchor_mac")?.as_str()?).ok()?,
            ))
        });
    let (mut expected_seq, mut expected_prev) = match &anchor {
        Some((through, mac)) => (through + 1, Some(mac.clone())),
        None => (1, None),
    };
    let mut sealed_txids = BTreeSet::new();
    for (seal, mac) in &seals {
        let is_transaction = seal.kind == "transaction";
        let macs: Vec<Vec<u8>> = entries
            .iter()
            .filter(|e| is_transaction && e.txid == seal.txid)
            .map(|e| e.mac.clone())
            .collect();
        let linked = seal.seq == expected_seq && seal.prev_mac == expected_prev;
        if !linked || seal.mac(key, &macs).as_slice() != mac.as_slice() {
            // The break shows at this transaction's first entry; when it has
            // none left (it was deleted), at the next entry after it.
            flag(first_id_of(seal.txid).or_else(|| {
                entries
                    .iter()
                    .filter(|e| e.txid > seal.txid)
                    .map(|e| e.id)
                    .min()
            }));
        }
        if is_transaction {
            sealed_txids.insert(seal.txid);
        }
        expected_seq = seal.seq + 1;
        expected_prev = Some(mac.clone());
    }
    // Entries no committed seal covers were inserted behind pg_warden's back.
    flag(
        entries
            .iter()
            .filter(|e| !sealed_txids.contains(&e.txid))
            .map(|e| e.id)
            .min(),
    );
    Ok(ChainReport {
        workspace,
        entries: entries.len() as i64,
        first_broken_id: broken,
    })
}

/// Deletes every transaction of every chain sealed wholly before `before`,
/// and appends a purge seal recording where each chain now starts. Returns
/// the number of entries deleted.
pub fn purge(before: TimestampWithTimeZone) -> Result<i64, WardenError> {
    let keys = master::current()?;
    as_extension_owner(|| {
        while_purging(|| {
            let chains: Vec<Option<Uuid>> = Spi::connect(|client| {
                let mut out = Vec::new();
                for row in client.select(
                    "SELECT DISTINCT workspace_id FROM warden.audit_seals",
                    None,
                    &[],
                )? {
                    out.push(row.get::<Uuid>(1)?);
                }
                Ok::<_, WardenError>(out)
            })?;
            let mut deleted = 0i64;
            for ws in chains {
                let workspace = ws.map(|u| *u.as_bytes());
                Spi::run_with_args(
                    "SELECT pg_catalog.pg_advisory_xact_lock($1)",
                    &[chain_lock_key(workspace).into()],
                )?;
                // The last seal whose transaction, and every one before it,
                // holds only entries older than `before`.
                let through = select_one::<i64>(
                    &format!(
                        "SELECT max(s.seq) FROM warden.audit_seals AS s
                          WHERE COALESCE(s.workspace_id, {NIL}) OPERATOR(pg_catalog.=) COALESCE($1, {NIL})
                            AND s.kind OPERATOR(pg_catalog.=) 'transaction'
                            AND s.seq OPERATOR(pg_catalog.<) COALESCE((
                                SELECT min(t.seq) FROM warden.audit_seals AS t
                                  JOIN warden.audit_log AS e ON e.txid OPERATOR(pg_catalog.=) t.txid
                                   AND COALESCE(e.workspace_id, {NIL}) OPERATOR(pg_catalog.=) COALESCE($1, {NIL})
                                 WHERE COALESCE(t.workspace_id, {NIL}) OPERATOR(pg_catalog.=) COALESCE($1, {NIL})
                                   AND e.at OPERATOR(pg_catalog.>=) $2), 9223372036854775807)"
                    ),
                    &[ws.into(), before.into()],
                )?;
                let Some(through) = through else { continue };
                let anchor = select_one::<Vec<u8>>(
                    &format!(
                        "SELECT mac FROM warden.audit_seals
                          WHERE COALESCE(workspace_id, {NIL}) OPERATOR(pg_catalog.=) COALESCE($1, {NIL})
                            AND seq OPERATOR(pg_catalog.=) $2"
                    ),
                    &[ws.into(), through.into()],
                )?
                .unwrap_or_default();
                let doomed = format!(
                    "FROM warden.audit_seals AS s
                      WHERE COALESCE(s.workspace_id, {NIL}) OPERATOR(pg_catalog.=) COALESCE($1, {NIL})
                        AND COALESCE(e.workspace_id, {NIL}) OPERATOR(pg_catalog.=) COALESCE($1, {NIL})
                        AND s.seq OPERATOR(pg_catalog.<=) $2 AND e.txid OPERATOR(pg_catalog.=) s.txid"
                );
                let n = select_one::<i64>(
                    &format!(
                        "SELECT count(*) FROM warden.audit_log AS e WHERE EXISTS (SELECT {doomed})"
                    ),
                    &[ws.into(), through.into()],
                )?
                .unwrap_or(0);
                // The mark goes on the chain first (after its newest seal),
                // then what it covers goes.
                let detail = serde_json::json!({
                    "before": before.to_string(),
                    "purged_through_seq": through,
                    "anchor_mac": hex::encode(&anchor),
                    "entries": n,
                });
                // SAFETY: this transaction's id (assigned by the lock above).
                let txid = unsafe { pg_sys::GetTopFullTransactionId() }.value as i64;
                append_seal(
                    &keys.audit,
                    workspace,
                    txid,
                    "purge",
                    Some(&canonical(&detail)),
                    &[],
                )?;
                Spi::run_with_args(
                    &format!(
                        "DELETE FROM warden.audit_log AS e USING {}",
                        &doomed["FROM ".len()..]
                    ),
                    &[ws.into(), through.into()],
                )?;
                Spi::run_with_args(
                    &format!(
                        "DELETE FROM warden.audit_seals
                          WHERE COALESCE(workspace_id, {NIL}) OPERATOR(pg_catalog.=) COALESCE($1, {NIL})
                            AND seq OPERATOR(pg_catalog.<=) $2"
                    ),
                    &[ws.into(), through.into()],
                )?;
                deleted += n;
            }
            Ok(deleted)
        })
    })
}
