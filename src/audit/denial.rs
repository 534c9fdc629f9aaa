//! Denials that outlive the denied transaction.
//!
//! `warden.require()` raises an ERROR, and the denied transaction rolls
//! back, its writes with it: an entry written there would vanish. So the
//! denial is written by a short-lived background worker, in a transaction of
//! its own, and `require()` waits for it before raising. Denials are rare;
//! the worker costs a few milliseconds. The denial travels in a dynamic
//! shared memory segment, pinned until the worker takes it, so it is
//! recorded even if the waiting session is cancelled; the worker flags
//! there that it committed, so a failure to record is reported.

use super::{json_text, record_as, role_name, Entry};
use crate::error::WardenError;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, BgWorkerStartTime,
    DynamicBackgroundWorker,
};
use pgrx::prelude::*;

/// What the denied session hands the worker, in a dynamic shared memory
/// segment (whole: no field is cut to fit `bgw_extra`), and how the worker
/// says it is done.
#[repr(C)]
struct DenialSlot {
    /// Set by the worker once the entry is committed.
    recorded: std::sync::atomic::AtomicU32,
    database: u32,
    role: u32,
    has_workspace: u8,
    has_actor: u8,
    workspace: [u8; 16],
    actor: [u8; 16],
    permission_len: u32,
    permission: [u8; MAX_PERMISSION],
}

/// Longer than any valid permission (`resource.action`: at most 127).
const MAX_PERMISSION: usize = 256;

/// Records that the acting session was denied `permission`, durably; a
/// denial that cannot be recorded (no worker slot free, say) goes to the
/// server log at least, and require() says so.
pub fn record_denial(
    permission: &str,
    workspace: Option<[u8; 16]>,
    actor: Option<[u8; 16]>,
) -> Result<(), WardenError> {
    let result = record_in_trail(permission, workspace, actor);
    if let Err(WardenError::DenialNotRecorded(reason)) = &result {
        // SAFETY: reads shared recovery state (a standby logged it already).
        if !unsafe { pg_sys::RecoveryInProgress() } {
            log_unrecorded(permission, reason);
        }
    }
    result
}

/// Writes a denial that is not in the trail to the server log: the
/// permission, and who was denied (the database role, and the acting
/// workspace and user, as the entry would have named them).
fn log_unrecorded(permission: &str, reason: &str) {
    let uuid = |v: Option<[u8; 16]>| {
        v.map_or("none".to_string(), |b| {
            pgrx::Uuid::from_bytes(b).to_string()
        })
    };
    let acting = crate::context::with_current(|c| c.map(|c| (c.workspace_id, c.user_id)))
        .ok()
        .flatten();
    // SAFETY: the current user's OID.
    let role = role_name(unsafe { pg_sys::GetUserId() });
    pgrx::log!(
        "pg_warden: permission denied, not in the audit trail ({reason}): {} (role {role}, workspace {}, user {})",
        &permission[..permission.floor_char_boundary(MAX_PERMISSION)],
        uuid(acting.map(|a| a.0)),
        uuid(acting.map(|a| a.1)),
    );
}

