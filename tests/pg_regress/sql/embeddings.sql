-- Rec-PCA: reduce LLM item embeddings to the recommender's dimension while
-- pulling together items that users consume together.
-- (each file starts from a fresh install)
\i common/fresh_install.sql

-- Eight items with 4-d "LLM" embeddings: items 1-4 point one way (one
-- genre), 5-8 another, and the lengths differ a lot (the norm disparity of
-- real LLM vectors).
CREATE TABLE movies (item_id int PRIMARY KEY, embedding real[]);
INSERT INTO movies VALUES
    (1, '{3.0, 0.2, 0.1, 0.0}'), (2, '{0.5, 0.1, 0.0, 0.1}'), (3, '{9.0, 1.0, -0.5, 0.2}'), (4, '{1.0, -0.2, 0.3, 0.0}'),
    (5, '{0.1, 2.0, 0.0, 0.4}'), (6, '{-0.2, 0.3, 0.1, 0.0}'), (7, '{0.0, 7.0, 1.0, -1.0}'), (8, '{0.3, 1.0, 0.2, 0.3}');
-- ... but users watch across genres: 1 with 5, 2 with 6, 3 with 7, 4 with 8.
CREATE TABLE watches (user_id int, item_id int, ts int);
INSERT INTO watches SELECT u, CASE WHEN k % 2 = 0 THEN 1 + u % 4 ELSE 5 + u % 4 END, k
FROM generate_series(1, 40) u, generate_series(1, 6) k;
SELECT graph_name, n_items, n_edges FROM tfllmer.build_graph('watch_graph', 'watches', holdout => 0);

-- Rec-PCA to 2 dimensions over that graph. retained_variance is the share
-- of the (normalised, centred) embeddings' variance kept; graph_tv is the
-- total variation of the result over the graph (lower: items watched
-- together are closer), graph_tv_pca the same for plain PCA.
SELECT embedding_name, n_items, input_dim, output_dim,
       round(retained_variance::numeric, 4) AS retained_variance,
       round(graph_tv_pca::numeric, 4) AS graph_tv_pca, round(graph_tv::numeric, 4) AS graph_tv
FROM tfllmer.rec_pca('movies_2d', 'movies', graph_name => 'watch_graph', dim => 2, lambda => 0.9);

-- The reduced vectors have unit length, listed by item id.
SELECT item_id, array_length(embedding, 1) AS dim,
       round(sqrt((SELECT sum(v * v) FROM unnest(embedding) v))::numeric, 5) AS norm
FROM tfllmer.embedding('movies_2d');

-- graph_name => NULL (the default) is plain PCA: no graph figures.
SELECT embedding_name, round(retained_variance::numeric, 4) AS retained_variance, graph_tv_pca, graph_tv
FROM tfllmer.rec_pca('movies_pca', 'movies', dim => 2);
-- lambda => 0 with a graph is plain PCA too, and reports both figures equal.
SELECT graph_tv = graph_tv_pca AS same_as_pca
FROM tfllmer.rec_pca('movies_l0', 'movies', graph_name => 'watch_graph', dim => 2, lambda => 0);
-- the same input always gives the same output
SELECT (SELECT array_agg(embedding ORDER BY item_id) FROM tfllmer.embedding('movies_pca'))
     = (SELECT array_agg(embedding ORDER BY item_id) FROM tfllmer.embedding('movies_l0')) AS identical;

-- method => 'randomized' never holds the embeddings whole nor forms a
-- D x D product over all rows: it reads the table in passes (a randomized
-- block Krylov method). 'auto' (the default) picks 'exact' while the exact
-- method's memory, 4*N*D + 32*D^2 bytes, stays under 1 GB. Both give the same
-- figures (here to 4 decimals), and tfllmer.embeddings says which ran.
SELECT embedding_name, round(retained_variance::numeric, 4) AS retained_variance,
       round(graph_tv_pca::numeric, 4) AS graph_tv_pca, round(graph_tv::numeric, 4) AS graph_tv
FROM tfllmer.rec_pca('movies_2d_fast', 'movies', graph_name => 'watch_graph', dim => 2, lambda => 0.9,
                     method => 'randomized');
SELECT bool_and(abs(a.v - b.v) < 1e-4) AS same_vectors
FROM (SELECT item_id, unnest(embedding) v, generate_subscripts(embedding, 1) k FROM tfllmer.embedding('movies_2d')) a
JOIN (SELECT item_id, unnest(embedding) v, generate_subscripts(embedding, 1) k FROM tfllmer.embedding('movies_2d_fast')) b
  USING (item_id, k);
SELECT embedding_name, method FROM tfllmer.embeddings WHERE embedding_name LIKE 'movies_2d%' ORDER BY 1;
SELECT tfllmer.drop_embedding('movies_2d_fast');

-- A double precision[] column works the same.
CREATE TABLE movies8 AS SELECT item_id AS id, embedding::float8[] AS vec FROM movies;
SELECT n_items, input_dim, round(retained_variance::numeric, 4) AS retained_variance
FROM tfllmer.rec_pca('movies8_2d', 'movies8', id_column => 'id', embedding_column => 'vec', dim => 2);

-- So does any type with a cast to real[]: a domain over real[], or a type
-- of your own with a CREATE CAST. pgvector's vector has such a cast, so
--   SELECT * FROM tfllmer.rec_pca('e', 'items', embedding_column => 'embedding_vector');
-- works on a vector column as it is.
CREATE DOMAIN unit_vector AS real[] CHECK (cardinality(VALUE) > 0);
CREATE TABLE movies_domain AS SELECT item_id, embedding::unit_vector AS embedding FROM movies;
SELECT n_items, round(retained_variance::numeric, 4) AS retained_variance
FROM tfllmer.rec_pca('movies_domain_2d', 'movies_domain', dim => 2);
CREATE TYPE quad AS (a real, b real, c real, d real);
CREATE FUNCTION quad_to_real_array(quad) RETURNS real[] LANGUAGE sql IMMUTABLE
    AS $$ SELECT ARRAY[$1.a, $1.b, $1.c, $1.d] $$;
CREATE CAST (quad AS real[]) WITH FUNCTION quad_to_real_array(quad);
CREATE TABLE movies_quad AS
    SELECT item_id, ROW(embedding[1], embedding[2], embedding[3], embedding[4])::quad AS embedding FROM movies;
SELECT n_items, round(retained_variance::numeric, 4) AS retained_variance
FROM tfllmer.rec_pca('movies_quad_2d', 'movies_quad', dim => 2);

-- Items missing from the graph still get an embedding; graph items without
-- an embedding are left out, with a NOTICE.
INSERT INTO movies VALUES (9, '{1.0, 1.0, 1.0, 1.0}');
DELETE FROM movies WHERE item_id = 8;
SELECT n_items FROM tfllmer.rec_pca('movies_partial', 'movies', graph_name => 'watch_graph', dim => 2);

-- Embeddings are listed in tfllmer.embeddings.
SELECT embedding_name, owner, source_table, graph_name, lambda, n_items, input_dim, output_dim, size_bytes
FROM tfllmer.embeddings ORDER BY embedding_name;

-- replace => true recomputes in place; drop_embedding removes one.
SELECT output_dim FROM tfllmer.rec_pca('movies_2d', 'movies', dim => 3, replace => true);
SELECT tfllmer.drop_embedding('movies_l0');
SELECT tfllmer.drop_embedding('movies_l0', if_exists => true);
SELECT count(*) FROM tfllmer.embeddings;
