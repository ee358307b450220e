-- Cold-start items: items with an LLM embedding and no interactions are
-- mapped into a trained model's item space (add_items, or the train option
-- cold_items) and served beside the trained items without retraining.
\i common/fresh_install.sql

\set walk_users 80
\set walk_steps 12
\i common/walks.sql

-- "LLM embeddings" of 40 items (16 values each): items 1..30 lie on a
-- circle in walking order (item i next to i - 1 and i + 1), plus a little
-- noise. Items 31..40 have no interactions yet: item 30 + j is a near twin
-- of item 3j (its description says almost the same thing).
CREATE FUNCTION item_text(i int) RETURNS real[] LANGUAGE sql IMMUTABLE AS $$
    SELECT array_agg(v ORDER BY k)::real[] FROM (
        SELECT k, CASE WHEN k <= 8 THEN (CASE WHEN k % 2 = 0 THEN cos(((k + 1) / 2) * 2 * pi() * i / 30)
                                                               ELSE sin(((k + 1) / 2) * 2 * pi() * i / 30) END)
                       ELSE 0.1 * sin(i * 13.7 + k * 7.1) END AS v
        FROM generate_series(1, 16) k) t $$;
CREATE TABLE item_texts AS
SELECT i::bigint AS item_id, item_text(i) AS embedding FROM generate_series(1, 30) i;
CREATE TABLE new_items AS
SELECT (30 + j)::bigint AS item_id,
       (SELECT array_agg(v + 0.01 * cos(j * k) ORDER BY k)::real[]
          FROM unnest(item_text(3 * j)) WITH ORDINALITY AS u(v, k)) AS embedding
FROM generate_series(1, 10) j;

SELECT output_dim FROM tfllmer.rec_pca('walk_texts', 'item_texts', dim => 8);
SELECT tfllmer.train('walker', 'walks', init => 'walk_texts',
       options => '{"epochs": 12, "batch_size": 16, "max_len": 12, "learning_rate": 0.01, "patience": 100}') AS job \gset
SELECT tfllmer.wait_job(:job);
-- training fitted the map from init rows to trained rows and said how well
SELECT detail ~ 'cold-item map fitted on 30 items' AS map_fitted FROM tfllmer.jobs WHERE job_id = :job;
SELECT n_items, n_cold_items, takes_cold_items FROM tfllmer.models WHERE model_name = 'walker';

-- the answers before any item is added
CREATE TABLE before AS
SELECT r.* FROM tfllmer.recommend_next('walker', ARRAY[4, 5, 6], k => 30, exclude_seen => false) r;

-- add_items: 10 new items, served at once
SELECT tfllmer.add_items('walker', 'new_items') AS added;
SELECT n_items, n_cold_items FROM tfllmer.models WHERE model_name = 'walker';
SELECT count(*) AS cold_items, bool_and(is_current) AS current FROM tfllmer.cold_items WHERE model_name = 'walker';
-- the trained items' scores do not change
SELECT count(*) AS trained_items_unchanged
FROM before b JOIN tfllmer.recommend_next('walker', ARRAY[4, 5, 6], k => 40, exclude_seen => false) a USING (item_id)
WHERE a.score = b.score;
-- a cold item is recommended like the items it resembles: the twin of item
-- 9 (item 33) is near item 9 in the model's space
SELECT 9 IN (SELECT item_id FROM tfllmer.similar_items('walker', 33, k => 3)) AS twin_is_similar;
SELECT 33 IN (SELECT item_id FROM tfllmer.similar_items('walker', 9, k => 3)) AS similar_to_twin;
-- every function takes cold items: as candidates, in histories, in rules
SELECT count(*) AS all_forty FROM tfllmer.recommend_next('walker', ARRAY[1], k => 100, exclude_seen => false);
SELECT count(*) AS cold_candidates FROM tfllmer.recommend('walker', 5, candidates => ARRAY[31, 32, 33]);
SELECT count(*) > 0 AS cold_history FROM tfllmer.recommend_next('walker', ARRAY[33, 34]);
SELECT bool_and(item_id NOT IN (33, 34)) AS cold_seen_left_out FROM tfllmer.recommend_next('walker', ARRAY[33, 34], k => 38);
SELECT count(*) AS cold_excluded FROM tfllmer.recommend_next('walker', ARRAY[1], k => 100, exclude => ARRAY[31, 32]);
SELECT (SELECT count(*) FROM tfllmer.item_vectors('walker')) AS item_vectors,
       cardinality(tfllmer.history_vector('walker', ARRAY[33])) AS history_vector_dim;

