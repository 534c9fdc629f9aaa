//! Appending rows to pg_warden's own trail tables without planning or
//! starting an executor for each statement.
//!
//! At COMMIT an audited transaction writes its entries and seals. Through
//! SPI that is a planned INSERT whose executor start-up (result relations,
//! indexes, projections, a function scan) cost more than the rows it wrote:
//! for a single-row transaction, about a fifth of the backend's time
//! (profiled with `perf`, bench/audit_clients.sh). This follows what
//! PostgreSQL's own logical replication apply does for an INSERT
//! (`ExecSimpleRelationInsert`): open the table, check NOT NULL (and CHECK
//! constraints, through `ExecConstraints`), `table_tuple_insert`, then
//! `ExecInsertIndexTuples` for every index, unique checks and expression
//! indexes included. It is used only for
//! tables of the extension itself, written as their owner: there are no
//! privileges to check, no row level security on insert (not FORCEd) and no
//! insert triggers (the trail's triggers refuse UPDATE, DELETE and TRUNCATE;
//! a trigger someone adds for INSERT does not fire: the README says so).
//! The rows are WAL-logged as any INSERT's, so physical and logical
//! replication carry them.

use crate::backend::BackendLocal;
use crate::error::WardenError;
use pgrx::prelude::*;
use pgrx::PgMemoryContexts;
use std::cell::RefCell;

