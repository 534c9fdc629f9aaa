//! Backend-local state without thread-local storage, and acting as the
//! extension's owner.

use crate::error::WardenError;
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::PgOid;
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiTupleTable};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::CStr;
use std::rc::Rc;

/// A static owned by this backend process. A PostgreSQL backend runs a
/// single thread (pgrx refuses calls into Postgres from any other, and we
/// start none), so such state needs no synchronisation. Unlike
/// `thread_local!`, which in a shared library costs a `__tls_get_addr` call
/// per access, reading it is a plain load: this matters for state read by
/// the policy helpers on every row. Wrap the value in `Cell` or `RefCell`.
pub struct BackendLocal<T>(T);

// SAFETY: see above: only the backend's one thread ever touches these.
unsafe impl<T> Sync for BackendLocal<T> {}

impl<T> BackendLocal<T> {
    pub const fn new(value: T) -> Self {
        BackendLocal(value)
    }
}

impl<T> std::ops::Deref for BackendLocal<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// PostgreSQL functions that only read backend state and cannot raise an
/// ERROR, declared here without the guard pgrx puts around every binding
/// (a `sigsetjmp` per call, which costs more than these calls themselves on
/// the audit trigger's per-row path). Anything that can raise goes through
/// `pg_sys` instead, whose guard turns the ERROR into a Rust panic.
pub mod unguarded {
    use pgrx::pg_sys;

    extern "C" {
        /// The statement's start time (a global).
        pub fn GetCurrentStatementStartTimestamp() -> pg_sys::TimestampTz;
        /// The current subtransaction's id (a global).
        pub fn GetCurrentSubTransactionId() -> pg_sys::SubTransactionId;
        /// The top transaction's id, or 0 when none is assigned yet (a
        /// global: it assigns none).
        pub fn GetTopFullTransactionIdIfAny() -> pg_sys::FullTransactionId;
        /// The current user (a global).
        pub fn GetUserId() -> pg_sys::Oid;
        /// Splits a tuple into datums and null flags (decoding only).
        pub fn heap_deform_tuple(
            tuple: pg_sys::HeapTuple,
            desc: pg_sys::TupleDesc,
            values: *mut pg_sys::Datum,
            isnull: *mut bool,
        );
    }
}

/// Runs `f` as the owner of pg_warden's tables, as a SECURITY DEFINER
/// function would, for reads and writes the caller may not make itself
/// (memberships for PostgREST claims; the key table for encryption). Only
/// pg_warden's own queries run inside, with `search_path` pinned to
/// `pg_catalog, pg_temp` as a SECURITY DEFINER function's `SET` clause
/// pins it: a name the caller put first in its path (a temporary domain
/// called `text`, say) never runs as the owner. An error inside `f` aborts
/// the (sub)transaction, which restores the previous user and setting, as
/// for SECURITY DEFINER; a returned error restores them here.
pub fn as_extension_owner<T>(f: impl FnOnce() -> Result<T, WardenError>) -> Result<T, WardenError> {
    let _restore = ActAs::switch_to(extension_owner()?, true);
    f()
}

/// Runs `f` with the search path pinned to `pg_catalog, pg_temp`, as a
/// function's `SET search_path` would (for code that must first resolve
/// names under the caller's path, then query safely).
pub fn with_pinned_search_path<T>(
    f: impl FnOnce() -> Result<T, WardenError>,
) -> Result<T, WardenError> {
    struct Pinned(i32);
    impl Drop for Pinned {
        fn drop(&mut self) {
            // On an error the transaction's abort pops it (as it does a
            // function's SET clause): nothing that could raise runs while
            // one unwinds.
            if !std::thread::panicking() {
                // SAFETY: pops the nest level opened below.
                unsafe { pg_sys::AtEOXact_GUC(true, self.0) };
            }
        }
    }
    // SAFETY: see `pin_search_path`; popped by the guard.
    let _pinned = Pinned(unsafe { pin_search_path() });
    f()
}

