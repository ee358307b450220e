#!/usr/bin/env bash
# Benchmark: recommendations per request and per cohort (BENCHMARKS.md,
# "Recommendations"). Trains a SASRec model (dim 64, max_len 200, 2 blocks,
# 1 head) on DATA through tfllmer.train, then measures on 127.0.0.1:
#   - pgbench, a custom script calling recommend(k => 10) for random users,
#     1 and 2 clients, prepared statements, warm cache: TPS and client-side
#     latency p50/p99 (per-transaction log); without and with exclude_seen;
#   - server-side latency p50/p99: the server's own statement durations
#     (log_min_duration_statement = 0) over a 1-client run;
#   - the cohort query: every user in one LATERAL query;
#   - the backend's memory with the model cached (VmRSS before/after);
#   - the peer: the same model's single-user forward + top-k in PyTorch
#     (bench/recommend_peer.py), after checking both give the same top items.
# The quality of the model does not change these timings, so a few epochs do.
#
# usage: bench/recommend.sh [DATA_DIR] [EPOCHS] [SECONDS]
#   DATA_DIR  a MovieLens folder of the shared data (default: ml-1m)
#   EPOCHS    training epochs (default 3)
#   SECONDS   length of each pgbench run (default 30)
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
cd "$TFLLMER_ROOT"
shared="$(data_dir)"
data="$(cd "${1:-${shared:+$shared/ml-1m}}" && pwd)"
epochs="${2:-3}"
seconds="${3:-30}"
ensure_deps
install_extension release
cluster=/tmp/tfllmer-bench-recommend
export TFLLMER_LOOPBACK=1
cluster_start "$cluster"
trap 'cluster_stop "$cluster"' EXIT
export PGHOST=127.0.0.1 PGDATABASE=bench_recommend
echo "machine: $(machine_summary)"
psql_q -d postgres -c "CREATE DATABASE bench_recommend"
python3 scripts/load_dataset.py "$data"
psql_q <<SQL
CREATE EXTENSION tfllmer;
VACUUM ANALYZE interactions;
SQL
job=$(psql_q -A -t -c "SELECT tfllmer.train('ml', 'interactions',
        options => '{\"epochs\": $epochs, \"max_len\": 200, \"dim\": 64, \"threads\": 2}')")
psql_q -A -t -c "SELECT tfllmer.wait_job($job)" >/dev/null
psql_q -c "SELECT model_name, version, n_items, dim, max_len, layers, heads, round(test_ndcg10::numeric, 4) AS test_ndcg10 FROM tfllmer.models"
users=$(psql_q -A -t -c "SELECT count(DISTINCT user_id) FROM interactions")
read -r min_user max_user < <(psql_q -A -t -F ' ' -c "SELECT min(user_id), max(user_id) FROM interactions")
echo "users: $users (ids $min_user..$max_user); pgbench runs of $seconds s"

work=$(mktemp -d)
chmod 755 "$work"
trap 'cluster_stop "$cluster"; rm -rf "$work"' EXIT
for exclude in false true; do
    cat > "$work/recommend_$exclude.sql" <<SQL
\set uid random($min_user, $max_user)
SELECT item_id, score FROM tfllmer.recommend('ml', :uid, k => 10, exclude_seen => $exclude);
SQL
done

# percentiles of a column of numbers (milliseconds)
percentiles() { sort -n | awk '{v[NR] = $1} END {printf "p50 %.3f ms, p99 %.3f ms (n = %d)", v[int(NR * 0.50) + 1], v[int(NR * 0.99) + 1], NR}'; }

