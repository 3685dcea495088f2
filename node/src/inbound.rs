//! Raft messages from peers on their way to the ledger task, bounded per member in bytes and in
//! count.
//!
//! The overlay charges a member's frames only while they are read; once a message is handed
//! over it waits here until the ledger task takes it. A count alone would let one member park
//! thousands of 8 MiB messages (tens of GiB) whenever the ledger task is busy; a count shared by
//! all would let one member's flood of small messages fill it and crowd out the others. So each
//! member may have at most [`QUEUED_BYTES_PER_MEMBER`] and [`QUEUED_MESSAGES_PER_MEMBER`]
//! waiting, and what is over is dropped (Raft resends). A message goes back to its sender's
//! allowance when the ledger task drops the [`Inbound`] it received.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use overlay::PeerId;
use tokio::sync::mpsc;

/// Messages one member may have waiting for the ledger task.
pub(crate) const QUEUED_MESSAGES_PER_MEMBER: usize = 1024;

/// Bytes of messages one member may have waiting for the ledger task: several of the largest
/// appends a leader sends a follower (a block is at most 4 MiB), far more than an honest member
/// has queued while the ledger task keeps up.
pub(crate) const QUEUED_BYTES_PER_MEMBER: usize = 64 << 20;

/// A message waiting for, or being handled by, the ledger task.
#[derive(Debug)]
pub(crate) struct Inbound {
    pub(crate) from: PeerId,
    pub(crate) bytes: Vec<u8>,
    /// Gives the bytes back to the sender's allowance when dropped.
    _charge: Charge,
}

/// What one member has waiting.
#[derive(Debug, Default)]
struct Waiting {
    bytes: usize,
    messages: usize,
}

type Allowance = Arc<Mutex<Waiting>>;

fn waiting(allowance: &Allowance) -> std::sync::MutexGuard<'_, Waiting> {
    allowance.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug)]
struct Charge {
    allowance: Allowance,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        let mut waiting = waiting(&self.allowance);
        waiting.bytes -= self.bytes;
        waiting.messages -= 1;
    }
}

/// The sending side, held by the overlay handler.
#[derive(Debug, Clone)]
pub(crate) struct InboundQueue {
    sender: mpsc::Sender<Inbound>,
    queued: Arc<BTreeMap<PeerId, Allowance>>,
}

impl InboundQueue {
    /// A queue for messages from `members`; the receiver goes to the ledger task.
    pub(crate) fn new(
        members: impl IntoIterator<Item = PeerId>,
    ) -> (Self, mpsc::Receiver<Inbound>) {
        let queued: BTreeMap<PeerId, Allowance> = members
            .into_iter()
            .map(|member| (member, Allowance::default()))
            .collect();
        // Room for every member's allowance: the channel itself never refuses a message its
        // sender may queue.
        let capacity = (queued.len() * QUEUED_MESSAGES_PER_MEMBER).max(1);
        let (sender, receiver) = mpsc::channel(capacity);
        let queue = Self {
            sender,
            queued: Arc::new(queued),
        };
        (queue, receiver)
    }

    /// Queues `bytes` from `from`; drops it (and says so) if `from` has its allowance waiting
    /// already, is not a member, or the ledger task is gone.
    pub(crate) fn offer(&self, from: PeerId, bytes: Vec<u8>) -> bool {
        let Some(allowance) = self.queued.get(&from) else {
            return false;
        };
        let len = bytes.len();
        {
            let mut waiting = waiting(allowance);
            if waiting.bytes + len > QUEUED_BYTES_PER_MEMBER
                || waiting.messages >= QUEUED_MESSAGES_PER_MEMBER
            {
                tracing::debug!(%from, "member's queued messages over its allowance; dropping one");
                return false;
            }
            waiting.bytes += len;
            waiting.messages += 1;
        }
        let inbound = Inbound {
            from,
            bytes,
            _charge: Charge {
                allowance: allowance.clone(),
                bytes: len,
            },
        };
        // A refused message is dropped here, and its charge with it.
        match self.sender.try_send(inbound) {
            Ok(()) => true,
            Err(_) => {
                tracing::debug!(%from, "message queue full or closed; dropping a message");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_over_its_bytes_is_dropped_and_others_are_not() {
        let (a, b) = (PeerId::from_bytes([1; 32]), PeerId::from_bytes([2; 32]));
        let (queue, mut receiver) = InboundQueue::new([a, b]);
        let message = vec![0u8; 8 << 20];
        let fits = QUEUED_BYTES_PER_MEMBER / message.len();
        for _ in 0..fits {
            assert!(queue.offer(a, message.clone()));
        }
        assert!(!queue.offer(a, message.clone()), "over the member's bytes");
        assert!(
            queue.offer(b, message.clone()),
            "another member is not crowded out"
        );
        assert!(
            !queue.offer(PeerId::from_bytes([3; 32]), vec![1]),
            "not a member"
        );
        // Handled messages give their bytes back.
        let taken = receiver.try_recv().ok();
        assert_eq!(taken.as_ref().map(|inbound| inbound.from), Some(a));
        assert!(
            !queue.offer(a, message.clone()),
            "still held while being handled"
        );
        drop(taken);
        assert!(queue.offer(a, message));
    }

    #[test]
    fn a_member_over_its_count_is_dropped_and_others_are_not() {
        let (a, b) = (PeerId::from_bytes([1; 32]), PeerId::from_bytes([2; 32]));
        let (queue, _receiver) = InboundQueue::new([a, b]);
        for _ in 0..QUEUED_MESSAGES_PER_MEMBER {
            assert!(queue.offer(a, vec![0u8; 16]));
        }
        assert!(!queue.offer(a, vec![0u8; 16]), "over the member's count");
        for _ in 0..QUEUED_MESSAGES_PER_MEMBER {
            assert!(queue.offer(b, vec![0u8; 16]), "not crowded out by a");
        }
    }

    #[test]
    fn a_message_refused_or_gone_gives_its_allowance_back() {
        let a = PeerId::from_bytes([1; 32]);
        let (queue, receiver) = InboundQueue::new([a]);
        for _ in 0..QUEUED_MESSAGES_PER_MEMBER {
            assert!(queue.offer(a, vec![0u8; 16]));
        }
        assert!(!queue.offer(a, vec![0u8; 16]));
        let charged = |queue: &InboundQueue| {
            let waiting = waiting(&queue.queued[&a]);
            (waiting.bytes, waiting.messages)
        };
        assert_eq!(
            charged(&queue),
            (QUEUED_MESSAGES_PER_MEMBER * 16, QUEUED_MESSAGES_PER_MEMBER)
        );
        // The ledger task stops: what was waiting goes, and what is offered now is refused.
        drop(receiver);
        assert_eq!(charged(&queue), (0, 0));
        assert!(!queue.offer(a, vec![0u8; 16]));
        assert_eq!(charged(&queue), (0, 0));
    }
}
