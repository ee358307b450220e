-- Business rules and vectors. recommend(), recommend_next() and
-- similar_items() take candidates (only these items) and exclude (never
-- these), beside exclude_seen; user_vector(), history_vector() and
-- item_vectors() return what recommend() scores with, so that SQL (and
-- pgvector, where installed) can compute the same scores. (fresh install)
\i common/fresh_install.sql
\set walk_users 80
\set walk_steps 12
\i common/walks.sql
CREATE INDEX ON walks (user_id, ts, item_id);
SELECT tfllmer.train('walker', 'walks',
       options => '{"epochs": 6, "batch_size": 16, "max_len": 12, "dim": 16, "learning_rate": 0.01}') AS job \gset
SELECT tfllmer.wait_job(:job);

-- user 5 walked items 6 to 17. The full ranking of every item, for reference:
CREATE TEMP TABLE full_ranking AS
SELECT item_id, score, ordinality AS rank
FROM tfllmer.recommend('walker', 5, k => 1000, exclude_seen => false) WITH ORDINALITY;

-- candidates: only these items, in the order and with the scores of the
-- full ranking; items the user has seen (6, 7) still left out; a candidate
-- named twice counts once
CREATE TEMP TABLE ruled AS
SELECT item_id, score, ordinality AS rank
FROM tfllmer.recommend('walker', 5, k => 4, candidates => ARRAY[20, 3, 7, 25, 28, 1, 6, 2, 20]) WITH ORDINALITY;
SELECT (SELECT count(*) FROM ruled) AS n,
       (SELECT array_agg(item_id ORDER BY rank) FROM ruled)
     = (SELECT array_agg(item_id ORDER BY rank) FROM (
          SELECT * FROM full_ranking WHERE item_id IN (20, 3, 25, 28, 1, 2) ORDER BY rank LIMIT 4) f) AS same_order,
       (SELECT bool_and(r.score = f.score) FROM ruled r JOIN full_ranking f USING (item_id)) AS same_scores;
-- k rows whenever k items are eligible, fewer only when fewer are
SELECT count(*) AS six_eligible
FROM tfllmer.recommend('walker', 5, k => 10, candidates => ARRAY[20, 3, 7, 25, 28, 1, 6, 2]);
SELECT count(*) AS with_seen
FROM tfllmer.recommend('walker', 5, k => 10, exclude_seen => false, candidates => ARRAY[20, 3, 7, 25, 28, 1, 6, 2]);
SELECT count(*) AS only_seen FROM tfllmer.recommend('walker', 5, candidates => ARRAY[6, 7, 8]);
SELECT count(*) AS no_candidates FROM tfllmer.recommend('walker', 5, candidates => ARRAY[]::bigint[]);

-- exclude: never these; the next best take their places
SELECT (SELECT array_agg(item_id ORDER BY ordinality)
          FROM tfllmer.recommend('walker', 5, k => 5,
                                 exclude => (SELECT array_agg(item_id) FROM tfllmer.recommend('walker', 5, k => 2)))
               WITH ORDINALITY)
     = (SELECT array_agg(item_id ORDER BY ordinality)
          FROM tfllmer.recommend('walker', 5, k => 7) WITH ORDINALITY WHERE ordinality > 2) AS next_best_move_up;
SELECT count(*) AS all_unseen_but_two
FROM tfllmer.recommend('walker', 5, k => 1000, exclude => ARRAY[1, 2]);
-- both: the candidates that are not excluded
SELECT array_agg(item_id ORDER BY item_id) AS eligible
FROM tfllmer.recommend('walker', 5, k => 10, candidates => ARRAY[1, 2, 3, 20], exclude => ARRAY[2, 30]);

-- recommend_next() with the user's history follows the same rules
SELECT (SELECT array_agg(row(item_id, score)) FROM tfllmer.recommend('walker', 5,
          candidates => ARRAY[1, 2, 3, 20, 21, 22], exclude => ARRAY[21]))
     = (SELECT array_agg(row(item_id, score)) FROM tfllmer.recommend_next('walker',
          (SELECT array_agg(item_id ORDER BY ts) FROM walks WHERE user_id = 5),
          candidates => ARRAY[1, 2, 3, 20, 21, 22], exclude => ARRAY[21])) AS same_as_recommend;

-- similar_items(): candidates in the order of the full ranking, the item
-- itself never among them
SELECT (SELECT array_agg(item_id ORDER BY ordinality)
          FROM tfllmer.similar_items('walker', 10, k => 3, candidates => ARRAY[10, 11, 25, 9, 3]) WITH ORDINALITY)
     = (SELECT array_agg(item_id ORDER BY ordinality) FROM (
          SELECT item_id, ordinality FROM tfllmer.similar_items('walker', 10, k => 100) WITH ORDINALITY
           WHERE item_id IN (11, 25, 9, 3) ORDER BY ordinality LIMIT 3) s) AS similar_among_candidates;
SELECT count(*) AS others_but_two FROM tfllmer.similar_items('walker', 10, k => 100, exclude => ARRAY[11, 9]);

-- the vectors: recommend()'s score of an item is the inner product of the
-- user's query vector and the item's vector
SELECT array_length(tfllmer.user_vector('walker', 5), 1) AS dim;
SELECT count(*) AS items, count(DISTINCT item_id) AS distinct_items,
       bool_and(array_length(embedding, 1) = 16) AS all_of_dim,
       bool_and(abs(sqrt((SELECT sum(x * x) FROM unnest(embedding) x)) - 1) < 1e-5) AS unit_length
FROM tfllmer.item_vectors('walker');
WITH dots AS (
    SELECT v.item_id, (SELECT sum(a::float8 * b) FROM unnest(tfllmer.user_vector('walker', 5), v.embedding) t(a, b)) AS dot
    FROM tfllmer.item_vectors('walker') v)
SELECT count(*) AS scored, max(abs(d.dot - f.score)) < 1e-4 AS same_scores
FROM full_ranking f JOIN dots d USING (item_id);
-- history_vector() of the user's history is their user_vector()
SELECT tfllmer.history_vector('walker', (SELECT array_agg(item_id ORDER BY ts) FROM walks WHERE user_id = 5))
     = tfllmer.user_vector('walker', 5) AS same_vector;
-- nothing to compute from: NULL
SELECT tfllmer.user_vector('walker', 999) IS NULL AS unknown_user,
       tfllmer.history_vector('walker', ARRAY[1000, -1]) IS NULL AS unknown_items,
       tfllmer.history_vector('walker', ARRAY[]::bigint[]) IS NULL AS empty_history;

-- bad rules and arguments: ERRORs that name them
SELECT * FROM tfllmer.recommend('walker', 5, candidates => ARRAY[1, NULL]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.recommend('walker', 5, candidates => ARRAY[1, 31]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.recommend_next('walker', ARRAY[6], exclude => ARRAY[NULL]::bigint[]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.similar_items('walker', 10, exclude => ARRAY[-4]);
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.user_vector('walker', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.history_vector('walker', ARRAY[6, NULL]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.item_vectors('no_such_model');
\echo :LAST_ERROR_SQLSTATE

DROP TABLE walks;
