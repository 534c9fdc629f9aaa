-- The demo database behind scripts/start: two workspaces, a few members on
-- the role ladder, and a table. Idempotent: scripts/start runs it each time.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_warden;
-- A rebuilt library may carry a newer SQL version: bring the demo up to it.
ALTER EXTENSION pg_warden UPDATE;

-- Workspaces: Acme (1111...) and Globex (2222...).
-- Users: alice (admin at Acme), bob (viewer at Acme), carol (manager at
-- Globex), root (global super_admin).
INSERT INTO warden.memberships (workspace_id, user_id, role) VALUES
    ('11111111-1111-4111-8111-111111111111', 'aaaaaaaa-0000-4000-8000-00000000a11c', 'admin'),
    ('11111111-1111-4111-8111-111111111111', 'bbbbbbbb-0000-4000-8000-000000000b0b', 'viewer'),
    ('22222222-2222-4222-8222-222222222222', 'cccccccc-0000-4000-8000-0000000ca201', 'manager'),
    (NULL, 'dddddddd-0000-4000-8000-00000000d00d', 'super_admin')
ON CONFLICT DO NOTHING;
INSERT INTO warden.role_permissions (role, permission) VALUES
    ('viewer', 'notes.read'),
    ('user', 'notes.create'),
    ('manager', 'notes.*')
ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS public.notes (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id uuid NOT NULL,
    author_id    uuid NOT NULL,
    body         text NOT NULL
);
CREATE INDEX IF NOT EXISTS notes_workspace ON public.notes (workspace_id);
-- Tenant isolation and notes.* permissions (both idempotent).
SELECT warden.isolate('public.notes') \gset
SELECT warden.protect('public.notes', 'notes') \gset
INSERT INTO public.notes (workspace_id, author_id, body)
SELECT w, a, b FROM (VALUES
    ('11111111-1111-4111-8111-111111111111'::uuid, 'aaaaaaaa-0000-4000-8000-00000000a11c'::uuid, 'Acme: Q3 plan'),
    ('11111111-1111-4111-8111-111111111111', 'bbbbbbbb-0000-4000-8000-000000000b0b', 'Acme: standup notes'),
    ('22222222-2222-4222-8222-222222222222', 'cccccccc-0000-4000-8000-0000000ca201', 'Globex: merger memo')
) AS v(w, a, b)
WHERE NOT EXISTS (SELECT FROM public.notes);

-- The application's login role: a member of warden_user, no superuser, no
-- BYPASSRLS. Connect as it to see what a tenant sees.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'app') THEN
        CREATE ROLE app LOGIN;
    END IF;
END
$$;
GRANT warden_user TO app;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.notes TO app;
