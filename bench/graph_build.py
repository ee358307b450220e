#!/usr/bin/env python3
"""Times tfllmer.build_graph against the fastest plain-SQL query we found
that yields the same edge list, in the same cluster and the same run.

usage: graph_build.py TABLE [--windows 1 3] [--runs 5] [--work-mem 1GB]
Connection from the PG* environment variables. Prints a markdown table.
Both sides are timed server-side (clock_timestamp() around the statement
inside one DO block), after one warm-up run each; the median is reported.
"""
import argparse
import os
import statistics
import subprocess

PSQL = os.path.join(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"), "psql")


def psql(sql):
    p = subprocess.run([PSQL, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"], input=sql, text=True,
                       capture_output=True, check=True)
    return p.stdout.strip(), p.stderr


def timed(statement, work_mem):
    """Milliseconds the statement takes on the server."""
    _, err = psql(f"""SET work_mem = '{work_mem}';
SET client_min_messages = notice;
DO $bench$
DECLARE t0 timestamptz := clock_timestamp();
BEGIN
    PERFORM count(*), sum(weight) FROM ({statement}) result;
    RAISE NOTICE 'elapsed_ms=%', 1000 * extract(epoch FROM clock_timestamp() - t0);
END $bench$;""")
    line = [l for l in err.splitlines() if "elapsed_ms=" in l][-1]
    return float(line.split("elapsed_ms=")[1])


def plain_sql(table, window, holdout=2):
    lags = ", ".join(f"lag(item_id, {k}) OVER w AS p{k}" for k in range(1, window + 1))
    values = ", ".join(f"(p{k})" for k in range(1, window + 1))
    return f"""
WITH seq AS (
  SELECT user_id, item_id, row_number() OVER w AS pos, count(*) OVER (PARTITION BY user_id) AS n, {lags}
  FROM {table} WINDOW w AS (PARTITION BY user_id ORDER BY ts, item_id)
), pairs AS (
  SELECT least(s.item_id, p.prev) AS item_a, greatest(s.item_id, p.prev) AS item_b
  FROM seq s CROSS JOIN LATERAL (VALUES {values}) AS p(prev)
  WHERE s.pos <= s.n - {holdout} AND p.prev IS NOT NULL AND p.prev <> s.item_id
)
SELECT item_a, item_b, count(*)::float8 AS weight FROM pairs GROUP BY item_a, item_b"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("table")
    ap.add_argument("--windows", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--work-mem", default="1GB")
    a = ap.parse_args()
    psql(f"SELECT count(*) FROM {a.table}")  # warm the cache
    print("| window | tfllmer.build_graph (median ms) | plain SQL (median ms) | ratio | edges (both) |")
    print("|---|---|---|---|---|")
    for w in a.windows:
        # total_weight AS weight: the same PERFORM wrapper serves both sides
        ours_stmt = (f"SELECT total_weight AS weight FROM tfllmer.build_graph('bench_w{w}', '{a.table}', "
                     f"window_size => {w}, replace => true)")
        sql_stmt = plain_sql(a.table, w)
        ours, plain = [], []
        for i in range(a.runs + 1):  # the first run of each is a warm-up
            t_ours, t_sql = timed(ours_stmt, a.work_mem), timed(sql_stmt, a.work_mem)
            if i:
                ours.append(t_ours)
                plain.append(t_sql)
        n_ours, _ = psql(f"SELECT n_edges FROM tfllmer.graphs WHERE graph_name = 'bench_w{w}'")
        n_sql, _ = psql(f"SELECT count(*) FROM ({sql_stmt}) e")
        same, _ = psql(f"SELECT count(*) FROM (({sql_stmt}) EXCEPT SELECT * FROM tfllmer.graph_edges('bench_w{w}')) d")
        if n_ours != n_sql or same != "0":
            raise SystemExit(f"window {w}: the edge lists differ ({n_ours} vs {n_sql}, {same} rows differ)")
        mo, ms = statistics.median(ours), statistics.median(plain)
        print(f"| {w} | {mo:.0f} (min {min(ours):.0f}, max {max(ours):.0f}) | {ms:.0f} (min {min(plain):.0f}, "
              f"max {max(plain):.0f}) | {ms / mo:.1f}x | {int(n_ours):,} |", flush=True)


if __name__ == "__main__":
    main()