/// One value of a row being appended; converted to a datum in the
/// per-row memory context.
pub enum Value<'a> {
    Null,
    Int4(i32),
    Int8(i64),
    TimestampTz(i64),
    Uuid(&'a [u8; 16]),
    Text(&'a str),
    /// A json value's text.
    Json(&'a [u8]),
    /// A json[] of these texts (none NULL).
    JsonArray(&'a [&'a [u8]]),
    Bytea(&'a [u8]),
}

/// A table of the extension opened for appending rows; `finish` closes it.
pub struct Appender {
    rel: pg_sys::Relation,
    estate: *mut pg_sys::EState,
    rri: *mut pg_sys::ResultRelInfo,
    slot: *mut pg_sys::TupleTableSlot,
    /// For each of the row's values, its attribute number - 1.
    positions: Vec<usize>,
    /// For each of the row's values, whether its column is NOT NULL.
    not_null: Vec<bool>,
    /// Whether the table has CHECK constraints (run through the executor).
    has_checks: bool,
}

impl Appender {
    /// Opens `warden.<table>` (row exclusive lock, held to the end of the
    /// transaction) for rows of `columns`, in that order; a column left
    /// out must be nullable, without a default and not generated (this
    /// path evaluates none), or the table is refused.
    pub fn open(
        table: &'static std::ffi::CStr,
        columns: &'static [&'static str],
    ) -> Result<Appender, WardenError> {
        // SAFETY: raise (25006) in a read-only transaction, and in parallel
        // mode, as an INSERT would (the executor's ExecCheckXactReadOnly).
        unsafe {
            pg_sys::PreventCommandIfReadOnly(c"INSERT".as_ptr());
            pg_sys::PreventCommandIfParallelMode(c"INSERT".as_ptr());
        }
        let relid = crate::backend::warden_relation(table)?;
        // SAFETY: table_open raises if the table is gone.
        let rel = unsafe { pg_sys::table_open(relid, pg_sys::RowExclusiveLock as i32) };
        // SAFETY: `rel` is open.
        let plain_table = unsafe { (*(*rel).rd_rel).relkind } as u8 == pg_sys::RELKIND_RELATION;
        if !plain_table {
            // (A partitioned or foreign table has no heap to append to.)
            // SAFETY: as above; the lock is kept until the transaction ends.
            unsafe { pg_sys::table_close(rel, pg_sys::NoLock as i32) };
            return Err(WardenError::Internal(format!(
                "warden.{} is not a plain table",
                table.to_string_lossy()
            )));
        }
        match Self::set_up(rel, table, columns) {
            Ok(appender) => Ok(appender),
            Err(e) => {
                // SAFETY: opened above; the lock is kept until the
                // transaction ends.
                unsafe { pg_sys::table_close(rel, pg_sys::NoLock as i32) };
                Err(e)
            }
        }
    }

    fn set_up(
        rel: pg_sys::Relation,
        table: &std::ffi::CStr,
        columns: &'static [&'static str],
    ) -> Result<Appender, WardenError> {
        let Layout {
            positions,
            not_null,
            has_checks,
        } = layout(rel, table, columns)?;
        // SAFETY: the executor state, result relation, index information
        // and slot all live in the executor state's memory (freed by
        // `finish`, or with the transaction on an error), set up as the
        // replication apply worker sets up its own
        // (create_estate_for_relation).
        unsafe {
            let estate = pg_sys::CreateExecutorState();
            let query_memory = (*estate).es_query_cxt;
            let (rri, slot) = PgMemoryContexts::For(query_memory).switch_to(|_| {
                (*estate).es_output_cid = pg_sys::GetCurrentCommandId(true);
                let rri = pg_sys::palloc0(std::mem::size_of::<pg_sys::ResultRelInfo>())
                    .cast::<pg_sys::ResultRelInfo>();
                (*rri).type_ = pg_sys::NodeTag::T_ResultRelInfo;
                pg_sys::InitResultRelInfo(rri, rel, 0, std::ptr::null_mut(), 0);
                #[cfg(feature = "pg13")]
                {
                    (*estate).es_result_relations = rri;
                    (*estate).es_num_result_relations = 1;
                    (*estate).es_result_relation_info = rri;
                }
                pg_sys::ExecOpenIndices(rri, false);
                // Index expressions are evaluated in it; values are built in it.
                pg_sys::MakePerTupleExprContext(estate);
                let slot = pg_sys::MakeSingleTupleTableSlot((*rel).rd_att, &pg_sys::TTSOpsVirtual);
                (rri, slot)
            });
            let appender = Appender {
                rel,
                estate,
                rri,
                slot,
                positions,
                not_null,
                has_checks,
            };
            // Deferred uniqueness and exclusion constraints need a recheck
            // this path does not do: none of our indexes has one.
            for i in 0..(*rri).ri_NumIndices as usize {
                let index = *(*rri).ri_IndexRelationDescs.add(i);
                let info = *(*rri).ri_IndexRelationInfo.add(i);
                if !(*(*index).rd_index).indimmediate || !(*info).ii_ExclusionOps.is_null() {
                    appender.release_executor();
                    return Err(WardenError::Internal(format!(
                        "warden.{} has a deferred or exclusion constraint",
                        table.to_string_lossy()
                    )));
                }
            }
            Ok(appender)
        }
    }

    /// Appends one row: `values` in the order of the columns given to `open`.
    pub fn append(&mut self, values: &[Value<'_>]) -> Result<(), WardenError> {
        if values.len() != self.positions.len() {
            return Err(WardenError::Internal("a row of the wrong width".into()));
        }
        // SAFETY: the slot's arrays have one entry per attribute; every
        // datum is built in the per-row context, reset after the row is
        // stored (table_tuple_insert copies it into the page, and the index
        // inserts are done by then).
        unsafe {
            let estate = self.estate;
            let row_memory = (*(*estate).es_per_tuple_exprcontext).ecxt_per_tuple_memory;
            let slot = self.slot;
            // ExecClearTuple (an inline function in C).
            if let Some(clear) = (*(*slot).tts_ops).clear {
                clear(slot);
            }
            let natts = (*(*slot).tts_tupleDescriptor).natts as usize;
            let datums = std::slice::from_raw_parts_mut((*slot).tts_values, natts);
            let nulls = std::slice::from_raw_parts_mut((*slot).tts_isnull, natts);
            nulls.fill(true);
            datums.fill(pg_sys::Datum::from(0));
            PgMemoryContexts::For(row_memory).switch_to(|_| -> Result<(), WardenError> {
                for ((value, &at), &not_null) in
                    values.iter().zip(&self.positions).zip(&self.not_null)
                {
                    match to_datum(value)? {
                        Some(datum) => {
                            datums[at] = datum;
                            nulls[at] = false;
                        }
                        None if not_null => {
                            return Err(WardenError::Internal(
                                "a NULL for a NOT NULL column of the audit trail".into(),
                            ))
                        }
                        None => {}
                    }
                }
                pg_sys::ExecStoreVirtualTuple(slot);
                // NOT NULL is checked above; CHECK constraints (none of ours
                // has one) through the executor. (With no range table entry:
                // fine from 13.3 on; 13.0-13.2 would crash on a violation.)
                if self.has_checks {
                    pg_sys::ExecConstraints(self.rri, slot, estate);
                }
                // The heap copies the row into the slot's own memory
                // (materializing it) before writing the page; the index
                // entries are formed from that copy.
                pg_sys::simple_table_tuple_insert(self.rel, slot);
                if (*self.rri).ri_NumIndices > 0 {
                    insert_index_tuples(self.rri, slot, estate);
                }
                Ok(())
            })?;
            pg_sys::MemoryContextReset(row_memory);
        }
        Ok(())
    }

    /// Closes the indexes and the table (the lock is kept to the end of the
    /// transaction) and frees the executor state; the rows become visible
    /// to the transaction's next command.
    pub fn finish(self) {
        let rel = self.rel;
        self.release_executor();
        // SAFETY: opened by `open`; makes this transaction's new rows
        // visible to its next command, as the end of an INSERT does.
        unsafe {
            pg_sys::table_close(rel, pg_sys::NoLock as i32);
            pg_sys::CommandCounterIncrement();
        }
    }

    /// Drops the slot, closes the indexes and frees the executor state
    /// (the table stays open).
    fn release_executor(self) {
        // SAFETY: everything here was set up by `set_up`.
        unsafe {
            pg_sys::ExecDropSingleTupleTableSlot(self.slot);
            pg_sys::ExecCloseIndices(self.rri);
            pg_sys::FreeExecutorState(self.estate);
        }
    }
}

/// Where a table's columns go: for each of the columns given, its
/// attribute number - 1 and whether it is NOT NULL; and whether the table
/// has CHECK constraints.
#[derive(Clone)]
struct Layout {
    positions: Vec<usize>,
    not_null: Vec<bool>,
    has_checks: bool,
}

/// Layouts worked out, by table and column list, and the relations
/// generation they hold for (`backend::relations_generation`: an ALTER
/// TABLE of one of ours changes it).
type Layouts = (u64, Vec<(pg_sys::Oid, usize, Layout)>);

static LAYOUTS: BackendLocal<RefCell<Layouts>> = BackendLocal::new(RefCell::new((0, Vec::new())));

/// The layout of `rel` for rows of `columns`, worked out once per backend
/// (each audited commit opens the trail).
fn layout(
    rel: pg_sys::Relation,
    table: &std::ffi::CStr,
    columns: &'static [&'static str],
) -> Result<Layout, WardenError> {
    let generation = crate::backend::relations_generation();
    // SAFETY: `rel` is open.
    let relid = unsafe { (*rel).rd_id };
    let key = columns.as_ptr() as usize;
    {
        let mut cached = LAYOUTS.borrow_mut();
        if cached.0 != generation {
            *cached = (generation, Vec::new());
        }
        if let Some((_, _, layout)) = cached.1.iter().find(|(r, k, _)| *r == relid && *k == key) {
            return Ok(layout.clone());
        }
    }
    let refuse =
        |what: String| WardenError::Internal(format!("warden.{} {what}", table.to_string_lossy()));
    // SAFETY: `rel` is open; its tuple descriptor lives as long. (Not
    // reference-counted by this wrapper: nothing is released on drop.)
    let desc = unsafe { pgrx::PgTupleDesc::from_pg_unchecked((*rel).rd_att) };
    let attrs: Vec<&pg_sys::FormData_pg_attribute> = desc.iter().collect();
    let name_of = |a: &pg_sys::FormData_pg_attribute| {
        // SAFETY: attname is a NUL-terminated NameData.
        unsafe { std::ffi::CStr::from_ptr(a.attname.data.as_ptr()) }
    };
    let mut positions = Vec::with_capacity(columns.len());
    for column in columns {
        let at = attrs
            .iter()
            .position(|a| !a.attisdropped && name_of(a).to_bytes() == column.as_bytes())
            .ok_or_else(|| refuse(format!("has no column {column}")))?;
        positions.push(at);
    }
    // Nothing here evaluates defaults, identities or generated columns:
    // a column left out must be one that may be NULL and has none.
    for (at, a) in attrs.iter().enumerate() {
        let left_out = !a.attisdropped && !positions.contains(&at);
        let filled_by_default = a.atthasdef || a.attgenerated != 0 || a.attidentity != 0;
        if left_out && (a.attnotnull || filled_by_default) {
            return Err(refuse(format!(
                "has a column pg_warden does not fill: {}",
                name_of(a).to_string_lossy()
            )));
        }
    }
    let not_null: Vec<bool> = positions.iter().map(|&at| attrs[at].attnotnull).collect();
    // SAFETY: `rel` is open.
    let has_checks = unsafe {
        let constr = (*(*rel).rd_att).constr;
        !constr.is_null() && (*constr).num_check > 0
    };
    let layout = Layout {
        positions,
        not_null,
        has_checks,
    };
    let mut cached = LAYOUTS.borrow_mut();
    if cached.0 == generation {
        cached.1.push((relid, key, layout.clone()));
    }
    Ok(layout)
}

