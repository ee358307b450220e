#!/usr/bin/env bash
# Graphs survive a server restart and are read back exactly.
# usage: persistence.sh CLUSTER_DIR   (PG* variables point at that cluster)
source "$(dirname "$0")/../../scripts/common.sh"
dir="$1"
psql_q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS tfllmer_persist" -c "CREATE DATABASE tfllmer_persist"
export PGDATABASE=tfllmer_persist
psql_q <<'SQL'
CREATE EXTENSION tfllmer;
CREATE TABLE ev AS
    SELECT u AS user_id, (u * 7 + k * k) % 50 AS item_id, k AS ts
    FROM generate_series(1, 200) u, generate_series(1, 30) k;
SELECT graph_name FROM tfllmer.build_graph('persisted', 'ev', window_size => 2) \gset
CREATE TABLE expected AS SELECT * FROM tfllmer.graph_edges('persisted');
SQL
cluster_restart "$dir"
result=$(psql_q -A -t <<'SQL'
SELECT (SELECT count(*) FROM expected) > 0
   AND NOT EXISTS (SELECT * FROM expected EXCEPT SELECT * FROM tfllmer.graph_edges('persisted'))
   AND NOT EXISTS (SELECT * FROM tfllmer.graph_edges('persisted') EXCEPT SELECT * FROM expected);
SQL
)
psql_q -d postgres -c "DROP DATABASE tfllmer_persist"
if [ "$result" = t ]; then echo "ok   graph persists across a restart"; else echo "FAIL graph changed across a restart"; exit 1; fi
