//! The chains: seals appended per workspace in blocks, verifying them, and
//! purging their oldest blocks.
//!
//! A block covers every seal of its workspace on a row with an id in
//! `(from_id, to_id]`, and the previous block's MAC. Rows take their ids
//! at write time, so a block may only cover ids no unfinished transaction
//! can still write: a block records the id sequence's high-water mark and
//! the next transaction id at the time it was made (`next_to_id`,
//! `next_xid`), and the next block covers up to that mark once no
//! transaction below that id is still running (every row at or below the
//! mark was written by one of them). So chaining needs no index of its
//! own: it reads a range of the `(workspace_id, id)` index.
//!
//! A transaction's rows in a chain are the rows with its id up to its seal
//! (the seal is on its last row there): transaction ids alone repeat after
//! a dump is restored into another cluster, ids do not.
//!
//! Blocks are made by whoever chains, so a chain whose newest blocks were
//! deleted would simply be made again, over whatever rows are left. Two
//! things stop that: every seal names (under its MAC) the newest block
//! its writer knew of, which must still be there as it was; and every
//! block carries a MAC over its own fields, checked before the chain is
//! extended from it.
//!
//! Chaining takes the chain's advisory lock: with a *try*-lock at commit
//! (whoever gets it chains what has settled; the others go on), for certain
//! in `verify_audit()` and `purge_audit()`; only at READ COMMITTED, whose
//! statements see every transaction that has finished.

use super::macs;
use crate::backend::{as_extension_owner, execute, select, select_one, BackendLocal};
use crate::crypto::{FieldsMac, Key32, MAC_LEN};
use crate::error::WardenError;
use crate::keys::master;
use pgrx::prelude::*;
use pgrx::Uuid;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

const BLOCK_LABEL: &[u8] = b"pg_warden/v1/audit-block";
const BLOCK_FIELDS_LABEL: &[u8] = b"pg_warden/v1/audit-block-fields";

/// The rows of chain `$1` (NULL: those outside any workspace), spelled to
/// use the indexes that lead with `workspace_id`.
fn chain_rows(workspace: Option<[u8; 16]>) -> &'static str {
    match workspace {
        Some(_) => "workspace_id OPERATOR(pg_catalog.=) $1",
        None => "workspace_id IS NULL AND $1::pg_catalog.uuid IS NULL",
    }
}

/// An advisory lock key for a workspace's chain (outside any workspace: the
/// nil UUID's, which only means those two chains never chain at once).
fn chain_lock_key(workspace: Option<[u8; 16]>) -> i64 {
    let bytes = workspace.unwrap_or([0; 16]);
    // 0x5744 ("WD") in the top bits keeps clear of applications' keys.
    i64::from_be_bytes(bytes[..8].try_into().unwrap()) ^ 0x5744_0000_0000_0000
}

/// A seal as a block covers it: the row it is on, its transaction, how
/// many entries, the MAC.
#[derive(Clone)]
struct SealRow {
    id: i64,
    txid: i64,
    entries: i32,
    mac: Vec<u8>,
}

/// A block of the chain.
struct Block {
    workspace: Option<[u8; 16]>,
    seq: i64,
    from_id: i64,
    to_id: i64,
    next_to_id: i64,
    next_xid: i64,
    /// A purge mark's JSON text.
    purge: Option<String>,
    prev_mac: Option<Vec<u8>>,
    /// The MAC of its own fields, as stored (see [`Block::fields_mac`]).
    stored_fields_mac: Vec<u8>,
}

impl Block {
    /// The MAC of its own fields alone (no seals): what chaining checks of
    /// the newest block before extending it (reading its seals again would
    /// cost as much as making it). A block edited to settle early (its
    /// `next_xid`, `next_to_id`) is not extended.
    fn fields_mac(&self, key: &Key32) -> [u8; MAC_LEN] {
        let mut mac = FieldsMac::new(key, BLOCK_FIELDS_LABEL);
        self.feed(&mut mac, None);
        mac.finish()
    }

    /// Its fields into `mac` (with the number of seals it covers, if given,
    /// after `next_xid`).
    fn feed(&self, mac: &mut FieldsMac, seals: Option<usize>) {
        mac.field(self.workspace.as_ref().map_or(&[][..], |w| &w[..]));
        let numbers = [
            self.seq,
            self.from_id,
            self.to_id,
            self.next_to_id,
            self.next_xid,
        ];
        for n in numbers.into_iter().chain(seals.map(|n| n as i64)) {
            mac.field(&n.to_be_bytes());
        }
        mac.field(self.purge.as_deref().unwrap_or("").as_bytes())
            .field(self.prev_mac.as_deref().unwrap_or(&[]));
    }

