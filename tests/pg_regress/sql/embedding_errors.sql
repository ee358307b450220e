-- Bad input to the embedding functions: every case is an ERROR with a
-- SQLSTATE that fits, a message naming the argument, and nothing stored.
-- (each file starts from a fresh install)
\i common/fresh_install.sql
CREATE TABLE items (item_id int, embedding real[], title text, score int, big float8[]);
INSERT INTO items VALUES (1, '{1, 0, 0}', 'a', 1, '{1, 0, 0}'), (2, '{0, 1, 0}', 'b', 2, '{0, 1, 0}'), (3, '{0, 0, 1}', 'c', 3, '{0, 0, 1}');
CREATE TABLE no_items (item_id int, embedding real[]);
-- bad_items(rows) refills table "bad" with the given rows
CREATE TABLE bad (item_id int, embedding real[]);
CREATE PROCEDURE bad_items(rows text) LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE bad;
    EXECUTE 'INSERT INTO bad VALUES ' || rows;
END $$;

-- the table and its columns
SELECT * FROM tfllmer.rec_pca('e', 'no_such_table');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.rec_pca('e', 'no_items');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.rec_pca('e', 'items', embedding_column => 'vec');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.rec_pca('e', 'items', embedding_column => 'score');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.rec_pca('e', 'items', id_column => 'title');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.rec_pca('e', NULL);
\echo :LAST_ERROR_SQLSTATE

-- parameters
SELECT * FROM tfllmer.rec_pca('e', 'items', dim => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.rec_pca('e', 'items', dim => 4);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.rec_pca('e', 'items', dim => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.rec_pca('e', 'items', dim => 2, lambda => -0.1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.rec_pca('e', 'items', dim => 2, lambda => 1.5);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.rec_pca('e', 'items', dim => 2, lambda => 'NaN');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.rec_pca('e', 'items', dim => 2, graph_name => 'no_such_graph');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.rec_pca('', 'items', dim => 2);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.rec_pca(NULL, 'items', dim => 2);
\echo :LAST_ERROR_SQLSTATE

-- dim may be as large as the directions the embeddings vary in once scaled
-- to unit length and centred: three items span at most two
SELECT n_items FROM tfllmer.rec_pca('e_big', 'items', embedding_column => 'big', dim => 2);
SELECT tfllmer.drop_embedding('e_big');
SELECT n_items FROM tfllmer.rec_pca('e_big', 'items', embedding_column => 'big', dim => 3);
\echo :LAST_ERROR_SQLSTATE
-- vectors that all point the same way are identical once scaled: nothing
-- varies, and rec_pca says so instead of returning zero vectors
CALL bad_items($$(1, '{1,0}'), (2, '{2,0}'), (3, '{5,0}')$$);
SELECT * FROM tfllmer.rec_pca('e', 'bad', dim => 1);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS stored FROM tfllmer.embeddings WHERE embedding_name = 'e';
-- but not larger than the number of items (2 here)
CALL bad_items($$(1, '{1,2,3,4}'), (2, '{4,3,2,1}')$$);
SELECT * FROM tfllmer.rec_pca('e', 'bad', dim => 3);
\echo :LAST_ERROR_SQLSTATE

-- bad rows
CALL bad_items($$(1, '{1,2}'), (2, NULL)$$);
SELECT * FROM tfllmer.rec_pca('e', 'bad', dim => 1);
\echo :LAST_ERROR_SQLSTATE
CALL bad_items($$(1, '{1,2}'), (NULL, '{1,2}')$$);
SELECT * FROM tfllmer.rec_pca('e', 'bad', dim => 1);
\echo :LAST_ERROR_SQLSTATE
CALL bad_items($$(1, '{1,2}'), (2, '{1,2,3}')$$);
SELECT * FROM tfllmer.rec_pca('e', 'bad', dim => 1);
\echo :LAST_ERROR_SQLSTATE
CALL bad_items($$(1, '{1,2}'), (2, '{1,NaN}')$$);
SELECT * FROM tfllmer.rec_pca('e', 'bad', dim => 1);
\echo :LAST_ERROR_SQLSTATE
CALL bad_items($$(1, '{1,2}'), (2, '{-Infinity,1}')$$);
SELECT * FROM tfllmer.rec_pca('e', 'bad', dim => 1);
\echo :LAST_ERROR_SQLSTATE
CALL bad_items($$(1, '{1,2}'), (1, '{2,1}')$$);
SELECT * FROM tfllmer.rec_pca('e', 'bad', dim => 1);
\echo :LAST_ERROR_SQLSTATE
CALL bad_items($$(1, '{1,2}'), (2, '{{1,2},{3,4}}')$$);
SELECT * FROM tfllmer.rec_pca('e', 'bad', dim => 1);
\echo :LAST_ERROR_SQLSTATE
CALL bad_items($$(1, '{1,2}'), (2, '{1,NULL}')$$);
SELECT * FROM tfllmer.rec_pca('e', 'bad', dim => 1);
\echo :LAST_ERROR_SQLSTATE
CALL bad_items($$(1, '{1,2}'), (2, '{}')$$);
SELECT * FROM tfllmer.rec_pca('e', 'bad', dim => 1);
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE huge (item_id int, embedding float8[]);
INSERT INTO huge VALUES (1, '{1,2}'), (2, '{1e300,1}');
SELECT * FROM tfllmer.rec_pca('e', 'huge', dim => 1);
\echo :LAST_ERROR_SQLSTATE

-- names taken, unknown names
SELECT embedding_name FROM tfllmer.rec_pca('taken', 'items', dim => 2);
SELECT * FROM tfllmer.rec_pca('taken', 'items', dim => 2);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.embedding('no_such_embedding');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.drop_embedding('no_such_embedding');
\echo :LAST_ERROR_SQLSTATE

-- an ordinary role cannot read a table it has no SELECT on
CREATE ROLE tfl_carol;
SET ROLE tfl_carol;
SELECT * FROM tfllmer.rec_pca('carol', 'items', dim => 2);
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
DROP ROLE tfl_carol;

-- nothing but 'taken' was stored
SELECT embedding_name FROM tfllmer.embeddings;

-- method must be one of 'exact', 'randomized', 'auto'
SELECT * FROM tfllmer.rec_pca('e', 'items', dim => 2, method => 'fast');
SELECT * FROM tfllmer.rec_pca('e', 'items', dim => 2, method => NULL);
