-- Item indexes: tfllmer.create_item_index() writes a model's item vectors
-- into a table with a pgvector HNSW index, and recommend(),
-- recommend_next() and similar_items() then ask that index for the best
-- items instead of scoring every item in each backend. Answers keep the
-- exact scores; the rules (exclude_seen, candidates, exclude) still give k
-- rows; a new model version brings its own index; drop_item_index() goes
-- back to exact scoring. (PostgreSQL 18 with pgvector in scripts/test.sh.)
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS tfllmer CASCADE;
DROP EXTENSION IF EXISTS vector CASCADE;
RESET client_min_messages;
CREATE EXTENSION tfllmer;
\set walk_users 80
\set walk_steps 12
\i common/walks.sql
CREATE INDEX ON walks (user_id, ts, item_id);
CREATE TABLE items AS
SELECT i AS item_id, ARRAY(SELECT sin(i * j + j) + 0.3 * cos(i + 2 * j) FROM generate_series(1, 8) j)::real[] AS embedding
FROM generate_series(1, 30) i;
SELECT n_items FROM tfllmer.build_graph('g', 'walks');
SELECT n_items FROM tfllmer.rec_pca('e', 'items', graph_name => 'g', dim => 4);
SELECT tfllmer.train('walker', 'walks', init => 'e',
       options => '{"epochs": 4, "batch_size": 16, "max_len": 12, "learning_rate": 0.01}') AS job \gset
SELECT tfllmer.wait_job(:job);

-- Without pgvector there is no index: a clear ERROR, and recommend() keeps
-- scoring every item.
SELECT * FROM tfllmer.create_item_index('walker');

CREATE EXTENSION vector;

-- The exact answers, for comparison: every user's top 10 (seen items left
-- out), a top 5 under rules, and each item's 5 most similar items.
CREATE TABLE exact_top AS
SELECT u AS user_id, array_agg(r.item_id ORDER BY r.score DESC, r.item_id) AS items,
       array_agg(r.score ORDER BY r.score DESC, r.item_id) AS scores
FROM generate_series(1, 80) u, tfllmer.recommend('walker', u) r GROUP BY u;
CREATE TABLE exact_rules AS
SELECT u AS user_id, array_agg(r.item_id ORDER BY r.score DESC, r.item_id) AS items
FROM generate_series(1, 80) u,
     tfllmer.recommend('walker', u, k => 5, exclude_seen => false,
                       candidates => ARRAY[1, 3, 5, 7, 9, 11, 13, 15, 17, 19], exclude => ARRAY[3, 5]) r
GROUP BY u;
CREATE TABLE exact_similar AS
SELECT i AS item_id, array_agg(s.item_id ORDER BY s.score DESC, s.item_id) AS items,
       array_agg(s.score ORDER BY s.score DESC, s.item_id) AS scores
FROM generate_series(1, 30) i, tfllmer.similar_items('walker', i, k => 5) s GROUP BY i;
CREATE TABLE exact_vectors AS
SELECT u AS user_id, tfllmer.user_vector('walker', u) AS q FROM generate_series(1, 80) u;

-- The index: one table in schema tfllmer_items, owned by the caller, with
-- an HNSW index on inner product (the items are unit length: the same
-- order as cosine).
SELECT model_name, version, index_table LIKE 'tfllmer_items.items_%' AS in_schema, n_items
FROM tfllmer.create_item_index('walker', options => '{"m": 8, "ef_construction": 32, "maintenance_work_mem": "64MB"}');
SELECT model_name, version, owner = current_user AS mine, method, options, n_items, dim, size_bytes > 0 AS has_size,
       is_current
FROM tfllmer.item_indexes;
SELECT am.amname, pg_get_indexdef(i.indexrelid) LIKE '%vector_ip_ops%' AS inner_product
FROM tfllmer.item_index_store s JOIN pg_index i ON i.indrelid = s.index_table
JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam ORDER BY 1;
-- its rows are item_vectors(), as pgvector's type
SELECT count(*) AS same_rows
FROM tfllmer.item_vectors('walker') v
JOIN tfllmer_items.items_1 t ON t.item_id = v.item_id AND t.embedding::real[] = v.embedding;

-- Served through the index: the same items with the same scores, bit for
-- bit (the index finds the rows, tfllmer scores them exactly).
SELECT count(*) AS users, count(*) FILTER (WHERE e.items = i.items AND e.scores = i.scores) AS same_top_10
FROM exact_top e, LATERAL (
    SELECT array_agg(r.item_id ORDER BY r.score DESC, r.item_id) AS items,
           array_agg(r.score ORDER BY r.score DESC, r.item_id) AS scores
    FROM tfllmer.recommend('walker', e.user_id) r) i;
