// build_graph checked against the same graph computed in plain SQL, on
// generated data, for every weighting, damping, window and holdout, every
// supported time type, views and row-level security.

use pgrx::prelude::*;

type Edge = (i64, i64, f64);

fn rows(query: &str) -> Vec<Edge> {
    Spi::connect(|client| {
        client
            .select(query, None, &[])
            .expect("query failed")
            .map(|row| {
                (
                    row.get::<i64>(1).expect("item_a").expect("item_a not null"),
                    row.get::<i64>(2).expect("item_b").expect("item_b not null"),
                    row.get::<f64>(3).expect("weight").expect("weight not null"),
                )
            })
            .collect()
    })
}

fn graph_edges(graph: &str) -> Vec<Edge> {
    rows(&format!("SELECT item_a, item_b, weight FROM tfllmer.graph_edges('{graph}') ORDER BY 1, 2"))
}

/// METHOD.md's graph written as one SQL query: positions by (time, item id),
/// the last `holdout` per user left out, pairs within the window.
fn sql_graph(table: &str, time: &str, window: i32, holdout: i32, inverse_distance: bool, log: bool) -> Vec<Edge> {
    let weight = if inverse_distance { "1.0 / (b.pos - a.pos)" } else { "1.0" };
    let damped = if log { "ln(1 + sum(w))" } else { "sum(w)" };
    rows(&format!(
        "WITH seq AS (
            SELECT user_id, item_id,
                   row_number() OVER (PARTITION BY user_id ORDER BY {time}, item_id) AS pos,
                   count(*) OVER (PARTITION BY user_id) AS n
            FROM {table}
            WHERE user_id IS NOT NULL AND item_id IS NOT NULL AND {time} IS NOT NULL),
         train AS (SELECT * FROM seq WHERE pos <= n - {holdout}),
         pairs AS (
            SELECT least(a.item_id, b.item_id)::int8 AS item_a, greatest(a.item_id, b.item_id)::int8 AS item_b,
                   {weight} AS w
            FROM train a JOIN train b
              ON a.user_id = b.user_id AND b.pos > a.pos AND b.pos <= a.pos + {window}
            WHERE a.item_id <> b.item_id)
         SELECT item_a, item_b, ({damped})::float8 FROM pairs GROUP BY 1, 2 ORDER BY 1, 2"
    ))
}

fn assert_same(got: &[Edge], want: &[Edge], what: &str) {
    assert!(!want.is_empty(), "{what}: the expected graph is empty, the test data is wrong");
    assert_eq!(got.len(), want.len(), "{what}: edge count");
    for (g, w) in got.iter().zip(want) {
        assert_eq!((g.0, g.1), (w.0, w.1), "{what}: edge endpoints");
        assert!((g.2 - w.2).abs() <= 1e-9 * w.2.abs().max(1.0), "{what}: weight of {g:?} vs {w:?}");
    }
}

/// 300 users, 120 items with popular ones, many equal timestamps, repeats.
fn make_interactions(table: &str) {
    Spi::run(&format!(
        "SELECT setseed(0.42);
         CREATE TABLE {table} AS
         SELECT u AS user_id,
                (floor(power(random(), 2) * 120))::int AS item_id,
                (floor(random() * 25))::int AS ts
         FROM generate_series(1, 300) u, generate_series(1, 1 + (u % 37)) k;"
    ))
    .expect("creating test data");
}

fn build(graph: &str, args: &str) {
    Spi::run(&format!("SELECT * FROM tfllmer.build_graph('{graph}', {args})")).expect("build_graph failed");
}

#[pg_test]
fn graph_matches_plain_sql_for_every_parameter() {
    make_interactions("ev");
    for (window, holdout, inverse, log) in
        [(1, 2, false, false), (3, 2, false, false), (2, 0, true, false), (3, 1, false, true), (5, 3, true, true)]
    {
        let graph = format!("g_{window}_{holdout}_{inverse}_{log}");
        let weighting = if inverse { "inverse_distance" } else { "count" };
        let damping = if log { "log" } else { "none" };
        build(
            &graph,
            &format!("'ev', window_size => {window}, holdout => {holdout}, weighting => '{weighting}', damping => '{damping}'"),
        );
        assert_same(&graph_edges(&graph), &sql_graph("ev", "ts", window, holdout, inverse, log), &graph);
    }
}

#[pg_test]
fn counts_in_the_result_and_the_view_agree_with_the_edges() {
    make_interactions("ev");
    Spi::run("CREATE TEMP TABLE result AS SELECT * FROM tfllmer.build_graph('g', 'ev', window_size => 2)")
        .expect("build_graph");
    let (n_users, n_items) = Spi::get_two::<i64, i64>("SELECT n_users, n_items FROM result").expect("result");
    let (n_edges, total) = Spi::get_two::<i64, f64>("SELECT n_edges, total_weight FROM result").expect("result");
    let want = sql_graph("ev", "ts", 2, 2, false, false);
    assert_eq!(n_edges, Some(want.len() as i64));
    assert_eq!(total, Some(want.iter().map(|e| e.2).sum::<f64>()));
    let train_users = Spi::get_one::<i64>(
        "SELECT count(*) FROM (SELECT user_id FROM ev GROUP BY user_id HAVING count(*) > 2) u",
    )
    .expect("count");
    assert_eq!(n_users, train_users);
    let train_items = Spi::get_one::<i64>(
        "SELECT count(DISTINCT item_id) FROM (SELECT item_id, row_number() OVER w AS pos, count(*) OVER (PARTITION BY user_id) AS n
           FROM ev WINDOW w AS (PARTITION BY user_id ORDER BY ts, item_id)) s WHERE pos <= n - 2",
    )
    .expect("count");
    assert_eq!(n_items, train_items);
    let view = Spi::get_three::<i64, i64, f64>("SELECT n_items, n_edges, total_weight FROM tfllmer.graphs WHERE graph_name = 'g'")
        .expect("view");
    assert_eq!(view, (n_items, n_edges, total));
}