    fn fields_hold(&self, key: &Key32) -> bool {
        self.fields_mac(key).as_slice() == self.stored_fields_mac.as_slice()
    }

    /// Its MAC: its fields, then each seal it covers (row id, transaction
    /// id, entries, MAC) as one field.
    fn mac(&self, key: &Key32, seals: &[SealRow]) -> [u8; MAC_LEN] {
        let mut mac = FieldsMac::new(key, BLOCK_LABEL);
        self.feed(&mut mac, Some(seals.len()));
        for s in seals {
            let (id, txid, entries) = (
                s.id.to_be_bytes(),
                s.txid.to_be_bytes(),
                s.entries.to_be_bytes(),
            );
            mac.field_in_parts(8 + 8 + 4 + s.mac.len(), [&id[..], &txid, &entries, &s.mac]);
        }
        mac.finish()
    }
}

/// Whether this transaction's statements see every finished transaction
/// (READ COMMITTED): chaining reads what has settled.
fn read_committed() -> bool {
    // SAFETY: plain backend global.
    unsafe { pg_sys::XactIsoLevel <= pg_sys::XACT_READ_COMMITTED as i32 }
}

/// After a commit's write: for each workspace it wrote to, if no other
/// transaction is chaining that workspace right now (a try-lock, never a
/// wait), what has settled is appended to its chain.
pub fn chain_after_commit(workspaces: &[Option<[u8; 16]>]) -> Result<(), WardenError> {
    if !(read_committed() && due_to_chain()) {
        return Ok(());
    }
    let keys = master::current()?;
    for &workspace in workspaces {
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
/// So the seals of committed transactions wait a second or two for a
/// block while writes go on; a quiet backend chains at every commit.
fn due_to_chain() -> bool {
    // SAFETY: reads the transaction's start time.
    let now = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    let due = now.saturating_sub(LAST_CHAINING.get()) >= CHAIN_INTERVAL;
    if due {
        LAST_CHAINING.set(now);
    }
    due
}

/// The chains' newest blocks a backend knows of, by chain.
pub type Heads = HashMap<Option<[u8; 16]>, macs::Head>;

/// What this backend last read of each chain's newest block, and when (a
/// transaction start time). Only committed blocks: read by a query, never
/// taken from a block this backend is still making.
/// (the relations generation they were read at: a trail dropped and made
/// again is another trail; by chain, the head and when it was read.)
type KnownHeads = (u64, HashMap<Option<[u8; 16]>, (macs::Head, i64)>);
static HEADS: BackendLocal<RefCell<Option<KnownHeads>>> = BackendLocal::new(RefCell::new(None));

/// How many chains' heads a backend keeps (then it starts over).
const HEADS_KEPT: usize = 1024;

/// The newest block of each of these chains, as a seal names it: read at
/// most once a second per chain and backend (a seal may name a block a
/// second or two old: it proves the chain up to there).
pub fn heads(workspaces: &[Option<[u8; 16]>]) -> Result<Heads, WardenError> {
    // SAFETY: reads the transaction's start time.
    let now = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    let generation = crate::backend::relations_generation();
    let mut out = Heads::new();
    for &workspace in workspaces {
        if out.contains_key(&workspace) {
            continue;
        }
        let known = HEADS
            .borrow()
            .as_ref()
            .filter(|(at, _)| *at == generation)
            .and_then(|(_, known)| known.get(&workspace))
            .filter(|(_, at)| now.saturating_sub(*at) < CHAIN_INTERVAL)
            .map(|(head, _)| head.clone());
        let head = match known {
            Some(head) => head,
            None => {
                let head = as_extension_owner(|| last_block(workspace))?
                    .map(|(block, mac)| macs::Head {
                        seq: block.seq,
                        mac,
                    })
                    .unwrap_or_default();
                let mut cache = HEADS.borrow_mut();
                let cache = cache.get_or_insert_with(|| (generation, HashMap::new()));
                if cache.0 != generation || cache.1.len() >= HEADS_KEPT {
                    *cache = (generation, HashMap::new());
                }
                let cache = &mut cache.1;
                cache.insert(workspace, (head.clone(), now));
                head
            }
        };
        out.insert(workspace, head);
    }
    Ok(out)
}

/// Forgets the heads read (a transaction rolled back: what it read may
/// have been its own).
pub fn forget_heads() {
    *HEADS.borrow_mut() = None;
}

/// The newest block of a chain and its MAC.
fn last_block(workspace: Option<[u8; 16]>) -> Result<Option<(Block, Vec<u8>)>, WardenError> {
    let query = blocks_query(workspace, "ORDER BY seq DESC LIMIT 1");
    select(
        &query,
        &[workspace.map(Uuid::from_bytes).into()],
        |mut rows| rows.next().map(|row| block_of(&row, workspace)).transpose(),
    )
}

/// The blocks of chain `$1`, in the given order.
fn blocks_query(workspace: Option<[u8; 16]>, order: &str) -> String {
    format!(
        "SELECT seq, from_id, to_id, next_to_id, next_xid, purge::pg_catalog.text, prev_mac, mac,
                fields_mac
           FROM warden.audit_blocks WHERE {} {order}",
        chain_rows(workspace)
    )
}

/// A block and its MAC from a row of [`blocks_query`].
fn block_of(
    row: &pgrx::spi::SpiHeapTupleData,
    workspace: Option<[u8; 16]>,
) -> Result<(Block, Vec<u8>), WardenError> {
    Ok((
        Block {
            workspace,
            seq: row.get::<i64>(1)?.unwrap_or(0),
            from_id: row.get::<i64>(2)?.unwrap_or(0),
            to_id: row.get::<i64>(3)?.unwrap_or(0),
            next_to_id: row.get::<i64>(4)?.unwrap_or(0),
            next_xid: row.get::<i64>(5)?.unwrap_or(0),
            purge: row.get::<String>(6)?,
            prev_mac: row.get::<Vec<u8>>(7)?,
            stored_fields_mac: row.get::<Vec<u8>>(9)?.unwrap_or_default(),
        },
        row.get::<Vec<u8>>(8)?.unwrap_or_default(),
    ))
}

/// The seals of a chain on rows with `from < id <= to`, in id order (from
/// entries and batches: a transaction's seal is on its last row there).
fn seals_between(
    workspace: Option<[u8; 16]>,
    from: i64,
    to: i64,
) -> Result<Vec<SealRow>, WardenError> {
    let chain = chain_rows(workspace);
    let part = |table: &str| {
        format!(
            "SELECT id, txid, seal_entries, seal_mac FROM warden.{table}
              WHERE {chain} AND id OPERATOR(pg_catalog.>) $2 AND id OPERATOR(pg_catalog.<=) $3
                AND (seal_entries IS NOT NULL OR seal_mac IS NOT NULL
                     OR seal_head IS NOT NULL OR seal_head_mac IS NOT NULL)"
        )
    };
    let query = format!(
        "{} UNION ALL {} ORDER BY id",
        part("audit_entries"),
        part("audit_batches")
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
                    id: row.get::<i64>(1)?.unwrap_or(0),
                    txid: row.get::<i64>(2)?.unwrap_or(0),
                    entries: row.get::<i32>(3)?.unwrap_or(0),
                    mac: row.get::<Vec<u8>>(4)?.unwrap_or_default(),
                });
            }
            Ok(out)
        },
    )
}