/// Opens a setting nest level and sets the search path to `pg_catalog,
/// pg_temp` at it, as fmgr_security_definer does for a function's SET
/// clause; returns the level, for `AtEOXact_GUC(true, level)` to pop (or
/// the transaction's abort).
///
/// # Safety
/// Inside a transaction; the level is popped before the caller returns.
unsafe fn pin_search_path() -> i32 {
    // SAFETY: as the caller's.
    unsafe {
        let level = pg_sys::NewGUCNestLevel();
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            c"pg_catalog, pg_temp".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
        level
    }
}

/// [`as_extension_owner`] for code that runs no query and resolves no name
/// (appending the trail's rows by OID): the search path is left alone,
/// which saves setting it twice on every audited commit.
pub fn as_extension_owner_no_queries<T>(
    f: impl FnOnce() -> Result<T, WardenError>,
) -> Result<T, WardenError> {
    let _restore = ActAs::switch_to(extension_owner()?, false);
    f()
}

/// The owner of pg_warden's tables. Cached per backend, with the OID of
/// `warden.memberships` and the relations generation it was read at: a
/// re-created extension, or a new owner (ALTER ... OWNER invalidates the
/// table's cache entry), is looked up again.
fn extension_owner() -> Result<pg_sys::Oid, WardenError> {
    let table = warden_relation(c"memberships").unwrap_or(pg_sys::InvalidOid);
    let generation = relations_generation();
    if let Some((cached_for, seen, owner)) = OWNER.get() {
        if cached_for == table && seen == generation {
            return Ok(owner);
        }
    }
    let owner = select_one::<pg_sys::Oid>(
        "SELECT c.relowner FROM pg_catalog.pg_class AS c WHERE c.oid OPERATOR(pg_catalog.=) $1",
        &[table.into()],
    )?
    .ok_or_else(|| WardenError::Internal("warden.memberships is missing".into()))?;
    OWNER.set(Some((table, generation, owner)));
    Ok(owner)
}

/// (memberships table, relations generation, its owner) of the last lookup.
static OWNER: BackendLocal<Cell<Option<(pg_sys::Oid, u64, pg_sys::Oid)>>> =
    BackendLocal::new(Cell::new(None));

/// The OID of `warden.<name>`, one of pg_warden's own relations. Looked up
/// by name once per backend (audited commits need several of them) and
/// again after the relation cache announces a change to one of them (a
/// dropped and re-created extension) or any schema changes.
pub fn warden_relation(name: &'static CStr) -> Result<pg_sys::Oid, WardenError> {
    let generation = relations_generation();
    {
        let mut cached = RELATIONS.borrow_mut();
        if cached.0 != generation {
            *cached = (generation, Vec::new());
        }
        if let Some(&(_, oid)) = cached.1.iter().find(|(n, _)| *n == name) {
            return Ok(oid);
        }
    }
    // SAFETY: syscache lookups by name; InvalidOid when missing.
    let oid = unsafe {
        let schema = pg_sys::get_namespace_oid(c"warden".as_ptr(), true);
        pg_sys::get_relname_relid(name.as_ptr(), schema)
    };
    if oid == pg_sys::InvalidOid {
        return Err(WardenError::Internal(format!(
            "warden.{} is missing",
            name.to_string_lossy()
        )));
    }
    // Not kept if something changed during the lookup.
    let mut cached = RELATIONS.borrow_mut();
    if cached.0 == generation && relations_generation() == generation {
        cached.1.push((name, oid));
    }
    Ok(oid)
}

/// Changes whenever one of pg_warden's relations, or any schema, may have
/// changed: what is derived from them is checked against it.
pub fn relations_generation() -> u64 {
    RELATIONS_CHANGED.get()
}

