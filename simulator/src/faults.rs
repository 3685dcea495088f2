//! The faults a run injects during its safety phase, drawn from the seed: crashes with restarts,
//! partitions (symmetric or one-way) that heal, windows of message loss and duplication, a
//! member that serves corrupt chunks and a holder that releases bad shares, both for the whole
//! run, and disks that fail every write and sync for a while. At most one member is down and one cut
//! off at a time, so a majority of voters can still commit while faults are on; everything is
//! healed before the liveness phase.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::time::Duration;

use rand::RngExt;
use rand::rngs::StdRng;
use serde::Serialize;
use tokio::time::Instant;

use crate::error::SimError;
use crate::net::LinkConfig;
use crate::world::World;

/// Which faults are on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Faults {
    /// Crash a member (losing what it did not sync) and restart it from its disks.
    pub crash: bool,
    /// Cut a member off, both ways or one way, and heal it.
    pub partition: bool,
    /// Lose 5% of requests, answers and messages for a while.
    pub loss: bool,
    /// Deliver 5% of messages twice for a while.
    pub duplicate: bool,
    /// One participant serves corrupt chunks all run long.
    pub corrupt: bool,
    /// One participant releases random shares (sealed as good ones would be) all run long.
    pub bad_shares: bool,
    /// A member's disks fail every write and sync for a while, then work again.
    pub disk: bool,
}

/// The names `--faults` takes.
pub const FAULT_NAMES: [&str; 7] = [
    "crash",
    "partition",
    "loss",
    "duplicate",
    "corrupt",
    "bad-shares",
    "disk",
];

impl FromStr for Faults {
    type Err = SimError;

    fn from_str(list: &str) -> Result<Self, SimError> {
        let mut faults = Self::default();
        for name in list
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
        {
            match name {
                "none" => {}
                "all" => {
                    faults = Self {
                        crash: true,
                        partition: true,
                        loss: true,
                        duplicate: true,
                        corrupt: true,
                        bad_shares: true,
                        disk: true,
                    }
                }
                "crash" => faults.crash = true,
                "partition" => faults.partition = true,
                "loss" => faults.loss = true,
                "duplicate" => faults.duplicate = true,
                "corrupt" => faults.corrupt = true,
                "bad-shares" => faults.bad_shares = true,
                "disk" => faults.disk = true,
                other => {
                    return Err(SimError::Config(format!(
                        "unknown fault {other:?}; the faults are {}, all or none",
                        FAULT_NAMES.join(", ")
                    )));
                }
            }
        }
        Ok(faults)
    }
}

impl std::fmt::Display for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let on: Vec<&str> = [
            (self.crash, "crash"),
            (self.partition, "partition"),
            (self.loss, "loss"),
            (self.duplicate, "duplicate"),
            (self.corrupt, "corrupt"),
            (self.bad_shares, "bad-shares"),
            (self.disk, "disk"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| *name)
        .collect();
        f.write_str(if on.is_empty() { "none" } else { "" })?;
        f.write_str(&on.join(","))
    }
}

/// One injected fault, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct FaultEvent {
    /// Virtual seconds since the start of the safety phase.
    pub at_s: f64,
    /// What happened.
    pub what: String,
}

/// Something to undo at a given time.
enum Pending {
    Restart(usize),
    Repair(usize),
    Links,
    Disk(usize),
}