/// `ExecInsertIndexTuples` as each major version spells it.
unsafe fn insert_index_tuples(
    rri: *mut pg_sys::ResultRelInfo,
    slot: *mut pg_sys::TupleTableSlot,
    estate: *mut pg_sys::EState,
) {
    let arbiters = std::ptr::null_mut();
    let conflict = std::ptr::null_mut();
    // SAFETY: as the caller's: an open result relation with its indexes,
    // and a stored slot.
    unsafe {
        #[cfg(feature = "pg13")]
        {
            let _ = rri;
            pg_sys::ExecInsertIndexTuples(slot, estate, false, conflict, arbiters);
        }
        #[cfg(any(feature = "pg14", feature = "pg15"))]
        pg_sys::ExecInsertIndexTuples(rri, slot, estate, false, false, conflict, arbiters);
        #[cfg(not(any(feature = "pg13", feature = "pg14", feature = "pg15")))]
        pg_sys::ExecInsertIndexTuples(rri, slot, estate, false, false, conflict, arbiters, false);
    }
}

fn to_datum(value: &Value<'_>) -> Result<Option<pg_sys::Datum>, WardenError> {
    Ok(match value {
        Value::Null => None,
        Value::Int4(v) => Some(pg_sys::Datum::from(*v)),
        Value::Int8(v) | Value::TimestampTz(v) => Some(pg_sys::Datum::from(*v)),
        Value::Uuid(bytes) => pgrx::Uuid::from_bytes(**bytes).into_datum(),
        Value::Text(s) => s.into_datum(),
        // json is stored as its text; pg_warden renders it valid.
        Value::Bytea(b) | Value::Json(b) => b.into_datum(),
        // SAFETY: in the per-row memory context.
        Value::JsonArray(texts) => Some(unsafe { json_array(texts) }?),
    })
}

