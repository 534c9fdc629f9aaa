//! pg_warden's event trigger, `warden_ddl_command_end`: at the end of
//! CREATE TABLE, CREATE FOREIGN TABLE and ALTER TABLE it
//! - gives a table just put below a protected one its protections (see
//!   `descendants`);
//! - records an audited table's audit triggers switched off or on
//!   (`ALTER TABLE ... DISABLE TRIGGER`, `ENABLE [REPLICA | ALWAYS]
//!   TRIGGER`, by name, `ALL` or `USER`) as `audit.paused` (one of them no
//!   longer fires in an ordinary session: disabled, or replica only) or
//!   `audit.resumed`, in the trail outside any workspace, like
//!   `audit.enabled`: a table's owner can still stop its trail, but not
//!   without a trace. (A rolled-back ALTER TABLE takes its entry along,
//!   and its change with it.)

use super::audit::{target_name_of, ROW_TRIGGER, TRUNCATE_TRIGGER};
use super::descendants::{protect_new_children, range_var_oid};
use super::fmgr::v1_function_info;
use crate::audit;
use crate::error::{raise, WardenError};
use pgrx::prelude::*;
use pgrx::PgList;

/// An ALTER TABLE subcommand switching triggers, as written.
///
/// # Safety
/// `cmd` is a live AlterTableCmd.
unsafe fn trigger_switch(cmd: *const pg_sys::AlterTableCmd) -> Option<String> {
    use pg_sys::AlterTableType as At;
    // SAFETY: as the caller's; `name` is a C string when set.
    let (subtype, name) = unsafe {
        let name = (*cmd).name;
        let name = (!name.is_null()).then(|| {
            std::ffi::CStr::from_ptr(name)
                .to_string_lossy()
                .into_owned()
        });
        ((*cmd).subtype, name)
    };
    let named = |verb: &str| match &name {
        // Ours only: another trigger switched changes nothing recorded.
        Some(n) if n == ROW_TRIGGER || n == TRUNCATE_TRIGGER => Some(format!("{verb} TRIGGER {n}")),
        _ => None,
    };
    match subtype {
        At::AT_EnableTrig => named("ENABLE"),
        At::AT_EnableAlwaysTrig => named("ENABLE ALWAYS"),
        At::AT_EnableReplicaTrig => named("ENABLE REPLICA"),
        At::AT_DisableTrig => named("DISABLE"),
        At::AT_EnableTrigAll => Some("ENABLE TRIGGER ALL".into()),
        At::AT_DisableTrigAll => Some("DISABLE TRIGGER ALL".into()),
        At::AT_EnableTrigUser => Some("ENABLE TRIGGER USER".into()),
        At::AT_DisableTrigUser => Some("DISABLE TRIGGER USER".into()),
        _ => None,
    }
}

/// Records the audit triggers of the table an ALTER TABLE switched, if it
/// switched any of them.
///
/// # Safety
/// `tree` is the statement of the running event trigger.
unsafe fn record_trigger_switches(tree: *mut pg_sys::Node) -> Result<(), WardenError> {
    // SAFETY: node tags checked before each cast; the statement's parts
    // live through the event trigger.
    let (table, commands) = unsafe {
        if tree.is_null() || (*tree).type_ != pg_sys::NodeTag::T_AlterTableStmt {
            return Ok(());
        }
        let stmt = tree.cast::<pg_sys::AlterTableStmt>();
        let mut commands = Vec::new();
        for cmd in PgList::<pg_sys::Node>::from_pg((*stmt).cmds).iter_ptr() {
            if !cmd.is_null() && (*cmd).type_ == pg_sys::NodeTag::T_AlterTableCmd {
                commands.extend(trigger_switch(cmd.cast()));
            }
        }
        if commands.is_empty() {
            return Ok(());
        }
        match range_var_oid((*stmt).relation) {
            Some(table) => (table, commands),
            None => return Ok(()),
        }
    };
    let mut states = serde_json::Map::new();
    let mut paused = false;
    Spi::connect(|client| {
        for row in client.select(
            "SELECT tgname::pg_catalog.text, tgenabled::pg_catalog.text FROM pg_catalog.pg_trigger
              WHERE tgrelid = $1 AND tgname IN ($2, $3) ORDER BY tgname",
            None,
            &[table.into(), ROW_TRIGGER.into(), TRUNCATE_TRIGGER.into()],
        )? {
            let name = row.get::<String>(1)?.unwrap_or_default();
            let state = match row.get::<String>(2)?.as_deref() {
                Some("O") => "enabled",
                Some("A") => "always",
                Some("R") => "replica only",
                _ => "disabled",
            };
            paused |= matches!(state, "disabled" | "replica only");
            states.insert(name, state.into());
        }
        Ok::<_, WardenError>(())
    })?;
    if states.is_empty() {
        // Not an audited table.
        return Ok(());
    }
    audit::config_event(
        if paused {
            "audit.paused"
        } else {
            "audit.resumed"
        },
        &target_name_of(table)?,
        serde_json::json!({ "commands": commands, "triggers": states }),
    )
}

/// `warden.ddl_command_end() RETURNS event_trigger`, run by the event
/// trigger `warden_ddl_command_end` (see the module's comment).
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn warden_ddl_command_end(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: fcinfo is the call's; its context is checked to be an event
    // trigger's before it is read as one.
    unsafe {
        let context = (*fcinfo).context;
        if context.is_null() || (*context).type_ != pg_sys::NodeTag::T_EventTriggerData {
            raise(WardenError::MisattachedEventTrigger);
        }
        let tree = (*context.cast::<pg_sys::EventTriggerData>()).parsetree;
        if let Err(e) = protect_new_children(tree).and_then(|()| record_trigger_switches(tree)) {
            raise(e);
        }
        pg_sys::Datum::from(0)
    }
}

v1_function_info!(pg_finfo_warden_ddl_command_end);
