//! What a transaction has recorded and not yet written, and writing it.
//!
//! Entries are buffered as they are recorded, in runs of alike entries
//! (one statement's rows of one table, with the same action, chain, actor
//! and role). They are written at commit, or earlier when a statement has
//! buffered 10,000 entries or 16 MB of JSON. A run of at least
//! [`BATCH_MIN`] entries is written as batches (one row of
//! `warden.audit_batches` for up to [`BATCH_MAX`] entries, its JSON values
//! in `json[]` columns, one MAC over all of it); anything else as one row
//! of `warden.audit_entries` per entry. At commit each workspace's last
//! row also carries the transaction's seal there.
//!
//! Rows are appended straight to the tables and their indexes (see
//! `crate::append`): no statement to plan or executor to start.

use super::macs::{self, Shared};
use crate::append::{Appender, Value};
use crate::backend::{as_extension_owner_no_queries, BackendLocal};
use crate::crypto::MAC_LEN;
use crate::error::WardenError;
use crate::keys::master;
use pgrx::prelude::*;
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

/// Entries buffered before a write is forced (bounds memory in huge
/// statements).
const MAX_BUFFERED: usize = 10_000;

/// Bytes of JSON values buffered before a write is forced (bounds memory
/// when rows are large: 10,000 rows of a megabyte each would otherwise be
/// held at once). Like the count, it applies to what a write could take:
/// the current subtransaction's entries (inside a savepoint, those of the
/// levels above wait for their level or commit).
const MAX_BUFFERED_BYTES: usize = 16 << 20;

/// Runs this long or longer are written as batches.
pub const BATCH_MIN: usize = 64;

/// Entries in one batch row (about 130 kB of JSON for rows of four
/// columns: large enough to make a batch's row and index entries cheap per
/// entry, small enough for a reader to unpack one batch quickly).
pub const BATCH_MAX: usize = 1024;

/// Which JSON values an entry has, as bits of [`Head::present`].
const VALUE_BITS: [u8; 4] = [1, 2, 4, 8];

/// What the entries of a run share.
#[derive(PartialEq)]
pub struct Head {
    pub at: i64,
    pub workspace: Option<[u8; 16]>,
    pub actor: Option<[u8; 16]>,
    pub db_role: Rc<str>,
    pub action: Cow<'static, str>,
    pub target: Option<Rc<str>>,
    /// The subtransaction that recorded them: they go if it rolls back.
    pub subxact: pg_sys::SubTransactionId,
    /// Which of row key, old values, new values, detail they have.
    present: u8,
}

impl Head {
    pub fn new(
        at: i64,
        workspace: Option<[u8; 16]>,
        actor: Option<[u8; 16]>,
        db_role: Rc<str>,
        action: Cow<'static, str>,
        target: Option<Rc<str>>,
        subxact: pg_sys::SubTransactionId,
    ) -> Head {
        Head {
            at,
            workspace,
            actor,
            db_role,
            action,
            target,
            subxact,
            present: 0,
        }
    }

    fn shared(&self, id: i64, txid: i64, txn_seq: i32) -> Shared<'_> {
        Shared {
            id,
            at: self.at,
            txid,
            txn_seq,
            workspace: self.workspace,
            actor: self.actor,
            db_role: self.db_role.as_bytes(),
            action: self.action.as_bytes(),
            target: self.target.as_deref().map(str::as_bytes),
        }
    }
}

/// Consecutive entries recorded alike.
struct Run {
    head: Head,
    /// `txn_seq` of its first entry (the others follow, one apart).
    first_seq: i32,
    count: usize,
    /// The JSON values of its entries, concatenated (per entry, its
    /// present values in order), and where each ends.
    texts: Vec<u8>,
    ends: Vec<usize>,
    /// A workspace's newest entry that a mid-statement write left for the
    /// commit (to carry the seal): the write limits count beyond it, or a
    /// transaction in more workspaces than the limit would write again at
    /// every entry. New entries start a run of their own after it.
    held: bool,
}

