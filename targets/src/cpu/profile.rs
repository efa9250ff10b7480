//! Per-step timing for `kiln bench --profile`: a JIT-only hook the generated
//! `run` calls before each step (and once after the last) with the step's
//! index. Objects never contain it; the hook only exists in this process.

use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Clock {
    /// Accumulated time per step index.
    total: Vec<Duration>,
    last: Option<(usize, Instant)>,
}

static CLOCK: Mutex<Clock> = Mutex::new(Clock {
    total: Vec::new(),
    last: None,
});

/// Called by profiled code at the start of step `i` (`i == steps` at the end).
pub(crate) extern "C" fn kiln_profile_step(i: usize) {
    let now = Instant::now();
    let mut c = CLOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((prev, t)) = c.last.take() {
        if c.total.len() <= prev {
            c.total.resize(prev + 1, Duration::ZERO);
        }
        c.total[prev] += now - t;
    }
    c.last = Some((i, now));
}

/// Clears the accumulated times.
pub fn reset() {
    let mut c = CLOCK.lock().unwrap_or_else(|e| e.into_inner());
    c.total.clear();
    c.last = None;
}

/// Accumulated time per step since the last [`reset`] (index = step).
pub fn totals() -> Vec<Duration> {
    CLOCK
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .total
        .clone()
}