#[pg_test]
fn every_orderable_time_type_gives_the_same_graph() {
    make_interactions("ev");
    // the same order expressed in many types; text is zero-padded so that
    // its collation order is the numeric order
    Spi::run(
        "CREATE DOMAIN event_id AS bigint;
         CREATE TABLE typed AS SELECT user_id::event_id AS user_id, item_id::smallint AS item_id,
            ts::int2 AS t_int2, ts::int8 AS t_int8, ts::float4 + 0.5 AS t_float4, ts::float8 / 3 AS t_float8,
            ts::numeric / 7 AS t_numeric, lpad(ts::text, 4, '0') AS t_text,
            date '2026-01-01' + ts AS t_date, timestamp '2026-01-01' + ts * interval '1 second' AS t_timestamp,
            timestamptz '2026-01-01 00:00+00' + ts * interval '1 hour' AS t_timestamptz,
            time '00:00' + ts * interval '1 minute' AS t_time
         FROM ev",
    )
    .expect("typed table");
    let want = sql_graph("ev", "ts", 2, 2, false, false);
    for column in
        ["t_int2", "t_int8", "t_float4", "t_float8", "t_numeric", "t_text", "t_date", "t_timestamp", "t_timestamptz", "t_time"]
    {
        build(column, &format!("'typed', time_column => '{column}', window_size => 2"));
        assert_same(&graph_edges(column), &want, column);
    }
}

#[pg_test]
fn negative_times_and_ids_order_correctly() {
    Spi::run(
        "CREATE TABLE neg (user_id bigint, item_id bigint, ts float8);
         INSERT INTO neg VALUES (-5, -100, -2.5), (-5, 7, -1e300), (-5, 3000000000, 0), (-5, -1, '-infinity'),
                                (-5, 8, 'infinity'), (-5, 9, 1e-300), (-5, 10, -0.0)",
    )
    .expect("table");
    build("neg", "'neg', holdout => 0");
    // order: -inf(-1), -1e300(7), -2.5(-100), {-0.0, 0}(10, 3e9: ties by id), 1e-300(9), inf(8)
    let want = vec![(-100, 7, 1.0), (-100, 10, 1.0), (-1, 7, 1.0), (8, 9, 1.0), (9, 3000000000, 1.0), (10, 3000000000, 1.0)];
    assert_same(&graph_edges("neg"), &want, "negative values");
}

#[pg_test]
fn views_and_row_level_security_limit_what_is_read() {
    make_interactions("ev");
    Spi::run(
        "CREATE VIEW ev_even AS SELECT * FROM ev WHERE user_id % 2 = 0;
         CREATE TABLE ev_even_copy AS SELECT * FROM ev_even;
         CREATE ROLE tfl_rls_reader;
         GRANT SELECT ON ev TO tfl_rls_reader;
         ALTER TABLE ev ENABLE ROW LEVEL SECURITY;
         CREATE POLICY only_even ON ev FOR SELECT USING (user_id % 2 = 0);",
    )
    .expect("setup");
    let want = sql_graph("ev_even_copy", "ts", 1, 2, false, false);
    build("from_view", "'ev_even'");
    assert_same(&graph_edges("from_view"), &want, "view");
    Spi::run("SET ROLE tfl_rls_reader").expect("set role");
    build("under_rls", "'ev'");
    assert_same(&graph_edges("under_rls"), &want, "row-level security");
    Spi::run("RESET ROLE").expect("reset role");
}

#[pg_test]
fn replace_keeps_one_graph_and_drop_removes_it() {
    make_interactions("ev");
    build("g", "'ev'");
    build("g", "'ev', window_size => 4, replace => true");
    assert_same(&graph_edges("g"), &sql_graph("ev", "ts", 4, 2, false, false), "replaced");
    let (count, window) =
        Spi::get_two::<i64, i32>("SELECT count(*), max(window_size) FROM tfllmer.graphs WHERE graph_name = 'g'").expect("view");
    assert_eq!((count, window), (Some(1), Some(4)));
    assert_eq!(Spi::get_one::<bool>("SELECT tfllmer.drop_graph('g')").expect("drop"), Some(true));
    assert_eq!(Spi::get_one::<bool>("SELECT tfllmer.drop_graph('g', if_exists => true)").expect("drop"), Some(false));
    assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM tfllmer.graph_store").expect("count"), Some(0));
}
