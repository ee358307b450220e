//! Item-item co-occurrence graphs built from interaction sequences
//! (METHOD.md, "The co-occurrence graph").
//!
//! Per user, interactions are ordered by time, equal times by item id. The
//! user's last `holdout` interactions are left out (they are validation and
//! test targets; letting them into the graph would leak). Every pair of
//! training positions at distance 1..=window with different items adds a
//! weight to the undirected edge between the two items. The graph is kept as
//! the strict upper triangle of the symmetric matrix A = C + Cᵀ in CSR form.

use std::fmt;

use sprs::{CsMat, TriMat};

use crate::sequences::{order_histories, IdIndex};

/// The largest window accepted. Cost grows linearly with the window and
/// nothing in the method uses windows beyond a few dozen positions.
pub const MAX_WINDOW_SIZE: usize = 1000;

/// One interaction: `time` is an order key (any value whose `i64` order is the
/// order of the user's time column).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Event {
    pub user: i64,
    pub time: i64,
    pub item: i64,
}

/// How a co-occurrence at distance `d` is weighted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weighting {
    /// every co-occurrence counts 1
    Count,
    /// a co-occurrence at distance d counts 1/d
    InverseDistance,
}

/// What is applied to an edge weight after symmetrisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Damping {
    None,
    /// w -> ln(1 + w), so that a few very frequent pairs do not dominate
    Log,
}

impl Weighting {
    pub const NAMES: &'static str = "'count' or 'inverse_distance'";

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "count" => Some(Self::Count),
            "inverse_distance" => Some(Self::InverseDistance),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::InverseDistance => "inverse_distance",
        }
    }
}

impl Damping {
    pub const NAMES: &'static str = "'none' or 'log'";

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "none" => Some(Self::None),
            "log" => Some(Self::Log),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Log => "log",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GraphParams {
    pub window_size: usize,
    pub holdout: usize,
    pub weighting: Weighting,
    pub damping: Damping,
    /// keep, per item, only its `top_k` heaviest edges (an edge survives if
    /// either end keeps it, i.e. max(A_k, A_kᵀ)); `None` keeps all
    pub top_k: Option<usize>,
}

impl Default for GraphParams {
    fn default() -> Self {
        Self { window_size: 1, holdout: 2, weighting: Weighting::Count, damping: Damping::None, top_k: None }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum GraphError {
    WindowSize(i64),
    Holdout(i64),
    TopK(i64),
    /// no interactions at all
    NoInteractions,
    /// interactions exist but every one of them is held out
    NoTrainingInteractions {
        holdout: usize,
    },
    /// more distinct items than a graph can index (u32)
    TooManyItems(usize),
}

impl fmt::Display for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WindowSize(w) => {
                write!(f, "window_size must be between 1 and {MAX_WINDOW_SIZE}, got {w}")
            }
            Self::Holdout(h) => write!(f, "holdout must be 0 or more, got {h}"),
            Self::TopK(k) => write!(f, "top_k must be at least 1 (or NULL for no pruning), got {k}"),
            Self::NoInteractions => write!(f, "there are no interactions to build a graph from"),
            Self::NoTrainingInteractions { holdout } => write!(
                f,
                "no training interactions are left: every user has at most {holdout} interactions, \
                 and holdout = {holdout} leaves them all out"
            ),
            Self::TooManyItems(n) => write!(f, "{n} distinct items is more than a graph can hold ({})", u32::MAX),
        }
    }
}

impl std::error::Error for GraphError {}

impl GraphParams {
    /// Checks raw user values; the caller turns errors into its own reporting.
    pub fn from_raw(
        window_size: i64,
        holdout: i64,
        weighting: Weighting,
        damping: Damping,
        top_k: Option<i64>,
    ) -> Result<Self, GraphError> {
        if !(1..=MAX_WINDOW_SIZE as i64).contains(&window_size) {
            return Err(GraphError::WindowSize(window_size));
        }
        if holdout < 0 {
            return Err(GraphError::Holdout(holdout));
        }
        let top_k = match top_k {
            Some(k) if k < 1 => return Err(GraphError::TopK(k)),
            Some(k) => Some(usize::try_from(k).unwrap_or(usize::MAX)),
            None => None,
        };
        Ok(Self {
            window_size: window_size as usize,
            holdout: usize::try_from(holdout).unwrap_or(usize::MAX),
            weighting,
            damping,
            top_k,
        })
    }
}

