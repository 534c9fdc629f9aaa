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
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::prelude::*;

/// `bgw_extra` holds at most 127 bytes: the permission is cut to fit.
const MAX_PERMISSION: usize = 48;

/// Records that the acting session was denied `permission`, durably.
pub fn record_denial(
    permission: &str,
    workspace: Option<[u8; 16]>,
    actor: Option<[u8; 16]>,
) -> Result<(), WardenError> {
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
    worker
        .wait_for_shutdown()
        .map_err(|_| WardenError::DenialNotRecorded("the background worker did not finish"))
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
