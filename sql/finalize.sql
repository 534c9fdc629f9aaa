-- pg_warden finalize: grants, after every function exists.
--
-- Functions are executable by PUBLIC when created; take that back from all
-- of them and grant each area to the role that needs it. Only the policy
-- helpers stay executable by PUBLIC, because policies run them as whoever
-- queries the table.

GRANT USAGE ON SCHEMA warden TO PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA warden FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA warden FROM PUBLIC;

-- Policy helpers: policies run them as whoever queries the table. They read
-- only the sealed context, never a table or a key.
GRANT EXECUTE ON FUNCTION
    warden.current_workspace_id(), warden.current_user_id(), warden."current_role"(),
    warden.current_level(), warden.has_level(integer), warden.can(text),
    warden.library_version()
TO PUBLIC;
-- Policy generators run with the caller's rights: only a table's owner can
-- change its policies, so any migration role may call them.
GRANT EXECUTE ON FUNCTION
    warden.isolate(regclass, name), warden.protect(regclass, text),
    warden.isolate_user(regclass, name)
TO PUBLIC;

-- The application: establish and drop a context, require permissions,
-- encrypt and decrypt under the acting workspace.
GRANT EXECUTE ON FUNCTION
    warden.set_context(uuid, uuid, boolean), warden.clear_context(), warden.require(text),
    warden.encrypt(text, text), warden.encrypt(bytea, text), warden.encrypt(jsonb, text),
    warden.decrypt(bytea, text), warden.decrypt_bytea(bytea, text),
    warden.decrypt_jsonb(bytea, text), warden.reencrypt(bytea, text),
    warden.blind_index(text, text), warden.envelope_info(bytea)
TO warden_user;

-- Audit: table owners attach the triggers (the trigger functions must be
-- executable by whoever creates the trigger; called directly they refuse);
-- applications log events and read their workspace's trail; administrators
-- verify and purge, and read everything.
GRANT EXECUTE ON FUNCTION
    warden.enable_audit(regclass, text[]), warden.disable_audit(regclass),
    warden.audit_row(), warden.audit_truncate()
TO PUBLIC;
GRANT EXECUTE ON FUNCTION warden.log_event(text, text, jsonb) TO warden_user;
GRANT EXECUTE ON FUNCTION warden.verify_audit(), warden.purge_audit(timestamptz) TO warden_admin;
GRANT SELECT ON warden.audit_log TO warden_user;
GRANT SELECT ON warden.audit_blocks TO warden_admin;

-- Key management: administrators only.
GRANT EXECUTE ON FUNCTION
    warden.rotate_workspace_key(uuid), warden.shred_workspace(uuid), warden.rewrap_keys(),
    warden.key_status(uuid)
TO warden_admin;

GRANT SELECT ON warden.roles, warden.role_permissions TO warden_user;
GRANT SELECT, INSERT, UPDATE, DELETE
    ON warden.roles, warden.role_permissions, warden.memberships TO warden_admin;
