//! `shardctl cluster local --hosts N --dir DIR`: a whole cluster on this
//! machine, to try it. Generates the operator and gossip keys (once), a
//! roster of N hosts on 127.0.0.2, 127.0.0.3, ... (one failure domain
//! each), signs it, writes one agent config per host and starts the N
//! agents (`shard-agent` next to this binary, or `--agent-bin`), each with
//! one sparse device file by default, and an admin token in
//! DIR/keys/admin.token). Prints their URLs, and stops them
//! all (SIGTERM, then SIGKILL after a grace period) on Ctrl-C or SIGTERM.
//! Run again on the same DIR, it reuses the keys, data and generations.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::unistd::Pid;

use super::exit;

/// Hosts `local` starts at most (127.0.0.2 up to 127.0.0.201).
const HOSTS_MAX: usize = 200;
/// How long stopping agents get before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(15);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many agents to start.
    #[arg(long, default_value_t = 5)]
    pub hosts: usize,
    /// Directory for the keys, the roster and each host's data.
    #[arg(long)]
    pub dir: PathBuf,
    /// HTTP port of every agent (each has its own address).
    #[arg(long, default_value_t = 7480)]
    pub http_port: u16,
    /// Gossip (UDP) port of every agent.
    #[arg(long, default_value_t = 7946)]
    pub gossip_port: u16,
    /// The first host's address; the others follow it (loopback only).
    #[arg(long, default_value = "127.0.0.2")]
    pub first_ip: std::net::Ipv4Addr,
    /// Device files per agent.
    #[arg(long, default_value_t = 1)]
    pub devices: usize,
    /// Size of each device file (sparse), e.g. 1GiB.
    #[arg(long, default_value = "1GiB", value_parser = crate::units::parse_size)]
    pub device_size: u64,
    /// The shard-agent binary (default: next to this shardctl).
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
    /// Write the files and print the commands without starting anything.
    #[arg(long)]
    pub dry_run: bool,
}

/// The roster document of `hosts` local hosts.
fn roster_text(hosts: usize, first_ip: std::net::Ipv4Addr, http_port: u16, gossip_port: u16) -> String {
    let mut text = String::from("# written by `shardctl cluster local`\ncluster = \"local\"\nepoch = 1\n");
    // Objects need k + m failure domains: 4+2 from six hosts, else none.
    if hosts >= 6 {
        text.push_str("\n[code]\ndata = 4\nparity = 2\n");
    }
    for i in 1..=hosts {
        let ip = std::net::Ipv4Addr::from(u32::from(first_ip) + (i as u32 - 1));
        let _ = write!(
            text,
            "\n[[host]]\nid = {i}\nname = \"local-{i}\"\ngossip = \"{ip}:{gossip_port}\"\nhttp = \"{ip}:{http_port}\"\ndomain = \"domain-{i}\"\nweight = 1\n"
        );
    }
    text
}

fn agent_config(dir: &Path, keys: &Path, roster: &Path, host: usize, args: &Args, http: &str) -> String {
    format!(
        "# written by `shardctl cluster local`\ndata_dir = {data:?}\nlisten = {http:?}\ndefault_device_count = {n}\ndefault_device_size_bytes = {size}\nadmin_token_file = {token:?}\n\n[cluster]\nhost_id = {host}\nroster = {roster:?}\ngossip_key = {gossip:?}\noperator_public_key = {public:?}\nclient_token_file = {client:?}\n",
        data = dir.display().to_string(),
        token = keys.join("admin.token").display().to_string(),
        n = args.devices.max(1),
        size = args.device_size,
        roster = roster.display().to_string(),
        gossip = keys.join("gossip.keys").display().to_string(),
        public = keys.join("operator.pub").display().to_string(),
        client = keys.join("client.token").display().to_string(),
    )
}

