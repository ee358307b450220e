-- The grant recipe of docs/security-and-operations.md, as a DBA would apply
-- it: two ordinary login roles, each with SELECT on its own tables and
-- nothing else, run the whole pipeline; neither can reach the other's
-- tables or tfllmer objects through any tfllmer function; a role outside
-- the group cannot use tfllmer at all. (fresh install)
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS tfllmer CASCADE;
DROP SCHEMA IF EXISTS analytics CASCADE;
DROP ROLE IF EXISTS shop_analyst;
DROP ROLE IF EXISTS music_analyst;
DROP ROLE IF EXISTS outsider;
DROP ROLE IF EXISTS recsys_users;
RESET client_min_messages;

-- 1. once per database, as a superuser
CREATE EXTENSION tfllmer;
-- (optional) only members of recsys_users may use tfllmer
CREATE ROLE recsys_users NOLOGIN;
REVOKE USAGE ON SCHEMA tfllmer FROM PUBLIC;
GRANT USAGE ON SCHEMA tfllmer TO recsys_users;

-- 2. per role: LOGIN (a training worker connects as the role that logged
--    in) and SELECT on the tables it builds from
CREATE ROLE shop_analyst LOGIN IN ROLE recsys_users;
CREATE ROLE music_analyst LOGIN IN ROLE recsys_users;
CREATE ROLE outsider LOGIN;

-- the data, owned by the DBA: interactions and LLM item embeddings, in a
-- schema both roles may use
CREATE SCHEMA analytics;
GRANT USAGE ON SCHEMA analytics TO recsys_users;
CREATE TABLE analytics.shop_events AS
SELECT u AS user_id, 1 + (u * 7 + k) % 30 AS item_id, k AS ts
FROM generate_series(1, 80) u, generate_series(0, 11) k;
CREATE TABLE analytics.shop_products AS
SELECT i AS item_id, ARRAY[sin(i), cos(i), sin(2 * i), cos(3 * i), i / 30.0]::real[] AS embedding
FROM generate_series(1, 30) i;
CREATE TABLE analytics.music_listens AS
SELECT u AS user_id, 101 + (u * 3 + 2 * k) % 40 AS item_id, k AS ts
FROM generate_series(1, 60) u, generate_series(0, 9) k;
CREATE TABLE analytics.music_tracks AS
SELECT i AS item_id, ARRAY[cos(i), sin(i), cos(2 * i), i / 140.0]::real[] AS embedding
FROM generate_series(101, 140) i;
CREATE INDEX ON analytics.shop_events (user_id, ts, item_id);
CREATE INDEX ON analytics.music_listens (user_id, ts, item_id);
GRANT SELECT ON analytics.shop_events, analytics.shop_products TO shop_analyst;
GRANT SELECT ON analytics.music_listens, analytics.music_tracks TO music_analyst;

-- each role runs the whole pipeline on its own tables, logged in as itself
\c - shop_analyst
SELECT graph_name, n_users, n_items FROM tfllmer.build_graph('shop_graph', 'analytics.shop_events', window_size => 1);
SELECT embedding_name, n_items, output_dim FROM tfllmer.rec_pca('shop_4d', 'analytics.shop_products', graph_name => 'shop_graph', dim => 4);
SELECT tfllmer.train('shop_model', 'analytics.shop_events', init => 'shop_4d',
                     options => '{"epochs": 3, "max_len": 12, "learning_rate": 0.01}') AS shop_job \gset
SELECT tfllmer.wait_job(:shop_job);
SELECT count(*) AS recommended FROM tfllmer.recommend('shop_model', 5, k => 5);
SELECT count(*) AS similar FROM tfllmer.similar_items('shop_model', 7, k => 3);
SELECT count(*) AS metrics FROM tfllmer.evaluate('shop_model');

