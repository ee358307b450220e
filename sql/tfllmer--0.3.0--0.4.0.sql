-- tfllmer 0.3.0 -> 0.4.0
--
-- * Each model version records how many users its test figures were
--   computed on (test_users): training options eval_users, and the default
--   for large user counts, rank a seeded sample of users. Versions trained
--   before 0.4.0 were tested on every user.
-- * rec_pca(..., method => 'exact' | 'randomized' | 'auto'): each stored
--   embedding records the method used (0.3.0 had only the exact one).
\echo Use "ALTER EXTENSION tfllmer UPDATE TO '0.4.0'" to load this file. \quit

ALTER TABLE tfllmer.model_store ADD COLUMN test_users bigint;
UPDATE tfllmer.model_store SET test_users = n_users;
ALTER TABLE tfllmer.model_store ALTER COLUMN test_users SET NOT NULL;

CREATE OR REPLACE VIEW tfllmer.models WITH (security_invoker = true) AS
SELECT model_name, version, pg_catalog.pg_get_userbyid(owner) AS owner,
       backbone, normalized, init, n_items, dim, created_at,
       valid_ndcg10, test_hr10, test_ndcg10,
       pg_catalog.octet_length(weights)::bigint AS size_bytes,
       -- additions
       version = max(version) OVER (PARTITION BY model_name) AS is_current,
       job_id, n_users, max_len, layers, heads, dropout, options,
       source_name AS interactions, epochs, best_epoch, test_users
FROM tfllmer.model_store;

ALTER TABLE tfllmer.embedding_store ADD COLUMN method text;
UPDATE tfllmer.embedding_store SET method = 'exact';
ALTER TABLE tfllmer.embedding_store ALTER COLUMN method SET NOT NULL;

CREATE OR REPLACE VIEW tfllmer.embeddings WITH (security_invoker = true) AS
SELECT embedding_name,
       pg_catalog.pg_get_userbyid(owner) AS owner,
       source_name AS source_table,
       id_column, embedding_column, graph_name, lambda,
       n_items, input_dim, output_dim,
       retained_variance, graph_tv_pca, graph_tv,
       pg_catalog.octet_length(data)::bigint AS size_bytes,
       build_ms, created_at, method
FROM tfllmer.embedding_store;
