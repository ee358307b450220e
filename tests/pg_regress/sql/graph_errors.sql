-- Bad input to the graph functions: every case is an ERROR with a SQLSTATE
-- that fits, a message naming the argument, and nothing written.
-- (each file starts from a fresh install)
\i common/fresh_install.sql
CREATE TABLE events (user_id int, item_id int, ts int, title text, score numeric, payload json);
INSERT INTO events VALUES (1, 1, 1, 'a', 1, NULL), (1, 2, 2, 'b', 2, NULL), (1, 3, 3, 'c', 3, NULL), (1, 4, 4, 'd', 4, NULL);
CREATE TABLE empty_events (user_id int, item_id int, ts int);
CREATE SEQUENCE not_a_table;

-- the interaction table
SELECT * FROM tfllmer.build_graph('g', 'no_such_table');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.build_graph('g', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.build_graph('g', 'not_a_table');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.build_graph('g', 999999999::oid::regclass);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.build_graph('g', 'empty_events');
\echo :LAST_ERROR_SQLSTATE

-- columns
SELECT * FROM tfllmer.build_graph('g', 'events', user_column => 'uid');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.build_graph('g', 'events', item_column => 'title');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.build_graph('g', 'events', user_column => 'score');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.build_graph('g', 'events', time_column => 'payload');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.build_graph('g', 'events', time_column => 'ctid');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.build_graph('g', 'events', user_column => NULL);
\echo :LAST_ERROR_SQLSTATE

-- parameters
SELECT * FROM tfllmer.build_graph('g', 'events', window_size => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.build_graph('g', 'events', window_size => 1000000);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.build_graph('g', 'events', window_size => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.build_graph('g', 'events', holdout => -1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.build_graph('g', 'events', weighting => 'tfidf');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.build_graph('g', 'events', damping => 'sqrt');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.build_graph('g', 'events', top_k => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.build_graph('g', 'events', replace => NULL);
\echo :LAST_ERROR_SQLSTATE

-- every interaction held out
SELECT * FROM tfllmer.build_graph('g', 'events', holdout => 4);
\echo :LAST_ERROR_SQLSTATE
-- only NULL rows
CREATE TABLE null_events (user_id int, item_id int, ts int);
INSERT INTO null_events VALUES (NULL, 1, 1), (1, NULL, 1);
SELECT * FROM tfllmer.build_graph('g', 'null_events');
\echo :LAST_ERROR_SQLSTATE

-- graph names
SELECT * FROM tfllmer.build_graph(NULL, 'events');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.build_graph('', 'events');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.build_graph(repeat('x', 64), 'events');
\echo :LAST_ERROR_SQLSTATE
SELECT graph_name FROM tfllmer.build_graph('taken', 'events');
SELECT * FROM tfllmer.build_graph('taken', 'events');
\echo :LAST_ERROR_SQLSTATE

-- reading and dropping unknown graphs
SELECT * FROM tfllmer.graph_edges('no_such_graph');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.graph_edges(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.drop_graph('no_such_graph');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.drop_graph(NULL);
\echo :LAST_ERROR_SQLSTATE

-- nothing but 'taken' was written
SELECT graph_name FROM tfllmer.graphs;