-- adding the same items again is an error naming the item, or skipped
SELECT tfllmer.add_items('walker', 'new_items');
SELECT tfllmer.add_items('walker', 'item_texts');
SELECT tfllmer.add_items('walker', 'new_items', skip_known => true) AS added_again;
-- bad input: nothing is added
CREATE TABLE bad_items (item_id bigint, embedding real[]);
INSERT INTO bad_items VALUES (50, item_text(1)), (51, NULL);
SELECT tfllmer.add_items('walker', 'bad_items');
UPDATE bad_items SET embedding = ARRAY[1, 2, 3]::real[] WHERE item_id = 51;
SELECT tfllmer.add_items('walker', 'bad_items');
UPDATE bad_items SET embedding = (item_text(2))[1:15] || 'NaN'::real WHERE item_id = 51;
SELECT tfllmer.add_items('walker', 'bad_items');
INSERT INTO bad_items VALUES (50, item_text(3));
DELETE FROM bad_items WHERE item_id = 51;
SELECT tfllmer.add_items('walker', 'bad_items');
CREATE TABLE narrow_items AS SELECT 60::bigint AS item_id, ARRAY[1, 2, 3]::real[] AS embedding;
SELECT tfllmer.add_items('walker', 'narrow_items');
SELECT tfllmer.add_items('no_such_model', 'new_items');
SELECT tfllmer.add_items('walker', NULL);
SELECT tfllmer.add_items('walker', 'new_items', embedding_column => 'no_column');
SELECT n_cold_items FROM tfllmer.models WHERE model_name = 'walker';
SELECT tfllmer.add_items('walker', (SELECT 'bad_items'::regclass WHERE false));
-- an empty table adds nothing
TRUNCATE bad_items;
SELECT tfllmer.add_items('walker', 'bad_items') AS added_none;

-- drop_items: cold items only
SELECT tfllmer.drop_items('walker', ARRAY[31, 32, 99]) AS dropped;
SELECT n_cold_items FROM tfllmer.models WHERE model_name = 'walker';
SELECT count(*) AS gone FROM tfllmer.recommend_next('walker', ARRAY[1], k => 100, exclude_seen => false)
WHERE item_id IN (31, 32);
-- within one transaction each change counts from the next statement
BEGIN;
SELECT count(*) AS before_drop FROM tfllmer.recommend_next('walker', ARRAY[1], k => 100, exclude_seen => false);
SELECT tfllmer.drop_items('walker', ARRAY[33]) AS dropped;
SELECT count(*) AS after_drop FROM tfllmer.recommend_next('walker', ARRAY[1], k => 100, exclude_seen => false);
SELECT tfllmer.add_items('walker', 'new_items', skip_known => true) AS added_back;
SELECT count(*) AS after_adding_back FROM tfllmer.recommend_next('walker', ARRAY[1], k => 100, exclude_seen => false);
ROLLBACK;
SELECT tfllmer.drop_items('walker', ARRAY[5]);
SELECT tfllmer.drop_items('walker', ARRAY[33, NULL]);
SELECT tfllmer.drop_items('walker', NULL);

-- a model without an init embedding has no map for new items
SELECT tfllmer.train('random_walker', 'walks',
       options => '{"epochs": 1, "batch_size": 16, "max_len": 12, "dim": 8}') AS job \gset
SELECT tfllmer.wait_job(:job);
SELECT takes_cold_items FROM tfllmer.models WHERE model_name = 'random_walker';
SELECT tfllmer.add_items('random_walker', 'new_items');

-- option cold_items: every item of the init embedding without interactions
-- is a cold item of the new version
INSERT INTO item_texts SELECT * FROM new_items;
SELECT output_dim FROM tfllmer.rec_pca('walk_texts', 'item_texts', dim => 8, replace => true);
SELECT tfllmer.train('walker', 'walks', init => 'walk_texts',
       options => '{"epochs": 2, "batch_size": 16, "max_len": 12, "cold_items": true}') AS job \gset