impl Head {
    /// The bytes of its action and target, as each entry of its run holds
    /// them once written.
    fn text_bytes(&self) -> usize {
        self.action.len() + self.target.as_deref().map_or(0, str::len)
    }
}

impl Run {
    fn values_per_entry(&self) -> usize {
        self.head.present.count_ones() as usize
    }

    /// Entry `i`'s JSON values.
    fn values(&self, i: usize) -> macs::Values<'_> {
        let mut out = [None; 4];
        let mut j = i * self.values_per_entry();
        for (bit, slot) in VALUE_BITS.iter().zip(out.iter_mut()) {
            if self.head.present & bit != 0 {
                let start = if j == 0 { 0 } else { self.ends[j - 1] };
                *slot = Some(&self.texts[start..self.ends[j]]);
                j += 1;
            }
        }
        out
    }

    /// Splits off its last entry, as a run of its own.
    fn split_last(&mut self) -> Run {
        let k = self.values_per_entry();
        let kept = (self.count - 1) * k;
        let start = if kept == 0 { 0 } else { self.ends[kept - 1] };
        let last = Run {
            head: Head {
                db_role: Rc::clone(&self.head.db_role),
                action: self.head.action.clone(),
                target: self.head.target.clone(),
                ..self.head
            },
            first_seq: self.first_seq + (self.count - 1) as i32,
            count: 1,
            texts: self.texts[start..].to_vec(),
            ends: self.ends[kept..].iter().map(|e| e - start).collect(),
            held: false,
        };
        self.texts.truncate(start);
        self.ends.truncate(kept);
        self.count -= 1;
        last
    }
}

/// A written row (an entry or a batch), as the transaction's seal needs it.
struct Written {
    workspace: Option<[u8; 16]>,
    txn_seq: i32,
    entries: usize,
    mac: [u8; MAC_LEN],
    subxact: pg_sys::SubTransactionId,
}

/// What this transaction has recorded.
struct Pending {
    txid: i64,
    next_seq: i32,
    /// Not yet written, in recording order.
    runs: Vec<Run>,
    /// The size (entries, bytes of JSON) of what a write in a given
    /// subtransaction would take; `None` to count it again.
    share: Option<(pg_sys::SubTransactionId, usize, usize)>,
    /// Written, to seal at commit.
    written: Vec<Written>,
    /// The subtransactions of entries a failed write took with it (an
    /// error caught by a savepoint): while any of them is still part of
    /// the transaction, it cannot commit (its trail would miss them).
    lost: Vec<pg_sys::SubTransactionId>,
}

static PENDING: BackendLocal<RefCell<Option<Pending>>> = BackendLocal::new(RefCell::new(None));

/// Where the entries of subtransaction `current` (and of the ones it has
/// released) begin: they are the buffer's tail, since it is in recording
/// order, subtransaction ids only grow, and an entry recorded before
/// `current` began has a smaller id.
fn writable_from(runs: &[Run], current: pg_sys::SubTransactionId) -> usize {
    runs.partition_point(|r| r.head.subxact < current)
}

