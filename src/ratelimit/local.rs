//! Counters of this instance alone, for the login and public limits while Redis does not
//! answer: one fixed window per key, starting with its first request, like the Redis counter.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::WINDOW;

/// Below this many keys nothing is swept; above it, windows that ended are dropped, and the
/// next sweep waits until the map has doubled, so a flood of addresses costs amortised O(1).
const SWEEP_FROM: usize = 10_000;

pub struct LocalWindows {
    windows: DashMap<String, (u64, Instant)>,
    sweep_at: AtomicUsize,
}

impl Default for LocalWindows {
    fn default() -> Self {
        LocalWindows {
            windows: DashMap::new(),
            sweep_at: AtomicUsize::new(SWEEP_FROM),
        }
    }
}

impl LocalWindows {
    /// Counts one request under `key`: the count in its window, this one included, and the
    /// time left in the window.
    pub fn count(&self, key: String, now: Instant) -> (u64, Duration) {
        let (used, ends) = {
            let mut entry = self.windows.entry(key).or_insert((0, now + WINDOW));
            if entry.1 <= now {
                *entry = (0, now + WINDOW);
            }
            entry.0 += 1;
            *entry
        };
        let len = self.windows.len();
        if len > self.sweep_at.load(Ordering::Relaxed) {
            self.windows.retain(|_, (_, ends)| *ends > now);
            self.sweep_at
                .store((self.windows.len() * 2).max(SWEEP_FROM), Ordering::Relaxed);
        }
        (used, ends.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_count_and_end() {
        let local = LocalWindows::default();
        let t0 = Instant::now();
        assert_eq!(local.count("a".into(), t0), (1, WINDOW));
        assert_eq!(local.count("a".into(), t0 + Duration::from_secs(10)).0, 2);
        assert_eq!(local.count("b".into(), t0 + Duration::from_secs(10)).0, 1);
        let (used, left) = local.count("a".into(), t0 + Duration::from_secs(59));
        assert_eq!((used, left), (3, Duration::from_secs(1)));
        // The window is over: a new one starts.
        assert_eq!(local.count("a".into(), t0 + WINDOW).0, 1);
    }

    #[test]
    fn ended_windows_are_swept() {
        let local = LocalWindows::default();
        let t0 = Instant::now();
        for i in 0..SWEEP_FROM {
            local.count(format!("old-{i}"), t0);
        }
        local.count("new".into(), t0 + WINDOW + Duration::from_secs(1));
        assert_eq!(local.windows.len(), 1);
    }
}