fn record_in_trail(
    permission: &str,
    workspace: Option<[u8; 16]>,
    actor: Option<[u8; 16]>,
) -> Result<(), WardenError> {
    let denied = permission;
    let permission = &permission.as_bytes()[..permission.len().min(MAX_PERMISSION)];
    // A standby writes nothing, and never starts a worker that would
    // (it would wait for the end of recovery): the denial goes to the
    // server log only, and require() says it was not recorded.
    // SAFETY: reads shared recovery state.
    if unsafe { pg_sys::RecoveryInProgress() } {
        pgrx::log!(
            "pg_warden: permission denied on a standby (not in the audit trail): {}",
            String::from_utf8_lossy(permission)
        );
        return Err(WardenError::DenialNotRecorded(
            "the server is a read-only standby",
        ));
    }
    take_a_turn(denied)?;
    // SAFETY: a new segment of our struct's size, filled before anyone
    // else can see it; pinned so that it outlives this backend's mapping
    // (the worker unpins it), so the denial is recorded even if this
    // session is cancelled while it waits.
    let (segment, slot) = unsafe {
        let segment = pg_sys::dsm_create(size_of::<DenialSlot>(), 0);
        let slot = pg_sys::dsm_segment_address(segment).cast::<DenialSlot>();
        let mut filled = DenialSlot {
            recorded: std::sync::atomic::AtomicU32::new(0),
            database: pg_sys::MyDatabaseId.to_u32(),
            role: pg_sys::GetUserId().to_u32(),
            has_workspace: workspace.is_some() as u8,
            has_actor: actor.is_some() as u8,
            workspace: workspace.unwrap_or_default(),
            actor: actor.unwrap_or_default(),
            permission_len: permission.len() as u32,
            permission: [0; MAX_PERMISSION],
        };
        filled.permission[..permission.len()].copy_from_slice(permission);
        slot.write(filled);
        pg_sys::dsm_pin_segment(segment);
        (segment, slot)
    };
    // SAFETY: the segment's handle; this backend's process id.
    let (handle, pid) = unsafe { (pg_sys::dsm_segment_handle(segment), pg_sys::MyProcPid) };
    let worker = BackgroundWorkerBuilder::new("pg_warden denial")
        .set_type("pg_warden denial")
        .set_library("pg_warden")
        .set_function("warden_record_denial")
        .set_argument(Some(pg_sys::Datum::from(handle)))
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(None)
        .set_notify_pid(pid)
        .load_dynamic();
    let Ok(worker) = worker else {
        // SAFETY: nobody else will attach: unpin, and our detach frees it.
        unsafe {
            pg_sys::dsm_unpin_segment(handle);
            pg_sys::dsm_detach(segment);
        }
        return Err(WardenError::DenialNotRecorded(
            "no background worker slot is free",
        ));
    };
    // A cancel (or statement_timeout) waits until the worker is done: the
    // turn is the transaction's, and a cancelled statement would let it go
    // while its worker still runs (a loop of cancelled denials would start
    // workers without bound). A termination still ends the wait at once.
    // (Error recovery resets the holdoff count, should anything raise.)
    // SAFETY: HOLD_CANCEL_INTERRUPTS / RESUME_CANCEL_INTERRUPTS.
    unsafe { pg_sys::QueryCancelHoldoffCount += 1 };
    let waited = wait_for(worker);
    // SAFETY: as above.
    unsafe { pg_sys::QueryCancelHoldoffCount -= 1 };
    waited?;
    // SAFETY: the segment stays mapped here until we detach it.
    let recorded = unsafe {
        let recorded = (*slot).recorded.load(std::sync::atomic::Ordering::Acquire) == 1;
        pg_sys::dsm_detach(segment);
        recorded
    };
    if recorded {
        Ok(())
    } else {
        Err(WardenError::DenialNotRecorded(
            "the background worker could not write it (see the server log)",
        ))
    }
}

/// How many denials of a database are being recorded at once, at most:
/// each takes a background worker (a process, from the slots parallel
/// queries and logical replication share), so a flood of denials (a
/// tenant probing an API it may not use) must not take them all, nor fork
/// a process per request. Denials beyond that wait their turn (each takes
/// a few milliseconds), within [`WORKER_DEADLINE`].
const WORKERS_PER_DATABASE: u32 = 2;

/// The turns are locks of their own: advisory locks of this database
/// (type `advisory` in `pg_locks`) whose fourth field is 3, a space no SQL
/// function reaches (`pg_advisory_lock` and its kin use 1 and 2), so no
/// role can hold the turns to keep every other denial out of the trail.
const TURN_LOCK_CLASS: u32 = 0x5741_5244; // "WARD"
const TURN_LOCK_SPACE: u16 = 3;