/// Buffers an entry of transaction `txid`; says whether the buffer is
/// full (the caller then writes it).
pub fn push(txid: i64, mut head: Head, values: [Option<Vec<u8>>; 4]) -> Result<bool, WardenError> {
    head.present = values
        .iter()
        .zip(VALUE_BITS)
        .filter(|(v, _)| v.is_some())
        .map(|(_, bit)| bit)
        .sum();
    // (An event's action and target count too: each can be large.)
    let size: usize = values.iter().flatten().map(Vec::len).sum::<usize>() + head.text_bytes();
    let subxact = head.subxact;
    let mut pending = PENDING.borrow_mut();
    let p = match &mut *pending {
        Some(p) if p.txid == txid => p,
        slot => slot.insert(Pending {
            txid,
            next_seq: 0,
            runs: Vec::new(),
            share: None,
            written: Vec::new(),
            lost: Vec::new(),
        }),
    };
    p.next_seq = p
        .next_seq
        .checked_add(1)
        .ok_or(WardenError::AuditTooManyEntries)?;
    if p.runs.last().is_none_or(|r| r.held || r.head != head) {
        p.runs.push(Run {
            head,
            first_seq: p.next_seq,
            count: 0,
            texts: Vec::new(),
            ends: Vec::new(),
            held: false,
        });
    }
    let run = p.runs.last_mut().expect("just pushed");
    for v in values.into_iter().flatten() {
        run.texts.extend_from_slice(&v);
        run.ends.push(run.texts.len());
    }
    run.count += 1;
    let (entries, bytes) = match p.share {
        Some((s, e, b)) if s == subxact => (e + 1, b + size),
        _ => {
            let share = p.runs[writable_from(&p.runs, subxact)..]
                .iter()
                .filter(|r| !r.held);
            (
                share.clone().map(|r| r.count).sum(),
                share
                    .map(|r| r.texts.len() + r.count * r.head.text_bytes())
                    .sum(),
            )
        }
    };
    p.share = Some((subxact, entries, bytes));
    Ok(entries >= MAX_BUFFERED || bytes >= MAX_BUFFERED_BYTES)
}

/// A transaction's seal in a workspace, on its last row there.
struct Seal {
    entries: i32,
    mac: [u8; MAC_LEN],
    head: macs::Head,
}

/// A row to write: entries `from .. from + count` of a run, as a batch or
/// (one entry) as an entry.
struct Row {
    /// Its id (drawn just before it is written).
    id: i64,
    run: usize,
    from: usize,
    count: usize,
    batch: bool,
    mac: [u8; MAC_LEN],
    /// On each workspace's last row, at commit: the seal.
    seal: Option<Seal>,
}

/// Writes what is buffered (as the trail's owner): when the buffer is full
/// (`at_commit` false: each workspace's newest entry stays for the
/// commit, to carry the seal), and at commit, with the seals.
///
/// Only entries recorded in the current subtransaction (or one it has
/// released) are written: a row written here is rolled back with this
/// subtransaction, so an entry recorded outside it, written here, would
/// vanish with a `ROLLBACK TO` while the transaction still counts it.
/// Those wait for a write at their level, at the latest at commit.
pub fn flush(at_commit: bool) -> Result<(), WardenError> {
    // SAFETY: reads the current subtransaction's id.
    let current = unsafe { pg_sys::GetCurrentSubTransactionId() };
    let (txid, runs) = match &mut *PENDING.borrow_mut() {
        Some(p) => {
            if at_commit && !p.lost.is_empty() {
                return Err(WardenError::AuditEntriesLost);
            }
            let from = writable_from(&p.runs, current);
            let mut runs = p.runs.split_off(from);
            if !at_commit {
                p.runs.extend(hold_back(&mut runs));
            }
            p.share = None;
            (p.txid, runs)
        }
        None => return Ok(()),
    };
    let mut rows = rows_of(&runs);
    if rows.is_empty() && !at_commit {
        return Ok(());
    }
    let keys = master::current()?;
    if rows.is_empty() {
        // (At commit: nothing left to carry a seal is fine only if nothing
        // was written either.)
        return seal(&keys.audit, txid, &runs, &mut rows, &Default::default());
    }
    // The chains' newest blocks the seals name (a query, now and then: so
    // before the part that runs none).
    let heads = if at_commit {
        let workspaces: Vec<Option<[u8; 16]>> =
            rows.iter().map(|r| runs[r.run].head.workspace).collect();
        super::chain::heads(&workspaces)?
    } else {
        Default::default()
    };
    let mut in_flight = InFlight(runs.iter().map(|r| r.head.subxact).collect());
    // As the trail's owner (nextval and the tables need its rights); no
    // query runs here, so the caller's search path is not pinned.
    as_extension_owner_no_queries(|| {
        // SAFETY: raise (25006) in a read-only transaction, and in parallel
        // mode, as an INSERT would, before anything else is tried.
        unsafe {
            pg_sys::PreventCommandIfReadOnly(c"INSERT".as_ptr());
            pg_sys::PreventCommandIfParallelMode(c"INSERT".as_ptr());
        }
        // Ids first: every MAC covers its row's id.
        let sequence = id_sequence()?;
        for row in &mut rows {
            row.id = next_id(sequence)?;
        }
        for row in &mut rows {
            row.mac = row_mac(&keys.audit, txid, &runs[row.run], row);
        }
        if at_commit {
            seal(&keys.audit, txid, &runs, &mut rows, &heads)?;
        }
        write(txid, &runs, &rows)
    })?;
    in_flight.0.clear();
    if let Some(p) = &mut *PENDING.borrow_mut() {
        p.written.extend(rows.iter().map(|row| {
            let run = &runs[row.run];
            Written {
                workspace: run.head.workspace,
                txn_seq: run.first_seq + row.from as i32,
                entries: row.count,
                mac: row.mac,
                subxact: run.head.subxact,
            }
        }));
    }
    Ok(())
}