SELECT count(*) FILTER (WHERE e.items = i.items) AS same_under_rules
FROM exact_rules e, LATERAL (
    SELECT array_agg(r.item_id ORDER BY r.score DESC, r.item_id) AS items
    FROM tfllmer.recommend('walker', e.user_id, k => 5, exclude_seen => false,
                           candidates => ARRAY[1, 3, 5, 7, 9, 11, 13, 15, 17, 19], exclude => ARRAY[3, 5]) r) i;
SELECT count(*) FILTER (WHERE e.items = i.items AND e.scores = i.scores) AS same_similar
FROM exact_similar e, LATERAL (
    SELECT array_agg(s.item_id ORDER BY s.score DESC, s.item_id) AS items,
           array_agg(s.score ORDER BY s.score DESC, s.item_id) AS scores
    FROM tfllmer.similar_items('walker', e.item_id, k => 5) s) i;
SELECT count(*) FILTER (WHERE q = tfllmer.user_vector('walker', user_id)) AS same_user_vectors FROM exact_vectors;
SELECT tfllmer.history_vector('walker', (SELECT array_agg(item_id ORDER BY ts) FROM walks WHERE user_id = 1))
     = tfllmer.user_vector('walker', 1) AS history_vector_is_user_vector;

-- Exclusions still give k rows when k items are eligible: a user has seen
-- 12 of the 30 items, so k => 30 gives the other 18; with exclude, fewer.
SELECT count(*) AS unseen FROM tfllmer.recommend('walker', 1, k => 30);
SELECT count(*) AS unseen_not_excluded FROM tfllmer.recommend('walker', 1, k => 30, exclude => ARRAY[1, 2, 3, 4]);
SELECT count(*) AS all_items FROM tfllmer.recommend('walker', 1, k => 30, exclude_seen => false);
SELECT count(*) AS next_after_history FROM tfllmer.recommend_next('walker', ARRAY[7, 8, 9], k => 30);
SELECT bool_and(item_id NOT IN (7, 8, 9)) AS history_left_out FROM tfllmer.recommend_next('walker', ARRAY[7, 8, 9], k => 30);
-- and the rules' errors are the exact path's
SELECT * FROM tfllmer.recommend('walker', 1, candidates => ARRAY[1, NULL]);
SELECT * FROM tfllmer.recommend('walker', 1, exclude => ARRAY[99]);
SELECT * FROM tfllmer.similar_items('walker', 99);
SELECT * FROM tfllmer.recommend('walker', 12345);

-- A new version of an indexed model gets its own index as training stores
-- it; the previous version's table stays until the next one, so requests
-- already under way keep theirs.
SELECT tfllmer.train('walker', 'walks', init => 'e',
       options => '{"epochs": 2, "batch_size": 16, "max_len": 12, "learning_rate": 0.01, "seed": 7}') AS job \gset
