//! Raft messages from peers on their way to the ledger task, bounded in count and, per member,
//! in bytes.
//!
//! The overlay charges a member's frames only while they are read; once a message is handed
//! over it waits here until the ledger task takes it. A count alone would let one member park
//! thousands of 8 MiB messages (tens of GiB) whenever the ledger task is busy, and crowd out the
//! others: so each member may have at most [`QUEUED_BYTES_PER_MEMBER`] waiting, and what is over
//! is dropped (Raft resends). A message's bytes go back to its sender's allowance when the
//! ledger task drops the [`Inbound`] it received.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use overlay::PeerId;
use tokio::sync::mpsc;

/// Messages waiting for the ledger task, from all members together.
pub(crate) const QUEUED_MESSAGES: usize = 4096;

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

#[derive(Debug)]
struct Charge {
    queued: Arc<AtomicUsize>,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.queued.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

/// The sending side, held by the overlay handler.
#[derive(Debug, Clone)]
pub(crate) struct InboundQueue {
    sender: mpsc::Sender<Inbound>,
    queued: Arc<BTreeMap<PeerId, Arc<AtomicUsize>>>,
}

impl InboundQueue {
    /// A queue for messages from `members`; the receiver goes to the ledger task.
    pub(crate) fn new(
        members: impl IntoIterator<Item = PeerId>,
    ) -> (Self, mpsc::Receiver<Inbound>) {
        let (sender, receiver) = mpsc::channel(QUEUED_MESSAGES);
        let queued = members
            .into_iter()
            .map(|member| (member, Arc::new(AtomicUsize::new(0))))
            .collect();
        let queue = Self {
            sender,
            queued: Arc::new(queued),
        };
        (queue, receiver)
    }

    /// Queues `bytes` from `from`; drops it (and says so) if the queue is full, `from` has its
    /// allowance waiting already, or is not a member.
    pub(crate) fn offer(&self, from: PeerId, bytes: Vec<u8>) -> bool {
        let Some(queued) = self.queued.get(&from) else {
            return false;
        };
        let len = bytes.len();
        let charged = queued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |waiting| {
                (waiting + len <= QUEUED_BYTES_PER_MEMBER).then_some(waiting + len)
            })
            .is_ok();
        if !charged {
            tracing::debug!(%from, "member's queued messages over its allowance; dropping one");
            return false;
        }
        let inbound = Inbound {
            from,
            bytes,
            _charge: Charge {
                queued: queued.clone(),
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
    fn a_message_the_full_queue_refuses_gives_its_bytes_back() {
        let a = PeerId::from_bytes([1; 32]);
        let (queue, _receiver) = InboundQueue::new([a]);
        for _ in 0..QUEUED_MESSAGES {
            assert!(queue.offer(a, vec![0u8; 16]));
        }
        assert!(!queue.offer(a, vec![0u8; 16]));
        let waiting = queue.queued.get(&a).map(|q| q.load(Ordering::SeqCst));
        assert_eq!(waiting, Some(QUEUED_MESSAGES * 16));
    }
}
