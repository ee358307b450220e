//! Rec-PCA of a data folder (interactions.csv + item_embeddings.f32/.json)
//! without PostgreSQL; prints the summary figures as JSON, like
//! shared/reference/rec_pca.py does, for cross-checks and timing.
//!
//! usage: cargo run --release -p tfllmer-core --example rec_pca_stats -- DIR [WINDOW] [DIM] [LAMBDA]
//! env: METHOD=exact (default) | randomized | compare (both: the largest relative
//!      eigenvalue difference and the metrics' differences); THREADS=T
use std::time::Instant;

use tfllmer_core::graph::{build, Event, GraphParams};
use tfllmer_core::rec_pca::{rec_pca, rec_pca_randomized, Embeddings, Krylov, RecPcaOutput, RecPcaParams};

fn json_number(meta: &str, key: &str) -> Option<usize> {
    let at = meta.find(&format!("\"{key}\""))?;
    let rest = &meta[at + key.len() + 2..];
    let digits: String = rest.chars().skip_while(|c| !c.is_ascii_digit()).take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).ok_or("usage: rec_pca_stats DIR [WINDOW] [DIM] [LAMBDA]")?;
    let window: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let dim: i64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(64);
    let lambda: f64 = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(0.5);
    let meta = std::fs::read_to_string(format!("{dir}/item_embeddings.json"))?;
    let (n, d) = (json_number(&meta, "n_items").ok_or("n_items")?, json_number(&meta, "dim").ok_or("dim")?);
    let raw = std::fs::read(format!("{dir}/item_embeddings.f32"))?;
    let values: Vec<f32> = raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let text = std::fs::read_to_string(format!("{dir}/interactions.csv"))?;
    let mut events = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<i64> = line.split(',').map(|x| x.trim().parse()).collect::<Result<_, _>>()?;
        events.push(Event { user: f[0], item: f[1], time: f[2] });
    }
    let t0 = Instant::now();
    let (graph, _) = build(events, &GraphParams { window_size: window, ..GraphParams::default() })?;
    let ids: Vec<i64> = (1..=n as i64).collect();
    let (a, missing) = graph.normalized_adjacency_for(&ids);
    let t1 = Instant::now();
    let threads: usize = std::env::var("THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(1);
    let params = RecPcaParams { threads, ..RecPcaParams::new(dim, lambda, d, n)? };
    let mut report = |phase: &'static str, done: f64| {
        if done == 0.0 || phase == "done" || phase.starts_with("reading") {
            eprintln!("{:>8.1} ms  {phase}", t1.elapsed().as_secs_f64() * 1e3);
        }
    };
    let embeddings = Embeddings { ids, input_dim: d, values };
    let method = std::env::var("METHOD").unwrap_or_else(|_| "exact".into());
    let randomized = |mut e: Embeddings, report: &mut dyn FnMut(&'static str, f64)| {
        rec_pca_randomized(&mut e, Some(&a), params, &Krylov::default(), &mut |p: &'static str, f: f64| report(p, f))
    };
    let out: RecPcaOutput = match method.as_str() {
        "randomized" => randomized(embeddings, &mut report)?,
        "compare" => {
            let exact = rec_pca(embeddings.clone(), Some(&a), params, &mut report)?;
            let started = Instant::now();
            let fast = randomized(embeddings, &mut report)?;
            let worst = exact
                .eigenvalues
                .iter()
                .zip(&fast.eigenvalues)
                .map(|(x, y)| (x - y).abs() / x.abs())
                .fold(0.0f64, f64::max);
            let diff = |x: Option<f64>, y: Option<f64>| (x.unwrap_or(0.0) - y.unwrap_or(0.0)).abs();
            println!(
                "{{\"max_relative_eigenvalue_difference\": {worst:.3e}, \"retained_variance_difference\": {:.3e}, \
                 \"graph_tv_difference\": {:.3e}, \"graph_tv_pca_difference\": {:.3e}, \"randomized_ms\": {:.1}}}",
                (exact.retained_variance - fast.retained_variance).abs(),
                diff(exact.graph_tv, fast.graph_tv),
                diff(exact.graph_tv_pca, fast.graph_tv_pca),
                started.elapsed().as_secs_f64() * 1e3
            );
            exact
        }
        _ => rec_pca(embeddings, Some(&a), params, &mut report)?,
    };
    let t2 = Instant::now();
    println!(
        "{{\"n_items\": {n}, \"input_dim\": {d}, \"output_dim\": {dim}, \"graph_items_without_embedding\": {missing}, \
         \"retained_variance\": {:.15}, \"graph_tv\": {:.15}, \"graph_tv_pca\": {:.15}, \"graph_ms\": {:.1}, \"rec_pca_ms\": {:.1}}}",
        out.retained_variance,
        out.graph_tv.unwrap_or(f64::NAN),
        out.graph_tv_pca.unwrap_or(f64::NAN),
        (t1 - t0).as_secs_f64() * 1e3,
        (t2 - t1).as_secs_f64() * 1e3
    );
    Ok(())
}