SELECT tfllmer.wait_job(:job);
SELECT version, options, is_current FROM tfllmer.item_indexes ORDER BY version;
-- the new version's answers: its user vector against the table scanned
-- exactly, in SQL
SELECT count(*) AS users, count(*) FILTER (WHERE same) AS same_top_10 FROM (
    SELECT (SELECT array_agg(item_id ORDER BY score DESC, item_id) FROM tfllmer.recommend('walker', u, exclude_seen => false))
         = (SELECT array_agg(item_id) FROM (
               SELECT t.item_id FROM tfllmer_items.items_2 t
               ORDER BY t.embedding <#> tfllmer.user_vector('walker', u)::vector, t.item_id LIMIT 10) x) AS same
    FROM generate_series(1, 80) u) s;
SELECT tfllmer.train('walker', 'walks', init => 'e',
       options => '{"epochs": 1, "batch_size": 16, "max_len": 12, "seed": 8}') AS job \gset
SELECT tfllmer.wait_job(:job);
SELECT version, is_current FROM tfllmer.item_indexes ORDER BY version;
SELECT count(*) AS tables_left FROM pg_tables WHERE schemaname = 'tfllmer_items';

-- An index exists once per version; options are checked.
SELECT * FROM tfllmer.create_item_index('walker');
SELECT * FROM tfllmer.create_item_index('walker', method => 'ivfflat');
SELECT * FROM tfllmer.create_item_index('walker', options => '{"m": 1}');
SELECT * FROM tfllmer.create_item_index('walker', options => '{"ef_construction": 8, "m": 16}');
SELECT * FROM tfllmer.create_item_index('walker', options => '{"lists": 100}');
SELECT * FROM tfllmer.create_item_index('walker', options => '{"maintenance_work_mem": "lots"}');
SELECT * FROM tfllmer.create_item_index('nobody');
SELECT * FROM tfllmer.create_item_index(NULL);
SELECT tfllmer.drop_item_index('nobody');

-- An index table dropped by hand is not an error: the exact path serves
-- that version until the index is built again.
SELECT format('tfllmer_items.%I', c.relname) AS current_table FROM tfllmer.item_index_store s
JOIN pg_class c ON c.oid = s.index_table WHERE s.version = 3 \gset
DROP TABLE :current_table;
SELECT count(*) AS recommended FROM tfllmer.recommend('walker', 1);

-- drop_item_index: the tables go, recommend() scores every item again
SELECT tfllmer.drop_item_index('walker');
SELECT tfllmer.drop_item_index('walker');
SELECT count(*) AS tables_left FROM pg_tables WHERE schemaname = 'tfllmer_items';
SELECT count(*) AS indexes_left FROM tfllmer.item_indexes;
SELECT count(*) AS recommended FROM tfllmer.recommend('walker', 1);

-- A model that does not normalise its items (normalize => false): the
-- index still serves recommend() by inner product; similar_items() compares
-- directions (cosine), which an inner-product index does not order, so it
-- scans the table. Both answer as the exact path.
SELECT tfllmer.train('raw', 'walks', backbone => 'gru4rec', "normalize" => false,
       options => '{"epochs": 2, "batch_size": 16, "max_len": 12}') AS job \gset
SELECT tfllmer.wait_job(:job);
CREATE TABLE raw_exact AS
SELECT u AS user_id,
       (SELECT array_agg(item_id ORDER BY score DESC, item_id) FROM tfllmer.recommend('raw', u, k => 5)) AS top,
       (SELECT array_agg(item_id ORDER BY score DESC, item_id) FROM tfllmer.similar_items('raw', 1 + u % 30, k => 5)) AS alike
FROM generate_series(1, 80) u;
SELECT version FROM tfllmer.create_item_index('raw');
SELECT count(*) FILTER (WHERE top = (SELECT array_agg(item_id ORDER BY score DESC, item_id) FROM tfllmer.recommend('raw', user_id, k => 5))) AS same_top,
       count(*) FILTER (WHERE alike = (SELECT array_agg(item_id ORDER BY score DESC, item_id) FROM tfllmer.similar_items('raw', 1 + user_id % 30, k => 5))) AS same_similar
FROM raw_exact;
SELECT tfllmer.drop_model('raw');
DROP TABLE raw_exact;

-- Rights: an index belongs to the role that made it. Another role sees
-- neither its catalog row nor its rows.
\i common/two_roles.sql
GRANT SELECT ON walks, items TO tfllmer_alice;
SET ROLE tfllmer_alice;
SELECT tfllmer.train('alices', 'walks', options => '{"epochs": 1, "batch_size": 16, "max_len": 12}') AS job \gset
SELECT tfllmer.wait_job(:job);
SELECT model_name, version FROM tfllmer.create_item_index('alices');
SELECT count(*) AS recommended FROM tfllmer.recommend('alices', 1);
RESET ROLE;
SELECT c.relname ~ '^items_[0-9]+$' AS named_by_job, pg_get_userbyid(c.relowner) AS owner
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'tfllmer_items' AND c.relkind = 'r';
SELECT format('tfllmer_items.%I', c.relname) AS alices_table
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'tfllmer_items' AND c.relkind = 'r' \gset
SET ROLE tfllmer_bob;
SELECT count(*) AS visible_indexes FROM tfllmer.item_indexes;
SELECT count(*) FROM :alices_table;
SELECT * FROM tfllmer.recommend('alices', 1);
SELECT tfllmer.drop_item_index('alices');
RESET ROLE;
-- A catalog row cannot point anyone at another relation: row-level
-- security takes rows only for the writer's own model versions, naming a
-- table of schema tfllmer_items the writer owns.
SET ROLE tfllmer_bob;
CREATE TEMP TABLE decoy (item_id bigint, embedding real[]);
INSERT INTO tfllmer.item_index_store (model_name, version, index_table, method, options, n_items, dim, build_ms)
VALUES ('alices', 1, 'decoy', 'hnsw', '{}', 1, 4, 0);
DROP TABLE decoy;
RESET ROLE;
-- A new version whose index cannot be built is stored all the same, served
-- by the exact path, and the job says why.
REVOKE CREATE ON SCHEMA tfllmer_items FROM PUBLIC;
SET ROLE tfllmer_alice;
SELECT tfllmer.train('alices', 'walks', options => '{"epochs": 1, "batch_size": 16, "max_len": 12}') AS job \gset
SELECT tfllmer.wait_job(:job);
SELECT state, model_version, detail LIKE '%no item index for this version%permission denied for schema tfllmer_items%' AS says_why
FROM tfllmer.jobs WHERE job_id = :job;
SELECT version, is_current FROM tfllmer.item_indexes;
SELECT count(*) AS recommended FROM tfllmer.recommend('alices', 1);
RESET ROLE;
GRANT CREATE ON SCHEMA tfllmer_items TO PUBLIC;
-- dropping the model drops its index table
SET ROLE tfllmer_alice;
SELECT tfllmer.drop_model('alices');
RESET ROLE;
SELECT count(*) AS tables_left FROM pg_tables WHERE schemaname = 'tfllmer_items';

-- Cold-start items through the index: add_items writes them into the
-- current version's index table as well, and the index serves them with the
-- exact path's answers; drop_items takes them out again.
SELECT n_items FROM tfllmer.create_item_index('walker');
CREATE TABLE new_items AS
SELECT i::bigint AS item_id, ARRAY(SELECT sin(i * j + j) + 0.3 * cos(i + 2 * j) FROM generate_series(1, 8) j)::real[] AS embedding
FROM generate_series(31, 35) i;
SELECT tfllmer.add_items('walker', 'new_items') AS added;
SELECT n_items FROM tfllmer.item_indexes WHERE model_name = 'walker' AND is_current;
SELECT index_table AS cold_table FROM tfllmer.item_indexes WHERE model_name = 'walker' AND is_current \gset
SELECT count(*) AS cold_rows_in_index FROM :cold_table WHERE item_id BETWEEN 31 AND 35;
CREATE TABLE cold_indexed AS
SELECT u AS user_id, array_agg(r.item_id ORDER BY r.score DESC, r.item_id) AS items,
       array_agg(r.score ORDER BY r.score DESC, r.item_id) AS scores
FROM generate_series(1, 80) u, tfllmer.recommend('walker', u, k => 23) r GROUP BY u;
CREATE TABLE cold_similar_indexed AS SELECT * FROM tfllmer.similar_items('walker', 33, k => 5);
SELECT tfllmer.drop_items('walker', ARRAY[35]) AS dropped;
SELECT count(*) AS gone_from_index FROM :cold_table WHERE item_id = 35;
SELECT n_items FROM tfllmer.item_indexes WHERE model_name = 'walker' AND is_current;
SELECT tfllmer.drop_item_index('walker');
SELECT tfllmer.add_items('walker', (SELECT 'new_items'::regclass), skip_known => true) AS added_back;
-- the exact path: every cold item in every list (23 = 35 items − 12 seen), the same scores
SELECT count(*) AS users, count(*) FILTER (WHERE i.items = e.items AND i.scores = e.scores) AS same_answers,
       bool_and(i.items @> ARRAY[31, 32, 33, 34, 35]::bigint[]) AS cold_items_served
FROM cold_indexed i JOIN (
    SELECT u AS user_id, array_agg(r.item_id ORDER BY r.score DESC, r.item_id) AS items,
           array_agg(r.score ORDER BY r.score DESC, r.item_id) AS scores
    FROM generate_series(1, 80) u, tfllmer.recommend('walker', u, k => 23) r GROUP BY u) e USING (user_id);
SELECT (SELECT array_agg(row(item_id, score)) FROM cold_similar_indexed)
     = (SELECT array_agg(row(item_id, score)) FROM tfllmer.similar_items('walker', 33, k => 5)) AS same_similar;
DROP TABLE new_items, cold_indexed, cold_similar_indexed;

DROP TABLE exact_top, exact_rules, exact_similar, exact_vectors, walks, items;
SELECT tfllmer.drop_model('walker');
SET client_min_messages = warning;
DROP EXTENSION tfllmer CASCADE;
DROP EXTENSION vector;
RESET client_min_messages;
DROP ROLE tfllmer_alice, tfllmer_bob;