pub fn run(args: &Args) -> anyhow::Result<u8> {
    anyhow::ensure!((1..=HOSTS_MAX).contains(&args.hosts), "--hosts must be from 1 to {HOSTS_MAX}");
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = args.dir.canonicalize()?;
    let keys = dir.join("keys");
    if !keys.join("operator.key").exists() {
        super::cluster::keygen(&keys)?;
    }
    let token = keys.join("admin.token");
    let client_token = keys.join("client.token");
    for file in [&token, &client_token] {
        if !file.exists() {
            let secret = shardnode_cluster::keys::encode_hex(&shardnode_cluster::keys::random_bytes::<16>()?);
            std::fs::write(file, format!("{secret}\n")).with_context(|| format!("writing {}", file.display()))?;
        }
    }
    let doc = dir.join("roster.toml");
    let last = u32::from(args.first_ip).checked_add(args.hosts as u32 - 1).map(std::net::Ipv4Addr::from);
    anyhow::ensure!(
        args.first_ip.is_loopback() && last.is_some_and(|l| l.is_loopback()),
        "--first-ip {} and the {} hosts after it must be in 127.0.0.0/8",
        args.first_ip,
        args.hosts
    );
    std::fs::write(&doc, roster_text(args.hosts, args.first_ip, args.http_port, args.gossip_port))?;
    let signed = dir.join("roster.signed");
    super::cluster::sign(&doc, &keys.join("operator.key"), Some(&signed), false)?;
    let agent = match &args.agent_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("shard-agent"),
    };
    let roster = shardnode_cluster::roster::Roster::parse(&std::fs::read_to_string(&doc)?)?;
    let mut plans = Vec::new();
    for h in &roster.hosts {
        let host_dir = dir.join(format!("host-{}", h.id));
        std::fs::create_dir_all(&host_dir)?;
        let config = host_dir.join("agent.toml");
        std::fs::write(&config, agent_config(&host_dir, &keys, &signed, h.id as usize, args, &h.http.to_string()))?;
        plans.push((h.id, h.http, config, host_dir.join("agent.log")));
    }
    if args.dry_run {
        for (id, http, config, _) in &plans {
            println!("host {id}: {} --config {}   # http://{http}", agent.display(), config.display());
        }
        return Ok(exit::OK);
    }
    anyhow::ensure!(agent.exists(), "{}: no shard-agent binary (build it, or pass --agent-bin)", agent.display());
    let mut children: Vec<(u32, Child)> = Vec::new();
    for (id, http, config, log) in &plans {
        let log_file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(&agent)
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", agent.display()));
        match child {
            Ok(c) => children.push((*id, c)),
            Err(e) => {
                stop_all(&mut children);
                return Err(e);
            }
        }
        println!("host {id}: http://{http}  (log {})", log.display());
    }
    println!(
        "{} agents started; `shardctl cluster status --agent http://{}` shows the cluster; the admin token is in {}, \
         the object API's client token in {} (`shardctl object --token-file`). Ctrl-C stops them all.",
        children.len(),
        plans[0].1,
        token.display(),
        client_token.display()
    );
    // Ctrl-C and SIGTERM are waited for, not delivered, so the agents are
    // stopped in order. Blocked only now: children inherit the signal
    // mask, and an agent that blocks SIGTERM cannot be stopped. (A Ctrl-C
    // while they start reaches them too: they share the terminal's
    // process group.)
    let mut waited = SigSet::empty();
    waited.add(Signal::SIGINT);
    waited.add(Signal::SIGTERM);
    waited.thread_block()?;
    let signal = waited.wait()?;
    println!("{signal}: stopping {} agents", children.len());
    let failed = stop_all(&mut children);
    Ok(if failed == 0 { exit::OK } else { exit::FAILURE })
}

/// SIGTERM to every agent, then SIGKILL to those still running after the
/// grace period. Returns how many did not stop cleanly.
fn stop_all(children: &mut [(u32, Child)]) -> usize {
    for (_, c) in children.iter() {
        if let Ok(pid) = i32::try_from(c.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    let mut failed = 0;
    for (id, c) in children.iter_mut() {
        loop {
            match c.try_wait() {
                Ok(Some(status)) => {
                    if !status.success() {
                        eprintln!("host {id}: agent exited with {status}");
                        failed += 1;
                    }
                    break;
                }
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                _ => {
                    eprintln!("host {id}: agent did not stop within {STOP_GRACE:?}; killed");
                    let _ = c.kill();
                    let _ = c.wait();
                    failed += 1;
                    break;
                }
            }
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_roster_is_valid_and_spreads_hosts_over_addresses_and_domains() {
        let roster =
            shardnode_cluster::roster::Roster::parse(&roster_text(200, "127.0.0.2".parse().unwrap(), 7480, 7946))
                .unwrap();
        assert_eq!(roster.hosts.len(), 200);
        assert_eq!(roster.domains().len(), 200);
        assert_eq!(roster.hosts[0].http.to_string(), "127.0.0.2:7480");
        assert_eq!(roster.hosts[199].gossip.to_string(), "127.0.0.201:7946");
        assert_eq!(roster.code.map(|c| (c.data, c.parity)), Some((4, 2)));
        let small = shardnode_cluster::roster::Roster::parse(&roster_text(3, "127.0.0.2".parse().unwrap(), 7480, 7946));
        assert_eq!(small.unwrap().code, None, "three hosts: gossip only");
    }
}