\c - music_analyst
SELECT graph_name, n_users, n_items FROM tfllmer.build_graph('music_graph', 'analytics.music_listens', window_size => 1);
SELECT embedding_name, n_items, output_dim FROM tfllmer.rec_pca('music_3d', 'analytics.music_tracks', graph_name => 'music_graph', dim => 3);
SELECT tfllmer.train('music_model', 'analytics.music_listens', init => 'music_3d',
                     options => '{"epochs": 3, "max_len": 12, "learning_rate": 0.01}') AS music_job \gset
SELECT tfllmer.wait_job(:music_job);
SELECT count(*) AS recommended FROM tfllmer.recommend('music_model', 5, k => 5);
-- the worker ran as music_analyst: the job and the model are hers
SELECT model_name, owner FROM tfllmer.jobs;
SELECT model_name, version, owner FROM tfllmer.models;

-- the catalog views show each role its own objects only
SELECT (SELECT count(*) FROM tfllmer.graphs) AS graphs, (SELECT count(*) FROM tfllmer.embeddings) AS embeddings,
       (SELECT count(*) FROM tfllmer.jobs) AS jobs, (SELECT count(*) FROM tfllmer.models) AS models;

-- through no function can music_analyst read shop's tables ...
SELECT * FROM tfllmer.build_graph('stolen', 'analytics.shop_events');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.rec_pca('stolen', 'analytics.shop_products', dim => 2);
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.train('stolen', 'analytics.shop_events');
\echo :LAST_ERROR_SQLSTATE
-- ... nor see, use, replace or drop shop's graph, embedding, model or job
SELECT count(*) FROM tfllmer.graph_edges('shop_graph');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.rec_pca('mine', 'analytics.music_tracks', graph_name => 'shop_graph', dim => 2);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.build_graph('shop_graph', 'analytics.music_listens');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.drop_graph('shop_graph');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM tfllmer.embedding('shop_4d');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.train('mine', 'analytics.music_listens', init => 'shop_4d');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.drop_embedding('shop_4d');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM tfllmer.recommend('shop_model', 5);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM tfllmer.recommend_next('shop_model', ARRAY[1, 2, 3]);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM tfllmer.similar_items('shop_model', 7);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM tfllmer.evaluate('shop_model');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.train('shop_model', 'analytics.music_listens');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.drop_model('shop_model');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.wait_job(:shop_job);
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.cancel_job(:shop_job);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM tfllmer.job_log(:shop_job);
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.loss_plot(ARRAY[:shop_job]);
\echo :LAST_ERROR_SQLSTATE

-- a role outside recsys_users cannot use tfllmer
\c - outsider
SELECT count(*) FROM tfllmer.models;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM tfllmer.recommend('shop_model', 5);
\echo :LAST_ERROR_SQLSTATE

-- no function needs more than the caller's privileges: the only SECURITY
-- DEFINER functions are the two that start other roles' queued jobs, and
-- both pin their search_path
\c - postgres
SELECT p.oid::regprocedure AS security_definer, p.proconfig
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'tfllmer' AND p.prosecdef ORDER BY p.proname;

-- shop's objects are untouched and still answer
\c - shop_analyst
SELECT (SELECT count(*) FROM tfllmer.graphs) AS graphs, (SELECT count(*) FROM tfllmer.embeddings) AS embeddings,
       (SELECT count(*) FROM tfllmer.jobs) AS jobs, (SELECT count(*) FROM tfllmer.models) AS models;
SELECT count(*) AS recommended FROM tfllmer.recommend('shop_model', 5, k => 5);

-- clean up: each role drops its own objects
SELECT tfllmer.drop_model('shop_model'), tfllmer.drop_embedding('shop_4d'), tfllmer.drop_graph('shop_graph');
DELETE FROM tfllmer.job_store;
\c - music_analyst
SELECT tfllmer.drop_model('music_model'), tfllmer.drop_embedding('music_3d'), tfllmer.drop_graph('music_graph');
DELETE FROM tfllmer.job_store;
\c - postgres
DROP SCHEMA analytics CASCADE;
REVOKE USAGE ON SCHEMA tfllmer FROM recsys_users;
GRANT USAGE ON SCHEMA tfllmer TO PUBLIC;
DROP ROLE shop_analyst, music_analyst, outsider, recsys_users;
