-- tfllmer 0.3.0 -> 0.4.0
--
-- * Each model version records how many users its test figures were
--   computed on (test_users): training options eval_users, and the default
--   for large user counts, rank a seeded sample of users. Versions trained
--   before 0.4.0 were tested on every user.
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