/// An undirected weighted item graph.
#[derive(Clone, Debug, PartialEq)]
pub struct CooccurrenceGraph {
    /// node index -> item id, strictly ascending
    pub items: Vec<i64>,
    /// strict upper triangle (row < column) of the symmetric weight matrix
    pub upper: CsMat<f64>,
}

/// Counts reported alongside a freshly built graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuildStats {
    /// users with at least one training interaction
    pub n_users: usize,
    /// interactions that entered the graph (after holdout)
    pub n_training_interactions: usize,
}

impl CooccurrenceGraph {
    pub fn n_items(&self) -> usize {
        self.items.len()
    }

    /// Undirected edges, each counted once.
    pub fn n_edges(&self) -> usize {
        self.upper.nnz()
    }

    /// Sum of the weights of the undirected edges (each counted once).
    pub fn total_weight(&self) -> f64 {
        self.upper.data().iter().sum()
    }

    /// Node index of an item id.
    pub fn node_of(&self, item: i64) -> Option<usize> {
        self.items.binary_search(&item).ok()
    }

    /// Edges as (item_a, item_b, weight) with item_a < item_b, ordered by
    /// item_a then item_b.
    pub fn edges(&self) -> impl Iterator<Item = (i64, i64, f64)> + '_ {
        self.upper.outer_iterator().enumerate().flat_map(move |(row, vec)| {
            let a = self.items[row];
            vec.iter().map(move |(col, &w)| (a, self.items[col], w)).collect::<Vec<_>>()
        })
    }

    /// Â = D^-1/2 A D^-1/2 over the rows of `items` (row r is item items[r]),
    /// as METHOD.md normalises it. Edges to items that are not in `items`
    /// are left out before degrees are taken; rows of items without edges are
    /// zero. Also returns how many graph items are not in `items`.
    pub fn normalized_adjacency_for(&self, items: &[i64]) -> (CsMat<f64>, usize) {
        let mut by_id: Vec<(i64, usize)> = items.iter().enumerate().map(|(row, &id)| (id, row)).collect();
        by_id.sort_unstable();
        let node_row: Vec<Option<usize>> = self
            .items
            .iter()
            .map(|&id| by_id.binary_search_by_key(&id, |&(i, _)| i).ok().map(|k| by_id[k].1))
            .collect();
        let missing = node_row.iter().filter(|r| r.is_none()).count();
        let n = items.len();
        // both directions of every kept edge, bucketed by row (counting sort)
        let for_each_kept = |f: &mut dyn FnMut(usize, usize, f64)| {
            for (i, vec) in self.upper.outer_iterator().enumerate() {
                let Some(ri) = node_row[i] else { continue };
                for (j, &w) in vec.iter() {
                    if let Some(rj) = node_row[j] {
                        f(ri, rj, w);
                    }
                }
            }
        };
        let mut indptr = vec![0usize; n + 1];
        for_each_kept(&mut |ri, rj, _| {
            indptr[ri + 1] += 1;
            indptr[rj + 1] += 1;
        });
        for r in 0..n {
            indptr[r + 1] += indptr[r];
        }
        let mut fill = indptr.clone();
        let mut indices = vec![0usize; indptr[n]];
        let mut data = vec![0.0f64; indptr[n]];
        let mut degree = vec![0.0f64; n];
        for_each_kept(&mut |ri, rj, w| {
            for (from, to) in [(ri, rj), (rj, ri)] {
                indices[fill[from]] = to;
                data[fill[from]] = w;
                fill[from] += 1;
                degree[from] += w;
            }
        });
        let inv_sqrt: Vec<f64> = degree.iter().map(|&d| if d > 0.0 { 1.0 / d.sqrt() } else { 0.0 }).collect();
        for r in 0..n {
            let (lo, hi) = (indptr[r], indptr[r + 1]);
            // columns in order (rows of items given out of id order arrive unsorted)
            let mut row: Vec<(usize, f64)> =
                indices[lo..hi].iter().copied().zip(data[lo..hi].iter().copied()).collect();
            if !row.windows(2).all(|p| p[0].0 < p[1].0) {
                row.sort_unstable_by_key(|&(c, _)| c);
            }
            for (k, (c, w)) in row.into_iter().enumerate() {
                indices[lo + k] = c;
                data[lo + k] = w * inv_sqrt[r] * inv_sqrt[c];
            }
        }
        (CsMat::new((n, n), indptr, indices, data), missing)
    }

    /// The full symmetric matrix A (both triangles, zero diagonal).
    pub fn symmetric(&self) -> CsMat<f64> {
        let lower = self.upper.transpose_view().to_csr();
        &self.upper + &lower
    }
}