/// (the generation they were looked up at, name and OID of each).
type Relations = (u64, Vec<(&'static CStr, pg_sys::Oid)>);

static RELATIONS: BackendLocal<RefCell<Relations>> =
    BackendLocal::new(RefCell::new((0, Vec::new())));
/// Bumped by the invalidation callbacks (which must not touch `RELATIONS`:
/// they can run during a lookup).
static RELATIONS_CHANGED: BackendLocal<Cell<u64>> = BackendLocal::new(Cell::new(1));

fn relations_changed() {
    RELATIONS_CHANGED.set(RELATIONS_CHANGED.get().wrapping_add(1));
}

/// Registers the callbacks that keep [`warden_relation`] honest; once,
/// from _PG_init.
pub fn init() {
    // SAFETY: called once from _PG_init with plain functions.
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(relation_changed), pg_sys::Datum::from(0));
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::NAMESPACEOID as i32,
            Some(schema_changed),
            pg_sys::Datum::from(0),
        );
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn relation_changed(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    let ours = RELATIONS
        .try_borrow()
        .map_or(true, |r| r.1.iter().any(|(_, oid)| *oid == relid));
    if relid == pg_sys::InvalidOid || ours {
        relations_changed();
    }
}

unsafe extern "C-unwind" fn schema_changed(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    // Only a counter: cannot fail, so no guard is needed.
    relations_changed();
}

/// The user and security context to restore; restores them when dropped,
/// so an unwinding error restores them too (transaction abort would as
/// well, but a caught error must not keep the owner's rights).
struct ActAs {
    user: pg_sys::Oid,
    sec_context: i32,
    /// The setting nest level opened for the pinned search path.
    settings: Option<i32>,
}

impl ActAs {
    fn switch_to(owner: pg_sys::Oid, pin_search_path: bool) -> ActAs {
        let (mut user, mut sec_context) = (pg_sys::InvalidOid, 0);
        // SAFETY: plain getters/setters of backend globals; the flags keep
        // the switch local (no SET ROLE) and restricted, like SECURITY
        // DEFINER. The search path is set at a new nest level, as a
        // function's SET clause is (fmgr_security_definer), and popped by
        // `drop` (or by the abort of the transaction).
        unsafe {
            pg_sys::GetUserIdAndSecContext(&mut user, &mut sec_context);
            pg_sys::SetUserIdAndSecContext(
                owner,
                sec_context
                    | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32
                    | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
            );
            let mut act = ActAs {
                user,
                sec_context,
                settings: None,
            };
            if pin_search_path {
                act.settings = Some(self::pin_search_path());
            }
            act
        }
    }
}

impl Drop for ActAs {
    fn drop(&mut self) {
        // SAFETY: restoring what `switch_to` read and set.
        unsafe {
            if let Some(level) = self.settings {
                pg_sys::AtEOXact_GUC(true, level);
            }
            pg_sys::SetUserIdAndSecContext(self.user, self.sec_context);
        }
    }
}

/// Plans kept for the backend's lifetime, by query text and mutability
/// (PostgreSQL's plan cache revalidates them when the tables change). Our
/// queries are a small fixed set; planning them on every call costs more
/// than running them.
type Plans = HashMap<(String, bool), Rc<OwnedPreparedStatement>>;

static PLANS: BackendLocal<RefCell<Option<Plans>>> = BackendLocal::new(RefCell::new(None));

fn planned(
    client: &SpiClient<'_>,
    query: &str,
    args: &[DatumWithOid],
    mutating: bool,
) -> Result<Rc<OwnedPreparedStatement>, WardenError> {
    let key = (query.to_string(), mutating);
    if let Some(plan) = PLANS.borrow().as_ref().and_then(|p| p.get(&key)) {
        return Ok(plan.clone());
    }
    let types: Vec<PgOid> = args.iter().map(|a| PgOid::from_untagged(a.oid())).collect();
    let plan = if mutating {
        client.prepare_mut(query, &types)?
    } else {
        client.prepare(query, &types)?
    };
    let plan = Rc::new(plan.keep());
    PLANS
        .borrow_mut()
        .get_or_insert_with(HashMap::new)
        .insert(key, plan.clone());
    Ok(plan)
}

/// Runs a read-only query (planned once) and hands its rows to `f`.
/// (pgrx's `Spi::get_one*` run as updates: a new command id and snapshot,
/// which STABLE and parallel-safe callers must not take.)
pub fn select<R>(
    query: &str,
    args: &[DatumWithOid],
    f: impl FnOnce(SpiTupleTable<'_>) -> Result<R, WardenError>,
) -> Result<R, WardenError> {
    Spi::connect(|client| {
        let plan = planned(client, query, args, false)?;
        f(client.select(&*plan, None, args)?)
    })
}

/// The first column of the first row of a read-only query, or `None`.
pub fn select_one<T: FromDatum + IntoDatum>(
    query: &str,
    args: &[DatumWithOid],
) -> Result<Option<T>, WardenError> {
    select(query, args, |rows| {
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(rows.first().get_one::<T>()?)
    })
}

/// Runs a statement that writes (planned once).
pub fn execute(query: &str, args: &[DatumWithOid]) -> Result<(), WardenError> {
    Spi::connect_mut(|client| {
        let plan = planned(client, query, args, true)?;
        client.update(&*plan, None, args)?;
        Ok(())
    })
}

/// Whether a read-only query's first row says true, as of a snapshot taken
/// now: everything committed so far and this transaction's own changes,
/// whatever the isolation level. (Under REPEATABLE READ and SERIALIZABLE
/// every other query of the transaction reads its first snapshot; an
/// operation serialized by a lock must still see what the lock's previous
/// holder committed after that snapshot was taken.)
pub fn true_now(query: &CStr, args: &[DatumWithOid]) -> Result<bool, WardenError> {
    Spi::connect(|_client| {
        let mut types: Vec<pg_sys::Oid> = args.iter().map(|a| a.oid()).collect();
        let mut values: Vec<pg_sys::Datum> = args
            .iter()
            .map(|a| {
                a.datum()
                    .map_or(pg_sys::Datum::from(0), |d| d.sans_lifetime())
            })
            .collect();
        let nulls: Vec<std::ffi::c_char> = args
            .iter()
            .map(|a| if a.datum().is_some() { b' ' } else { b'n' } as std::ffi::c_char)
            .collect();
        // SAFETY: inside an SPI connection; the plan is freed before
        // returning (or with the SPI memory on an error); the arrays live
        // across the call; the result is read before the connection closes.
        unsafe {
            // Makes this transaction's last command's changes visible to
            // the snapshot, as a new statement would.
            pg_sys::CommandCounterIncrement();
            let plan = pg_sys::SPI_prepare(query.as_ptr(), types.len() as i32, types.as_mut_ptr());
            if plan.is_null() {
                return Err(WardenError::Internal("SPI_prepare failed".into()));
            }
            let status = pg_sys::SPI_execute_snapshot(
                plan,
                values.as_mut_ptr(),
                nulls.as_ptr(),
                pg_sys::GetLatestSnapshot(),
                std::ptr::null_mut(),
                true,
                false,
                1,
            );
            let answer = if status == pg_sys::SPI_OK_SELECT as i32
                && pg_sys::SPI_processed == 1
                && !pg_sys::SPI_tuptable.is_null()
            {
                let table = pg_sys::SPI_tuptable;
                let mut is_null = true;
                let datum =
                    pg_sys::SPI_getbinval(*(*table).vals, (*table).tupdesc, 1, &mut is_null);
                Ok(!is_null && bool::from_datum(datum, false).unwrap_or(false))
            } else {
                Err(WardenError::Internal(format!(
                    "SPI_execute_snapshot: {status}"
                )))
            };
            pg_sys::SPI_freeplan(plan);
            answer
        }
    })
}
