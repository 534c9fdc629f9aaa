//! The chains: seals appended per workspace in blocks, verifying them, and
//! purging their oldest blocks.
//!
//! A block covers every seal of its workspace whose transaction id lies in
//! `[from_txid, to_txid)` and MACs them with the previous block's MAC.
//! `to_txid` is a snapshot's xmin, below which every transaction has
//! finished, so no seal can appear in a chained range later. Chaining takes
//! the chain's advisory lock: with a *try*-lock at commit (whoever gets it
//! chains what has settled; the others go on), for certain in
//! `verify_audit()` and `purge_audit()`.

use super::macs::{self, Shared};
use crate::backend::{as_extension_owner, execute, select, select_one, BackendLocal};
use crate::crypto::{fields_mac, Key32, MAC_LEN};
use crate::error::WardenError;
use crate::keys::master;
use pgrx::prelude::*;
use pgrx::Uuid;
use std::cell::Cell;
use std::collections::BTreeSet;

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

/// After a commit's write: for each workspace it wrote to, if no other
/// transaction is chaining that workspace right now (a try-lock, never a
/// wait), the seals of every transaction that has finished are appended
/// to its chain.
pub fn chain_after_commit(workspaces: &[Option<[u8; 16]>]) -> Result<(), WardenError> {
    // Another transaction's view of the last block could be stale outside
    // READ COMMITTED: chain only there (others will).
    // SAFETY: plain backend global.
    let read_committed = unsafe { pg_sys::XactIsoLevel } <= pg_sys::XACT_READ_COMMITTED as i32;
    if !(read_committed && due_to_chain()) {
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

/// The seals of a chain with `from <= txid < to`, in txid order (from
/// entries and batches: a transaction's seal is on its last row there).
fn seals_between(
    workspace: Option<[u8; 16]>,
    from: i64,
    to: i64,
) -> Result<Vec<SealRow>, WardenError> {
    // Spelled to match the partial indexes on (workspace_id, txid).
    let chain = match workspace {
        Some(_) => "workspace_id OPERATOR(pg_catalog.=) $1",
        None => "workspace_id IS NULL AND $1::pg_catalog.uuid IS NULL",
    };
    let part = |table: &str| {
        format!(
            "SELECT txid, seal_entries, seal_mac FROM warden.{table}
              WHERE {chain} AND seal_mac IS NOT NULL
                AND txid OPERATOR(pg_catalog.>=) $2 AND txid OPERATOR(pg_catalog.<) $3"
        )
    };
    let query = format!(
        "{} UNION ALL {} ORDER BY txid",
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

/// A row of the trail (an entry or a batch) as stored, for verification.
struct StoredRow {
    id: i64,
    txid: i64,
    txn_seq: i32,
    entries: i64,
    mac: Vec<u8>,
    valid: bool,
}

/// Every row of a chain, with whether its MAC holds, in (txid, txn_seq)
/// order.
fn stored_rows(key: &Key32, workspace: Option<[u8; 16]>) -> Result<Vec<StoredRow>, WardenError> {
    let chain = in_chain("workspace_id", "$1");
    let ws = workspace.map(Uuid::from_bytes);
    let mut out = Vec::new();
    Spi::connect(|client| {
        let shared_of =
            |row: &pgrx::spi::SpiHeapTupleData, first: usize| -> Result<_, WardenError> {
                Ok((
                    row.get::<TimestampWithTimeZone>(first)?
                        .map_or(0, pg_sys::TimestampTz::from),
                    row.get::<Uuid>(first + 1)?.map(|u| *u.as_bytes()),
                    row.get::<Uuid>(first + 2)?.map(|u| *u.as_bytes()),
                    row.get::<String>(first + 3)?.unwrap_or_default(),
                    row.get::<String>(first + 4)?.unwrap_or_default(),
                    row.get::<String>(first + 5)?,
                ))
            };
        for row in client.select(
            &format!(
                "SELECT id, txid, txn_seq, mac, at, workspace_id, actor, db_role, action, target,
                        row_key::text, old_values::text, new_values::text, detail::text
                   FROM warden.audit_entries WHERE {chain}"
            ),
            None,
            &[ws.into()],
        )? {
            let (id, txid, txn_seq) = (
                row.get::<i64>(1)?.unwrap_or_default(),
                row.get::<i64>(2)?.unwrap_or_default(),
                row.get::<i32>(3)?.unwrap_or_default(),
            );
            let stored_mac = row.get::<Vec<u8>>(4)?.unwrap_or_default();
            let (at, ws, actor, db_role, action, target) = shared_of(&row, 5)?;
            let values: Vec<Option<String>> = (11..=14)
                .map(|i| row.get::<String>(i))
                .collect::<Result<_, _>>()?;
            let shared = Shared {
                at,
                txid,
                txn_seq,
                workspace: ws,
                actor,
                db_role: db_role.as_bytes(),
                action: action.as_bytes(),
                target: target.as_deref().map(str::as_bytes),
            };
            let v = |i: usize| values[i].as_deref().map(str::as_bytes);
            let computed = macs::entry_mac(key, &shared, &[v(0), v(1), v(2), v(3)]);
            out.push(StoredRow {
                id,
                txid,
                txn_seq,
                entries: 1,
                valid: computed.as_slice() == stored_mac.as_slice(),
                mac: stored_mac,
            });
        }
        for row in client.select(
            &format!(
                "SELECT id, txid, txn_seq, mac, at, workspace_id, actor, db_role, action, target,
                        row_keys::text[], old_values::text[], new_values::text[], details::text[],
                        entries
                   FROM warden.audit_batches WHERE {chain}"
            ),
            None,
            &[ws.into()],
        )? {
            let (id, txid, txn_seq) = (
                row.get::<i64>(1)?.unwrap_or_default(),
                row.get::<i64>(2)?.unwrap_or_default(),
                row.get::<i32>(3)?.unwrap_or_default(),
            );
            let stored_mac = row.get::<Vec<u8>>(4)?.unwrap_or_default();
            let (at, ws, actor, db_role, action, target) = shared_of(&row, 5)?;
            let columns: Vec<Option<Vec<Option<String>>>> = (11..=14)
                .map(|i| row.get::<Vec<Option<String>>>(i))
                .collect::<Result<_, _>>()?;
            let entries = row.get::<i32>(15)?.unwrap_or_default().max(0) as usize;
            let shared = Shared {
                at,
                txid,
                txn_seq,
                workspace: ws,
                actor,
                db_role: db_role.as_bytes(),
                action: action.as_bytes(),
                target: target.as_deref().map(str::as_bytes),
            };
            let value = |field: usize, i: usize| {
                columns[field]
                    .as_ref()
                    .and_then(|c| c.get(i))
                    .and_then(|v| v.as_deref())
                    .map(str::as_bytes)
            };
            let values = (0..entries).map(|i| [value(0, i), value(1, i), value(2, i), value(3, i)]);
            let computed = macs::batch_mac(key, &shared, entries, values);
            // Elements beyond `entries` would be rows the MAC does not cover.
            let longer = columns.iter().flatten().any(|c| c.len() > entries);
            out.push(StoredRow {
                id,
                txid,
                txn_seq,
                entries: entries as i64,
                valid: !longer && computed.as_slice() == stored_mac.as_slice(),
                mac: stored_mac,
            });
        }
        Ok::<_, WardenError>(())
    })?;
    out.sort_by_key(|r| (r.txid, r.txn_seq, r.id));
    Ok(out)
}

fn verify_chain(key: &Key32, workspace: Option<[u8; 16]>) -> Result<ChainReport, WardenError> {
    let rows = stored_rows(key, workspace)?;
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

    // The lowest id of a problem.
    let mut broken: Option<i64> = rows.iter().filter(|r| !r.valid).map(|r| r.id).min();
    let mut flag = |id: Option<i64>| {
        if let Some(id) = id {
            broken = Some(broken.map_or(id, |b| b.min(id)));
        }
    };
    // Where a problem at transaction `txid` shows: its first row, or the
    // first row after it when none of its own is left.
    let at_or_after = |txid: i64| rows.iter().filter(|r| r.txid >= txid).map(|r| r.id).min();

    // Seals: each must match its transaction's rows (in order).
    let mut sealed = BTreeSet::new();
    for seal in &all_seals {
        let own = || rows.iter().filter(|r| r.txid == seal.txid);
        let entries: i64 = own().map(|r| r.entries).sum();
        let mac = macs::seal_mac(
            key,
            workspace,
            seal.txid,
            entries,
            own().map(|r| r.mac.as_slice()),
        );
        if i64::from(seal.entries) != entries || mac.as_slice() != seal.mac {
            flag(at_or_after(seal.txid));
        }
        sealed.insert(seal.txid);
    }
    // Rows no seal covers were inserted behind pg_warden's back (or their
    // seal was deleted).
    flag(
        rows.iter()
            .filter(|r| !sealed.contains(&r.txid))
            .map(|r| r.id)
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
        entries: rows.iter().map(|r| r.entries).sum(),
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
        super::while_purging(|| {
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
                let newer = |table: &str| {
                    format!(
                        "EXISTS (SELECT FROM warden.{table} AS e
                                  WHERE {chain_e}
                                    AND e.txid OPERATOR(pg_catalog.>=) k.from_txid
                                    AND e.txid OPERATOR(pg_catalog.<) k.to_txid
                                    AND e.at OPERATOR(pg_catalog.>=) $2)",
                        chain_e = in_chain("e.workspace_id", "$1"),
                    )
                };
                let through = select_one::<i64>(
                    &format!(
                        "SELECT max(b.seq) FROM warden.audit_blocks AS b
                          WHERE {chain_b} AND b.purge IS NULL
                            AND b.seq OPERATOR(pg_catalog.<) COALESCE((
                                SELECT min(k.seq) FROM warden.audit_blocks AS k
                                 WHERE {chain_k} AND (k.purge IS NOT NULL OR {entries} OR {batches})),
                                9223372036854775807)",
                        chain_b = in_chain("b.workspace_id", "$1"),
                        chain_k = in_chain("k.workspace_id", "$1"),
                        entries = newer("audit_entries"),
                        batches = newer("audit_batches"),
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
                let chain_rows = in_chain("workspace_id", "$1");
                let n = select_one::<i64>(
                    &format!(
                        "SELECT (SELECT count(*) FROM warden.audit_entries
                                  WHERE {chain_rows} AND txid OPERATOR(pg_catalog.<) $2)
                              + (SELECT COALESCE(sum(entries), 0) FROM warden.audit_batches
                                  WHERE {chain_rows} AND txid OPERATOR(pg_catalog.<) $2)"
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
                for table in ["audit_entries", "audit_batches"] {
                    Spi::run_with_args(
                        &format!("DELETE FROM warden.{table} WHERE {chain_rows} AND txid OPERATOR(pg_catalog.<) $2"),
                        &[ws.into(), up_to.into()],
                    )?;
                }
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
