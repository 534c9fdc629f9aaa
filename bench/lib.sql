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