/// The MAC of a row to write (an entry, or a batch).
fn row_mac(key: &crate::crypto::Key32, txid: i64, run: &Run, row: &Row) -> [u8; MAC_LEN] {
    let shared = run
        .head
        .shared(row.id, txid, run.first_seq + row.from as i32);
    if !row.batch {
        return macs::entry_mac(key, &shared, &run.values(row.from));
    }
    let k = run.values_per_entry();
    let (first, last) = (row.from * k, (row.from + row.count) * k);
    let start = |j: usize| if j == 0 { 0 } else { run.ends[j - 1] };
    let lengths: Vec<usize> = (first..last).map(|j| run.ends[j] - start(j)).collect();
    let end = if last == 0 { 0 } else { run.ends[last - 1] };
    let values = macs::BatchValues {
        present: run.head.present,
        lengths: &lengths,
        texts: [&run.texts[start(first)..end]],
    };
    macs::batch_mac(key, &shared, row.count, values)
}

/// The rows the runs are written as.
fn rows_of(runs: &[Run]) -> Vec<Row> {
    let mut rows = Vec::new();
    for (r, run) in runs.iter().enumerate() {
        let batch = run.count >= BATCH_MIN;
        let step = if batch { BATCH_MAX } else { 1 };
        for from in (0..run.count).step_by(step) {
            rows.push(Row {
                id: 0,
                run: r,
                from,
                count: step.min(run.count - from),
                batch,
                mac: [0; MAC_LEN],
                seal: None,
            });
        }
    }
    rows
}

