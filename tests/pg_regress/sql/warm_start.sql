-- Warm starts: train(..., options => '{"warm_start": true}') continues the
-- model's newest version on its table as it is now: the same weights, new
-- users as they come, new items through their cold rows or the init
-- embedding; a new version results, as for every job.
\i common/fresh_install.sql

\set walk_users 80
\set walk_steps 12
\i common/walks.sql
CREATE INDEX ON walks (user_id, ts, item_id);
CREATE TABLE item_texts AS
SELECT i::bigint AS item_id,
       ARRAY[cos(2 * pi() * i / 40), sin(2 * pi() * i / 40), cos(4 * pi() * i / 40), sin(4 * pi() * i / 40),
             0.1 * sin(i * 1.7), 0.1 * cos(i * 2.3), 0.1 * sin(i * 3.1), 0.1 * cos(i * 0.7)]::real[] AS embedding
FROM generate_series(1, 40) i;
SELECT output_dim FROM tfllmer.rec_pca('walk_texts', 'item_texts', dim => 4);
SELECT tfllmer.train('walker', 'walks', init => 'walk_texts',
       options => '{"epochs": 8, "batch_size": 16, "max_len": 12, "learning_rate": 0.01, "patience": 100}') AS job \gset
SELECT tfllmer.wait_job(:job);
CREATE TABLE v1 AS
SELECT u AS user_id, r.* FROM generate_series(1, 80) u, tfllmer.recommend('walker', u, k => 5) r;

-- nothing changed and no epoch run: the new version answers exactly as the
-- one it continued (the same rows, the same encoder)
SELECT tfllmer.train('walker', 'walks', init => 'walk_texts',
       options => '{"warm_start": true, "epochs": 0}') AS job \gset
SELECT tfllmer.wait_job(:job);
SELECT substring(detail FROM 'warm start from version [^;]*') AS warm FROM tfllmer.jobs WHERE job_id = :job;
SELECT version, n_items, epochs, best_epoch FROM tfllmer.models WHERE model_name = 'walker' ORDER BY version;
-- it kept the version's options (max_len 12, batch 16, ...) except what was given
SELECT options->>'max_len' AS max_len, options->>'batch_size' AS batch_size, options->>'epochs' AS epochs
FROM tfllmer.models WHERE model_name = 'walker' AND version = 2;
SELECT count(*) AS rows, count(*) FILTER (WHERE a.score = b.score) AS same
FROM v1 b JOIN (SELECT u AS user_id, r.* FROM generate_series(1, 80) u, tfllmer.recommend('walker', u, k => 5) r) a
  USING (user_id, item_id);

-- items that arrive: 31..33 added as cold items today, interactions with
-- them (and with item 34, never added) tomorrow, new users too
CREATE TABLE arrivals AS SELECT * FROM item_texts WHERE item_id BETWEEN 31 AND 33;
SELECT tfllmer.add_items('walker', 'arrivals') AS added;
INSERT INTO walks SELECT u, 31 + (u % 4), 12 FROM generate_series(1, 80) u;
INSERT INTO walks SELECT 100 + u, 1 + (u + k) % 30, k FROM generate_series(1, 5) u, generate_series(0, 5) k;
SELECT tfllmer.train('walker', 'walks', init => 'walk_texts',
       options => '{"warm_start": true, "epochs": 2}') AS job \gset
SELECT tfllmer.wait_job(:job);
-- 30 trained + 3 cold items keep their rows; item 34 comes from the init
-- embedding through the map (the same projection)
SELECT substring(detail FROM 'warm start from version [^;]*') AS warm FROM tfllmer.jobs WHERE job_id = :job;
SELECT version, n_items, n_users, n_cold_items FROM tfllmer.models WHERE model_name = 'walker' ORDER BY version;
SELECT count(*) AS new_user_answers FROM tfllmer.recommend('walker', 103, k => 5);

-- cold items of the continued version that still have no interactions
-- stay cold items of the new one
SELECT tfllmer.add_items('walker', (SELECT 'item_texts'::regclass), skip_known => true) AS added;
SELECT n_cold_items FROM tfllmer.models WHERE model_name = 'walker' AND is_current;
SELECT tfllmer.train('walker', 'walks', init => 'walk_texts',
       options => '{"warm_start": true, "epochs": 1}') AS job \gset
SELECT tfllmer.wait_job(:job);
SELECT version, n_items, n_cold_items FROM tfllmer.models WHERE model_name = 'walker' AND is_current;
SELECT detail ~ '6 cold item\(s\) carried over from the previous version' AS carried FROM tfllmer.jobs WHERE job_id = :job;

-- errors: nothing to continue, another kind of model, other layers
SELECT tfllmer.train('nobody', 'walks', options => '{"warm_start": true}');
SELECT tfllmer.train('walker', 'walks', backbone => 'gru4rec', options => '{"warm_start": true}');
SELECT tfllmer.train('walker', 'walks', "normalize" => false, options => '{"warm_start": true}');
SELECT tfllmer.train('walker', 'walks', options => '{"warm_start": true, "max_len": 20}');
SELECT tfllmer.train('walker', 'walks', options => '{"warm_start": true, "layers": 1}');
SELECT tfllmer.train('walker', 'walks', options => '{"warm_start": "yes"}');
SELECT tfllmer.train('walker', 'walks', options => '{"epochs": 0}');
SELECT count(*) AS versions FROM tfllmer.models WHERE model_name = 'walker';

-- prune_model keeps the newest versions (and their cold items)
SELECT tfllmer.prune_model('walker', keep => 2) AS pruned;
SELECT array_agg(version ORDER BY version) AS versions FROM tfllmer.models WHERE model_name = 'walker';
SELECT DISTINCT version FROM tfllmer.cold_items WHERE model_name = 'walker' ORDER BY 1;
SELECT count(*) AS still_answers FROM tfllmer.recommend('walker', 7, k => 5);
SELECT tfllmer.prune_model('walker') AS nothing_more;
SELECT tfllmer.prune_model('walker', keep => 0);
SELECT tfllmer.prune_model('nobody');

SELECT tfllmer.drop_model('walker');
DROP TABLE walks, item_texts, v1, arrivals;
