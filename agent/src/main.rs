//! `shard-agent`: the per-host storage daemon. It owns the host's devices
//! (one store thread each), serves shards over HTTP, and on SIGTERM stops
//! accepting, lets requests in flight finish within a grace period,
//! commits and checkpoints every store and records a clean shutdown.

mod admission;
mod api;
mod catalog;
mod ceiling;
mod cluster;
mod config;
mod devices;
mod filter;
mod front;
mod keys;
mod metrics;
mod node;
mod notify;
mod objects;
mod server;
mod store_front;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

use config::Config;
use devices::DeviceState;

/// Every HTTP request allocates and frees its parts on whichever worker
/// runs it; mimalloc's per-thread free lists cost less per request than
/// glibc's arenas (BENCHMARKS.md, issue 14).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// shardnode storage node agent.
#[derive(Debug, Parser)]
#[command(name = "shard-agent", version, about)]
struct Args {
    /// TOML config file (see systemd/agent.toml for every key).
    #[arg(long)]
    config: Option<PathBuf>,
    /// HTTP address; overrides the config file.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Data directory; overrides the config file.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A device to serve (repeatable); overrides the config file's list.
    #[arg(long = "device")]
    devices: Vec<PathBuf>,
    /// Benchmarks only: serve the shard API's requests from memory through
    /// the same HTTP stack, storing nothing (the HTTP ceiling).
    #[arg(long, hide = true)]
    http_ceiling: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("agent").build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shard-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(Args::parse())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shard-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(dir) = &args.data_dir {
        config.data_dir.clone_from(dir);
    }
    if !args.devices.is_empty() {
        config.devices.clone_from(&args.devices);
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if args.http_ceiling {
        return ceiling::run(&config).await;
    }
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let admin_token = match &config.admin_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("{}: cannot read the admin token file", path.display()))?
                .trim()
                .to_owned(),
        )
        .filter(|t| !t.is_empty()),
        None => None,
    };

    // The listen address first: a busy port stops the agent before it
    // creates or formats anything (connections wait in the backlog until
    // it serves).
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    // Cluster setup next: a bad roster or key, or a busy gossip port,
    // stops the agent before it opens or formats a device.
    let cluster = match &config.cluster {
        Some(c) => Some(Arc::new(cluster::Cluster::prepare(c, &config.data_dir)?)),
        None => None,
    };
    let paths = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || devices::device_paths(&config)).await??
    };
    let settings = shardstore::store::thread::ThreadSettings {
        scrub: Some(config.scrub.settings()),
        read_cache: config.read_cache.settings(),
        unvouched_commits: false,
    };
    let io = devices::IoSettings::of(&config);
    let mut devices: Vec<devices::Device> = tokio::task::spawn_blocking(move || {
        std::thread::scope(|s| {
            let opening: Vec<_> =
                paths.iter().map(|p| s.spawn(move || devices::open_device(p, settings, io))).collect();
            opening.into_iter().map(|h| h.join().expect("device open panicked")).collect()
        })
    })
    .await?;
    for d in &devices {
        match &d.state {
            DeviceState::Open { store, opened_clean } => {
                let u = store.stats().usage();
                tracing::info!(device = %d.path.display(), shards = u.shards, free_bytes = u.free_bytes, clean = opened_clean, "device open");
            }
            DeviceState::Failed { error } => tracing::error!(device = %d.path.display(), %error, "device failed"),
        }
    }
    let thresholds = admission::Thresholds {
        concurrency: config.limits.device_concurrency.max(1),
        lifo_after: config.limits.device_lifo_after,
        queue_max: config.limits.device_queue_max,
    };
    let node = node::Node::new(
        hostname(),
        &devices,
        thresholds,
        config.scrub.settings(),
        config.health.rules(),
        config.health.owed_keys_max,
    )
    .await;
    let open = node.open_count();
    let landing = match config.limits.landing_records {
        0 => None,
        n => match shardstore::store::Landing::new(n) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(records = n, error = %e, "cannot map the landing buffers; put bodies are copied by the store threads");
                None
            }
        },
    };
    let app = Arc::new(api::App {
        node,
        landing,
        body_timeout: Duration::from_millis(config.limits.body_timeout_ms),
        body_memory_bytes_max: config.limits.body_memory_bytes_max,
        body_memory: tokio::sync::Semaphore::new(
            usize::try_from(config.limits.body_memory_bytes_max / 1024)
                .unwrap_or(usize::MAX)
                .min(tokio::sync::Semaphore::MAX_PERMITS),
        ),
        admin_token,
        metrics: metrics::install(),
        cluster: cluster.clone(),
        shard_read_delay: Duration::from_millis(config.limits.test_shard_read_delay_ms),
    });
    // Copies deleted or overwritten while a device was away go now.
    let _reconcile = {
        let app = Arc::clone(&app);
        tokio::spawn(async move { app.node.reconcile_tombstones().await })
    };
    // Drive health: every device judged once per interval.
    let _health = {
        let app = Arc::clone(&app);
        let every = Duration::from_millis(config.health.interval_ms.max(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                app.node.judge_health();
                // Older copies left on a device while its I/O stalled.
                let owing = app.node.take_owed();
                if !owing.keys.is_empty() || !owing.sweep.is_empty() {
                    let app = Arc::clone(&app);
                    tokio::spawn(async move {
                        app.node.tidy_each(owing.keys).await;
                        for slot in owing.sweep {
                            app.node.sweep(slot).await;
                        }
                    });
                }
            }
        })
    };
    let (stop_gossip, gossip_stopped) = tokio::sync::watch::channel(false);
    let _repair = cluster.as_ref().map(|c| {
        let every = Duration::from_millis(c.settings.repair_interval_ms.max(10));
        tokio::spawn(objects::repair::run(Arc::clone(&app), Arc::clone(c), every))
    });
    let gossip = cluster.map(|c| tokio::spawn(cluster::run(c, Arc::clone(&app), gossip_stopped)));
    let router = api::router(Arc::clone(&app));
    tracing::info!(listen = %listener.local_addr()?, open, failed = devices.len() - open, "shard-agent ready");
    let notifier = Arc::new(notify::Notifier::from_env());
    notifier.notify(&format!("READY=1\nSTATUS=serving {open} of {} devices on {}", devices.len(), config.listen));
    // The watchdog is fed from the runtime's own loop: a stalled runtime
    // stops the pings and systemd restarts the agent.
    let _watchdog = notify::Notifier::watchdog_interval().map(|every| {
        let notifier = Arc::clone(&notifier);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                notifier.notify("WATCHDOG=1");
            }
        })
    });

    let stop = async {
        tokio::select! {
            _ = sigterm.recv() => tracing::info!("SIGTERM: stopping"),
            _ = sigint.recv() => tracing::info!("SIGINT: stopping"),
        }
    };
    let stop = async {
        stop.await;
        notifier.notify("STOPPING=1\nSTATUS=stopping: finishing requests, then closing the stores");
    };
    let stop = async {
        stop.await;
        // Leave the cluster first: peers learn at once, not by suspicion.
        let _ = stop_gossip.send(true);
        if let Some(g) = gossip {
            let _ = tokio::time::timeout(Duration::from_secs(2), g).await;
        }
    };
    let shards = api::shard_api(&app);
    // Outside a cluster, connections are served on the store threads
    // (`store_front/`) unless the config says otherwise.
    let store_fronts = match &shards {
        Some(shards) if config.limits.connections_on_store_threads => {
            let (handoffs, received) = tokio::sync::mpsc::unbounded_channel();
            let stores: Vec<(usize, &shardstore::store::thread::StoreHandle)> =
                app.node.slots.iter().filter_map(|s| Some((s.id, s.store.as_ref()?))).collect();
            let source = store_front::Source::Stores(Arc::clone(&app));
            store_front::StoreFronts::start(source, &stores, Arc::clone(shards), &config.limits, handoffs)
                .map(|fronts| (fronts, received))
        }
        _ => None,
    };
    server::serve(listener, router, shards, store_fronts, &config.limits, stop).await?;
    drop(app);

    let failures = tokio::task::spawn_blocking(move || {
        let mut failures = 0;
        for d in &mut devices {
            if let Err(e) = devices::close_device(d) {
                tracing::error!(device = %d.path.display(), error = %format!("{e:#}"), "clean shutdown not recorded");
                failures += 1;
            }
        }
        failures
    })
    .await?;
    anyhow::ensure!(failures == 0, "{failures} device(s) could not record a clean shutdown");
    tracing::info!("stopped cleanly");
    Ok(())
}

fn hostname() -> String {
    nix::unistd::gethostname().map_or_else(|_| "unknown".to_owned(), |h| h.to_string_lossy().into_owned())
}
