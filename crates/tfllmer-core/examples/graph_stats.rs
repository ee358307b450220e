//! Builds the co-occurrence graph of a data folder's interactions.csv
//! (user_id,item_id,ts) and prints its counts, without PostgreSQL.
//!
//! usage: cargo run --release -p tfllmer-core --example graph_stats -- DIR [WINDOW] [HOLDOUT]
use std::time::Instant;

use tfllmer_core::graph::{build, Event, GraphParams};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).ok_or("usage: graph_stats DIR [WINDOW] [HOLDOUT]")?;
    let window: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let holdout: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(2);
    let text = std::fs::read_to_string(format!("{dir}/interactions.csv"))?;
    let mut events = Vec::new();
    for line in text.lines().skip(1) {
        let mut f = line.split(',').map(|x| x.trim().parse::<i64>());
        match (f.next(), f.next(), f.next()) {
            (Some(Ok(user)), Some(Ok(item)), Some(Ok(time))) => events.push(Event { user, time, item }),
            _ => return Err(format!("bad line: {line}").into()),
        }
    }
    let t = Instant::now();
    let params = GraphParams { window_size: window, holdout, ..GraphParams::default() };
    let (g, stats) = build(events, &params)?;
    println!(
        "{{\"n_users\": {}, \"n_items\": {}, \"n_edges\": {}, \"total_weight\": {}, \"build_ms\": {:.1}}}",
        stats.n_users,
        g.n_items(),
        g.n_edges(),
        g.total_weight(),
        t.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}
