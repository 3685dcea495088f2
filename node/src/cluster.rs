//! `blocktorrent cluster up|down|status`: every member of an `init` directory as a background
//! process of this same binary, with its pid in `member-K/node.pid` and its log in
//! `member-K/node.log`.

#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use node::Status;
use serde::Serialize;

use crate::client::Client;

/// How long `up` waits for every member to answer.
const UP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `down` waits for a member to exit before killing it.
const DOWN_TIMEOUT: Duration = Duration::from_secs(15);

fn members(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let mut members: Vec<(u64, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let k: u64 = name.strip_prefix("member-")?.parse().ok()?;
            entry
                .path()
                .join("node.toml")
                .is_file()
                .then(|| (k, entry.path()))
        })
        .collect();
    members.sort();
    if members.is_empty() {
        return Err(anyhow!(
            "{} holds no member-K/node.toml; run `blocktorrent init` first",
            dir.display()
        ));
    }
    Ok(members.into_iter().map(|(_, path)| path).collect())
}

/// The `node.toml` of every member of DIR, in member order.
pub(crate) fn member_configs(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    Ok(members(dir)?
        .into_iter()
        .map(|member| member.join("node.toml"))
        .collect())
}

fn read_pid(member: &Path) -> Option<u32> {
    std::fs::read_to_string(member.join("node.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; its state letter is Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z")
        })
        .unwrap_or(false)
}

#[derive(Serialize)]
struct MemberState {
    member: String,
    pid: Option<u32>,
    running: bool,
    height: Option<u64>,
    leader: Option<String>,
}

fn name_of(member: &Path) -> String {
    member
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub(crate) fn up(dir: &Path, json: bool) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let members = members(dir)?;
    for member in &members {
        if let Some(pid) = read_pid(member).filter(|pid| alive(*pid)) {
            return Err(anyhow!(
                "{} is already running (pid {pid}); run `cluster down` first",
                name_of(member)
            ));
        }
    }
    for member in &members {
        let log_path = member.join("node.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let err = log.try_clone().context("cannot share the log file")?;
        use std::os::unix::process::CommandExt;
        let child = std::process::Command::new(&exe)
            .arg("run")
            .arg("--config")
            .arg(member.join("node.toml"))
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {}", name_of(member)))?;
        std::fs::write(member.join("node.pid"), child.id().to_string())
            .with_context(|| format!("cannot write {}", member.join("node.pid").display()))?;
    }
    let deadline = Instant::now() + UP_TIMEOUT;
    let mut states = Vec::new();
    for member in &members {
        let client = Client::from_config(&member.join("node.toml"), Duration::from_secs(5))?;
        let status = loop {
            let pid = read_pid(member).unwrap_or(0);
            if !alive(pid) {
                return Err(anyhow!(
                    "{} exited at startup; see {}",
                    name_of(member),
                    member.join("node.log").display()
                ));
            }
            match client.get::<Status>("/v1/status") {
                Ok(status) if status.leader.is_some() => break status,
                _ if Instant::now() > deadline => {
                    return Err(anyhow!(
                        "{} did not become ready within {} s; see {}",
                        name_of(member),
                        UP_TIMEOUT.as_secs(),
                        member.join("node.log").display()
                    ));
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        states.push(MemberState {
            member: name_of(member),
            pid: read_pid(member),
            running: true,
            height: Some(status.height),
            leader: status.leader,
        });
    }
    report(&states, json, "up")
}

pub(crate) fn down(dir: &Path, json: bool) -> anyhow::Result<()> {
    let members = members(dir)?;
    let mut states = Vec::new();
    for member in &members {
        let pid = read_pid(member);
        if let Some(pid) = pid.filter(|pid| alive(*pid)) {
            if let Ok(client) =
                Client::from_config(&member.join("node.toml"), Duration::from_secs(5))
            {
                let _ = client
                    .post_json::<_, serde_json::Value>("/v1/shutdown", &serde_json::json!({}));
            }
            let deadline = Instant::now() + DOWN_TIMEOUT;
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if alive(pid) {
                let _ = std::process::Command::new("kill")
                    .arg("-9")
                    .arg(pid.to_string())
                    .status();
            }
        }
        let _ = std::fs::remove_file(member.join("node.pid"));
        states.push(MemberState {
            member: name_of(member),
            pid,
            running: false,
            height: None,
            leader: None,
        });
    }
    report(&states, json, "down")
}

pub(crate) fn status(dir: &Path, json: bool) -> anyhow::Result<()> {
    let members = members(dir)?;
    let mut states = Vec::new();
    for member in &members {
        let pid = read_pid(member);
        let running = pid.is_some_and(alive);
        let status = running
            .then(|| Client::from_config(&member.join("node.toml"), Duration::from_secs(5)).ok())
            .flatten()
            .and_then(|client| client.get::<Status>("/v1/status").ok());
        states.push(MemberState {
            member: name_of(member),
            pid,
            running,
            height: status.as_ref().map(|s| s.height),
            leader: status.and_then(|s| s.leader),
        });
    }
    report(&states, json, "status")
}

fn report(states: &[MemberState], json: bool, action: &str) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string(&serde_json::json!({ "action": action, "members": states }))?
        );
        return Ok(());
    }
    for state in states {
        match (state.running, state.pid) {
            (true, Some(pid)) => println!(
                "{:<12} running (pid {pid}), height {}, leader {}",
                state.member,
                state.height.map_or("?".into(), |h| h.to_string()),
                state.leader.as_deref().unwrap_or("unknown")
            ),
            _ => println!("{:<12} stopped", state.member),
        }
    }
    Ok(())
}
