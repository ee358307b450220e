-- The whole pipeline on a small generated data set, as the connected role
-- (upgrade.sh, backup_restore.sh): interactions, item embeddings, a graph,
-- Rec-PCA, and a trained model 'walker'.
CREATE TABLE walks AS
SELECT u AS user_id, 1 + (u * 7 + k) % 30 AS item_id, k AS ts
FROM generate_series(1, 80) u, generate_series(0, 11) k;
CREATE INDEX ON walks (user_id, ts, item_id);
CREATE TABLE items AS
SELECT i AS item_id, ARRAY[sin(i), cos(i), sin(2 * i), cos(3 * i), i / 30.0]::real[] AS embedding
FROM generate_series(1, 30) i;
SELECT graph_name FROM tfllmer.build_graph('walk_graph', 'walks', window_size => 1);
SELECT embedding_name FROM tfllmer.rec_pca('items_4d', 'items', graph_name => 'walk_graph', dim => 4, lambda => 0.5);
SELECT tfllmer.train('walker', 'walks', init => 'items_4d',
       options => '{"epochs": 3, "max_len": 12, "learning_rate": 0.01}') AS job \gset
SELECT tfllmer.wait_job(:job);
