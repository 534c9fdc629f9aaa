//! Denials that outlive the denied transaction.
//!
//! `warden.require()` raises an ERROR, and the denied transaction rolls
//! back, its writes with it: an entry written there would vanish. So the
//! denial is written by a short-lived background worker, in a transaction of
//! its own, and `require()` waits for it before raising. Denials are rare;
//! the worker costs a few milliseconds.

use super::{record_as, role_name, Entry};
use crate::context::uuid_from_hex;
use crate::error::WardenError;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, BgWorkerStartTime,
    DynamicBackgroundWorker,
};
use pgrx::prelude::*;

/// `bgw_extra` holds at most 127 bytes: the permission is cut to fit.
const MAX_PERMISSION: usize = 48;

/// Records that the acting session was denied `permission`, durably.
pub fn record_denial(
    permission: &str,
    workspace: Option<[u8; 16]>,
    actor: Option<[u8; 16]>,
) -> Result<(), WardenError> {
    // A standby writes nothing, and never starts a worker that would
    // (it would wait for the end of recovery): the denial goes to the
    // server log only, and require() says it was not recorded.
    // SAFETY: reads shared recovery state.
    if unsafe { pg_sys::RecoveryInProgress() } {
        pgrx::log!(
            "pg_warden: permission denied on a standby (not in the audit trail): {}",
            permission.chars().take(MAX_PERMISSION).collect::<String>()
        );
        return Err(WardenError::DenialNotRecorded(
            "the server is a read-only standby",
        ));
    }
    let hex16 = |v: Option<[u8; 16]>| v.map(hex::encode).unwrap_or_default();
    let permission: String = permission.chars().take(MAX_PERMISSION).collect();
    // SAFETY: this backend's current user, database and process id.
    let (role, database, pid) =
        unsafe { (pg_sys::GetUserId(), pg_sys::MyDatabaseId, pg_sys::MyProcPid) };
    let extra = format!(
        "{}|{}|{}|{permission}",
        hex16(workspace),
        hex16(actor),
        role.to_u32()
    );
    let worker = BackgroundWorkerBuilder::new("pg_warden denial")
        .set_type("pg_warden denial")
        .set_library("pg_warden")
        .set_function("warden_record_denial")
        .set_argument(database.into_datum())
        .set_extra(&extra)
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(None)
        .set_notify_pid(pid)
        .load_dynamic()
        .map_err(|_| WardenError::DenialNotRecorded("no background worker slot is free"))?;
    wait_for(worker)
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

/// The background worker's entry point (named in `record_denial`).
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn warden_record_denial(arg: pg_sys::Datum) {
    // SAFETY: the argument is the denied session's database OID.
    let database = unsafe { pg_sys::Oid::from_datum(arg, false) };
    BackgroundWorker::connect_worker_to_spi_by_oid(database, None);
    let extra = BackgroundWorker::get_extra().to_string();
    let mut parts = extra.splitn(4, '|');
    let uuid = |s: Option<&str>| s.and_then(uuid_from_hex);
    let (workspace, actor) = (uuid(parts.next()), uuid(parts.next()));
    let role = parts
        .next()
        .and_then(|r| r.parse::<u32>().ok())
        .unwrap_or(0);
    let permission = parts.next().unwrap_or_default().to_string();
    BackgroundWorker::transaction(|| {
        let entry = Entry {
            workspace: None,
            action: "permission.denied".into(),
            target: Some(permission.clone()),
            row_key: None,
            old_values: None,
            new_values: None,
            detail: Some(serde_json::json!({ "permission": permission })),
        };
        record_as(entry, workspace, actor, role_name(pg_sys::Oid::from(role)))
            .unwrap_or_else(|e| crate::error::raise(e));
    });
}