/// Puts the transaction's seal in each workspace on the last of `rows`
/// there: the count of its entries and the MAC of its rows' MACs (written
/// before, and these), in order.
fn seal(
    key: &crate::crypto::Key32,
    txid: i64,
    runs: &[Run],
    rows: &mut [Row],
    heads: &super::chain::Heads,
) -> Result<(), WardenError> {
    /// A row of the transaction, written before (`row` None) or now.
    struct Sealed {
        workspace: Option<[u8; 16]>,
        txn_seq: i32,
        entries: usize,
        mac: [u8; MAC_LEN],
        row: Option<usize>,
    }
    let pending = PENDING.borrow();
    let written = pending.as_ref().map_or(&[][..], |p| &p.written[..]);
    let mut all: Vec<Sealed> = written
        .iter()
        .map(|w| Sealed {
            workspace: w.workspace,
            txn_seq: w.txn_seq,
            entries: w.entries,
            mac: w.mac,
            row: None,
        })
        .chain(rows.iter().enumerate().map(|(i, row)| {
            let run = &runs[row.run];
            Sealed {
                workspace: run.head.workspace,
                txn_seq: run.first_seq + row.from as i32,
                entries: row.count,
                mac: row.mac,
                row: Some(i),
            }
        }))
        .collect();
    all.sort_by_key(|s| (s.workspace, s.txn_seq));
    for chunk in all.chunk_by(|a, b| a.workspace == b.workspace) {
        // There is one: a workspace's newest entry is never written before
        // commit (hold_back), and if it is rolled back, so is every entry
        // of the workspace a write took after the one now newest.
        let last = chunk
            .last()
            .and_then(|s| s.row)
            .ok_or(WardenError::AuditEntriesLost)?;
        let entries: usize = chunk.iter().map(|s| s.entries).sum();
        let entries = i32::try_from(entries).map_err(|_| WardenError::AuditTooManyEntries)?;
        let head = heads
            .get(&chunk[0].workspace)
            .cloned()
            .ok_or_else(|| WardenError::Internal("no chain head for a seal".into()))?;
        let mac = macs::seal_mac(
            key,
            chunk[0].workspace,
            txid,
            i64::from(entries),
            &head,
            chunk.iter().map(|s| &s.mac[..]),
        );
        rows[last].seal = Some(Seal { entries, mac, head });
    }
    Ok(())
}

/// Takes out of a mid-statement write the newest entry of each workspace:
/// it stays buffered, to carry the transaction's seal at commit. (The
/// write takes the buffer's tail, so its newest entries are the
/// workspaces' newest.)
fn hold_back(runs: &mut Vec<Run>) -> Vec<Run> {
    let mut seen = HashSet::new();
    let mut held = Vec::new();
    for run in runs.iter_mut().rev() {
        if seen.insert(run.head.workspace) {
            let mut last = run.split_last();
            last.held = true;
            held.push(last);
        }
    }
    held.reverse();
    runs.retain(|r| r.count > 0);
    held
}

/// A write under way: if it does not finish (a PostgreSQL error unwinds
/// through it, or it returns one), its entries are gone with the failed
/// subtransaction; their subtransactions are remembered as lost.
struct InFlight(Vec<pg_sys::SubTransactionId>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            if let Some(p) = &mut *PENDING.borrow_mut() {
                p.lost.append(&mut self.0);
            }
        }
    }
}

static ENTRY_COLUMNS: &[&str] = &[
    "id",
    "at",
    "txid",
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
    "seal_head",
    "seal_head_mac",
];

static BATCH_COLUMNS: &[&str] = &[
    "id",
    "at",
    "txid",
    "txn_seq",
    "entries",
    "workspace_id",
    "actor",
    "db_role",
    "action",
    "target",
    "row_keys",
    "old_values",
    "new_values",
    "details",
    "mac",
    "seal_entries",
    "seal_mac",
    "seal_head",
    "seal_head_mac",
];

/// The trail's id sequence (each row, an entry or a batch, takes one
/// value).
fn id_sequence() -> Result<pg_sys::Oid, WardenError> {
    crate::backend::warden_relation(c"audit_id_seq")
}

fn next_id(sequence: pg_sys::Oid) -> Result<i64, WardenError> {
    // SAFETY: nextval of an existing sequence; raises as nextval() does.
    let id =
        unsafe { pgrx::direct_function_call::<i64>(pg_sys::nextval_oid, &[sequence.into_datum()]) };
    id.ok_or_else(|| WardenError::Internal("nextval returned NULL".into()))
}

