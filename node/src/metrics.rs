//! Counters for `/metrics` (Prometheus text format). Plain atomics: they are read far less often
//! than they are written.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The node's counters.
#[derive(Default)]
pub struct Metrics {
    /// Height of the last applied block.
    pub ledger_height: AtomicU64,
    /// Transactions in applied blocks.
    pub tx_committed: AtomicU64,
    /// Chunks this node stored for others.
    pub chunks_stored: AtomicU64,
    /// Chunks this node served.
    pub chunks_served: AtomicU64,
    /// Ciphertext bytes this node fetched.
    pub fetch_bytes: AtomicU64,
    /// 1 while the ledger runs, 0 while it restarts after an error.
    pub ledger_healthy: AtomicU64,
    /// Times the ledger failed and was reopened.
    pub ledger_restarts: AtomicU64,
    /// Fetches running now (each holds up to two windows of chunks).
    pub fetches_active: AtomicU64,
    /// Bytes of stored chunks the scrubber re-hashed.
    pub scrub_bytes: AtomicU64,
    /// Stored chunks the scrubber found rotten and quarantined.
    pub chunks_quarantined: AtomicU64,
    /// Last measured RTT per peer name, in microseconds.
    pub peer_rtt_us: Mutex<BTreeMap<String, u64>>,
}

/// Counts one unit in a gauge while it lives.
pub(crate) struct GaugeGuard<'a>(&'a AtomicU64);

impl<'a> GaugeGuard<'a> {
    pub(crate) fn new(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self(gauge)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Adds `value` to a counter.
    pub fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
    }

    /// Renders the Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters = [
            (
                "blocktorrent_ledger_height",
                "gauge",
                "Height of the last applied block.",
                &self.ledger_height,
            ),
            (
                "blocktorrent_tx_committed_total",
                "counter",
                "Transactions in applied blocks.",
                &self.tx_committed,
            ),
            (
                "blocktorrent_chunks_stored_total",
                "counter",
                "Chunks stored for other members.",
                &self.chunks_stored,
            ),
            (
                "blocktorrent_chunks_served_total",
                "counter",
                "Chunks served to other members.",
                &self.chunks_served,
            ),
            (
                "blocktorrent_fetch_bytes_total",
                "counter",
                "Ciphertext bytes fetched.",
                &self.fetch_bytes,
            ),
            (
                "blocktorrent_ledger_healthy",
                "gauge",
                "1 while the ledger runs, 0 while it restarts after an error.",
                &self.ledger_healthy,
            ),
            (
                "blocktorrent_ledger_restarts_total",
                "counter",
                "Times the ledger failed and was reopened from its durable state.",
                &self.ledger_restarts,
            ),
            (
                "blocktorrent_fetches_active",
                "gauge",
                "Fetches running now.",
                &self.fetches_active,
            ),
            (
                "blocktorrent_scrub_bytes_total",
                "counter",
                "Bytes of stored chunks the scrubber re-hashed.",
                &self.scrub_bytes,
            ),
            (
                "blocktorrent_chunks_quarantined_total",
                "counter",
                "Stored chunks found rotten by the scrubber and no longer served.",
                &self.chunks_quarantined,
            ),
        ];
        for (name, kind, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        let _ = writeln!(
            out,
            "# HELP blocktorrent_peer_rtt_seconds Last measured round trip to each peer.\n# TYPE blocktorrent_peer_rtt_seconds gauge"
        );
        let rtts = self
            .peer_rtt_us
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (peer, rtt_us) in rtts.iter() {
            let _ = writeln!(
                out,
                "blocktorrent_peer_rtt_seconds{{peer=\"{peer}\"}} {}",
                *rtt_us as f64 / 1e6
            );
        }
        out
    }
}