SELECT tfllmer.wait_job(:job);
SELECT version, n_items, n_cold_items FROM tfllmer.models WHERE model_name = 'walker' ORDER BY version;
SELECT detail ~ '10 cold item\(s\): embedded items without interactions' AS said FROM tfllmer.jobs WHERE job_id = :job;
SELECT count(*) AS cold_rows, bool_and(is_current) FILTER (WHERE version = 2) AS current
FROM tfllmer.cold_items WHERE model_name = 'walker' GROUP BY version ORDER BY version;
-- cold_items without an init embedding is refused
SELECT tfllmer.train('random_walker', 'walks', options => '{"epochs": 1, "cold_items": true}');
-- dropping the model drops its cold items
SELECT tfllmer.drop_model('walker');
SELECT count(*) AS left_behind FROM tfllmer.cold_item_store;

-- evaluate(items => 'cold'): hold a seeded fifth of the items out of
-- training entirely (tfllmer.cold_holdout says which; the graph would be
-- built without them the same way), serve them as cold items, and rank the
-- test events whose target is one of them
SELECT count(*) AS held_out, array_agg(i ORDER BY i) AS items
FROM generate_series(1, 30) i WHERE tfllmer.cold_holdout(i, 0.2, 7);
SELECT tfllmer.train('holdout', 'walks', init => 'walk_texts',
       options => '{"epochs": 12, "batch_size": 16, "max_len": 12, "learning_rate": 0.01, "patience": 100,
                    "cold_holdout": 0.2, "seed": 7}') AS job \gset
SELECT tfllmer.wait_job(:job);
SELECT substring(detail FROM 'held out [^;]*') AS held FROM tfllmer.jobs WHERE job_id = :job;
-- trained on the other items; every embedded item without training
-- interactions (the held-out ones and 31..40) is cold
SELECT n_items, n_cold_items FROM tfllmer.models WHERE model_name = 'holdout';
SELECT n_cold_items AS n_cold FROM tfllmer.models WHERE model_name = 'holdout' \gset
-- n_users: the users whose last item is held out, for the model and the
-- three baselines alike
SELECT count(*) AS users_with_a_cold_last_item
FROM (SELECT DISTINCT ON (user_id) item_id FROM walks ORDER BY user_id, ts DESC, item_id DESC) last
WHERE tfllmer.cold_holdout(item_id, 0.2, 7);
-- two rankings of those events: 'test' over every item, 'test_cold_only'
-- over the cold items only (where the baselines compare)
SELECT split, method, n_users, hr BETWEEN 0 AND 1 AS hr_in_range, ndcg <= hr AS ndcg_at_most_hr
FROM tfllmer.evaluate('holdout', items => 'cold');
-- hand-computable: over every item, popularity ranks each cold target
-- behind the trained items (HR@10 = 0); with k = the number of cold items,
-- every ranking among the cold items finds every target; with k = every
-- item, every ranking does
SELECT split, method, hr FROM tfllmer.evaluate('holdout', k => 10, items => 'cold')
WHERE method = 'popularity' AND split = 'test';
SELECT bool_and(hr = 1) AS all_found_among_cold
FROM tfllmer.evaluate('holdout', k => :n_cold, items => 'cold') WHERE split = 'test_cold_only';
SELECT bool_and(hr = 1) AS all_found FROM tfllmer.evaluate('holdout', k => 40, items => 'cold');
-- the same call gives the same figures
SELECT (SELECT array_agg(row(method, hr, ndcg)) FROM tfllmer.evaluate('holdout', items => 'cold'))
     = (SELECT array_agg(row(method, hr, ndcg)) FROM tfllmer.evaluate('holdout', items => 'cold')) AS repeatable;
-- items => 'all' ranks the model alone, over the trained and cold items;
-- 'warm' the events whose target is a trained item: together they are all
SELECT split, method, n_users FROM tfllmer.evaluate('holdout');
SELECT split, method, n_users FROM tfllmer.evaluate('holdout', items => 'warm');
-- errors
SELECT * FROM tfllmer.evaluate('holdout', items => 'hot');
SELECT * FROM tfllmer.evaluate('random_walker', items => 'cold');
SELECT tfllmer.cold_holdout(1, 1.5, 7);
SELECT tfllmer.cold_holdout(1, 0.1, -1);
SELECT tfllmer.train('holdout', 'walks', init => 'walk_texts', options => '{"cold_holdout": 0.2, "cold_items": false}');
SELECT tfllmer.drop_model('holdout');
DROP TABLE walks, item_texts, new_items, before, bad_items, narrow_items;
DROP FUNCTION item_text(int);