/// Builds the co-occurrence graph of `events` (in any order).
pub fn build(mut events: Vec<Event>, params: &GraphParams) -> Result<(CooccurrenceGraph, BuildStats), GraphError> {
    if events.is_empty() {
        return Err(GraphError::NoInteractions);
    }
    let segments = order_histories(&mut events);
    let training = |&(start, end): &(usize, usize)| {
        let kept = (end - start).saturating_sub(params.holdout);
        &events[start..start + kept]
    };

    let mut stats = BuildStats { n_users: 0, n_training_interactions: 0 };
    for seg in &segments {
        let train = training(seg);
        if !train.is_empty() {
            stats.n_users += 1;
            stats.n_training_interactions += train.len();
        }
    }
    if stats.n_training_interactions == 0 {
        return Err(GraphError::NoTrainingInteractions { holdout: params.holdout });
    }
    let item_index = IdIndex::new(segments.iter().flat_map(|seg| training(seg).iter().map(|e| e.item)));
    let n = item_index.len();
    if n > u32::MAX as usize {
        return Err(GraphError::TooManyItems(n));
    }

    // node index of every training event, users laid end to end
    let mut nodes: Vec<u32> = Vec::with_capacity(stats.n_training_interactions);
    let mut user_starts: Vec<usize> = Vec::with_capacity(stats.n_users + 1);
    for seg in &segments {
        let train = training(seg);
        if !train.is_empty() {
            user_starts.push(nodes.len());
            // every training item is in the index, so the lookup always succeeds
            nodes.extend(train.iter().filter_map(|e| item_index.get(e.item)));
        }
    }
    user_starts.push(nodes.len());
    let items = item_index.into_ids();
    let mut upper = accumulate_pairs(n, &nodes, &user_starts, params.window_size, params.weighting);

    if params.damping == Damping::Log {
        upper.map_inplace(|w| w.ln_1p());
    }
    let mut graph = CooccurrenceGraph { items, upper };
    if let Some(k) = params.top_k {
        graph.upper = keep_top_k(&graph, k);
    }
    Ok((graph, stats))
}

