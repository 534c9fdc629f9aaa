//! Key management, for `warden_admin` only (never PUBLIC):
//! `rotate_workspace_key`, `shred_workspace`, `rewrap_keys`, `key_status`.
//! The key table is read and written as the extension's owner inside; the
//! grants decide who may call these.

use crate::audit;
use crate::backend::as_extension_owner;
use crate::error::{raise, required, SqlResult, WardenError};
use crate::keys::{master, workspace};
use pgrx::prelude::*;
use pgrx::Uuid;
use serde_json::json;

/// A new data key version for the workspace; returns it. Nothing is
/// re-encrypted: older versions keep decrypting, `warden.reencrypt()` moves
/// values to the new one.
#[pg_extern(volatile, parallel_unsafe)]
fn rotate_workspace_key(workspace_id: Option<Uuid>) -> SqlResult<i32> {
    let ws = required(workspace_id, "workspace_id")?;
    let version = workspace::rotate(ws.as_bytes())?;
    audit::key_event(
        "key.rotate",
        Some(*ws.as_bytes()),
        json!({ "version": version }),
    )?;
    Ok(version as i32)
}

/// Destroys every key of the workspace, irreversibly: its ciphertexts can
/// never be decrypted again, not even with the master key.
#[pg_extern(volatile, parallel_unsafe)]
fn shred_workspace(workspace_id: Option<Uuid>) -> SqlResult<()> {
    let ws = required(workspace_id, "workspace_id")?;
    workspace::shred(ws.as_bytes())?;
    audit::key_event("key.shred", Some(*ws.as_bytes()), json!({}))?;
    Ok(())
}

/// After a master key rotation (new key in `warden.master_key_file`, the
/// old one in `warden.previous_master_key_file`, reload): re-wraps every
/// workspace key under the new master key. No data is rewritten. Returns
/// the number of keys re-wrapped.
#[pg_extern(volatile, parallel_unsafe)]
fn rewrap_keys() -> SqlResult<i64> {
    let count = workspace::rewrap_all()?;
    let master_key_id = master::current()?.id.clone();
    audit::key_event(
        "key.rewrap",
        None,
        json!({ "keys": count, "master_key_id": master_key_id }),
    )?;
    Ok(count)
}

/// The workspace's keys: kind, version, state (`current`, `previous`,
/// `shredded`), the id of the master key that wraps each, when created.
// pgrx reads the column names from the name!() tuple written out here.
#[allow(clippy::type_complexity)]
#[pg_extern(stable, parallel_restricted)]
fn key_status(
    workspace_id: Option<Uuid>,
) -> TableIterator<
    'static,
    (
        name!(kind, Option<String>),
        name!(version, Option<i32>),
        name!(state, String),
        name!(master_key_id, Option<String>),
        name!(created_at, TimestampWithTimeZone),
    ),
> {
    // (pgrx generates no SQL for a Result around a TableIterator: raise.)
    key_rows(workspace_id)
        .map(TableIterator::new)
        .unwrap_or_else(|e| raise(e))
}

type KeyRow = (
    Option<String>,
    Option<i32>,
    String,
    Option<String>,
    TimestampWithTimeZone,
);

fn key_rows(workspace_id: Option<Uuid>) -> Result<Vec<KeyRow>, WardenError> {
    let ws = required(workspace_id, "workspace_id")?;
    let current_master = master::current().ok().map(|m| m.id.clone());
    let rows = as_extension_owner(|| {
        Spi::connect(|client| {
            let mut out = Vec::new();
            for row in client.select(
                "SELECT CASE k.kind WHEN 1 THEN 'data' ELSE 'blind_index' END,
                        k.version,
                        CASE WHEN k.kind OPERATOR(pg_catalog.=) 2
                               OR k.version OPERATOR(pg_catalog.=) (
                                  SELECT pg_catalog.max(c.version) FROM warden.workspace_keys AS c
                                   WHERE c.workspace_id OPERATOR(pg_catalog.=) k.workspace_id
                                     AND c.kind OPERATOR(pg_catalog.=) 1)
                             THEN 'current' ELSE 'previous' END,
                        k.master_key_id, k.created_at
                   FROM warden.workspace_keys AS k
                  WHERE k.workspace_id OPERATOR(pg_catalog.=) $1
                 UNION ALL
                 SELECT NULL, NULL, 'shredded', NULL, s.shredded_at
                   FROM warden.shredded_workspaces AS s
                  WHERE s.workspace_id OPERATOR(pg_catalog.=) $1
                  ORDER BY 1, 2",
                None,
                &[ws.into()],
            )? {
                out.push((
                    row.get::<String>(1)?,
                    row.get::<i32>(2)?,
                    row.get::<String>(3)?.unwrap_or_default(),
                    row.get::<String>(4)?,
                    row.get::<TimestampWithTimeZone>(5)?
                        .ok_or_else(|| WardenError::Internal("key without a date".into()))?,
                ));
            }
            Ok::<_, WardenError>(out)
        })
    })?;
    // Flag keys under a master key other than the current one.
    let rows = rows
        .into_iter()
        .map(|(kind, version, state, id, at)| {
            let state = match (&id, &current_master) {
                (Some(id), Some(cur)) if id != cur => format!("{state}, needs rewrap"),
                _ => state,
            };
            (kind, version, state, id, at)
        })
        .collect::<Vec<_>>();
    Ok(rows)
}
