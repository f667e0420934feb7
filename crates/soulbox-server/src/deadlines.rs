//! Sandbox deadlines (timeouts, auto-pause grace periods) on one timer task, not one task per sandbox.
//!
//! A `BTreeSet<(instant, id)>` ordered by due time plus an id → instant index: set/replace/cancel are
//! O(log n), and a single task sleeps until the earliest deadline, woken early by a `Notify` whenever the
//! earliest one changes. Fired ids are sent to a channel; the lifecycle code decides what firing means (kill or
//! pause) and re-checks the store, so a deadline that raced with a refresh is harmless.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

#[derive(Default)]
struct Queue {
    by_due: BTreeSet<(Instant, String)>,
    by_id: HashMap<String, Instant>,
}

/// Handle to the timer; cheap to clone.
#[derive(Clone)]
pub struct Deadlines {
    queue: Arc<Mutex<Queue>>,
    changed: Arc<Notify>,
}

impl Deadlines {
    /// Starts the timer task; fired ids arrive on the returned receiver.
    pub fn start() -> (Deadlines, mpsc::UnboundedReceiver<String>) {
        let deadlines = Deadlines { queue: Arc::default(), changed: Arc::new(Notify::new()) };
        let (fired_tx, fired_rx) = mpsc::unbounded_channel();
        tokio::spawn(deadlines.clone().run(fired_tx));
        (deadlines, fired_rx)
    }

    /// Sets (or replaces) the deadline of `id`.
    pub fn set(&self, id: &str, due: Instant) {
        let earliest_changed = {
            let mut q = self.lock();
            if let Some(old) = q.by_id.insert(id.to_owned(), due) {
                q.by_due.remove(&(old, id.to_owned()));
            }
            q.by_due.insert((due, id.to_owned()));
            q.by_due.first().is_some_and(|(first, first_id)| *first == due && first_id == id)
        };
        if earliest_changed {
            self.changed.notify_one();
        }
    }

    pub fn cancel(&self, id: &str) {
        let mut q = self.lock();
        if let Some(old) = q.by_id.remove(id) {
            q.by_due.remove(&(old, id.to_owned()));
        }
    }

    pub fn due(&self, id: &str) -> Option<Instant> {
        self.lock().by_id.get(id).copied()
    }

    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        match self.queue.lock() {
            Ok(q) => q,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    async fn run(self, fired: mpsc::UnboundedSender<String>) {
        loop {
            let next = self.lock().by_due.first().map(|(due, _)| *due);
            match next {
                None => self.changed.notified().await,
                Some(due) if due > Instant::now() => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(due) => {}
                        _ = self.changed.notified() => {}
                    }
                }
                Some(_) => {
                    let now = Instant::now();
                    let expired: Vec<String> = {
                        let mut q = self.lock();
                        let mut out = Vec::new();
                        while let Some((due, id)) = q.by_due.first().cloned() {
                            if due > now {
                                break;
                            }
                            q.by_due.pop_first();
                            q.by_id.remove(&id);
                            out.push(id);
                        }
                        out
                    };
                    for id in expired {
                        if fired.send(id).is_err() {
                            return; // nobody listens any more
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn fires_in_order_and_honours_replace_and_cancel() {
        let (d, mut fired) = Deadlines::start();
        let t0 = Instant::now();
        d.set("b", t0 + Duration::from_secs(20));
        d.set("a", t0 + Duration::from_secs(10));
        d.set("c", t0 + Duration::from_secs(5));
        d.cancel("c");
        d.set("b", t0 + Duration::from_secs(30)); // refreshed: later
        assert_eq!(fired.recv().await.as_deref(), Some("a"));
        assert!(Instant::now() >= t0 + Duration::from_secs(10));
        assert_eq!(fired.recv().await.as_deref(), Some("b"));
        assert!(Instant::now() >= t0 + Duration::from_secs(30));
        assert!(d.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_wakes_the_sleeping_timer() {
        let (d, mut fired) = Deadlines::start();
        let t0 = Instant::now();
        d.set("late", t0 + Duration::from_secs(3600));
        tokio::task::yield_now().await;
        d.set("soon", t0 + Duration::from_secs(1));
        assert_eq!(fired.recv().await.as_deref(), Some("soon"));
        assert!(Instant::now() < t0 + Duration::from_secs(2));
        assert_eq!(d.len(), 1);
    }
}
