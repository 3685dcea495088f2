//! The short kill -9 soak: `scripts/soak.sh` for 30 s against this build's `blocktorrent`, on a
//! five-member loopback cluster of real processes. A member (the leader every other time) is
//! SIGKILLed and restarted every 4 s under steady store load; the script then checks that every
//! acknowledged store is on every member's chain, `chain verify` passes everywhere, the heads
//! agree, and the auditor recreates every acknowledged file byte for byte. The long run (10
//! minutes, 50+ kills) is the same script; see the README.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The script bounds each of its steps; this bounds the whole, should one of them hang.
const WATCHDOG: Duration = Duration::from_secs(400);

#[test]
fn kill_9_soak_loses_nothing() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/soak.sh");
    let mut child = Command::new("bash")
        .arg(&script)
        .args([
            "--duration",
            "30",
            "--kill-every",
            "4",
            "--base-port",
            "28900",
        ])
        .env("BT_BIN", env!("CARGO_BIN_EXE_blocktorrent"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("bash runs scripts/soak.sh");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > WATCHDOG {
            // SIGTERM: the script's trap stops the cluster and removes its directory.
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
            panic!("the soak did not finish within {WATCHDOG:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = std::io::read_to_string(child.stdout.take().unwrap()).unwrap();
    print!("{output}");
    assert!(status.success(), "soak failed ({status}):\n{output}");
    let summary = output
        .lines()
        .find(|line| line.starts_with("soak: acknowledged"))
        .expect("the soak prints its figures");
    assert!(
        summary.contains("lost 0") && summary.contains("unrecoverable 0"),
        "{summary}"
    );
    let kills: u32 = summary
        .split("kills ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("the summary names its kills");
    assert!(kills >= 3, "too few kills to mean anything: {summary}");
}