/// Sums, over all users, the weights of every pair of positions at distance
/// 1..=window with different items into the strict upper triangle: this is
/// A = C + Cᵀ without forming C. Pairs are bucketed by their smaller node
/// (counting sort), then each row is summed in a dense accumulator, so the
/// cost is linear in the number of pairs.
fn accumulate_pairs(n: usize, nodes: &[u32], user_starts: &[usize], window: usize, weighting: Weighting) -> CsMat<f64> {
    let mut bucket_start = vec![0usize; n + 1];
    for_each_pair(nodes, user_starts, window, |row, _, _| bucket_start[row as usize + 1] += 1);
    for i in 0..n {
        bucket_start[i + 1] += bucket_start[i];
    }
    let n_pairs = bucket_start[n];
    let mut fill = bucket_start.clone();
    let mut pair_col = vec![0u32; n_pairs];
    // distances matter only for inverse-distance weights (window <= 1000 fits u16)
    let keep_distance = weighting == Weighting::InverseDistance;
    let mut pair_dist = vec![0u16; if keep_distance { n_pairs } else { 0 }];
    for_each_pair(nodes, user_starts, window, |row, col, dist| {
        let slot = &mut fill[row as usize];
        pair_col[*slot] = col;
        if keep_distance {
            pair_dist[*slot] = dist as u16;
        }
        *slot += 1;
    });

    let mut indptr = Vec::with_capacity(n + 1);
    let mut indices: Vec<usize> = Vec::new();
    let mut data: Vec<f64> = Vec::new();
    let mut acc = vec![0.0f64; n];
    let mut touched: Vec<usize> = Vec::new();
    indptr.push(0);
    for row in 0..n {
        let slots = bucket_start[row]..bucket_start[row + 1];
        for slot in slots.clone() {
            let col = pair_col[slot] as usize;
            if acc[col] == 0.0 {
                touched.push(col);
            }
            acc[col] += if keep_distance { 1.0 / pair_dist[slot] as f64 } else { 1.0 };
        }
        // emit in column order: sort the touched columns, or, when the row is
        // dense enough, scan the accumulator (weights are > 0, so 0 = absent)
        let span = n - row;
        if touched.len() * 8 < span {
            touched.sort_unstable();
        } else {
            touched.clear();
            touched.extend((row + 1..n).filter(|&c| acc[c] != 0.0));
        }
        for &col in &touched {
            indices.push(col);
            data.push(acc[col]);
            acc[col] = 0.0;
        }
        touched.clear();
        indptr.push(indices.len());
    }
    CsMat::new((n, n), indptr, indices, data)
}

/// Calls `f(row, col, distance)` with row < col for every pair of positions
/// of one user at distance 1..=window whose items differ.
#[inline(always)]
fn for_each_pair(nodes: &[u32], user_starts: &[usize], window: usize, mut f: impl FnMut(u32, u32, u32)) {
    for bounds in user_starts.windows(2) {
        let seq = &nodes[bounds[0]..bounds[1]];
        for (a, &x) in seq.iter().enumerate() {
            for (d, &y) in seq[a + 1..].iter().take(window).enumerate() {
                if x != y {
                    f(x.min(y), x.max(y), d as u32 + 1);
                }
            }
        }
    }
}

/// Per node, keeps its k heaviest edges (ties: the smaller item id first); an
/// edge survives when either of its ends keeps it.
fn keep_top_k(graph: &CooccurrenceGraph, k: usize) -> CsMat<f64> {
    let sym = graph.symmetric();
    let n = graph.n_items();
    // kept[i] = sorted neighbours that node i keeps
    let mut kept: Vec<Vec<usize>> = Vec::with_capacity(n);
    let mut row_entries: Vec<(usize, f64)> = Vec::new();
    for row in sym.outer_iterator() {
        row_entries.clear();
        row_entries.extend(row.iter().map(|(c, &w)| (c, w)));
        if row_entries.len() > k {
            // heaviest first, then smaller column; total_cmp keeps it total
            row_entries.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            row_entries.truncate(k);
        }
        let mut cols: Vec<usize> = row_entries.iter().map(|&(c, _)| c).collect();
        cols.sort_unstable();
        kept.push(cols);
    }
    let mut triplets = TriMat::new((n, n));
    for (row, vec) in graph.upper.outer_iterator().enumerate() {
        for (col, &w) in vec.iter() {
            if kept[row].binary_search(&col).is_ok() || kept[col].binary_search(&row).is_ok() {
                triplets.add_triplet(row, col, w);
            }
        }
    }
    triplets.to_csr()
}