/// Waits for one of the database's [`WORKERS_PER_DATABASE`] turns to
/// record a denial: a transaction-level lock, let go when the denied
/// transaction (or savepoint) ends, right after `require()` raises.
/// A cancel or termination ends the wait, as any wait in `require()`; the
/// denial then goes to the server log before the cancel is raised (else a
/// session could learn that it is denied, from the wait, and leave no
/// trace of it anywhere).
fn take_a_turn(permission: &str) -> Result<(), WardenError> {
    let started = std::time::Instant::now();
    loop {
        for turn in 0..WORKERS_PER_DATABASE {
            let tag = pg_sys::LOCKTAG {
                // SAFETY: reads this backend's database.
                locktag_field1: unsafe { pg_sys::MyDatabaseId }.to_u32(),
                locktag_field2: TURN_LOCK_CLASS,
                locktag_field3: turn,
                locktag_field4: TURN_LOCK_SPACE,
                locktag_type: pg_sys::LockTagType::LOCKTAG_ADVISORY as u8,
                locktag_lockmethodid: pg_sys::USER_LOCKMETHOD as u8,
            };
            // SAFETY: a transaction-level lock, never waited for.
            let got = unsafe {
                pg_sys::LockAcquire(&tag, pg_sys::ExclusiveLock as pg_sys::LOCKMODE, false, true)
            };
            if got != pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL {
                return Ok(());
            }
        }
        if started.elapsed() > WORKER_DEADLINE {
            return Err(WardenError::DenialNotRecorded(
                "too many denials were being recorded at once",
            ));
        }
        // SAFETY: a short sleep on this process's latch.
        unsafe {
            pg_sys::WaitLatch(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                2,
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
            if pg_sys::QueryCancelPending != 0 || pg_sys::ProcDiePending != 0 {
                log_unrecorded(permission, "cancelled while waiting for its turn");
            }
        }
        pgrx::check_for_interrupts!();
    }
}

/// How long `require()` waits for the worker (it usually takes a few
/// milliseconds; it can only take longer if it waits for a lock).
const WORKER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits for the worker to finish, servicing interrupts (a cancel or
/// `statement_timeout` ends the wait), and gives up after
/// [`WORKER_DEADLINE`], stopping the worker.
fn wait_for(worker: DynamicBackgroundWorker) -> Result<(), WardenError> {
    let started = std::time::Instant::now();
    loop {
        match worker.pid() {
            Err(BackgroundWorkerStatus::Stopped) => return Ok(()),
            Err(BackgroundWorkerStatus::PostmasterDied) => {
                return Err(WardenError::DenialNotRecorded("the postmaster died"))
            }
            _ if started.elapsed() > WORKER_DEADLINE => {
                let _ = worker.terminate().wait_for_shutdown();
                return Err(WardenError::DenialNotRecorded(
                    "the background worker did not finish in time",
                ));
            }
            _ => {}
        }
        // SAFETY: waits on this process's latch, which the postmaster sets
        // when the worker's state changes (set_notify_pid).
        unsafe {
            pg_sys::WaitLatch(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                10,
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
        pgrx::check_for_interrupts!();
    }
}

/// The background worker's entry point (named in `record_denial`): its
/// argument is the handle of the segment holding the denial.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn warden_record_denial(arg: pg_sys::Datum) {
    // SAFETY: the argument is a dsm handle (a u32); the segment, if it
    // still exists, holds one DenialSlot, written before we were started.
    let handle = arg.value() as pg_sys::dsm_handle;
    let (segment, slot) = unsafe {
        let segment = pg_sys::dsm_attach(handle);
        if segment.is_null() {
            return;
        }
        pg_sys::dsm_unpin_segment(handle);
        let slot = pg_sys::dsm_segment_address(segment).cast::<DenialSlot>();
        (segment, slot)
    };
    // SAFETY: see above; the fields are plain data.
    let (database, role, workspace, actor, permission) = unsafe {
        let s = &*slot;
        let len = (s.permission_len as usize).min(MAX_PERMISSION);
        (
            pg_sys::Oid::from(s.database),
            pg_sys::Oid::from(s.role),
            (s.has_workspace == 1).then_some(s.workspace),
            (s.has_actor == 1).then_some(s.actor),
            String::from_utf8_lossy(&s.permission[..len]).into_owned(),
        )
    };
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(database), None);
    // The database's own settings (ALTER DATABASE ... SET) apply to the
    // worker as to any session, and an application overrides them in its
    // own; these would keep the denial out of the trail, so the worker sets
    // them back (transactions read-write, no statement or lock timeouts).
    for (name, value) in [
        (c"default_transaction_read_only", c"off"),
        (c"statement_timeout", c"0"),
        (c"lock_timeout", c"0"),
        (c"idle_in_transaction_session_timeout", c"0"),
    ] {
        // SAFETY: setting known settings to valid values, as the
        // postmaster's own overrides are set.
        unsafe {
            pg_sys::SetConfigOption(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_SUSET,
                pg_sys::GucSource::PGC_S_OVERRIDE,
            )
        };
    }
    BackgroundWorker::transaction(|| {
        let entry = Entry {
            workspace: None,
            action: "permission.denied".into(),
            target: Some(std::rc::Rc::from(permission.as_str())),
            row_key: None,
            old_values: None,
            new_values: None,
            detail: Some(json_text(&serde_json::json!({ "permission": permission }))),
        };
        record_as(entry, workspace, actor, role_name(role))
            .unwrap_or_else(|e| crate::error::raise(e));
    });
    // SAFETY: still attached; the waiter reads the flag after we exit.
    unsafe {
        (*slot)
            .recorded
            .store(1, std::sync::atomic::Ordering::Release);
        pg_sys::dsm_detach(segment);
    }
}