/// Injects `faults` until `until`, then heals everything. `liar` is set up front by the caller.
pub async fn inject(
    world: &mut World,
    faults: Faults,
    links: &LinkConfig,
    until: Instant,
    rng: &mut StdRng,
) -> Result<Vec<FaultEvent>, SimError> {
    let start = Instant::now();
    let mut log = Vec::new();
    let mut pending: Vec<(Instant, Pending)> = Vec::new();
    let mut kinds = Vec::new();
    if faults.crash {
        kinds.push("crash");
    }
    if faults.partition {
        kinds.push("partition");
    }
    if faults.loss {
        kinds.push("loss");
    }
    if faults.duplicate {
        kinds.push("duplicate");
    }
    if faults.disk {
        kinds.push("disk");
    }
    let mut note = |what: String| {
        log.push(FaultEvent {
            at_s: start.elapsed().as_secs_f64(),
            what,
        })
    };
    while Instant::now() < until {
        let next = Instant::now() + Duration::from_millis(rng.random_range(1_000..4_000));
        tokio::time::sleep_until(next.min(until)).await;
        let now = Instant::now();
        let due: Vec<Pending> = {
            let (due, later): (Vec<_>, Vec<_>) = pending.drain(..).partition(|(at, _)| *at <= now);
            pending = later;
            due.into_iter().map(|(_, undo)| undo).collect()
        };
        for undo in due {
            heal(world, links, undo, &mut note)?;
        }
        if now >= until || kinds.is_empty() {
            continue;
        }
        let lasting = now + Duration::from_millis(rng.random_range(1_000..5_000));
        let busy: BTreeSet<usize> = pending
            .iter()
            .filter_map(|(_, undo)| match undo {
                Pending::Restart(i) | Pending::Repair(i) | Pending::Disk(i) => Some(*i),
                Pending::Links => None,
            })
            .collect();
        let target = rng.random_range(0..world.len());
        match kinds[rng.random_range(0..kinds.len())] {
            "crash" if busy.is_empty() && world.is_up(target) => {
                world.crash(target).await;
                note(format!("crash member-{}", target + 1));
                pending.push((lasting, Pending::Restart(target)));
            }
            "partition" if busy.is_empty() => {
                let peer = world.peer(target);
                let way = rng.random_range(0..3);
                for other in (0..world.len()).filter(|i| *i != target) {
                    let other = world.peer(other);
                    if way != 1 {
                        world.network.set_cut(peer, other, true);
                    }
                    if way != 2 {
                        world.network.set_cut(other, peer, true);
                    }
                }
                let how = ["both ways", "inbound only", "outbound only"][way];
                note(format!("cut off member-{} ({how})", target + 1));
                pending.push((lasting, Pending::Repair(target)));
            }
            "disk" if busy.is_empty() && world.is_up(target) => {
                world.fail_disks(target, true);
                note(format!("disk errors on member-{}", target + 1));
                pending.push((lasting, Pending::Disk(target)));
            }
            kind @ ("loss" | "duplicate")
                if !pending.iter().any(|(_, p)| matches!(p, Pending::Links)) =>
            {
                let mut faulty = links.clone();
                if kind == "loss" {
                    faulty.loss_probability = 0.05;
                } else {
                    faulty.duplicate_probability = 0.05;
                }
                world.network.set_links(faulty);
                note(format!("{kind} 5% on every link"));
                pending.push((lasting, Pending::Links));
            }
            _ => {}
        }
    }
    for (_, undo) in pending {
        heal(world, links, undo, &mut note)?;
    }
    Ok(log)
}

fn heal(
    world: &mut World,
    links: &LinkConfig,
    undo: Pending,
    note: &mut impl FnMut(String),
) -> Result<(), SimError> {
    match undo {
        Pending::Restart(index) => {
            world.start(index)?;
            note(format!("restart member-{}", index + 1));
        }
        Pending::Repair(index) => {
            world.network.repair_all();
            note(format!("heal member-{}'s links", index + 1));
        }
        Pending::Links => {
            world.network.set_links(links.clone());
            note("links back to normal".into());
        }
        Pending::Disk(index) => {
            world.fail_disks(index, false);
            note(format!("member-{}'s disks work again", index + 1));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_lists_parse_and_print_back() {
        let faults: Faults = "crash, loss".parse().unwrap_or_default();
        assert!(faults.crash && faults.loss && !faults.partition && !faults.corrupt);
        assert_eq!(faults.to_string(), "crash,loss");
        let all: Faults = "all".parse().unwrap_or_default();
        assert_eq!(all.to_string(), FAULT_NAMES.join(","));
        assert_eq!(
            "none".parse::<Faults>().map(|f| f.to_string()).ok(),
            Some("none".into())
        );
        let error = "crash,meteor"
            .parse::<Faults>()
            .err()
            .map(|e| e.to_string());
        assert!(error.is_some_and(|e| e.contains("meteor") && e.contains("partition")));
    }
}
