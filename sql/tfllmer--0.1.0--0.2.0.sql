-- tfllmer 0.1.0 -> 0.2.0
--
-- * Owners become regrole and source tables regclass (same OIDs inside):
--   pg_dump now writes them as names, so a restore into another cluster
--   keeps every graph, embedding, job and model with its role and table.
-- * pg_dump also keeps where job ids have got to (the identity sequence).
-- * A role can no longer write a model version under a name it cannot see,
--   nor epochs for a job it cannot see (those rows would collide with the
--   owner's next version or epoch).
-- Views and policies that read the changed columns are dropped and created
-- again as in a fresh install (tests/integration/upgrade.sh compares the two).
\echo Use "ALTER EXTENSION tfllmer UPDATE TO '0.2.0'" to load this file. \quit

DROP VIEW tfllmer.graphs, tfllmer.embeddings, tfllmer.jobs, tfllmer.models;
DROP POLICY graph_store_owner ON tfllmer.graph_store;
DROP POLICY embedding_store_owner ON tfllmer.embedding_store;
DROP POLICY job_store_owner ON tfllmer.job_store;
DROP POLICY job_epoch_store_owner ON tfllmer.job_epoch_store;
DROP POLICY model_names_owner ON tfllmer.model_names;
DROP POLICY model_store_owner ON tfllmer.model_store;

ALTER TABLE tfllmer.graph_store
    ALTER COLUMN owner TYPE regrole USING owner::regrole,
    ALTER COLUMN source_table TYPE regclass USING source_table::regclass;
ALTER TABLE tfllmer.embedding_store
    ALTER COLUMN owner TYPE regrole USING owner::regrole,
    ALTER COLUMN source_table TYPE regclass USING source_table::regclass;
ALTER TABLE tfllmer.job_store
    ALTER COLUMN owner TYPE regrole USING owner::regrole,
    ALTER COLUMN login_role TYPE regrole USING login_role::regrole,
    ALTER COLUMN source_table TYPE regclass USING source_table::regclass;
ALTER TABLE tfllmer.job_epoch_store
    ALTER COLUMN owner TYPE regrole USING owner::regrole;
ALTER TABLE tfllmer.model_names
    ALTER COLUMN owner TYPE regrole USING owner::regrole;
ALTER TABLE tfllmer.model_store
    ALTER COLUMN owner TYPE regrole USING owner::regrole,
    ALTER COLUMN source_table TYPE regclass USING source_table::regclass;

CREATE POLICY graph_store_owner ON tfllmer.graph_store
    USING (EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                   WHERE r.oid = owner AND pg_catalog.pg_has_role(r.oid, 'USAGE')))
    WITH CHECK (owner = tfllmer.current_role_oid());
CREATE POLICY embedding_store_owner ON tfllmer.embedding_store
    USING (EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                   WHERE r.oid = owner AND pg_catalog.pg_has_role(r.oid, 'USAGE')))
    WITH CHECK (owner = tfllmer.current_role_oid());
CREATE POLICY job_store_owner ON tfllmer.job_store
    USING (EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                   WHERE r.oid = owner AND pg_catalog.pg_has_role(r.oid, 'USAGE')))
    WITH CHECK (owner = tfllmer.current_role_oid());
CREATE POLICY job_epoch_store_owner ON tfllmer.job_epoch_store
    USING (EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                   WHERE r.oid = owner AND pg_catalog.pg_has_role(r.oid, 'USAGE')))
    WITH CHECK (owner = tfllmer.current_role_oid()
                AND EXISTS (SELECT 1 FROM tfllmer.job_store j WHERE j.job_id = job_epoch_store.job_id));
CREATE POLICY model_names_owner ON tfllmer.model_names
    USING (EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                   WHERE r.oid = owner AND pg_catalog.pg_has_role(r.oid, 'USAGE')))
    WITH CHECK (owner = tfllmer.current_role_oid());
