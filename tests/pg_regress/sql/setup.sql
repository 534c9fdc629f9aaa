-- Run first in a fresh database: the extension, and a helper that shows an
-- error's SQLSTATE with its message (psql's default display omits it).
CREATE EXTENSION pg_warden;
CREATE SCHEMA regress;
CREATE FUNCTION regress.error_of(statement text) RETURNS text
    LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;
GRANT USAGE ON SCHEMA regress TO PUBLIC;
