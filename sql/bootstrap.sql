-- pg_warden bootstrap: runs before the generated functions are created.
-- Every object is schema-qualified. The extension's schema is `warden`
-- (control file): CREATE EXTENSION creates it if missing; like every
-- control-file schema it is not a member of the extension, so DROP EXTENSION
-- leaves it behind, empty.

-- CREATE EXTENSION adopts a `warden` schema that already exists, whoever
-- made it: its owner could later rename it, put look-alike tables in a new
-- `warden` that set_context (SECURITY DEFINER) would read, or drop the
-- whole trail with DROP SCHEMA ... CASCADE. Only a superuser's empty
-- schema is taken.
DO $schema$
DECLARE
    catalog text;
    namespace_column text;
    found boolean := false;
BEGIN
    IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_namespace AS n
              JOIN pg_catalog.pg_roles AS r ON r.oid OPERATOR(pg_catalog.=) n.nspowner
             WHERE n.nspname OPERATOR(pg_catalog.=) 'warden') THEN
        RAISE EXCEPTION 'schema warden exists and is not owned by a superuser'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'drop it (or ALTER SCHEMA warden OWNER TO a superuser), then CREATE EXTENSION pg_warden';
    END IF;
    -- (USAGE, which an earlier install granted, is harmless; CREATE would
    -- let its holder add look-alike overloads beside pg_warden's functions.)
    IF EXISTS (SELECT FROM pg_catalog.pg_namespace AS n,
                      pg_catalog.aclexplode(n.nspacl) AS a
                WHERE n.nspname OPERATOR(pg_catalog.=) 'warden'
                  AND a.privilege_type OPERATOR(pg_catalog.=) 'CREATE'
                  AND a.grantee OPERATOR(pg_catalog.<>) n.nspowner) THEN
        RAISE EXCEPTION 'schema warden exists and another role may create objects in it'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'REVOKE CREATE ON SCHEMA warden FROM that role (or drop the schema), then CREATE EXTENSION pg_warden';
    END IF;
    FOR catalog, namespace_column IN VALUES
        ('pg_class', 'relnamespace'), ('pg_proc', 'pronamespace'), ('pg_type', 'typnamespace'),
        ('pg_operator', 'oprnamespace'), ('pg_collation', 'collnamespace'),
        ('pg_opfamily', 'opfnamespace'), ('pg_conversion', 'connamespace'),
        ('pg_ts_config', 'cfgnamespace'), ('pg_ts_dict', 'dictnamespace'),
        ('pg_statistic_ext', 'stxnamespace')
    LOOP
        EXECUTE pg_catalog.format(
            'SELECT EXISTS (SELECT FROM pg_catalog.%I WHERE %I OPERATOR(pg_catalog.=) $1)',
            catalog, namespace_column)
            INTO found USING 'warden'::pg_catalog.regnamespace::pg_catalog.oid;
        EXIT WHEN found;
    END LOOP;
    IF found THEN
        RAISE EXCEPTION 'schema warden already holds objects that are not pg_warden''s'
            USING ERRCODE = 'duplicate_schema',
                  HINT = 'move them out of the schema, then CREATE EXTENSION pg_warden';
    END IF;
END
$schema$;

-- Roles are cluster-wide and outlive the extension: create them only if an
-- earlier install (or the DBA) has not; one found must be as made here (no
-- login, no superuser or other special attribute). CREATE EXTENSION in two databases at
-- once may race here; the loser finds the role made and goes on.
DO $roles$
DECLARE
    role_name text;
    purpose text;
BEGIN
    FOR role_name, purpose IN VALUES
        ('warden_user', 'pg_warden: set a context, encrypt and decrypt in it, log events, '
                        'read the own workspace''s audit trail'),
        ('warden_admin', 'pg_warden: key management, the whole audit trail, roles, '
                         'permissions and memberships')
    LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = role_name) THEN
            BEGIN
                EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', role_name);
                EXECUTE pg_catalog.format('COMMENT ON ROLE %I IS %L', role_name, purpose);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END;
        END IF;
        IF EXISTS (SELECT FROM pg_catalog.pg_roles AS r
                    WHERE r.rolname OPERATOR(pg_catalog.=) role_name
                      AND (r.rolcanlogin OR r.rolsuper OR r.rolcreaterole OR r.rolcreatedb
                           OR r.rolreplication OR r.rolbypassrls OR NOT r.rolinherit
                           -- a member of another role: every member of ours
                           -- would hold its rights (warden_admin is
                           -- warden_user's, by design)
                           OR EXISTS (SELECT FROM pg_catalog.pg_auth_members AS m
                                       WHERE m.member OPERATOR(pg_catalog.=) r.oid
                                         AND NOT (r.rolname OPERATOR(pg_catalog.=) 'warden_admin'
                                                  AND m.roleid OPERATOR(pg_catalog.=)
                                                      'warden_user'::pg_catalog.regrole)))) THEN
            RAISE EXCEPTION 'role % exists with LOGIN, a special attribute, or membership in another role', role_name
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'pg_warden''s roles are NOLOGIN group roles: fix or drop it first';
        END IF;
    END LOOP;
    -- An administrator can do everything an application can.
    IF NOT pg_catalog.pg_has_role('warden_admin', 'warden_user', 'MEMBER') THEN
        BEGIN
            GRANT warden_user TO warden_admin;
        EXCEPTION WHEN unique_violation THEN
            NULL;
        END;
    END IF;
END
$roles$;

-- The role ladder: a role holds its own permissions and those of every role
-- with a lower level.
CREATE TABLE warden.roles (
    name  text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    level integer NOT NULL CHECK (level BETWEEN 0 AND 1000)
);
COMMENT ON TABLE warden.roles IS 'pg_warden role ladder: name and level';

-- Permissions: `resource.action`, `resource.*` or `*`.
CREATE TABLE warden.role_permissions (
    role       text NOT NULL REFERENCES warden.roles (name) ON UPDATE CASCADE ON DELETE CASCADE,
    permission text NOT NULL CHECK (
        permission ~ '^(\*|[a-z][a-z0-9_-]{0,62}\.(\*|[a-z][a-z0-9_-]{0,62}))$'
    ),
    PRIMARY KEY (role, permission)
);
COMMENT ON TABLE warden.role_permissions IS
    'pg_warden permissions granted to a role: resource.action, resource.* or *';

-- Who belongs to which workspace in which role. A NULL workspace is a global
-- membership and is only allowed for super_admin.
CREATE TABLE warden.memberships (
    workspace_id uuid,
    user_id      uuid NOT NULL,
    role         text NOT NULL REFERENCES warden.roles (name) ON UPDATE CASCADE,
    CHECK (workspace_id IS NOT NULL OR role = 'super_admin')
);
CREATE UNIQUE INDEX memberships_workspace_user
    ON warden.memberships (workspace_id, user_id) WHERE workspace_id IS NOT NULL;
CREATE UNIQUE INDEX memberships_global_user
    ON warden.memberships (user_id) WHERE workspace_id IS NULL;
CREATE INDEX memberships_user ON warden.memberships (user_id);
COMMENT ON TABLE warden.memberships IS
    'pg_warden memberships: a user''s role in a workspace (NULL workspace: global super_admin)';

INSERT INTO warden.roles (name, level) VALUES
    ('super_admin', 100),
    ('admin', 80),
    ('manager', 60),
    ('user', 40),
    ('learner', 30),
    ('viewer', 20);
INSERT INTO warden.role_permissions (role, permission) VALUES
    ('super_admin', '*'),
    -- The workspace's audit trail (warden.audit_log) shows the values of
    -- audited rows: for administrators of the workspace by default.
    ('admin', 'audit.read');

-- Workspace keys: random 256-bit keys, stored only wrapped (AES-256-GCM)
-- under a key-encryption key that HKDF derives from the master key and the
-- workspace id. kind 1 = data key (one per version; the highest version
-- encrypts, every version decrypts), kind 2 = blind index key (one, never
-- rotated, so blind indexes stay comparable). No role may read this table:
-- only pg_warden's own functions do, as its owner.
CREATE TABLE warden.workspace_keys (
    workspace_id  uuid NOT NULL,
    kind          smallint NOT NULL CHECK (kind IN (1, 2)),
    version       integer NOT NULL CHECK (version > 0),
    wrapped       bytea NOT NULL CHECK (pg_catalog.length(wrapped) = 60),
    master_key_id text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (workspace_id, kind, version)
);
COMMENT ON TABLE warden.workspace_keys IS
    'pg_warden workspace keys, wrapped under the master key; never readable by clients';

-- Crypto-shredded workspaces: their keys are gone, and they get no new ones.
CREATE TABLE warden.shredded_workspaces (
    workspace_id uuid PRIMARY KEY,
    shredded_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE warden.shredded_workspaces IS
    'pg_warden workspaces whose keys were destroyed (warden.shred_workspace)';

-- pg_restore runs CREATE EXTENSION (which inserts the seeds above) and then
-- loads the dumped rows, seeds included. These triggers let the dumped row
-- win instead of failing on the primary key, so edited seed levels survive
-- a dump and restore. They only ever fire on a name that already exists.
CREATE FUNCTION warden.roles_merge_existing() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    UPDATE warden.roles SET level = NEW.level WHERE name = NEW.name;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$fn$;
CREATE TRIGGER merge_existing BEFORE INSERT ON warden.roles
    FOR EACH ROW EXECUTE FUNCTION warden.roles_merge_existing();

CREATE FUNCTION warden.role_permissions_merge_existing() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF EXISTS (SELECT FROM warden.role_permissions
               WHERE role = NEW.role AND permission = NEW.permission) THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$fn$;
CREATE TRIGGER merge_existing BEFORE INSERT ON warden.role_permissions
    FOR EACH ROW EXECUTE FUNCTION warden.role_permissions_merge_existing();

-- Dumped by pg_dump (the extension's own objects are not; their rows are).
SELECT pg_catalog.pg_extension_config_dump('warden.roles', '');
SELECT pg_catalog.pg_extension_config_dump('warden.role_permissions', '');
SELECT pg_catalog.pg_extension_config_dump('warden.memberships', '');
SELECT pg_catalog.pg_extension_config_dump('warden.workspace_keys', '');
SELECT pg_catalog.pg_extension_config_dump('warden.shredded_workspaces', '');
