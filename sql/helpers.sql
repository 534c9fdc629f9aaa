-- The per-row policy helpers, declared by hand: they are plain V1 C
-- functions (see src/api/fmgr.rs for why). STABLE and PARALLEL SAFE: they
-- read only the warden.context setting, which parallel workers inherit.
CREATE FUNCTION warden.current_workspace_id() RETURNS uuid
    STABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'warden_current_workspace_id';
COMMENT ON FUNCTION warden.current_workspace_id() IS 'pg_warden: the acting workspace, or NULL';
CREATE FUNCTION warden.current_user_id() RETURNS uuid
    STABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'warden_current_user_id';
COMMENT ON FUNCTION warden.current_user_id() IS 'pg_warden: the acting user, or NULL';
CREATE FUNCTION warden.can(permission text) RETURNS boolean
    STABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'warden_can';
COMMENT ON FUNCTION warden.can(text) IS
    'pg_warden: whether the acting role holds a resource.action permission';

-- The per-row encryption paths, also plain V1 functions (src/api/encrypt.rs).
-- VOLATILE: every call draws a fresh nonce. PARALLEL UNSAFE: the first
-- encryption in a workspace writes its keys. decrypt is STABLE (same input,
-- same output within a statement) and PARALLEL RESTRICTED like the other
-- decrypt functions.
CREATE FUNCTION warden.encrypt(value text, context text DEFAULT NULL) RETURNS bytea
    VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'warden_encrypt_text';
COMMENT ON FUNCTION warden.encrypt(text, text) IS
    'pg_warden: encrypt text under the acting workspace''s current key';
CREATE FUNCTION warden.decrypt(ciphertext bytea, context text DEFAULT NULL) RETURNS text
    STABLE PARALLEL RESTRICTED LANGUAGE c AS 'MODULE_PATHNAME', 'warden_decrypt';
COMMENT ON FUNCTION warden.decrypt(bytea, text) IS
    'pg_warden: decrypt a text or jsonb ciphertext of the acting workspace to text';
CREATE FUNCTION warden.decrypt_bytea(ciphertext bytea, context text DEFAULT NULL) RETURNS bytea
    STABLE PARALLEL RESTRICTED LANGUAGE c AS 'MODULE_PATHNAME', 'warden_decrypt_bytea';
COMMENT ON FUNCTION warden.decrypt_bytea(bytea, text) IS
    'pg_warden: decrypt a ciphertext of the acting workspace to its bytes';

-- pg_warden's event trigger (src/api/ddl.rs), run with the rights of whoever
-- ran the command: a table put below a protected one later (CREATE TABLE
-- ... PARTITION OF or INHERITS, ALTER TABLE ... ATTACH PARTITION or
-- INHERIT) gets its pg_warden policies and audit triggers (queried or
-- truncated directly, a partition answers to its own, not its parent's);
-- an audited table's audit triggers switched off or on (ALTER TABLE ...
-- DISABLE / ENABLE TRIGGER) are recorded; an ALTER SEQUENCE of the trail's
-- id sequence is refused.
-- (No SET search_path: the statement's names are resolved first under the
-- caller's path, as the statement resolved them; the function pins the path
-- itself for everything after.)
CREATE FUNCTION warden.ddl_command_end() RETURNS event_trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'warden_ddl_command_end';
COMMENT ON FUNCTION warden.ddl_command_end() IS
    'pg_warden: carries policies and audit triggers to new partitions and children, records audit triggers switched';
CREATE EVENT TRIGGER warden_ddl_command_end ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'CREATE FOREIGN TABLE', 'CREATE SCHEMA', 'ALTER TABLE',
                 'ALTER FOREIGN TABLE', 'ALTER SEQUENCE')
    EXECUTE FUNCTION warden.ddl_command_end();
