//! What makes the sidecar sync: its schedule, `SIGHUP`, the webhook, fleet
//! notices. Triggers coalesce: at most one sync runs and one waits, however
//! many triggers arrive meanwhile (a queue of one).

pub mod schedule;
pub mod webhook;

use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// The first sync after start.
    Start,
    /// The poll schedule fired.
    Poll,
    /// A retry after a failure, with backoff.
    Retry,
    /// `SIGHUP`.
    Signal,
    /// `POST /webhook` with a valid signature.
    Webhook,
    /// Time to check the gateway still runs `current`.
    Drift,
    /// Another replica announced a commit over Redis, or the fleet
    /// channel came back after notices may have been missed.
    Fleet,
}

impl Trigger {
    pub fn as_str(&self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::Poll => "poll",
            Trigger::Retry => "retry",
            Trigger::Signal => "signal",
            Trigger::Webhook => "webhook",
            Trigger::Drift => "drift",
            Trigger::Fleet => "fleet",
        }
    }
}

/// The sending side, cloned into every trigger source.
#[derive(Debug, Clone)]
pub struct Triggers {
    tx: mpsc::Sender<Trigger>,
}

impl Triggers {
    /// A queue of one: see the module docs.
    pub fn channel() -> (Triggers, mpsc::Receiver<Trigger>) {
        let (tx, rx) = mpsc::channel(1);
        (Triggers { tx }, rx)
    }

    /// Asks for a sync. Returns false when one is already queued (this
    /// trigger is covered by it) or the loop has stopped.
    pub fn fire(&self, trigger: Trigger) -> bool {
        self.tx.try_send(trigger).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_flood_of_triggers_coalesces_into_one_queued_sync() {
        let (triggers, mut rx) = Triggers::channel();
        let accepted = (0..1000)
            .filter(|_| triggers.fire(Trigger::Webhook))
            .count();
        assert_eq!(accepted, 1);
        assert_eq!(rx.recv().await, Some(Trigger::Webhook));
        assert!(rx.try_recv().is_err());
        assert!(triggers.fire(Trigger::Signal));
    }
}