fn write<'a>(txid: i64, runs: &'a [Run], rows: &[Row]) -> Result<(), WardenError> {
    fn uuid(v: &Option<[u8; 16]>) -> Value<'_> {
        v.as_ref().map_or(Value::Null, Value::Uuid)
    }
    fn text(v: Option<&str>) -> Value<'_> {
        v.map_or(Value::Null, Value::Text)
    }
    fn seal_values(seal: &Option<Seal>) -> [Value<'_>; 4] {
        match seal {
            Some(s) => [
                Value::Int4(s.entries),
                Value::Bytea(&s.mac),
                Value::Int8(s.head.seq),
                Value::Bytea(&s.head.mac),
            ],
            None => [Value::Null, Value::Null, Value::Null, Value::Null],
        }
    }
    let (mut entries, mut batches) = (None, None);
    for row in rows {
        let run = &runs[row.run];
        let head = &run.head;
        let id = row.id;
        let txn_seq = run.first_seq + row.from as i32;
        let [seal_entries, seal_mac, seal_head, seal_head_mac] = seal_values(&row.seal);
        if row.batch {
            let appender = match &mut batches {
                Some(a) => a,
                None => batches.insert(Appender::open(c"audit_batches", BATCH_COLUMNS)?),
            };
            let entries_of = || row.from..row.from + row.count;
            let columns: Vec<Option<Vec<&[u8]>>> = (0..4)
                .map(|field| {
                    (head.present & VALUE_BITS[field] != 0).then(|| {
                        entries_of()
                            .map(|i| run.values(i)[field].unwrap_or_default())
                            .collect()
                    })
                })
                .collect();
            let array = |field: usize| {
                columns[field]
                    .as_deref()
                    .map_or(Value::Null, Value::JsonArray)
            };
            appender.append(&[
                Value::Int8(id),
                Value::TimestampTz(head.at),
                Value::Int8(txid),
                Value::Int4(txn_seq),
                Value::Int4(row.count as i32),
                uuid(&head.workspace),
                uuid(&head.actor),
                Value::Text(&head.db_role),
                Value::Text(&head.action),
                text(head.target.as_deref()),
                array(0),
                array(1),
                array(2),
                array(3),
                Value::Bytea(&row.mac),
                seal_entries,
                seal_mac,
                seal_head,
                seal_head_mac,
            ])?;
        } else {
            let appender = match &mut entries {
                Some(a) => a,
                None => entries.insert(Appender::open(c"audit_entries", ENTRY_COLUMNS)?),
            };
            let json = |v: Option<&'a [u8]>| v.map_or(Value::Null, Value::Json);
            let [row_key, old_values, new_values, detail] = run.values(row.from);
            appender.append(&[
                Value::Int8(id),
                Value::TimestampTz(head.at),
                Value::Int8(txid),
                Value::Int4(txn_seq),
                uuid(&head.workspace),
                uuid(&head.actor),
                Value::Text(&head.db_role),
                Value::Text(&head.action),
                text(head.target.as_deref()),
                json(row_key),
                json(old_values),
                json(new_values),
                json(detail),
                Value::Bytea(&row.mac),
                seal_entries,
                seal_mac,
                seal_head,
                seal_head_mac,
            ])?;
        }
    }
    for appender in [entries, batches].into_iter().flatten() {
        appender.finish();
    }
    Ok(())
}

/// Whether transaction `txid` has recorded entries already.
pub fn recording(txid: i64) -> bool {
    PENDING.borrow().as_ref().is_some_and(|p| p.txid == txid)
}

/// Whether anything was recorded in this transaction.
pub fn any() -> bool {
    PENDING.borrow().is_some()
}

/// Whether this transaction has written rows of the trail that its seals,
/// written at commit, are still to complete.
pub fn written_any() -> bool {
    PENDING
        .borrow()
        .as_ref()
        .is_some_and(|p| !p.written.is_empty())
}

/// The workspaces this transaction wrote to (after its last write).
pub fn workspaces() -> Vec<Option<[u8; 16]>> {
    let mut out: Vec<Option<[u8; 16]>> = PENDING.borrow().as_ref().map_or_else(Vec::new, |p| {
        p.written.iter().map(|w| w.workspace).collect()
    });
    out.sort();
    out.dedup();
    out
}