/// Whether every transaction with an id below `xid` has ended, this one
/// aside: none below it in a snapshot's in-progress list, and every id from
/// the snapshot's horizon (`xmax`: all below it had ended or are listed)
/// up to it this transaction's own.
fn others_ended_below(xid: i64) -> Result<bool, WardenError> {
    let row = select(
        "SELECT pg_catalog.pg_snapshot_xmax(s)::pg_catalog.text::pg_catalog.int8,
                (SELECT pg_catalog.min(x::pg_catalog.text::pg_catalog.int8)
                   FROM pg_catalog.pg_snapshot_xip(s) AS x),
                pg_catalog.pg_current_xact_id_if_assigned()::pg_catalog.text::pg_catalog.int8
           FROM pg_catalog.pg_current_snapshot() AS s",
        &[],
        |mut rows| {
            let row = rows
                .next()
                .ok_or(WardenError::Internal("no snapshot".into()))?;
            Ok((
                row.get::<i64>(1)?.unwrap_or(0),
                row.get::<i64>(2)?,
                row.get::<i64>(3)?,
            ))
        },
    )?;
    let (xmax, oldest_listed, own) = row;
    let listed_ended = oldest_listed.is_none_or(|x| x >= xid);
    let unlisted_own = xmax >= xid || (own == Some(xmax) && xmax + 1 >= xid);
    Ok(listed_ended && unlisted_own)
}

