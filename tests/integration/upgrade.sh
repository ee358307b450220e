#!/usr/bin/env bash
# ALTER EXTENSION tfllmer UPDATE from the first released version (0.1.0)
# keeps every graph, embedding, job and model: an ordinary role runs the
# whole pipeline under 0.1.0, the extension is updated, and the role's
# objects read back exactly, answer exactly as before, and train on. Then
# the updated extension must be the same as a fresh install of the current
# version: every function, table, column, default, constraint, index,
# policy, view, grant and pg_dump registration (a missing line in an
# upgrade script shows here).
# usage: upgrade.sh CLUSTER_DIR   (PG* variables point at that cluster)
source "$(dirname "$0")/../../scripts/common.sh"
first_release=0.1.0
role=tfllmer_upgrader
# the full script of the first release (kept in sql/released/; a normal
# install ships only the current one and the upgrade scripts)
as_root install -m 644 "$TFLLMER_ROOT/sql/released/tfllmer--$first_release.sql" "$("$PG_CONFIG" --sharedir)/extension/"
current=$(psql_q -d postgres -A -t -c "SELECT default_version FROM pg_available_extensions WHERE name = 'tfllmer'")
psql_q -d postgres <<SQL
SET client_min_messages = warning;
DROP DATABASE IF EXISTS tfllmer_upgraded;
DROP DATABASE IF EXISTS tfllmer_fresh;
DROP ROLE IF EXISTS $role;
CREATE ROLE $role LOGIN;
CREATE DATABASE tfllmer_upgraded;
CREATE DATABASE tfllmer_fresh;
SQL
export PGDATABASE=tfllmer_upgraded
psql_q -c "CREATE EXTENSION tfllmer VERSION '$first_release'" -c "GRANT CREATE ON SCHEMA public TO $role"

# under the first release, as an ordinary role: the whole pipeline
psql_q -U "$role" -f "$(dirname "$0")/whole_pipeline.sql" >/dev/null
psql_q -U "$role" <<'SQL'
CREATE TABLE before_graphs AS SELECT * FROM tfllmer.graphs;
CREATE TABLE before_edges AS SELECT * FROM tfllmer.graph_edges('walk_graph');
CREATE TABLE before_embeddings AS SELECT * FROM tfllmer.embeddings;
CREATE TABLE before_vectors AS SELECT * FROM tfllmer.embedding('items_4d');
CREATE TABLE before_jobs AS SELECT job_id, model_name, owner, state, epoch, train_loss, model_version FROM tfllmer.jobs;
CREATE TABLE before_models AS SELECT * FROM tfllmer.models;
CREATE TABLE before_log AS SELECT * FROM tfllmer.job_log((SELECT max(job_id) FROM tfllmer.jobs));
CREATE TABLE before_answers AS
SELECT u AS user_id, r.* FROM generate_series(1, 80, 7) u, tfllmer.recommend('walker', u, k => 5) r;
SQL

psql_q -c "ALTER EXTENSION tfllmer UPDATE"

