//! The arena planner: intermediate tensors and scratch buffers share one
//! block of memory, placed by greedy best-fit over their lifetimes.

use kiln_targets::plan::ARENA_ALIGN;

/// A tensor to place: live from step `start` to step `end` (inclusive).
#[derive(Clone, Copy, Debug)]
pub struct Interval {
    pub size: usize,
    pub start: usize,
    pub end: usize,
}

/// Rounds up to the arena alignment.
pub fn align(n: usize) -> usize {
    n.div_ceil(ARENA_ALIGN) * ARENA_ALIGN
}

/// Places every interval at an aligned offset so that no two with overlapping
/// lifetimes overlap in memory, and returns the offsets and the arena size.
/// Greedy best-fit: tensors are taken in some priority order, each going into
/// the smallest gap between already-placed, simultaneously-live tensors that
/// fits it (above the highest one if none does). No single order is best for
/// every graph, so a few are tried (largest first, longest-lived first, …)
/// and the smallest arena wins.
pub fn plan(items: &[Interval]) -> (Vec<usize>, usize) {
    type Key = fn(&Interval) -> (usize, usize, usize);
    let keys: [Key; 4] = [
        |it| (usize::MAX - align(it.size), it.start, 0),
        |it| {
            (
                usize::MAX - (it.end - it.start),
                usize::MAX - align(it.size),
                it.start,
            )
        },
        |it| {
            (
                usize::MAX - align(it.size).saturating_mul(it.end - it.start + 1),
                it.start,
                0,
            )
        },
        |it| (it.start, usize::MAX - align(it.size), 0),
    ];
    let mut best: Option<(Vec<usize>, usize)> = None;
    for key in keys {
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by_key(|&i| (key(&items[i]), i));
        let r = place(items, &order);
        if best.as_ref().is_none_or(|b| r.1 < b.1) {
            best = Some(r);
        }
    }
    best.unwrap_or_default()
}

fn place(items: &[Interval], order: &[usize]) -> (Vec<usize>, usize) {
    let mut offs = vec![0usize; items.len()];
    let mut placed: Vec<usize> = vec![];
    let mut total = 0;
    for &i in order {
        let it = items[i];
        let size = align(it.size);
        let mut live: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&j| items[j].start <= it.end && it.start <= items[j].end)
            .map(|&j| (offs[j], offs[j] + align(items[j].size)))
            .collect();
        live.sort();
        let mut best: Option<(usize, usize)> = None; // (gap size, offset)
        let mut cursor = 0;
        for &(lo, hi) in &live {
            if lo > cursor && lo - cursor >= size {
                let gap = lo - cursor;
                if best.is_none_or(|(g, _)| gap < g) {
                    best = Some((gap, cursor));
                }
            }
            cursor = cursor.max(hi);
        }
        let off = best.map(|(_, o)| o).unwrap_or(cursor);
        offs[i] = off;
        total = total.max(off + size);
        placed.push(i);
    }
    (offs, total)
}

/// The peak, over steps, of the aligned bytes live at once.
pub fn lower_bound(items: &[Interval], steps: usize) -> usize {
    (0..steps)
        .map(|s| {
            items
                .iter()
                .filter(|it| it.start <= s && s <= it.end)
                .map(|it| align(it.size))
                .sum::<usize>()
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disjoint_lifetimes_share_memory() {
        let items = [
            Interval {
                size: 100,
                start: 0,
                end: 1,
            },
            Interval {
                size: 100,
                start: 1,
                end: 2,
            },
            Interval {
                size: 100,
                start: 2,
                end: 3,
            },
        ];
        let (offs, total) = plan(&items);
        assert_eq!(total, 256);
        assert_eq!(offs[0], offs[2]);
        assert_ne!(offs[0], offs[1]);
        assert_eq!(lower_bound(&items, 4), 256);
    }
}
