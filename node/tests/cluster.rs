//! The standalone consortium, multi-process, through the built `blocktorrent` binary:
//! init 5 members → cluster up → store 20 MiB as member-1 → SIGKILL member-1 → request and
//! fetch as the auditor → byte-identical; member-1 restarts from its data directory with the
//! file still on its chain; chain verify passes on every member; cluster down leaves no
//! process behind.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_blocktorrent");

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        // Whatever happened, stop every member before removing its files.
        let _ = Command::new(BIN)
            .args(["cluster", "down", "--dir"])
            .arg(&self.0)
            .output();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(args: &[&str]) -> Output {
    let output = Command::new(BIN).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "blocktorrent {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    output
}

fn json(args: &[&str]) -> serde_json::Value {
    serde_json::from_slice(&run(args).stdout).unwrap()
}

/// A base port whose QUIC and admin ports for 5 members are all free right now.
fn free_base_port() -> u16 {
    let seed = std::process::id() as u16;
    for attempt in 0..200u16 {
        let base = 20_000 + (seed.wrapping_mul(31).wrapping_add(attempt * 211)) % 30_000;
        let free = (1..=5).all(|k| {
            std::net::UdpSocket::bind(("127.0.0.1", base + k)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", base + 100 + k)).is_ok()
        });
        if free {
            return base;
        }
    }
    panic!("no free port range");
}

fn pid_of(member: &Path) -> u32 {
    std::fs::read_to_string(member.join("node.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

#[test]
fn cluster_store_kill_owner_recreate() {
    let dir = TempDir(std::env::temp_dir().join(format!("bt-cluster-{}", std::process::id())));
    let d = dir.0.to_str().unwrap().to_owned();
    let base = free_base_port().to_string();
    run(&["init", "--dir", &d, "--members", "5", "--base-port", &base]);
    let config = |k: u32| format!("{d}/member-{k}/node.toml");
    let up = json(&["cluster", "up", "--dir", &d, "--json"]);
    assert_eq!(up["members"].as_array().unwrap().len(), 5);

    let original: Vec<u8> = (0..20u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let input = dir.0.join("input.bin");
    std::fs::write(&input, &original).unwrap();
    let stored = json(&[
        "store",
        "--config",
        &config(1),
        input.to_str().unwrap(),
        "--json",
    ]);
    let file_id = stored["file_id"].as_str().unwrap().to_owned();
    assert_eq!(stored["bytes"], 20 << 20);
    assert_eq!(stored["chunks"], 80);

    // The owner dies hard.
    let owner_dir = dir.0.join("member-1");
    let owner_pid = pid_of(&owner_dir);
    Command::new("kill")
        .args(["-9", &owner_pid.to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(owner_pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(owner_pid));

    let request = json(&[
        "request",
        "--config",
        &config(5),
        &file_id,
        "--reason",
        "test audit",
        "--json",
    ]);
    assert_eq!(request["request_id"].as_str().unwrap().len(), 64);
    let out = dir.0.join("recreated.bin");
    let fetched = json(&[
        "fetch",
        "--config",
        &config(5),
        &file_id,
        "--out",
        out.to_str().unwrap(),
        "--timeout",
        "60",
        "--json",
    ]);
    assert_eq!(fetched["bytes"], 20 << 20);
    assert!(fetched["peers_used"].as_u64().unwrap() >= 2);
    assert!(
        std::fs::read(&out).unwrap() == original,
        "recreated file differs"
    );

    // Member-1 restarts from its data directory; nothing it acknowledged is lost.
    let log = std::fs::File::create(owner_dir.join("node.log")).unwrap();
    let child = Command::new(BIN)
        .args(["run", "--config", &config(1)])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    std::fs::write(owner_dir.join("node.pid"), child.id().to_string()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let output = Command::new(BIN)
            .args(["file", "show", "--config", &config(1), &file_id, "--json"])
            .output()
            .unwrap();
        if output.status.success() {
            let view: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            assert_eq!(view["owner"], "member-1");
            break;
        }
        assert!(Instant::now() < deadline, "member-1 did not come back");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Let member-1 catch up with the blocks it missed, then every chain must verify and agree.
    let target = json(&["status", "--config", &config(5), "--json"])["height"]
        .as_u64()
        .unwrap();
    while json(&["status", "--config", &config(1), "--json"])["height"]
        .as_u64()
        .unwrap()
        < target
    {
        assert!(
            Instant::now() < deadline + Duration::from_secs(30),
            "member-1 did not catch up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut heads = std::collections::BTreeSet::new();
    for k in 1..=5 {
        let report = json(&["chain", "verify", "--config", &config(k), "--json"]);
        assert_eq!(report["ok"], true, "member-{k}: {report}");
        // register, deposit, request, and at least one block of releases
        assert!(
            report["blocks"].as_u64().unwrap() >= 4,
            "member-{k}: {report}"
        );
        if report["blocks"].as_u64() == Some(target) {
            heads.insert(report["head_hash"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        heads.len(),
        1,
        "members at the same height disagree: {heads:?}"
    );

    let pids: Vec<u32> = (1..=5)
        .map(|k| pid_of(&dir.0.join(format!("member-{k}"))))
        .collect();
    run(&["cluster", "down", "--dir", &d]);
    drop(child);
    for pid in pids {
        assert!(!alive(pid), "pid {pid} still running after cluster down");
    }
}

#[test]
fn bad_input_gives_one_clear_error() {
    let missing = Command::new(BIN)
        .args(["status", "--config", "/nonexistent/node.toml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("/nonexistent/node.toml"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let usage = Command::new(BIN)
        .args(["fetch", "--config"])
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));

    let bad_id = Command::new(BIN)
        .args(["request", "--config", "x.toml", "not-hex"])
        .output()
        .unwrap();
    assert_eq!(bad_id.status.code(), Some(2));

    let dir = TempDir(std::env::temp_dir().join(format!("bt-badinput-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let config = dir.0.join("node.toml");
    std::fs::write(&config, "name = [").unwrap();
    let malformed = Command::new(BIN)
        .args(["status", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(malformed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&malformed.stderr).contains("node.toml"));
}

/// A node refuses to start with an empty admin token: with one, any request without an
/// `Authorization` header would be admitted.
#[test]
fn a_node_refuses_an_empty_admin_token() {
    let dir = TempDir(std::env::temp_dir().join(format!("bt-token-{}", std::process::id())));
    let base = free_base_port().to_string();
    let dir_arg = dir.0.to_str().unwrap();
    run(&[
        "init",
        "--dir",
        dir_arg,
        "--members",
        "2",
        "--base-port",
        &base,
    ]);
    let member = dir.0.join("member-1");
    std::fs::write(member.join("keys/admin.token"), "  \n").unwrap();
    let mut node = Command::new(BIN)
        .args(["run", "--config"])
        .arg(member.join("node.toml"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = node.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = node.kill();
            let _ = node.wait();
            panic!("the node started with an empty admin token");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::io::read_to_string(node.stderr.take().unwrap()).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("admin token"), "{stderr}");
}