failed=0
check() {  # check NAME EXPECTED ACTUAL
    if [ "$2" = "$3" ]; then echo "ok   upgrade: $1"; else echo "FAIL upgrade: $1: expected '$2', got '$3'"; failed=1; fi
}
q() { psql_q -U "$role" -A -t -c "$1"; }
same() {  # same TABLE QUERY: the two give the same rows, and some
    q "SELECT (SELECT count(*) FROM $1) > 0
          AND NOT EXISTS ((TABLE $1) EXCEPT ($2)) AND NOT EXISTS (($2) EXCEPT (TABLE $1))"
}
# the columns a table saved before the update has (views gain columns at the end)
columns_of() { q "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_catalog.pg_attribute
                  WHERE attrelid = '$1'::regclass AND attnum > 0 AND NOT attisdropped"; }
check "version after ALTER EXTENSION UPDATE" "$current" \
    "$(psql_q -A -t -c "SELECT extversion FROM pg_extension WHERE extname = 'tfllmer'")"
check "graphs kept" t "$(same before_graphs "SELECT * FROM tfllmer.graphs")"
check "graph edges kept" t "$(same before_edges "SELECT * FROM tfllmer.graph_edges('walk_graph')")"
check "embeddings kept" t "$(same before_embeddings "SELECT $(columns_of before_embeddings) FROM tfllmer.embeddings")"
check "embeddings made before the update say 'exact'" t "$(q "SELECT bool_and(method = 'exact') FROM tfllmer.embeddings")"
check "embedding vectors kept" t "$(same before_vectors "SELECT * FROM tfllmer.embedding('items_4d')")"
check "jobs kept" t "$(same before_jobs "SELECT job_id, model_name, owner, state, epoch, train_loss, model_version FROM tfllmer.jobs")"
check "job log kept" t "$(same before_log "SELECT * FROM tfllmer.job_log((SELECT max(job_id) FROM tfllmer.jobs))")"
check "models kept" t "$(same before_models "SELECT $(columns_of before_models) FROM tfllmer.models")"
check "models made before the update were tested on every user" t \
    "$(q "SELECT bool_and(test_users = n_users) FROM tfllmer.models")"
check "recommendations unchanged" t "$(same before_answers \
    "SELECT u AS user_id, r.* FROM generate_series(1, 80, 7) u, tfllmer.recommend('walker', u, k => 5) r")"
# and the role carries on: a second version from the kept embedding, a new
# job id, served at once
job=$(q "SELECT tfllmer.train('walker', 'walks', init => 'items_4d', options => '{\"epochs\": 1, \"max_len\": 12}')")
check "training on after the update" "succeeded 2" \
    "$(q "SELECT tfllmer.wait_job($job)") $(q "SELECT max(version) FROM tfllmer.models WHERE model_name = 'walker'")"
check "job ids continue" t "$(q "SELECT count(DISTINCT job_id) = 2 FROM tfllmer.jobs")"
check "recommending from the new version" 5 "$(q "SELECT count(*) FROM tfllmer.recommend('walker', 3, k => 5)")"
check "drop after the update" t "$(q "SELECT tfllmer.drop_model('walker') AND tfllmer.drop_graph('walk_graph')")"

# the updated extension is the fresh install of the current version
psql_q -d tfllmer_fresh -c "CREATE EXTENSION tfllmer"
describe_extension() {  # every object of the extension, one line each
    psql_q -d "$1" -A -t <<'SQL'
WITH member AS (SELECT d.classid, d.objid FROM pg_depend d JOIN pg_extension e ON d.refobjid = e.oid
                WHERE d.refclassid = 'pg_extension'::regclass AND e.extname = 'tfllmer' AND d.deptype = 'e'),
     rel AS (SELECT c.oid FROM pg_class c JOIN member m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid)
SELECT line FROM (
    SELECT 'function ' || pg_get_functiondef(p.oid) || ' acl ' || coalesce(p.proacl::text, '-') AS line
    FROM pg_proc p JOIN member m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
    UNION ALL
    SELECT 'type ' || format_type(t.oid, NULL) || ' ' || t.typtype::text
    FROM pg_type t JOIN member m ON m.classid = 'pg_type'::regclass AND m.objid = t.oid
    UNION ALL
    SELECT format('relation %s kind %s acl %s rls %s options %s', c.oid::regclass, c.relkind,
                  coalesce(c.relacl::text, '-'), c.relrowsecurity, coalesce(c.reloptions::text, '-'))
    FROM pg_class c JOIN rel USING (oid)
    UNION ALL
    SELECT format('column %s.%s %s not null %s default %s identity %s storage %s acl %s', a.attrelid::regclass,
                  a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                  coalesce(pg_get_expr(ad.adbin, ad.adrelid), '-'), a.attidentity, a.attstorage,
                  coalesce(a.attacl::text, '-'))
    FROM pg_attribute a JOIN rel ON rel.oid = a.attrelid
    LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
    WHERE a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT format('constraint %s %s %s', co.conrelid::regclass, co.conname, pg_get_constraintdef(co.oid))
    FROM pg_constraint co JOIN rel ON rel.oid = co.conrelid
    UNION ALL
    SELECT 'index ' || pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN rel ON rel.oid = i.indrelid
    UNION ALL
    SELECT format('policy %s.%s %s %s using %s check %s', p.tablename, p.policyname, p.cmd, p.roles,
                  coalesce(p.qual, '-'), coalesce(p.with_check, '-'))
    FROM pg_policies p WHERE p.schemaname = 'tfllmer'
    UNION ALL
    SELECT format('view %s %s', c.oid::regclass, pg_get_viewdef(c.oid)) FROM pg_class c JOIN rel USING (oid)
    WHERE c.relkind = 'v'
    UNION ALL
    SELECT format('sequence %s %s %s %s %s', s.seqrelid::regclass, s.seqtypid::regtype, s.seqstart,
                  s.seqincrement, s.seqcycle)
    FROM pg_sequence s JOIN rel ON rel.oid = s.seqrelid
    UNION ALL
    SELECT 'pg_dump includes ' || (SELECT string_agg(c::regclass::text, ', ' ORDER BY c::regclass::text)
                                   FROM unnest(e.extconfig) c)
    FROM pg_extension e WHERE e.extname = 'tfllmer'
    UNION ALL
    SELECT format('schema %s acl %s', n.nspname, coalesce(n.nspacl::text, '-')) FROM pg_namespace n
    JOIN pg_depend d ON d.classid = 'pg_namespace'::regclass AND d.objid = n.oid AND d.deptype = 'e'
    JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'tfllmer'
    UNION ALL
    SELECT 'schema acl ' || coalesce(n.nspacl::text, '-') FROM pg_namespace n WHERE n.nspname = 'tfllmer'
) everything ORDER BY line
SQL
}
describe_extension tfllmer_upgraded > /tmp/tfllmer_upgraded.schema
describe_extension tfllmer_fresh > /tmp/tfllmer_fresh.schema
if diff -u /tmp/tfllmer_fresh.schema /tmp/tfllmer_upgraded.schema; then
    echo "ok   upgrade: the updated extension equals a fresh install ($(wc -l < /tmp/tfllmer_fresh.schema) objects and properties)"
else
    echo "FAIL upgrade: the updated extension differs from a fresh install (- fresh, + updated)"
    failed=1
fi

psql_q -d postgres -c "DROP DATABASE tfllmer_upgraded" -c "DROP DATABASE tfllmer_fresh" -c "DROP ROLE $role"
exit $failed
