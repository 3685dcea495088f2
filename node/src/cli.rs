//! Command-line parsing and dispatch (the contract in DESIGN.md's "Command line").

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::IsTerminal;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::{Parser, Subcommand};
use keyshare::FileId;
use node::api::{FetchBody, FileView, RequestBody};
use node::demo::{DemoOptions, human_bytes};
use node::{ChainReport, FetchReceipt, RequestReceipt, Status, StoreReceipt};
use serde::Serialize;

use crate::client::{Client, Frame};

/// BlockTorrent: share private supply-chain data so an auditor can always recreate it.
#[derive(Parser, Debug)]
#[command(name = "blocktorrent", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Run a whole consortium in this process on loopback: store a sensor dataset as member-1,
    /// stop member-1, recreate the file as the auditor, check it byte for byte.
    Demo {
        /// Consortium size (3..=16); the last member audits.
        #[arg(long, default_value_t = 4)]
        members: u32,
        /// Dataset size, e.g. 16MiB, 500KB, 1GiB.
        #[arg(long, default_value = "16MiB", value_parser = parse_size)]
        file_size: u64,
        /// Seed for keys, data and node RNGs.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Print one JSON object instead of the story.
        #[arg(long)]
        json: bool,
    },
    /// Write a consortium: DIR/genesis.toml and DIR/member-K/{node.toml,keys}.
    Init {
        /// Directory to create.
        #[arg(long)]
        dir: PathBuf,
        /// Number of members.
        #[arg(long)]
        members: u32,
        /// Shares needed to rebuild a file key (default: a majority of the holders).
        #[arg(long)]
        threshold: Option<u32>,
        /// Owner peers per chunk (default: min(3, members − 1)).
        #[arg(long)]
        replication: Option<u32>,
        /// Member K listens on BASE+K (QUIC) and BASE+100+K (admin API).
        #[arg(long, default_value_t = 7100)]
        base_port: u16,
        /// Comma-separated host IPs, one per member (cycled); default 127.0.0.1.
        #[arg(long, value_delimiter = ',')]
        hosts: Vec<String>,
        /// Name of the auditor (default: the last member).
        #[arg(long)]
        auditor: Option<String>,
        /// Chunk size for new files.
        #[arg(long, default_value = "256KiB", value_parser = parse_size)]
        chunk_size: u64,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Run one member's node in the foreground; SIGINT/SIGTERM stop it cleanly.
    Run {
        /// The member's node.toml.
        #[arg(long)]
        config: PathBuf,
    },
    /// Start, stop or inspect every member of DIR as background processes.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Store a file: it is encrypted, chunked, pushed to its owners and registered on chain.
    Store {
        /// The member's node.toml.
        #[arg(long)]
        config: PathBuf,
        /// The file to store.
        path: PathBuf,
        /// Print one JSON object: {file_id, bytes, chunks, height}.
        #[arg(long)]
        json: bool,
    },
    /// File an access request for a file (auditor role).
    Request {
        /// The member's node.toml.
        #[arg(long)]
        config: PathBuf,
        /// The file id (64 hex digits).
        file_id: FileId,
        /// Why, recorded on chain.
        #[arg(long, default_value = "audit")]
        reason: String,
        /// Print one JSON object: {request_id, height}.
        #[arg(long)]
        json: bool,
    },
    /// Recreate a file after `request`: gather released shares, fetch, verify, decrypt.
    Fetch {
        /// The member's node.toml.
        #[arg(long)]
        config: PathBuf,
        /// The file id.
        file_id: FileId,
        /// Where to write it (atomically).
        #[arg(long)]
        out: PathBuf,
        /// Seconds to wait for enough released shares.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// Print one JSON object: {file_id, bytes, chunks, peers_used, chunks_refetched, seconds}.
        #[arg(long)]
        json: bool,
    },
    /// The node's view: height, head, leader, peers online, files.
    Status {
        /// The member's node.toml.
        #[arg(long)]
        config: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Master tables.
    File {
        #[command(subcommand)]
        action: FileAction,
    },
    /// The chain.
    Chain {
        #[command(subcommand)]
        action: ChainAction,
    },
    /// Benchmarks against a running cluster (`init` + `cluster up`).
    Bench {
        #[command(subcommand)]
        action: BenchAction,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum BenchAction {
    /// Caliper-style open-loop ledger load: the master tables and share deposits of small files,
    /// signed by every participant (keys from DIR) before the clock starts, sent at each fixed
    /// rate in turn; latency runs from each transaction's scheduled send to its acknowledgement
    /// (committed and applied, read back from the node).
    Ledger {
        /// The directory `init` wrote; its members must be running.
        #[arg(long)]
        dir: PathBuf,
        /// Send rates in transactions per second, one round each, e.g. 50,100,350.
        #[arg(long, value_delimiter = ',', required = true)]
        rates: Vec<u32>,
        /// Seconds each round sends for.
        #[arg(long)]
        duration: f64,
        /// Print one JSON object: {members, rounds: [{name, send_rate_tps, succ, fail,
        /// throughput_tps, latency_s: {min, avg, p50, p99, max}}]}.
        #[arg(long)]
        json: bool,
        /// Also write report.json, throughput.svg, latency.svg and report.html into this
        /// directory.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Send master tables only, no share deposits: the ledger without the holders' share
        /// checks (each holder opens and verifies every share deposited to it).
        #[arg(long)]
        tables_only: bool,
    },
    /// Overlay retrieval: store a file of random bytes as the first participant, then recreate
    /// it as the auditor from every owner (the swarm), from one owner only (the client–server
    /// baseline), and by 1, 2 and 4 fetches at once.
    Overlay {
        /// The directory `init` wrote; its members must be running.
        #[arg(long)]
        dir: PathBuf,
        /// File size, e.g. 256MiB.
        #[arg(long, value_parser = parse_size)]
        file_size: u64,
        /// Print one JSON object: {file_bytes, swarm_mb_s, single_owner_mb_s, concurrent:
        /// [{auditors, aggregate_mb_s}]}.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum ClusterAction {
    /// Start every member of DIR in the background and wait until they answer.
    Up {
        /// The directory `init` wrote.
        #[arg(long)]
        dir: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Stop every member of DIR.
    Down {
        /// The directory `init` wrote.
        #[arg(long)]
        dir: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Show which members of DIR are running.
    Status {
        /// The directory `init` wrote.
        #[arg(long)]
        dir: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum FileAction {
    /// Print a file's master table.
    Show {
        /// The member's node.toml.
        #[arg(long)]
        config: PathBuf,
        /// The file id.
        file_id: FileId,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum ChainAction {
    /// Re-check the hash chain, every signature and every contract result from genesis.
    Verify {
        /// The member's node.toml.
        #[arg(long)]
        config: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Parses `16MiB`, `500KB`, `1GiB`, `1024`.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text} is not a size like 16MiB"))?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "kib" | "k" => 1024.0,
        "mib" | "m" => 1024.0 * 1024.0,
        "gib" | "g" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use B, KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    Ok((number * factor) as u64)
}

pub(crate) fn init_tracing(command: &Command) {
    let default = match command {
        Command::Run { .. } => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// Requests that wait on the ledger or the network get this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(300);

pub(crate) fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo {
            members,
            file_size,
            seed,
            json,
        } => demo(members, file_size, seed, json),
        Command::Init {
            dir,
            members,
            threshold,
            replication,
            base_port,
            hosts,
            auditor,
            chunk_size,
            json,
        } => {
            let chunk_size_bytes = u32::try_from(chunk_size)
                .map_err(|_| anyhow!("--chunk-size {chunk_size} is too large"))?;
            let options = node::config::InitOptions {
                members,
                threshold,
                replication,
                base_port,
                hosts,
                auditor,
                chunk_size_bytes,
            };
            let mut rng = rand::make_rng::<rand::rngs::StdRng>();
            let configs = node::config::init(&dir, &options, &mut rng)?;
            if json {
                print_json(&serde_json::json!({
                    "dir": dir,
                    "genesis": dir.join("genesis.toml"),
                    "configs": configs,
                }))
            } else {
                println!(
                    "Wrote {} with {members} members:",
                    dir.join("genesis.toml").display()
                );
                for config in configs {
                    println!("  {}", config.display());
                }
                Ok(())
            }
        }
        Command::Run { config } => crate::run::run(&config),
        Command::Cluster { action } => match action {
            ClusterAction::Up { dir, json } => crate::cluster::up(&dir, json),
            ClusterAction::Down { dir, json } => crate::cluster::down(&dir, json),
            ClusterAction::Status { dir, json } => crate::cluster::status(&dir, json),
        },
        Command::Bench { action } => match action {
            BenchAction::Ledger {
                dir,
                rates,
                duration,
                json,
                report,
                tables_only,
            } => crate::bench::ledger(&crate::bench::LedgerBench {
                dir,
                rates,
                duration_s: duration,
                json,
                report,
                tables_only,
            }),
            BenchAction::Overlay {
                dir,
                file_size,
                json,
            } => crate::bench::overlay(&crate::bench::OverlayBench {
                dir,
                file_bytes: file_size,
                json,
            }),
        },
        Command::Store { config, path, json } => store(&config, &path, json),
        Command::Request {
            config,
            file_id,
            reason,
            json,
        } => {
            let client = Client::from_config(&config, CALL_TIMEOUT)?;
            let receipt: RequestReceipt =
                client.post_json("/v1/request", &RequestBody { file_id, reason })?;
            if json {
                print_json(&receipt)
            } else {
                println!(
                    "Access request {} recorded in block {}.",
                    receipt.request_id, receipt.height
                );
                Ok(())
            }
        }
        Command::Fetch {
            config,
            file_id,
            out,
            timeout,
            json,
        } => fetch(&config, file_id, &out, timeout, json),
        Command::Status { config, json } => {
            let client = Client::from_config(&config, Duration::from_secs(30))?;
            let status: Status = client.get("/v1/status")?;
            if json {
                print_json(&status)
            } else {
                println!(
                    "{}: height {}, head {}, leader {}, {} peers online, {} files",
                    status.member,
                    status.height,
                    status.head_hash,
                    status.leader.as_deref().unwrap_or("unknown"),
                    status.peers_online,
                    status.files
                );
                if let Some(reason) = &status.ledger_error {
                    println!("UNHEALTHY: the ledger is restarting after an error: {reason}");
                }
                Ok(())
            }
        }
        Command::File {
            action:
                FileAction::Show {
                    config,
                    file_id,
                    json,
                },
        } => {
            let client = Client::from_config(&config, Duration::from_secs(30))?;
            let view: FileView = client.get(&format!("/v1/file/{file_id}"))?;
            if json {
                print_json(&view)
            } else {
                show_file(&view);
                Ok(())
            }
        }
        Command::Chain {
            action: ChainAction::Verify { config, json },
        } => {
            let client = Client::from_config(&config, CALL_TIMEOUT)?;
            let report: ChainReport = client.get("/v1/chain/verify")?;
            if json {
                print_json(&report)?;
            } else if report.ok {
                println!(
                    "Chain verified: {} blocks, {} transactions, head {}.",
                    report.blocks, report.txs, report.head_hash
                );
            }
            match report.problem {
                None => Ok(()),
                Some(problem) => Err(anyhow!("chain verification failed: {problem}")),
            }
        }
    }
}

fn show_file(view: &FileView) {
    println!("file        {}", view.file_id);
    println!("owner       {}", view.owner);
    println!(
        "size        {} ({} bytes)",
        human_bytes(view.size_bytes),
        view.size_bytes
    );
    println!(
        "chunks      {} × {}",
        view.chunks,
        human_bytes(u64::from(view.chunk_size_bytes))
    );
    println!(
        "stored at   {} ms (block {})",
        view.timestamp_ms, view.height
    );
    println!(
        "shares      {}-of-{} held by {}",
        view.threshold,
        view.holders.len(),
        view.holders.join(", ")
    );
    println!(
        "deposited   {}",
        if view.shares_deposited { "yes" } else { "no" }
    );
    if !view.complaints.is_empty() {
        println!("complaints  {}", view.complaints.join(", "));
    }
    for (index, (hash, owners)) in view.chunk_hashes.iter().zip(&view.chunk_owners).enumerate() {
        println!("  chunk {index:>5}  {hash}  {}", owners.join(", "));
    }
}

fn store(config: &Path, path: &Path, json: bool) -> anyhow::Result<()> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let metadata = file
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?;
    if !metadata.is_file() {
        return Err(anyhow!("{} is not a regular file", path.display()));
    }
    let len = metadata.len();
    if len > node::MAX_RECORD_BYTES {
        return Err(anyhow!(
            "{} holds {}; a file may hold at most {}",
            path.display(),
            human_bytes(len),
            human_bytes(node::MAX_RECORD_BYTES)
        ));
    }
    // Refused here, not after an upload the node would refuse.
    let consortium = node::config::LoadedConfig::load(config)?.consortium;
    ledger::check_table_plan(len, consortium.chunk_size_bytes, consortium.replication)
        .map_err(|error| anyhow!("cannot store {}: {error}", path.display()))?;
    let client = Client::streaming(config)?;
    // A node that is down or a wrong token is reported plainly, not as a broken upload.
    client.get::<Status>("/v1/status")?;
    let bar = progress_bar(json, len, "uploading");
    let mut upload = bar.wrap_read(std::io::BufReader::with_capacity(1 << 20, file));
    let mut answer = client.post_stream("/v1/store", &mut upload, len)?;
    bar.set_position(0);
    bar.set_message("encrypting and pushing");
    let receipt: StoreReceipt = loop {
        match answer.next()? {
            Frame::Progress(progress) => show(&bar, "pushed", &progress),
            Frame::Done(receipt) => break receipt,
            Frame::Data(_) => return Err(anyhow!("the node answered a store with file data")),
        }
    };
    bar.finish_and_clear();
    if json {
        print_json(&receipt)
    } else {
        println!(
            "Stored {} as file {} ({} chunks, registered in block {}).",
            path.display(),
            receipt.file_id,
            receipt.chunks,
            receipt.height
        );
        Ok(())
    }
}

fn fetch(
    config: &Path,
    file_id: FileId,
    out: &Path,
    timeout: u64,
    json: bool,
) -> anyhow::Result<()> {
    let out =
        std::path::absolute(out).with_context(|| format!("cannot resolve {}", out.display()))?;
    let client = Client::streaming(config)?;
    let mut partial = PartialFile::create(&out)?;
    let bar = progress_bar(json, 0, "waiting for released shares, then fetching");
    let mut answer = client.post_json_frames(
        "/v1/fetch",
        &FetchBody {
            file_id,
            timeout_secs: timeout,
            only_from: None,
        },
    )?;
    let receipt: FetchReceipt = loop {
        match answer.next()? {
            Frame::Data(bytes) => partial.write(&bytes)?,
            Frame::Progress(progress) => show(&bar, "fetched", &progress),
            Frame::Done(receipt) => break receipt,
        }
    };
    partial.commit(receipt.bytes)?;
    bar.finish_and_clear();
    if json {
        print_json(&receipt)
    } else {
        println!(
            "Recreated {} into {}: {} chunks from {} peers ({} refetched) in {:.2} s.",
            human_bytes(receipt.bytes),
            out.display(),
            receipt.chunks,
            receipt.peers_used,
            receipt.chunks_refetched,
            receipt.seconds
        );
        if !receipt.lying_peers.is_empty() {
            println!(
                "Peers that served corrupt chunks: {}",
                receipt.lying_peers.join(", ")
            );
        }
        Ok(())
    }
}

/// A progress bar on stderr when it is a terminal and output is not JSON; hidden otherwise. With
/// `len` 0 (the size is not known yet) it starts as a spinner.
fn progress_bar(json: bool, len: u64, message: &'static str) -> indicatif::ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len).with_message(message);
    if len == 0 {
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
    } else {
        bar.set_style(bytes_style());
    }
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

fn bytes_style() -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(
        "{spinner} {msg:<40} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ")
}

fn show(bar: &indicatif::ProgressBar, verb: &str, progress: &node::Progress) {
    if bar.length() != Some(progress.bytes_total) {
        bar.set_style(bytes_style());
        bar.set_length(progress.bytes_total);
    }
    bar.set_position(progress.bytes_done);
    bar.set_message(format!(
        "{verb} {}/{} chunks, {} peers",
        progress.chunks_done, progress.chunks_total, progress.peers
    ));
}

/// The output of `fetch`, written under a temporary name beside its destination and renamed
/// into place only when complete and synced, so a reader never sees half a file and a failed
/// fetch leaves nothing behind.
struct PartialFile {
    file: std::io::BufWriter<std::fs::File>,
    temp: PathBuf,
    out: PathBuf,
    written: u64,
    committed: bool,
}

impl PartialFile {
    fn create(out: &Path) -> anyhow::Result<Self> {
        let name = out
            .file_name()
            .ok_or_else(|| anyhow!("{} is not a file path", out.display()))?;
        let parent = out.parent().unwrap_or(Path::new("."));
        if !parent.is_dir() {
            return Err(anyhow!(
                "cannot write {}: {} is not a directory",
                out.display(),
                parent.display()
            ));
        }
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".partial-{}", std::process::id()));
        let temp = out.with_file_name(temp_name);
        // Readable by its owner only: it holds plaintext (and so does the file it becomes).
        let file = std::fs::File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .with_context(|| format!("cannot create {}", temp.display()))?;
        Ok(Self {
            file: std::io::BufWriter::with_capacity(1 << 20, file),
            temp,
            out: out.to_owned(),
            written: 0,
            committed: false,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        use std::io::Write;
        self.file
            .write_all(bytes)
            .with_context(|| format!("cannot write {}", self.temp.display()))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn commit(mut self, expected_bytes: u64) -> anyhow::Result<()> {
        use std::io::Write;
        if self.written != expected_bytes {
            return Err(anyhow!(
                "the node sent {} bytes of a {expected_bytes}-byte file",
                self.written
            ));
        }
        let context = || format!("cannot write {}", self.temp.display());
        self.file.flush().with_context(context)?;
        self.file.get_ref().sync_all().with_context(context)?;
        std::fs::rename(&self.temp, &self.out)
            .with_context(|| format!("cannot write {}", self.out.display()))?;
        self.committed = true;
        if let Some(dir) = self.out.parent()
            && let Ok(dir) = std::fs::File::open(dir)
        {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

fn demo(members: u32, file_size: u64, seed: u64, json: bool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let options = DemoOptions {
        members,
        file_size_bytes: file_size,
        seed,
        compute: crate::run::compute_pool(),
    };
    let report = runtime.block_on(node::demo::run(&options, |line| {
        if !json {
            println!("{line}");
        }
    }))?;
    if json {
        print_json(&report)?;
    }
    if !report.identical {
        return Err(anyhow!("the recreated file differs from the original"));
    }
    if !report.chain_ok {
        return Err(anyhow!("the auditor's chain did not verify"));
    }
    Ok(())
}