/// Appends a block covering the seals that have settled since the last
/// one (see the module's documentation), if any have. The caller holds
/// the chain's lock.
fn chain(key: &Key32, workspace: Option<[u8; 16]>) -> Result<(), WardenError> {
    // SAFETY: reads of backend globals.
    let writable = unsafe { !pg_sys::XactReadOnly && !pg_sys::RecoveryInProgress() };
    if !read_committed() || !writable {
        return Ok(());
    }
    // The high-water mark first, then the next transaction id to be given
    // out: every transaction that had written a row at or below the mark
    // by then has an id below it (a row's id is drawn after its
    // transaction's).
    let high = select_one::<i64>(
        "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM warden.audit_id_seq",
        &[],
    )?
    .unwrap_or(0);
    // SAFETY: reads the shared counter under its lock.
    let next_xid = unsafe { pg_sys::ReadNextFullTransactionId().value } as i64;
    let Some((last, last_mac)) = last_block(workspace)? else {
        let first = Block {
            workspace,
            seq: 1,
            from_id: 0,
            to_id: 0,
            next_to_id: high,
            next_xid,
            purge: None,
            prev_mac: None,
            stored_fields_mac: Vec::new(),
        };
        return insert_block(key, &first, &first.mac(key, &[]), 0);
    };
    // Settled: every transaction below the last block's `next_xid` has
    // ended, this one aside if its rows are whole (it has written none yet,
    // or it is committing: its last write, with the seals, is done); or
    // that mark was set in another cluster, which this one has not reached
    // (a restore: all of that cluster's transactions have ended).
    if !last.fields_hold(key) {
        // Edited: verify_audit() reports it; nothing is built on it.
        return Ok(());
    }
    let settled = last.next_xid > next_xid
        || (!super::pending::written_any() && others_ended_below(last.next_xid)?);
    let next_to_id = high.max(last.next_to_id);
    if !settled || (last.next_to_id == last.to_id && next_to_id == last.next_to_id) {
        return Ok(());
    }
    let seals = seals_between(workspace, last.to_id, last.next_to_id)?;
    let block = Block {
        workspace,
        seq: last.seq + 1,
        from_id: last.to_id,
        to_id: last.next_to_id,
        next_to_id,
        next_xid,
        purge: None,
        prev_mac: Some(last_mac),
        stored_fields_mac: Vec::new(),
    };
    insert_block(key, &block, &block.mac(key, &seals), seals.len())
}

fn insert_block(key: &Key32, block: &Block, mac: &[u8], seals: usize) -> Result<(), WardenError> {
    execute(
        "INSERT INTO warden.audit_blocks (workspace_id, seq, from_id, to_id, next_to_id, next_xid,
                                          seals, purge, prev_mac, mac, fields_mac)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8::pg_catalog.json, $9, $10, $11)",
        &[
            block.workspace.map(Uuid::from_bytes).into(),
            block.seq.into(),
            block.from_id.into(),
            block.to_id.into(),
            block.next_to_id.into(),
            block.next_xid.into(),
            (seals as i32).into(),
            block.purge.as_deref().into(),
            block.prev_mac.clone().into(),
            mac.to_vec().into(),
            block.fields_mac(key).to_vec().into(),
        ],
    )?;
    Ok(())
}