CREATE POLICY model_store_owner ON tfllmer.model_store
    USING (EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                   WHERE r.oid = owner AND pg_catalog.pg_has_role(r.oid, 'USAGE')))
    WITH CHECK (owner = tfllmer.current_role_oid()
                AND EXISTS (SELECT 1 FROM tfllmer.model_names n WHERE n.model_name = model_store.model_name));

SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('tfllmer.job_store', 'job_id'), '');

CREATE VIEW tfllmer.graphs WITH (security_invoker = true) AS
SELECT graph_name,
       pg_catalog.pg_get_userbyid(owner) AS owner,
       source_name AS source_table,
       user_column, item_column, time_column,
       window_size, holdout, weighting, damping, top_k,
       n_users, n_items, n_edges, total_weight,
       pg_catalog.octet_length(csr)::bigint AS size_bytes,
       build_ms, created_at
FROM tfllmer.graph_store;
GRANT SELECT ON tfllmer.graphs TO PUBLIC;

CREATE VIEW tfllmer.embeddings WITH (security_invoker = true) AS
SELECT embedding_name,
       pg_catalog.pg_get_userbyid(owner) AS owner,
       source_name AS source_table,
       id_column, embedding_column, graph_name, lambda,
       n_items, input_dim, output_dim,
       retained_variance, graph_tv_pca, graph_tv,
       pg_catalog.octet_length(data)::bigint AS size_bytes,
       build_ms, created_at
FROM tfllmer.embedding_store;
GRANT SELECT ON tfllmer.embeddings TO PUBLIC;

CREATE VIEW tfllmer.jobs WITH (security_invoker = true) AS
SELECT job_id, model_name, pg_catalog.pg_get_userbyid(owner) AS owner,
       CASE WHEN lost THEN 'failed' ELSE state END AS state,
       epoch, max_epochs, progress, train_loss, valid_ndcg10, best_valid_ndcg10,
       started_at, updated_at, finished_at,
       CASE WHEN lost
            THEN 'the training worker (PID ' || worker_pid || ') ended without finishing the job: '
                 || 'it was killed, crashed, or the server restarted'
            ELSE error END AS error,
       -- additions to the API's columns
       CASE WHEN state = 'running' AND NOT lost AND eta_s IS NOT NULL
            THEN pg_catalog.make_interval(secs => eta_s) END AS eta,
       backbone, normalize, init, source_name AS interactions, options,
       n_users, n_items, model_version, detail, queued_at, worker_pid
FROM (SELECT s.*, s.state = 'running' AND NOT tfllmer.job_worker_alive(s.worker_pid, s.job_id) AS lost
      FROM tfllmer.job_store s) j;
GRANT SELECT ON tfllmer.jobs TO PUBLIC;

CREATE VIEW tfllmer.models WITH (security_invoker = true) AS
SELECT model_name, version, pg_catalog.pg_get_userbyid(owner) AS owner,
       backbone, normalized, init, n_items, dim, created_at,
       valid_ndcg10, test_hr10, test_ndcg10,
       pg_catalog.octet_length(weights)::bigint AS size_bytes,
       -- additions
       version = max(version) OVER (PARTITION BY model_name) AS is_current,
       job_id, n_users, max_len, layers, heads, dropout, options,
       source_name AS interactions, epochs, best_epoch
FROM tfllmer.model_store;
GRANT SELECT ON tfllmer.models TO PUBLIC;

CREATE OR REPLACE FUNCTION tfllmer.claim_queued_jobs(max_jobs integer)
RETURNS TABLE (job_id bigint, login_role oid, owner oid)
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE tfllmer.job_store j SET launched_at = now()
    WHERE j.job_id IN (SELECT q.job_id FROM tfllmer.job_store q
                       WHERE q.state = 'queued'
                         AND (q.launched_at IS NULL OR q.launched_at < now() - interval '1 minute')
                       ORDER BY q.job_id LIMIT max_jobs
                       FOR UPDATE SKIP LOCKED)
    RETURNING j.job_id, j.login_role::oid, j.owner::oid
$$;
