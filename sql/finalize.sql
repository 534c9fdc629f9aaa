-- pg_warden finalize: grants, after every function exists.
--
-- Functions are executable by PUBLIC when created; take that back from all
-- of them and grant each area to the role that needs it. Only the policy
-- helpers stay executable by PUBLIC, because policies run them as whoever
-- queries the table.

GRANT USAGE ON SCHEMA warden TO PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA warden FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA warden FROM PUBLIC;

GRANT EXECUTE ON FUNCTION warden.library_version() TO PUBLIC;

GRANT SELECT ON warden.roles, warden.role_permissions TO warden_user;
GRANT SELECT, INSERT, UPDATE, DELETE
    ON warden.roles, warden.role_permissions, warden.memberships TO warden_admin;