/// An `i64` whose order is the IEEE total order of `x` (with -0.0 = 0.0), so
/// floating-point time columns can be used as order keys.
pub fn f64_order_key(x: f64) -> i64 {
    let x = if x == 0.0 { 0.0 } else { x };
    let bits = x.to_bits() as i64;
    // negative floats: flip all bits but the sign so larger magnitude sorts lower
    bits ^ (((bits >> 63) as u64) >> 1) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(user: i64, time: i64, item: i64) -> Event {
        Event { user, time, item }
    }

    /// user histories given in time order; times are the positions
    fn histories(h: &[(i64, &[i64])]) -> Vec<Event> {
        h.iter().flat_map(|&(u, items)| items.iter().enumerate().map(move |(t, &i)| ev(u, t as i64, i))).collect()
    }

    fn params(window: usize, holdout: usize) -> GraphParams {
        GraphParams { window_size: window, holdout, ..GraphParams::default() }
    }

    fn edge_list(g: &CooccurrenceGraph) -> Vec<(i64, i64, f64)> {
        g.edges().collect()
    }

    #[test]
    fn window_one_links_consecutive_training_items() {
        // user 1: 10 20 30 | 40 50 held out
        let (g, stats) = build(histories(&[(1, &[10, 20, 30, 40, 50])]), &params(1, 2)).unwrap();
        assert_eq!(g.items, vec![10, 20, 30]);
        assert_eq!(edge_list(&g), vec![(10, 20, 1.0), (20, 30, 1.0)]);
        assert_eq!(stats, BuildStats { n_users: 1, n_training_interactions: 3 });
        assert_eq!(g.n_edges(), 2);
        assert_eq!(g.total_weight(), 2.0);
    }

    #[test]
    fn holdout_items_never_enter_the_graph() {
        // 99 appears only in the held-out tail
        let (g, _) = build(histories(&[(1, &[1, 2, 3, 99, 98]), (2, &[3, 1, 2, 99])]), &params(1, 1)).unwrap();
        assert!(g.node_of(98).is_none());
        // user 2's 99 is held out, user 1's 99 is in training (holdout 1 drops only 98)
        assert!(g.node_of(99).is_some());
        let (g2, _) = build(histories(&[(1, &[1, 2, 3, 99, 98]), (2, &[3, 1, 2, 99])]), &params(1, 2)).unwrap();
        assert!(g2.node_of(99).is_none());
    }

    #[test]
    fn wider_window_and_both_directions_are_summed() {
        // a b a: pairs at distance 1: (a,b),(b,a); distance 2: (a,a) skipped
        let (g, _) = build(histories(&[(1, &[1, 2, 1])]), &params(2, 0)).unwrap();
        assert_eq!(edge_list(&g), vec![(1, 2, 2.0)]);
        // a b c with window 2: (a,b) (b,c) (a,c)
        let (g, _) = build(histories(&[(1, &[1, 2, 3]), (2, &[3, 2])]), &params(2, 0)).unwrap();
        assert_eq!(edge_list(&g), vec![(1, 2, 1.0), (1, 3, 1.0), (2, 3, 2.0)]);
    }

    #[test]
    fn inverse_distance_weighting() {
        let p = GraphParams { weighting: Weighting::InverseDistance, ..params(3, 0) };
        let (g, _) = build(histories(&[(1, &[1, 2, 3, 4])]), &p).unwrap();
        let e = edge_list(&g);
        assert_eq!(e[0], (1, 2, 1.0));
        assert_eq!(e[1], (1, 3, 0.5));
        assert!((e[2].2 - 1.0 / 3.0).abs() < 1e-15 && (e[2].0, e[2].1) == (1, 4));
    }

    #[test]
    fn log_damping_applies_after_summing() {
        let p = GraphParams { damping: Damping::Log, ..params(1, 0) };
        let (g, _) = build(histories(&[(1, &[1, 2]), (2, &[2, 1]), (3, &[1, 2])]), &p).unwrap();
        assert_eq!(edge_list(&g), vec![(1, 2, 3f64.ln_1p())]);
    }

    #[test]
    fn no_self_loops() {
        let (g, _) = build(histories(&[(1, &[5, 5, 5, 6])]), &params(2, 0)).unwrap();
        assert_eq!(edge_list(&g), vec![(5, 6, 2.0)]);
    }

    #[test]
    fn equal_times_are_ordered_by_item_id_and_input_order_does_not_matter() {
        // all at the same time: order 3 < 7 < 9
        let events = vec![ev(1, 0, 9), ev(1, 0, 3), ev(1, 0, 7)];
        let (g, _) = build(events.clone(), &params(1, 0)).unwrap();
        assert_eq!(edge_list(&g), vec![(3, 7, 1.0), (7, 9, 1.0)]);
        let mut reversed = events;
        reversed.reverse();
        assert_eq!(build(reversed, &params(1, 0)).unwrap().0, g);
        // holdout takes the last by that order: 9
        let (g, _) = build(vec![ev(1, 0, 9), ev(1, 0, 3), ev(1, 0, 7)], &params(1, 1)).unwrap();
        assert_eq!(g.items, vec![3, 7]);
    }

    #[test]
    fn interleaved_users_give_the_same_graph_as_grouped_ones() {
        let grouped = histories(&[(1, &[1, 2, 3, 4, 5]), (2, &[5, 4, 3]), (3, &[2, 9, 2, 9, 1])]);
        // deal the events round-robin so no user's events are contiguous
        let mut interleaved = Vec::new();
        for k in 0..5 {
            for user in 1..=3 {
                interleaved.extend(grouped.iter().filter(|e| e.user == user).nth(k).copied());
            }
        }
        interleaved.reverse();
        let p = params(2, 1);
        assert_eq!(build(interleaved, &p).unwrap(), build(grouped, &p).unwrap());
    }

    #[test]
    fn sparse_ids_use_the_sorted_index() {
        let huge = 1i64 << 50;
        let (g, _) = build(histories(&[(-huge, &[huge, -huge, 7]), (huge, &[7, huge])]), &params(1, 0)).unwrap();
        assert_eq!(g.items, vec![-huge, 7, huge]);
        assert_eq!(edge_list(&g), vec![(-huge, 7, 1.0), (-huge, huge, 1.0), (7, huge, 1.0)]);
    }

    #[test]
    fn users_do_not_link_across_each_other() {
        let (g, _) = build(histories(&[(1, &[1]), (2, &[2])]), &params(5, 0)).unwrap();
        assert_eq!(g.n_edges(), 0);
        assert_eq!(g.n_items(), 2);
    }

    #[test]
    fn top_k_keeps_heaviest_edges_from_either_end() {
        // star: 1-2 weight 3, 1-3 weight 2, 1-4 weight 1
        let h: &[(i64, &[i64])] = &[(1, &[1, 2]), (2, &[1, 2]), (3, &[1, 2]), (4, &[1, 3]), (5, &[1, 3]), (6, &[1, 4])];
        let p = GraphParams { top_k: Some(1), ..params(1, 0) };
        let (g, _) = build(histories(h), &p).unwrap();
        // node 1 keeps only 1-2; nodes 3 and 4 have a single edge each and keep it
        assert_eq!(edge_list(&g), vec![(1, 2, 3.0), (1, 3, 2.0), (1, 4, 1.0)]);
        // with a chain where the middle node prunes and the ends do too
        // 1-2 w2, 2-3 w1, 3-4 w2: node 2 keeps 1, node 3 keeps 4 -> 2-3 dropped
        let h: &[(i64, &[i64])] = &[(1, &[1, 2]), (2, &[1, 2]), (3, &[2, 3]), (4, &[3, 4]), (5, &[3, 4])];
        let (g, _) = build(histories(h), &p).unwrap();
        assert_eq!(edge_list(&g), vec![(1, 2, 2.0), (3, 4, 2.0)]);
    }

    #[test]
    fn top_k_ties_prefer_smaller_item_ids() {
        // 5-1, 5-2, 5-3 all weight 1; node 5 keeps 1; 2 and 3 keep their only edge anyway
        let h: &[(i64, &[i64])] = &[(1, &[5, 1]), (2, &[5, 2]), (3, &[5, 3]), (4, &[2, 3]), (6, &[2, 3])];
        let p = GraphParams { top_k: Some(1), ..params(1, 0) };
        let (g, _) = build(histories(h), &p).unwrap();
        // node 2 keeps 2-3 (weight 2) and node 3 keeps 2-3; node 5 keeps 1-5; node 1 keeps 1-5
        assert_eq!(edge_list(&g), vec![(1, 5, 1.0), (2, 3, 2.0)]);
    }

    #[test]
    fn normalized_adjacency_is_symmetric_scaled_and_restricted() {
        // path 1-2-3 plus edge 3-4; item 4 has no embedding, item 9 no edges
        let (g, _) = build(histories(&[(1, &[1, 2, 3]), (2, &[3, 4])]), &params(1, 0)).unwrap();
        let (a, missing) = g.normalized_adjacency_for(&[3, 9, 1, 2]);
        assert_eq!(missing, 1);
        let a = a.to_dense();
        // restricted degrees: 1 -> 1, 2 -> 2, 3 -> 1 (the edge to 4 is gone)
        let (r1, r2, r3, r9) = (2, 3, 0, 1);
        assert!((a[[r1, r2]] - 1.0 / 2f64.sqrt()).abs() < 1e-15);
        assert!((a[[r2, r3]] - 1.0 / 2f64.sqrt()).abs() < 1e-15);
        assert_eq!(a[[r2, r1]], a[[r1, r2]]);
        assert_eq!(a[[r1, r3]], 0.0);
        assert!((0..4).all(|c| a[[r9, c]] == 0.0 && a[[c, r9]] == 0.0));
    }

    #[test]
    fn symmetric_matrix_has_both_triangles_and_zero_diagonal() {
        let (g, _) = build(histories(&[(1, &[1, 2, 3])]), &params(1, 0)).unwrap();
        let a = g.symmetric().to_dense();
        assert_eq!(a[[0, 1]], 1.0);
        assert_eq!(a[[1, 0]], 1.0);
        assert_eq!(a[[1, 2]], 1.0);
        assert_eq!(a[[2, 1]], 1.0);
        assert_eq!(a[[0, 2]], 0.0);
        assert!((0..3).all(|i| a[[i, i]] == 0.0));
    }

    #[test]
    fn errors() {
        assert_eq!(build(vec![], &params(1, 0)), Err(GraphError::NoInteractions));
        assert_eq!(
            build(histories(&[(1, &[1, 2])]), &params(1, 2)),
            Err(GraphError::NoTrainingInteractions { holdout: 2 })
        );
        let (w, d) = (Weighting::Count, Damping::None);
        assert_eq!(GraphParams::from_raw(0, 2, w, d, None), Err(GraphError::WindowSize(0)));
        assert_eq!(GraphParams::from_raw(1001, 2, w, d, None), Err(GraphError::WindowSize(1001)));
        assert_eq!(GraphParams::from_raw(1, -1, w, d, None), Err(GraphError::Holdout(-1)));
        assert_eq!(GraphParams::from_raw(1, 2, w, d, Some(0)), Err(GraphError::TopK(0)));
        assert!(GraphParams::from_raw(1000, 0, w, d, Some(1)).is_ok());
        assert_eq!(Weighting::parse("Count"), None);
        assert_eq!(Damping::parse("log"), Some(Damping::Log));
    }

    #[test]
    fn float_order_keys_follow_float_order() {
        let xs = [f64::NEG_INFINITY, -1e300, -2.5, -1.0, -1e-300, -0.0, 0.0, 1e-300, 1.0, 2.5, 1e300, f64::INFINITY];
        let keys: Vec<i64> = xs.iter().map(|&x| f64_order_key(x)).collect();
        for w in keys.windows(2) {
            assert!(w[0] <= w[1]);
        }
        assert_eq!(f64_order_key(-0.0), f64_order_key(0.0));
        assert!(f64_order_key(f64::NAN) > f64_order_key(f64::INFINITY));
    }
}
