#!/usr/bin/env bash
# pg_dump includes every graph, embedding, job and model, and a restore into
# a new database whose role was created again (so it has a new OID, as on
# another cluster after pg_dumpall) gives that role back all its objects:
# same answers, and training goes on with new job ids and the next version.
# Where pgvector is installed, the model also has an item index and a cold
# item: the index table comes back with its rows and serves as before.
# usage: backup_restore.sh CLUSTER_DIR   (PG* variables point at that cluster)
source "$(dirname "$0")/../../scripts/common.sh"
role=tfllmer_backup_owner
dump=$(mktemp -d)/tfllmer.dump
psql_q -d postgres <<SQL
SET client_min_messages = warning;
DROP DATABASE IF EXISTS tfllmer_backup;
DROP DATABASE IF EXISTS tfllmer_restored;
DROP ROLE IF EXISTS $role;
CREATE ROLE $role LOGIN;
CREATE DATABASE tfllmer_backup;
SQL
psql_q -d tfllmer_backup -c "CREATE EXTENSION tfllmer" -c "GRANT CREATE ON SCHEMA public TO $role"
q() { psql_q -U "$role" -d "$1" -A -t -c "$2"; }
psql_q -U "$role" -d tfllmer_backup -f "$(dirname "$0")/whole_pipeline.sql" >/dev/null
indexed=""
if [ -f "$("$PG_CONFIG" --sharedir)/extension/vector.control" ]; then
    indexed=1
    psql_q -d tfllmer_backup -c "CREATE EXTENSION vector" >/dev/null
    q tfllmer_backup "SELECT n_items FROM tfllmer.create_item_index('walker')" >/dev/null
fi
index_snapshot() {  # the index's catalog row, and the rows of its table
    [ -n "$indexed" ] || return 0
    local table
    table=$(q "$1" "SELECT index_table FROM tfllmer.item_indexes WHERE is_current")
    echo "$(q "$1" "SELECT concat_ws(',', model_name, version, owner, index_table, n_items, is_current)
                    FROM tfllmer.item_indexes") $(q "$1" "SELECT count(*) FROM $table")"
}
# what the role sees, as text, to compare after the restore
snapshot() {
    q "$1" "SELECT concat_ws(' | ',
        (SELECT string_agg(concat_ws(',', graph_name, owner, source_table, n_edges, total_weight), ';') FROM tfllmer.graphs),
        (SELECT md5(string_agg(concat_ws(',', item_a, item_b, weight), ';')) FROM tfllmer.graph_edges('walk_graph')),
        (SELECT string_agg(concat_ws(',', embedding_name, owner, source_table, graph_name), ';') FROM tfllmer.embeddings),
        (SELECT md5(string_agg(embedding::text, ';' ORDER BY item_id)) FROM tfllmer.embedding('items_4d')),
        (SELECT string_agg(concat_ws(',', model_name, version, owner, size_bytes, test_ndcg10), ';') FROM tfllmer.models),
        (SELECT string_agg(concat_ws(',', job_id, owner, state, epoch), ';') FROM tfllmer.jobs),
        (SELECT md5(string_agg(r.item_id || ':' || r.score, ',')) FROM generate_series(1, 80, 3) u,
                tfllmer.recommend('walker', u, k => 5) r))"
}
before=$(snapshot tfllmer_backup)
index_before=$(index_snapshot tfllmer_backup)
old_oid=$(q tfllmer_backup "SELECT oid FROM pg_roles WHERE rolname = current_user")
"$PG_BIN/pg_dump" -Fc -d tfllmer_backup -f "$dump"

# a new home: the database is gone, the role is made again with a new OID
psql_q -d postgres <<SQL
DROP DATABASE tfllmer_backup;
DROP ROLE $role;
CREATE ROLE $role LOGIN;
CREATE DATABASE tfllmer_restored;
SQL
failed=0
check() {  # check NAME EXPECTED ACTUAL
    if [ "$2" = "$3" ]; then echo "ok   backup: $1"; else echo "FAIL backup: $1: expected '$2', got '$3'"; failed=1; fi
}
restore_log=$(mktemp)
if "$PG_BIN/pg_restore" --exit-on-error -d tfllmer_restored "$dump" 2> "$restore_log"; then
    echo "ok   backup: pg_restore without errors"
else
    echo "FAIL backup: pg_restore: $(cat "$restore_log")"; failed=1
fi
check "the role has a new OID" t "$(q tfllmer_restored "SELECT oid <> $old_oid FROM pg_roles WHERE rolname = current_user")"
check "the role sees all its objects, and they answer as before" "$before" "$(snapshot tfllmer_restored)"
if [ -n "$indexed" ]; then
    check "the item index table came back with its rows" "$index_before" "$(index_snapshot tfllmer_restored)"
fi
job=$(q tfllmer_restored "SELECT tfllmer.train('walker', 'walks', options => '{\"epochs\": 1, \"max_len\": 12}')")
check "training goes on: a new job id and version 2" "succeeded 2 true" "$(q tfllmer_restored "SELECT tfllmer.wait_job($job)") $(q \
    tfllmer_restored "SELECT max(version) || ' ' || ((SELECT count(DISTINCT job_id) FROM tfllmer.jobs) = 2) FROM tfllmer.models")"
check "another role sees none of it" 0 "$(psql_q -d tfllmer_restored -A -t -c "CREATE ROLE tfllmer_backup_other" \
    -c "SET ROLE tfllmer_backup_other" -c "SELECT (SELECT count(*) FROM tfllmer.models) + (SELECT count(*) FROM tfllmer.graphs)" \
    -c "RESET ROLE" -c "DROP ROLE tfllmer_backup_other" | sed -n 1p)"

psql_q -U "$role" -d tfllmer_restored -c "SELECT tfllmer.drop_model('walker')" >/dev/null
psql_q -d postgres -c "DROP DATABASE tfllmer_restored" -c "DROP ROLE $role"
rm -rf "$(dirname "$dump")" "$restore_log"
exit $failed
