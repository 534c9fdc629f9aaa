-- The per-row policy helpers, declared by hand: they are plain V1 C
-- functions (see src/api/authz.rs for why). STABLE and PARALLEL SAFE: they
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