/// A one-dimensional `json[]` without NULLs, laid out as `construct_array`
/// lays it out (header, dimension and lower bound, then each element as a
/// varlena with a 4-byte header, aligned to 4 bytes), in one allocation
/// rather than one per element and a copy of them all.
///
/// # Safety
/// Call where palloc is allowed; the result lives in the current memory
/// context.
unsafe fn json_array(texts: &[&[u8]]) -> Result<pg_sys::Datum, WardenError> {
    /// The largest varlena PostgreSQL can allocate.
    const MAX_DATA: usize = (1 << 30) - 1;
    const HEADER: usize = 24; // ARR_OVERHEAD_NONULLS(1): MAXALIGN(16 + 2 * 4)
    let align = |n: usize| (n + 3) & !3;
    let data: usize = texts
        .iter()
        .map(|t| align(pg_sys::VARHDRSZ + t.len()))
        .sum();
    let total = HEADER + data;
    if total > MAX_DATA || texts.len() > i32::MAX as usize {
        return Err(WardenError::Internal(
            "an audit batch too large for json[]".into(),
        ));
    }
    // SAFETY: a fresh zeroed allocation of `total` bytes, filled in bounds.
    unsafe {
        let array = pg_sys::palloc0(total).cast::<u8>();
        pgrx::varlena::set_varsize_4b(array.cast(), total as i32);
        let header = array.cast::<i32>();
        *header.add(1) = 1; // ndim
        *header.add(2) = 0; // dataoffset: no null bitmap
        *header.add(3) = u32::from(pg_sys::JSONOID) as i32; // elemtype
        *header.add(4) = texts.len() as i32; // dims[0]
        *header.add(5) = 1; // lbound[0]
        let mut at = HEADER;
        for text in texts {
            let element = array.add(at);
            pgrx::varlena::set_varsize_4b(element.cast(), (pg_sys::VARHDRSZ + text.len()) as i32);
            std::ptr::copy_nonoverlapping(text.as_ptr(), element.add(pg_sys::VARHDRSZ), text.len());
            at += align(pg_sys::VARHDRSZ + text.len());
        }
        Ok(pg_sys::Datum::from(array))
    }
}
