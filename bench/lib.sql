-- Benchmark helpers, loaded into the bench database by bench/run.
-- Every measure runs the baseline and ours alternately in one session and
-- reports medians and their ratio (these machines are noisy: absolute times
-- mean little, ratios from one run mean more).
CREATE SCHEMA IF NOT EXISTS bench;

-- bench.compare(measure, baseline, ours, runs, before, goal):
--   `before` (optional) runs untimed before every timed statement (e.g. a
--   TRUNCATE); one untimed warm-up of each side comes first. Returns one
--   line: measure, ratio ours/baseline, both medians, and the goal if given.
CREATE OR REPLACE FUNCTION bench.compare(
    measure text, baseline text, ours text,
    runs int DEFAULT 7, before text DEFAULT NULL, goal text DEFAULT NULL)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    b float8[] := '{}';
    o float8[] := '{}';
    t0 timestamptz;
    mb float8;
    mo float8;
BEGIN
    FOR i IN 0..runs LOOP
        IF before IS NOT NULL THEN EXECUTE before; END IF;
        t0 := clock_timestamp();
        EXECUTE baseline;
        IF i > 0 THEN b := b || extract(epoch FROM clock_timestamp() - t0) * 1000; END IF;
        IF before IS NOT NULL THEN EXECUTE before; END IF;
        t0 := clock_timestamp();
        EXECUTE ours;
        IF i > 0 THEN o := o || extract(epoch FROM clock_timestamp() - t0) * 1000; END IF;
    END LOOP;
    SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x) INTO mb FROM unnest(b) AS x;
    SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x) INTO mo FROM unnest(o) AS x;
    RETURN rpad(measure || ':', 62)
        || lpad(to_char(mo / nullif(mb, 0), CASE WHEN mo / nullif(mb, 0) < 0.1 THEN 'FM0.0000' ELSE 'FM990.00' END) || 'x', 8)
        || format('  (ours %s ms, baseline %s ms, median of %s)',
                  to_char(mo, 'FM999990.000'), to_char(mb, 'FM999990.000'), runs)
        || CASE WHEN goal IS NULL THEN '' ELSE '  goal ' || goal END;
END
$$;

-- The PL/pgSQL audit trigger pg_warden's trail is compared with: the usual
-- to_jsonb(OLD) / to_jsonb(NEW) into a log table. bench.plpgsql_log_table()
-- creates that table (plpgsql_log, owned by the caller, in its current
-- schema); the trigger writes to plpgsql_log as the search path finds it.
CREATE OR REPLACE FUNCTION bench.plpgsql_log_table() RETURNS void LANGUAGE sql AS $$
    CREATE TABLE plpgsql_log (id bigserial PRIMARY KEY, at timestamptz DEFAULT now(),
                              action text, tbl text, old_row jsonb, new_row jsonb)
$$;
CREATE OR REPLACE FUNCTION bench.plpgsql_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO plpgsql_log (action, tbl, old_row, new_row)
    VALUES (TG_OP, TG_TABLE_NAME,
            CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END,
            CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END);
    RETURN NULL;
END $$;