/// A subtransaction rolled back: so did what it recorded.
pub fn forget_subtransaction(subxact: pg_sys::SubTransactionId) {
    if let Some(p) = &mut *PENDING.borrow_mut() {
        p.runs.retain(|r| r.head.subxact < subxact);
        p.written.retain(|w| w.subxact < subxact);
        p.lost.retain(|s| *s < subxact);
        p.share = None;
    }
}

/// Forgets what the transaction recorded (it ended).
pub fn forget() {
    *PENDING.borrow_mut() = None;
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use super::*;

    fn entry_in(workspace: u32) -> Head {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&workspace.to_be_bytes());
        // SAFETY: reads the current subtransaction's id.
        let subxact = unsafe { pg_sys::GetCurrentSubTransactionId() };
        Head::new(
            0,
            Some(id),
            None,
            Rc::from("r"),
            Cow::Borrowed("x"),
            None,
            subxact,
        )
    }

    /// A mid-statement write keeps each workspace's newest entry for the
    /// commit's seal; with as many workspaces as the limit, it keeps them
    /// all, and the next entry must not ask for another write (it did, at
    /// every entry, each write scanning every workspace).
    #[pg_test]
    fn a_write_that_holds_everything_back_is_not_asked_again() {
        let txid = -1;
        let full: Vec<bool> = (0..MAX_BUFFERED as u32)
            .map(|w| push(txid, entry_in(w), [None, None, None, Some(b"{}".to_vec())]).unwrap())
            .collect();
        assert_eq!(full.iter().position(|&f| f), Some(MAX_BUFFERED - 1));
        flush(false).unwrap();
        assert!(!written_any(), "every entry is some workspace's newest");
        let asked = (0..100u32)
            .filter(|w| push(txid, entry_in(w + 1_000_000), [None, None, None, None]).unwrap())
            .count();
        forget();
        assert_eq!(asked, 0);
    }

    /// An event's action and target count toward the bytes buffered (a
    /// transaction logging megabyte-long actions would otherwise hold
    /// gigabytes before its first write).
    #[pg_test]
    fn long_actions_count_toward_the_write_limit() {
        let txid = -1;
        // SAFETY: reads the current subtransaction's id.
        let subxact = unsafe { pg_sys::GetCurrentSubTransactionId() };
        let action = "x".repeat(1 << 20);
        let full = (0..64).position(|i| {
            let head = Head::new(
                i,
                None,
                None,
                Rc::from("r"),
                Cow::Owned(action.clone()),
                None,
                subxact,
            );
            push(txid, head, [None, None, None, None]).unwrap()
        });
        forget();
        assert_eq!(full, Some(15), "16 MB of actions");
    }

    /// What a write held back inside a savepoint that is rolled back goes
    /// with it, and no longer counts: the next write comes at the limit,
    /// not at twice it.
    #[pg_test]
    fn entries_held_back_in_a_rolled_back_savepoint_stop_counting() {
        let txid = -1;
        // SAFETY: as PL/pgSQL runs an exception block: a subtransaction,
        // rolled back, then the caller's memory context and owner again.
        let (context, owner) =
            unsafe { (pg_sys::CurrentMemoryContext, pg_sys::CurrentResourceOwner) };
        unsafe { pg_sys::BeginInternalSubTransaction(std::ptr::null()) };
        for w in 0..MAX_BUFFERED as u32 {
            push(txid, entry_in(w), [None, None, None, Some(b"{}".to_vec())]).unwrap();
        }
        flush(false).unwrap();
        unsafe {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::CurrentResourceOwner = owner;
        }
        let full = (0..2 * MAX_BUFFERED as u32)
            .position(|_| push(txid, entry_in(7), [None, None, None, None]).unwrap());
        forget();
        assert_eq!(full, Some(MAX_BUFFERED - 1));
    }
}
