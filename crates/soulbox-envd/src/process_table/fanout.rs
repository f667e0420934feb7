//! Fan-out of one process's output to every stream watching it (the `Start` stream and any `Connect` streams).
//!
//! Each subscriber has its own bounded queue of [`SUBSCRIBER_QUEUE`] events (≤ 2 MiB of output at 32 KiB
//! chunks). A subscriber whose queue is full gets [`STALL_LIMIT`] to make room; during that time the output
//! pump waits (flow control, as a pipe would do — a merely slow client loses nothing). A subscriber that
//! makes no room within the limit is cut off: its stream ends with `resource_exhausted`, and the process and
//! the other subscribers carry on. Output with no subscriber is dropped; nothing is buffered for the future.
//!
//! The end event is not queued: it is stored here and every queue is closed, so a subscriber first drains what
//! it was sent and then reads the end. A subscriber arriving after the end gets it straight away.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use soulbox_protocol::process::process_event::{DataEvent, EndEvent};
use tokio::sync::mpsc;

/// Events a subscriber may have queued before the output pump has to wait for it.
pub const SUBSCRIBER_QUEUE: usize = 64;
/// How long the output pump waits for a full subscriber before cutting it off.
pub const STALL_LIMIT: Duration = Duration::from_secs(10);

pub struct Fanout {
    state: Mutex<FanoutState>,
    stall_limit: Duration,
}

impl Default for Fanout {
    fn default() -> Self {
        Fanout { state: Mutex::default(), stall_limit: STALL_LIMIT }
    }
}

#[derive(Default)]
struct FanoutState {
    subscribers: Vec<Slot>,
    end: Option<EndEvent>,
}

#[derive(Clone)]
struct Slot {
    tx: mpsc::Sender<DataEvent>,
    cut_off: Arc<AtomicBool>,
}

/// What a new subscriber gets: a live feed, or the end event of a process that already finished.
pub enum Subscription {
    Live(Subscriber),
    Ended(EndEvent),
}

pub struct Subscriber {
    rx: mpsc::Receiver<DataEvent>,
    cut_off: Arc<AtomicBool>,
}

/// What a subscriber reads next.
pub enum Next {
    Data(DataEvent),
    End(EndEvent),
    /// The subscriber did not keep up and was dropped (see the module docs).
    CutOff,
    /// The process went away without an end event (its supervisor task died); should not happen.
    Lost,
}

impl Fanout {
    fn lock(&self) -> MutexGuard<'_, FanoutState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn subscribe(&self) -> Subscription {
        let mut state = self.lock();
        if let Some(end) = &state.end {
            return Subscription::Ended(end.clone());
        }
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        let cut_off = Arc::new(AtomicBool::new(false));
        state.subscribers.push(Slot { tx, cut_off: cut_off.clone() });
        Subscription::Live(Subscriber { rx, cut_off })
    }

    pub fn end_event(&self) -> Option<EndEvent> {
        self.lock().end.clone()
    }

    pub fn is_finished(&self) -> bool {
        self.lock().end.is_some()
    }

    /// Delivers one output chunk to every current subscriber (see the module docs for full queues).
    pub async fn publish(&self, event: DataEvent) {
        // Snapshot the senders so no lock is held while waiting on a slow subscriber.
        let targets: Vec<Slot> = {
            let mut state = self.lock();
            state.subscribers.retain(|s| !s.tx.is_closed());
            if state.subscribers.is_empty() {
                return;
            }
            state.subscribers.clone()
        };
        let mut slow = Vec::new();
        for slot in targets {
            match slot.tx.try_send(event.clone()) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
                Err(mpsc::error::TrySendError::Full(event)) => slow.push((slot, event)),
            }
        }
        for (slot, event) in slow {
            if let Err(_elapsed) = tokio::time::timeout(self.stall_limit, slot.tx.send(event)).await {
                tracing::warn!(limit = ?self.stall_limit, "a process output subscriber stalled; cutting it off");
                slot.cut_off.store(true, Ordering::Release);
                self.lock().subscribers.retain(|s| !s.tx.same_channel(&slot.tx));
            }
        }
    }

    /// Records the end event and closes every queue; later subscribers get the end event directly.
    pub fn finish(&self, end: EndEvent) {
        let subscribers = {
            let mut state = self.lock();
            state.end = Some(end);
            std::mem::take(&mut state.subscribers)
        };
        drop(subscribers);
    }
}

impl Subscriber {
    pub async fn next(&mut self, fanout: &Fanout) -> Next {
        match self.rx.recv().await {
            Some(data) => Next::Data(data),
            None if self.cut_off.load(Ordering::Acquire) => Next::CutOff,
            None => match fanout.end_event() {
                Some(end) => Next::End(end),
                None => Next::Lost,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use soulbox_protocol::process::process_event::data_event::Output;

    fn data(s: &'static str) -> DataEvent {
        DataEvent { output: Some(Output::Stdout(bytes::Bytes::from_static(s.as_bytes()))) }
    }

    #[tokio::test]
    async fn data_then_end_then_late_subscriber_gets_end() {
        let f = Fanout::default();
        let Subscription::Live(mut a) = f.subscribe() else { panic!("expected live") };
        f.publish(data("x")).await;
        f.finish(EndEvent { exited: true, status: "exit status 0".into(), ..Default::default() });
        assert!(matches!(a.next(&f).await, Next::Data(_)));
        assert!(matches!(a.next(&f).await, Next::End(e) if e.exited));
        assert!(matches!(f.subscribe(), Subscription::Ended(_)));
    }

    #[tokio::test]
    async fn no_subscriber_drops_output() {
        let f = Fanout::default();
        f.publish(data("lost")).await;
        let Subscription::Live(mut a) = f.subscribe() else { panic!("expected live") };
        f.finish(EndEvent::default());
        assert!(matches!(a.next(&f).await, Next::End(_)));
    }

    #[tokio::test]
    async fn stalled_subscriber_is_cut_off_others_continue() {
        let f = Fanout { stall_limit: Duration::from_millis(50), ..Fanout::default() };
        let Subscription::Live(mut stuck) = f.subscribe() else { panic!() };
        let Subscription::Live(mut live) = f.subscribe() else { panic!() };
        for _ in 0..SUBSCRIBER_QUEUE {
            f.publish(data("a")).await;
            assert!(matches!(live.next(&f).await, Next::Data(_)));
        }
        // The next publish waits the stall limit for `stuck`, then drops it.
        f.publish(data("b")).await;
        assert!(matches!(live.next(&f).await, Next::Data(_)));
        f.finish(EndEvent::default());
        for _ in 0..SUBSCRIBER_QUEUE {
            assert!(matches!(stuck.next(&f).await, Next::Data(_)));
        }
        assert!(matches!(stuck.next(&f).await, Next::CutOff));
        assert!(matches!(live.next(&f).await, Next::End(_)));
    }
}