echo
echo "| exclude_seen | clients | TPS | client p50 | client p99 |"
echo "|---|---|---|---|---|"
for exclude in false true; do
    for clients in 1 2; do
        rm -f "$work"/pgbench_log.*
        tps=$(cd "$work" && "$PG_BIN/pgbench" -n -M prepared -c "$clients" -j "$clients" -T "$seconds" -l \
                -f "recommend_$exclude.sql" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
        lat=$(cat "$work"/pgbench_log.* | awk '{print $3 / 1000}' | percentiles)
        echo "| $exclude | $clients | $tps | ${lat%%,*} | ${lat#*, } |"
    done
done

# server-side durations: every statement's duration in the server log
echo
psql_q -c "ALTER SYSTEM SET log_min_duration_statement = 0" -c "SELECT pg_reload_conf()" >/dev/null
for exclude in false true; do
    start=$(wc -l < "$cluster/server.log")
    (cd "$work" && "$PG_BIN/pgbench" -n -M prepared -c 1 -T "$seconds" -f "recommend_$exclude.sql" >/dev/null 2>&1)
    lat=$(tail -n +"$((start + 1))" "$cluster/server.log" | grep 'execute.*tfllmer.recommend' |
          sed -n 's/.*duration: \([0-9.]*\) ms.*/\1/p' | percentiles)
    echo "server-side recommend(k => 10, exclude_seen => $exclude), 1 client: $lat"
done
psql_q -c "ALTER SYSTEM RESET log_min_duration_statement" -c "SELECT pg_reload_conf()" >/dev/null

echo
echo "cohort: every user in one query"
psql_q <<SQL
\timing on
SELECT count(*) AS rows, count(DISTINCT u.user_id) AS users
FROM (SELECT DISTINCT user_id FROM interactions) u, LATERAL tfllmer.recommend('ml', u.user_id, 10) r;
SQL

echo
echo "memory of one backend (VmRSS) before and after the model is cached:"
psql_q -A -t <<'SQL' | while read -r label pid; do [ -n "$pid" ] || continue; echo "  $label: $(awk '/VmRSS/ {printf "%.1f MiB", $2 / 1024}' "/proc/$pid/status")"; done
LOAD 'tfllmer';
SELECT 'before ' || pg_backend_pid();
\o /dev/null
SELECT * FROM tfllmer.recommend('ml', 1, 10);
\o
SELECT 'after ' || pg_backend_pid();
SELECT pg_sleep(0.2);
SQL
psql_q -c "SELECT model_name, version, pg_size_pretty(bytes) AS cached FROM tfllmer.cached_models()" \
    -c "SELECT model_name, version FROM tfllmer.models" >/dev/null

# the peer: the same weights in PyTorch
reference="$(reference_dir)"
python=$(reference_python)
if [ -n "$reference" ] && "$python" -c 'import torch' 2>/dev/null; then
    psql_q -A -t -c "SELECT encode(weights, 'base64') FROM tfllmer.model_store WHERE model_name = 'ml'" | base64 -d > "$work/model.safetensors"
    psql_q -A -t -c "SELECT json_build_object('backbone', backbone, 'n_items', n_items, 'dim', dim, 'max_len', max_len,
            'layers', layers, 'heads', heads, 'normalize', normalized, 'temperature', options->'temperature',
            'item_ids_hex', encode(item_ids, 'hex')) FROM tfllmer.model_store WHERE model_name = 'ml'" |
        python3 -c 'import json, struct, sys
c = json.load(sys.stdin); raw = bytes.fromhex(c.pop("item_ids_hex"))
c["item_ids"] = list(struct.unpack("<%dq" % (len(raw) // 8), raw)); json.dump(c, sys.stdout)' > "$work/config.json"
    # both sides must score the same model: recommend_next answers for 20 histories
    psql_q -A -t -c "SELECT json_agg(json_build_object('history', h.items, 'top',
            (SELECT json_agg(json_build_array(r.item_id, r.score)) FROM tfllmer.recommend_next('ml', h.items, 10) r)))
        FROM (SELECT array_agg(item_id ORDER BY ts, item_id) AS items FROM interactions
              WHERE user_id IN (SELECT DISTINCT user_id FROM interactions ORDER BY user_id LIMIT 20) GROUP BY user_id) h" \
        > "$work/check.json"
    echo
    echo "peer (PyTorch, the same weights), single-user forward + top-k:"
    export TFLLMER_REFERENCE_DIR="$reference"
    # check.json holds recommend_next's answers with its default exclude_seen => true
    for threads in 1 2; do
        "$python" bench/recommend_peer.py "$work/model.safetensors" "$work/config.json" "$data" \
            --threads "$threads" --exclude-seen --check-scores "$work/check.json"
        "$python" bench/recommend_peer.py "$work/model.safetensors" "$work/config.json" "$data" --threads "$threads"
    done
fi
