//! pg_warden's event trigger, `warden_ddl_command_end`: at the end of
//! CREATE TABLE, CREATE FOREIGN TABLE, CREATE SCHEMA, ALTER TABLE, ALTER
//! FOREIGN TABLE and ALTER SEQUENCE it
//! - refuses an ALTER SEQUENCE of the trail's id sequence;
//! - gives a table just put below a protected one its protections (see
//!   `descendants`);
//! - records an audited table's audit triggers (known by the function they
//!   run, whatever they are called) switched off or on (`ALTER TABLE ...
//!   DISABLE TRIGGER`, `ENABLE [REPLICA | ALWAYS] TRIGGER`, by name, `ALL`
//!   or `USER`) as `audit.paused` (one of them no longer fires in an
//!   ordinary session: disabled, or replica only) or `audit.resumed`, in
//!   the trail outside any workspace, like `audit.enabled`: a table's owner
//!   can still stop its trail, but not without a trace. (A rolled-back
//!   ALTER TABLE takes its entry along, and its change with it.) A
//!   superuser's `ALL` and `USER` switches are not recorded: data-only
//!   restores (`pg_restore --disable-triggers`) switch every table's
//!   triggers off and on again that way (and a superuser can stop the
//!   trail untraced anyway, with `session_replication_role`).
//!
//! The statement's names are resolved first, under the caller's search
//! path (as the statement resolved them); everything after runs with the
//! path pinned.

use super::audit::{audit_triggers, target_name_of};
use super::descendants::{
    attached_children, created_tables, creates_tables, protect_children, range_var_oid,
};
use super::fmgr::v1_function_info;
use crate::audit;
use crate::backend::with_pinned_search_path;
use crate::error::{raise, WardenError};
use pgrx::prelude::*;
use pgrx::PgList;

/// An ALTER TABLE subcommand switching triggers: as written, and the
/// trigger it names (`None`: ALL or USER).
///
/// # Safety
/// `cmd` is a live AlterTableCmd.
unsafe fn trigger_switch(cmd: *const pg_sys::AlterTableCmd) -> Option<(String, Option<String>)> {
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
    let named = |verb: &str| {
        name.as_ref()
            .map(|n| (format!("{verb} TRIGGER {n}"), Some(n.clone())))
    };
    match subtype {
        At::AT_EnableTrig => named("ENABLE"),
        At::AT_EnableAlwaysTrig => named("ENABLE ALWAYS"),
        At::AT_EnableReplicaTrig => named("ENABLE REPLICA"),
        At::AT_DisableTrig => named("DISABLE"),
        At::AT_EnableTrigAll => Some(("ENABLE TRIGGER ALL".into(), None)),
        At::AT_DisableTrigAll => Some(("DISABLE TRIGGER ALL".into(), None)),
        At::AT_EnableTrigUser => Some(("ENABLE TRIGGER USER".into(), None)),
        At::AT_DisableTrigUser => Some(("DISABLE TRIGGER USER".into(), None)),
        _ => None,
    }
}

/// The table an ALTER TABLE switched triggers of, and the switches.
type Switches = (pg_sys::Oid, Vec<(String, Option<String>)>);

/// # Safety
/// `tree` is the statement of the running event trigger.
unsafe fn trigger_switches(tree: *mut pg_sys::Node) -> Option<Switches> {
    // SAFETY: node tags checked before each cast; the statement's parts
    // live through the event trigger.
    unsafe {
        if tree.is_null() || (*tree).type_ != pg_sys::NodeTag::T_AlterTableStmt {
            return None;
        }
        let stmt = tree.cast::<pg_sys::AlterTableStmt>();
        let mut switches = Vec::new();
        for cmd in PgList::<pg_sys::Node>::from_pg((*stmt).cmds).iter_ptr() {
            if !cmd.is_null() && (*cmd).type_ == pg_sys::NodeTag::T_AlterTableCmd {
                switches.extend(trigger_switch(cmd.cast()));
            }
        }
        if switches.is_empty() {
            return None;
        }
        range_var_oid((*stmt).relation).map(|table| (table, switches))
    }
}

/// Records the audit triggers of a table that an ALTER TABLE switched, if
/// it switched any of them.
fn record_switches((table, switches): Switches) -> Result<(), WardenError> {
    // SAFETY: reads the current user's superuser bit.
    if unsafe { pg_sys::superuser() } && switches.iter().all(|(_, name)| name.is_none()) {
        // A superuser's DISABLE / ENABLE TRIGGER ALL or USER: what a
        // data-only restore (`--disable-triggers`) does to every table.
        return Ok(());
    }
    let triggers = audit_triggers(table)?;
    let ours = |name: &Option<String>| match name {
        None => true,
        Some(n) => triggers.iter().any(|t| &t.name == n),
    };
    if triggers.is_empty() || !switches.iter().any(|(_, name)| ours(name)) {
        return Ok(());
    }
    let mut states = serde_json::Map::new();
    let mut paused = false;
    for t in &triggers {
        let state = match t.enabled.as_str() {
            "O" => "enabled",
            "A" => "always",
            "R" => "replica only",
            _ => "disabled",
        };
        paused |= matches!(state, "disabled" | "replica only");
        states.insert(t.name.clone(), state.into());
    }
    let commands: Vec<&str> = switches.iter().map(|(c, _)| c.as_str()).collect();
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

/// Refuses an ALTER SEQUENCE of the trail's id sequence (outside
/// pg_warden's own scripts): the chains rely on its values being handed
/// out one at a time and in order (a CACHE above 1 hands a backend values
/// it uses later, after a block has covered them; RESTART or a smaller
/// INCREMENT hands them out again).
///
/// # Safety
/// `tree` is the statement of the running event trigger.
unsafe fn refuse_id_sequence_change(tree: *mut pg_sys::Node) -> Result<(), WardenError> {
    // SAFETY: node tag checked before the cast; reads a backend global.
    unsafe {
        if tree.is_null()
            || (*tree).type_ != pg_sys::NodeTag::T_AlterSeqStmt
            || pg_sys::creating_extension
        {
            return Ok(());
        }
        let altered = range_var_oid((*tree.cast::<pg_sys::AlterSeqStmt>()).sequence);
        if altered.is_some() && altered == crate::backend::warden_relation(c"audit_id_seq").ok() {
            return Err(WardenError::AuditSequenceAltered);
        }
    }
    Ok(())
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
        if let Err(e) = refuse_id_sequence_change(tree) {
            raise(e);
        }
        let mut children = attached_children(tree);
        let created = creates_tables(tree);
        let switches = trigger_switches(tree);
        if children.is_empty() && !created && switches.is_none() {
            return pg_sys::Datum::from(0);
        }
        let done = with_pinned_search_path(|| {
            if created {
                children.extend(created_tables()?);
            }
            protect_children(&children)?;
            switches.map_or(Ok(()), record_switches)
        });
        if let Err(e) = done {
            raise(e);
        }
        pg_sys::Datum::from(0)
    }
}

v1_function_info!(pg_finfo_warden_ddl_command_end);