/// Every chain's workspace (NULL: outside any workspace).
fn chains() -> Result<Vec<Option<[u8; 16]>>, WardenError> {
    Spi::connect(|client| {
        let mut out = Vec::new();
        for row in client.select(
            "SELECT DISTINCT workspace_id FROM warden.audit_entries
             UNION SELECT DISTINCT workspace_id FROM warden.audit_batches
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

/// Chains everything committed before (as [`chain`] twice does), then
/// verifies every chain (as the trail's owner).
pub fn verify() -> Result<Vec<ChainReport>, WardenError> {
    refuse_unsealed_rows("verify_audit")?;
    let keys = master::current()?;
    as_extension_owner(|| {
        let mut reports = Vec::new();
        for workspace in chains()? {
            chain_everything(&keys.audit, workspace)?;
            reports.push(verify_chain(&keys.audit, workspace)?);
        }
        Ok(reports)
    })
}

/// Rows this transaction has already written (a statement that buffered
/// more than a write holds) are not sealed until it commits: verifying
/// would report them as inserted behind pg_warden's back.
fn refuse_unsealed_rows(function: &'static str) -> Result<(), WardenError> {
    if super::pending::written_any() {
        return Err(WardenError::AuditRowsUnsealed(function));
    }
    Ok(())
}

/// Takes the chain's lock (until the transaction ends) and chains every
/// transaction that committed before: the first round settles what the
/// last block left pending, the second covers up to now (everything that
/// was running when the first round looked has ended, but for
/// transactions still running now, which are not committed yet).
fn chain_everything(key: &Key32, workspace: Option<[u8; 16]>) -> Result<(), WardenError> {
    Spi::run_with_args(
        "SELECT pg_catalog.pg_advisory_xact_lock($1)",
        &[chain_lock_key(workspace).into()],
    )?;
    // What follows must see what committed while we waited for the lock
    // (a block another backend just added, say). pgrx runs SPI read-only,
    // on the calling statement's snapshot (taken before the wait), in a
    // transaction without an id; with one, each read takes a new
    // snapshot. (pgrx's update above assigns it already; this says so.)
    // SAFETY: assigns this transaction's id, or raises.
    unsafe { pg_sys::GetCurrentTransactionId() };
    chain(key, workspace)?;
    chain(key, workspace)
}

/// A row of the trail (an entry or a batch) as stored, for verification.
struct StoredRow {
    id: i64,
    txid: i64,
    txn_seq: i32,
    at: i64,
    entries: i64,
    mac: Vec<u8>,
    valid: bool,
    /// Its seal, on a transaction's last row.
    seal: Option<StoredSeal>,
    batch: bool,
}

/// A seal as stored: entries, MAC, the block it names.
struct StoredSeal {
    entries: i32,
    mac: Vec<u8>,
    head: macs::Head,
}

/// Every row of a chain, with whether its MAC holds, in id order. One
/// statement reads both tables, so both are seen as of one snapshot (two
/// would see a transaction that committed between them by halves).
fn stored_rows(key: &Key32, workspace: Option<[u8; 16]>) -> Result<Vec<StoredRow>, WardenError> {
    let chain = chain_rows(workspace);
    let ws = workspace.map(Uuid::from_bytes);
    let query = format!(
        "SELECT false, id, txid, txn_seq, mac, seal_entries, seal_mac, at, workspace_id, actor,
                db_role, action, target, ARRAY[row_key::pg_catalog.text],
                ARRAY[old_values::pg_catalog.text], ARRAY[new_values::pg_catalog.text],
                ARRAY[detail::pg_catalog.text], 1, seal_head, seal_head_mac
           FROM warden.audit_entries WHERE {chain}
         UNION ALL
         SELECT true, id, txid, txn_seq, mac, seal_entries, seal_mac, at, workspace_id, actor,
                db_role, action, target, row_keys::pg_catalog.text[],
                old_values::pg_catalog.text[], new_values::pg_catalog.text[],
                details::pg_catalog.text[], entries, seal_head, seal_head_mac
           FROM warden.audit_batches WHERE {chain}"
    );
    let mut out = Vec::new();
    Spi::connect(|client| {
        for row in client.select(&query, None, &[ws.into()])? {
            let batch = row.get::<bool>(1)?.unwrap_or_default();
            let (id, txid, txn_seq) = (
                row.get::<i64>(2)?.unwrap_or_default(),
                row.get::<i64>(3)?.unwrap_or_default(),
                row.get::<i32>(4)?.unwrap_or_default(),
            );
            let stored_mac = row.get::<Vec<u8>>(5)?.unwrap_or_default();
            let seal = match (
                row.get::<i32>(6)?,
                row.get::<Vec<u8>>(7)?,
                row.get::<i64>(19)?,
                row.get::<Vec<u8>>(20)?,
            ) {
                (Some(entries), Some(mac), Some(seq), Some(head_mac)) => Some(StoredSeal {
                    entries,
                    mac,
                    head: macs::Head { seq, mac: head_mac },
                }),
                (None, None, None, None) => None,
                // Part of a seal: it closes the transaction, and cannot match.
                _ => Some(StoredSeal {
                    entries: -1,
                    mac: Vec::new(),
                    head: macs::Head::default(),
                }),
            };
            let at = row
                .get::<TimestampWithTimeZone>(8)?
                .map_or(0, pg_sys::TimestampTz::from);
            let (db_role, action, target) = (
                row.get::<String>(11)?.unwrap_or_default(),
                row.get::<String>(12)?.unwrap_or_default(),
                row.get::<String>(13)?,
            );
            let shared = macs::Shared {
                id,
                at,
                txid,
                txn_seq,
                workspace: row.get::<Uuid>(9)?.map(|u| *u.as_bytes()),
                actor: row.get::<Uuid>(10)?.map(|u| *u.as_bytes()),
                db_role: db_role.as_bytes(),
                action: action.as_bytes(),
                target: target.as_deref().map(str::as_bytes),
            };
            let columns: Vec<Option<Vec<Option<String>>>> = (14..=17)
                .map(|i| row.get::<Vec<Option<String>>>(i))
                .collect::<Result<_, _>>()?;
            let entries = row.get::<i32>(18)?.unwrap_or_default().max(0) as usize;
            let (computed, well_formed) = if batch {
                // The values as written: entry by entry, the present
                // columns' elements in order. A missing or NULL element of
                // a present column, or one beyond `entries`, cannot have
                // been written.
                let present: u8 = columns
                    .iter()
                    .zip([1u8, 2, 4, 8])
                    .filter(|(c, _)| c.is_some())
                    .map(|(_, bit)| bit)
                    .sum();
                let mut texts: Vec<&[u8]> = Vec::new();
                let mut whole = true;
                for i in 0..entries {
                    for column in columns.iter().flatten() {
                        match column.get(i).and_then(|v| v.as_deref()) {
                            Some(v) => texts.push(v.as_bytes()),
                            None => whole = false,
                        }
                    }
                }
                whole &= columns.iter().flatten().all(|c| c.len() == entries);
                let lengths: Vec<usize> = texts.iter().map(|t| t.len()).collect();
                let values = macs::BatchValues {
                    present,
                    lengths: &lengths,
                    texts: texts.iter().copied(),
                };
                (macs::batch_mac(key, &shared, entries, values), whole)
            } else {
                // (One-element arrays of the entry's values.)
                let v = |i: usize| {
                    columns[i]
                        .as_ref()
                        .and_then(|c| c.first())
                        .and_then(|v| v.as_deref())
                        .map(str::as_bytes)
                };
                (
                    macs::entry_mac(key, &shared, &[v(0), v(1), v(2), v(3)]),
                    true,
                )
            };
            out.push(StoredRow {
                id,
                txid,
                txn_seq,
                at,
                entries: entries as i64,
                valid: well_formed && computed.as_slice() == stored_mac.as_slice(),
                mac: stored_mac,
                seal,
                batch,
            });
        }
        Ok::<_, WardenError>(())
    })?;
    out.sort_by_key(|r| r.id);
    Ok(out)
}

/// The transactions of a chain: for each seal, the rows it closes (in
/// `rows`, which is in id order): the rows with its transaction id since
/// that id's previous seal. Rows no seal closes come last, with `None`.
fn transactions(rows: &[StoredRow]) -> Vec<(Option<usize>, Vec<usize>)> {
    let mut open: HashMap<i64, Vec<usize>> = HashMap::new();
    let mut out = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let group = open.entry(row.txid).or_default();
        group.push(i);
        if row.seal.is_some() {
            let group = open.remove(&row.txid).unwrap_or_default();
            out.push((Some(i), group));
        }
    }
    let mut unsealed: Vec<Vec<usize>> = open.into_values().collect();
    unsealed.sort();
    out.extend(unsealed.into_iter().map(|g| (None, g)));
    out
}

/// The blocks of a chain, in seq order, with their MACs.
fn blocks_of(workspace: Option<[u8; 16]>) -> Result<Vec<(Block, Vec<u8>)>, WardenError> {
    Spi::connect(|client| {
        let mut out = Vec::new();
        for row in client.select(
            &blocks_query(workspace, "ORDER BY seq"),
            None,
            &[workspace.map(Uuid::from_bytes).into()],
        )? {
            out.push(block_of(&row, workspace)?);
        }
        Ok::<_, WardenError>(out)
    })
}

/// Where a chain starts after a purge: the last purged block (its seq, its
/// MAC, its `to_id`), as the newest purge mark whose own MAC holds records
/// it. A mark that fails its MAC anchors nothing (it shows as a broken
/// block).
struct Anchor {
    through_seq: i64,
    through_mac: Vec<u8>,
    through_id: i64,
}

fn anchor(key: &Key32, blocks: &[(Block, Vec<u8>)]) -> Option<Anchor> {
    blocks.iter().rev().find_map(|(b, mac)| {
        let purge: serde_json::Value = serde_json::from_str(b.purge.as_deref()?).ok()?;
        if b.mac(key, &[]).as_slice() != mac.as_slice() {
            return None;
        }
        Some(Anchor {
            through_seq: purge.get("purged_through_seq")?.as_i64()?,
            through_mac: hex::decode(purge.get("anchor_mac")?.as_str()?).ok()?,
            through_id: purge.get("purged_through_id")?.as_i64()?,
        })
    })
}

fn verify_chain(key: &Key32, workspace: Option<[u8; 16]>) -> Result<ChainReport, WardenError> {
    let rows = stored_rows(key, workspace)?;
    let blocks = blocks_of(workspace)?;
    Ok(ChainReport {
        workspace,
        entries: rows.iter().map(|r| r.entries).sum(),
        first_broken_id: first_broken(key, workspace, &rows, &blocks),
    })
}

/// The lowest row id where a chain fails, if it does.
fn first_broken(
    key: &Key32,
    workspace: Option<[u8; 16]>,
    rows: &[StoredRow],
    blocks: &[(Block, Vec<u8>)],
) -> Option<i64> {
    let anchor = anchor(key, blocks);

    // The lowest id of a problem.
    let mut broken: Option<i64> = rows.iter().filter(|r| !r.valid).map(|r| r.id).min();
    let mut flag = |id: i64| broken = Some(broken.map_or(id, |b| b.min(id)));

    // Ids are unique (a row copied in under its own id, the primary key
    // dropped, would otherwise read as a second, complete transaction).
    for pair in rows.windows(2) {
        if pair[0].id == pair[1].id {
            flag(pair[1].id);
        }
    }

    // The blocks' MACs by seq, for the blocks seals name.
    let block_macs: HashMap<i64, &[u8]> = blocks
        .iter()
        .map(|(b, mac)| (b.seq, mac.as_slice()))
        .collect();

    // Each seal must match the rows it closes (their MACs in txn_seq
    // order); rows no seal closes were inserted behind pg_warden's back
    // (or their seal was deleted); a transaction sealed at or below where
    // a purge cut the chain was purged, and has been put back.
    for (seal_row, group) in transactions(rows) {
        let Some(first) = group.first().map(|&i| rows[i].id) else {
            continue;
        };
        let Some(s) = seal_row else {
            flag(first);
            continue;
        };
        let Some(sealed) = &rows[s].seal else {
            continue;
        };
        let mut members: Vec<&StoredRow> = group.iter().map(|&i| &rows[i]).collect();
        members.sort_by_key(|r| (r.txn_seq, r.id));
        let entries: i64 = members.iter().map(|r| r.entries).sum();
        let mac = macs::seal_mac(
            key,
            workspace,
            rows[s].txid,
            entries,
            &sealed.head,
            members.iter().map(|r| r.mac.as_slice()),
        );
        let holds = mac.as_slice() == sealed.mac.as_slice();
        let purged = anchor.as_ref().is_some_and(|a| rows[s].id <= a.through_id);
        // The block it names must be there as it was (or purged: older
        // than the block the newest purge mark anchors to).
        let head = &sealed.head;
        let head_holds = match &anchor {
            _ if head.seq == 0 => head.mac.is_empty(),
            Some(a) if head.seq < a.through_seq => true,
            Some(a) if head.seq == a.through_seq => head.mac == a.through_mac,
            _ => block_macs.get(&head.seq) == Some(&head.mac.as_slice()),
        };
        if i64::from(sealed.entries) != entries || !holds || purged || !head_holds {
            flag(first);
        }
    }

    // Blocks: a contiguous chain of id ranges, each MAC'ed over the seals
    // in its range and the previous block, starting at 0 or where the
    // newest purge mark says the purged part ended.
    let seals: Vec<SealRow> = rows
        .iter()
        .filter_map(|r| {
            r.seal.as_ref().map(|seal| SealRow {
                id: r.id,
                txid: r.txid,
                entries: seal.entries,
                mac: seal.mac.clone(),
            })
        })
        .collect();
    let (mut expected_seq, mut expected_prev, mut expected_from) = match anchor {
        Some(a) => (a.through_seq + 1, Some(a.through_mac), a.through_id),
        None => (1, None, 0),
    };
    // (Rows, and so seals, are in id order: a block's are a slice.)
    let after = |id: i64| seals.partition_point(|s| s.id <= id);
    for (block, mac) in blocks {
        let covered = match block.purge {
            None => &seals[after(block.from_id)..after(block.to_id).max(after(block.from_id))],
            Some(_) => &[][..],
        };
        let linked = block.seq == expected_seq
            && block.prev_mac == expected_prev
            && block.from_id == expected_from;
        if !linked
            || !block.fields_hold(key)
            || block.mac(key, covered).as_slice() != mac.as_slice()
        {
            // It shows at the first row after where it starts, or should
            // (the previous block's end: a broken block's own fields are
            // not to be trusted); with no row after that, at the id
            // after it, a row that is not there: a broken block never
            // goes unreported.
            let start = expected_from.min(block.from_id);
            let next = rows.partition_point(|r| r.id <= start);
            flag(rows.get(next).map_or(start.saturating_add(1), |r| r.id));
        }
        expected_seq = block.seq + 1;
        expected_prev = Some(mac.clone());
        expected_from = block.to_id;
    }
    broken
}

/// Deletes, per chain, the longest run of oldest blocks whose transactions
/// are all older than `before` (with those transactions' rows), after
/// appending a purge mark that records where the chain now starts. Returns
/// the number of entries deleted.
pub fn purge(before: TimestampWithTimeZone) -> Result<i64, WardenError> {
    refuse_unsealed_rows("purge_audit")?;
    let keys = master::current()?;
    as_extension_owner(|| {
        super::while_purging(|| {
            let mut deleted = 0i64;
            for workspace in chains()? {
                chain_everything(&keys.audit, workspace)?;
                deleted += purge_chain(&keys.audit, workspace, before)?;
            }
            Ok(deleted)
        })
    })
}

fn purge_chain(
    key: &Key32,
    workspace: Option<[u8; 16]>,
    before: TimestampWithTimeZone,
) -> Result<i64, WardenError> {
    let cut_off = pg_sys::TimestampTz::from(before);
    let rows = stored_rows(key, workspace)?;
    let blocks = blocks_of(workspace)?;
    // A chain that does not verify keeps everything: purging would erase
    // the evidence (and re-anchor the chain past it).
    if let Some(first) = first_broken(key, workspace, &rows, &blocks) {
        return Err(WardenError::AuditChainBroken {
            workspace: workspace
                .map_or_else(|| "(none)".into(), |w| Uuid::from_bytes(w).to_string()),
            first,
        });
    }
    let transactions = transactions(&rows);
    // The newest row of each sealed transaction, by its seal's row id.
    let newest: Vec<(i64, i64)> = transactions
        .iter()
        .filter_map(|(seal, group)| {
            let s = (*seal)?;
            Some((rows[s].id, group.iter().map(|&i| rows[i].at).max()?))
        })
        .collect();
    // The run of oldest blocks (purge marks aside) whose transactions are
    // all older than `before`.
    // (In seal id order, as the rows: a block's transactions are a slice.)
    let after = |id: i64| newest.partition_point(|&(seal, _)| seal <= id);
    let mut through: Option<&(Block, Vec<u8>)> = None;
    for b in blocks.iter().filter(|(b, _)| b.purge.is_none()) {
        let (block, _) = b;
        let (from, to) = (after(block.from_id), after(block.to_id));
        let newer = newest[from..to.max(from)]
            .iter()
            .any(|&(_, at)| at >= cut_off);
        if newer {
            break;
        }
        through = Some(b);
    }
    let Some((through, through_mac)) = through else {
        return Ok(0);
    };
    // Their transactions' rows.
    let (mut entry_ids, mut batch_ids, mut n) = (Vec::new(), Vec::new(), 0i64);
    for (seal, group) in &transactions {
        if seal.is_some_and(|s| rows[s].id <= through.to_id) {
            for &i in group {
                n += rows[i].entries;
                if rows[i].batch {
                    batch_ids.push(rows[i].id);
                } else {
                    entry_ids.push(rows[i].id);
                }
            }
        }
    }
    // The mark goes on the chain first, then what it covers goes.
    let Some((last, last_mac)) = blocks.last() else {
        return Ok(0);
    };
    let purge = serde_json::json!({
        "before": before.to_string(),
        "purged_through_seq": through.seq,
        "purged_through_id": through.to_id,
        "anchor_mac": hex::encode(through_mac),
        "entries": n,
    });
    let mark = Block {
        workspace,
        seq: last.seq + 1,
        from_id: last.to_id,
        to_id: last.to_id,
        next_to_id: last.next_to_id,
        next_xid: last.next_xid,
        purge: Some(purge.to_string()),
        prev_mac: Some(last_mac.clone()),
        stored_fields_mac: Vec::new(),
    };
    insert_block(key, &mark, &mark.mac(key, &[]), 0)?;
    for (table, ids) in [("audit_entries", entry_ids), ("audit_batches", batch_ids)] {
        for chunk in ids.chunks(10_000) {
            Spi::run_with_args(
                &format!("DELETE FROM warden.{table} WHERE id OPERATOR(pg_catalog.=) ANY ($1)"),
                &[chunk.to_vec().into()],
            )?;
        }
    }
    Spi::run_with_args(
        &format!(
            "DELETE FROM warden.audit_blocks WHERE {} AND seq OPERATOR(pg_catalog.<=) $2",
            chain_rows(workspace)
        ),
        &[workspace.map(Uuid::from_bytes).into(), through.seq.into()],
    )?;
    Ok(n)
}
