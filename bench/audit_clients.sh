#!/usr/bin/env bash
# Single-row INSERT transactions from 8 clients (pgbench), audited vs the
# same table unaudited, and vs the same table with a PL/pgSQL trigger logging
# to_jsonb(NEW). Five rounds, each running the three one after the other
# for 6 s; a ratio is taken within each round (neighbours share the
# machine's mood) and the median of the rounds' ratios printed, with their
# range. Run by bench/run with PGHOST, PGPORT, PGUSER and DB set.
set -euo pipefail
psql=(psql -X -q -v ON_ERROR_STOP=1 -d "$DB")
"${psql[@]}" <<'SQL'
CREATE TABLE plain_rows (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, workspace_id uuid, title text, amount int);
CREATE TABLE audited_rows (LIKE plain_rows INCLUDING ALL);
SELECT warden.enable_audit('audited_rows') \gset
CREATE TABLE plpgsql_rows (LIKE plain_rows INCLUDING ALL);
SELECT bench.plpgsql_log_table() \gset
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON plpgsql_rows
    FOR EACH ROW EXECUTE FUNCTION bench.plpgsql_audit();
SQL
dir=$(mktemp -d)
for t in plain_rows audited_rows plpgsql_rows; do
    cat > "$dir/$t.sql" <<SQL
\set amount random(1, 1000)
BEGIN;
INSERT INTO $t (workspace_id, title, amount) VALUES ('00000000-0000-4000-8000-000000000099', md5(:amount::text), :amount);
COMMIT;
SQL
done
tps() { pgbench -n -c 8 -j 2 -T 6 -f "$dir/$1.sql" "$DB" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p'; }
for _ in 1 2 3 4 5; do
    echo "$(tps plain_rows) $(tps audited_rows) $(tps plpgsql_rows)"
done | awk '
    function median(a, n,   i, j, t) {
        for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
        return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
    }
    { n++; p[n] = $1; a[n] = $2; l[n] = $3; ra[n] = $2 / $1; rl[n] = $2 / $3
      lo_a = (n == 1 || ra[n] < lo_a) ? ra[n] : lo_a; hi_a = (n == 1 || ra[n] > hi_a) ? ra[n] : hi_a
      lo_l = (n == 1 || rl[n] < lo_l) ? rl[n] : lo_l; hi_l = (n == 1 || rl[n] > hi_l) ? rl[n] : hi_l }
    END {
        printf "%-62s%7.2fx  (rounds %.2f-%.2f; ours %.0f tps, baseline %.0f tps, medians of 5, 8 clients)  goal >= 0.80x\n",
            "single-row INSERT transactions: audited vs unaudited tps:", median(ra, n), lo_a, hi_a, median(a, n), median(p, n)
        printf "%-62s%7.2fx  (rounds %.2f-%.2f; ours %.0f tps, baseline %.0f tps, medians of 5, 8 clients)\n",
            "single-row INSERT transactions: pg_warden vs PL/pgSQL tps:", median(rl, n), lo_l, hi_l, median(a, n), median(l, n)
    }'
rm -rf "$dir"
