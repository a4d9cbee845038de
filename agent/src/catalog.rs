//! Every metric the agent exports, with what it measures and in which
//! unit: registered as the Prometheus `# HELP` text at start-up, so
//! `promtool check metrics` accepts `/metrics` as it is. A unit test keeps
//! this list and the names the code records identical.

/// How a metric is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// (name, kind, help). Base units throughout: seconds, bytes, ratios 0..1.
pub const METRICS: &[(&str, Kind, &str)] = &[
    ("shardnode_build_info", Kind::Gauge, "Always 1; the labels name the version and git commit of the running agent."),
    ("shardnode_http_requests_total", Kind::Counter, "HTTP requests answered, by operation and status code."),
    ("shardnode_http_connections_total", Kind::Counter, "HTTP connections accepted."),
    (
        "shardnode_http_connections_moved_to_tokio_total",
        Kind::Counter,
        "HTTP connections a store thread served and then gave to the connection front on the tokio runtime, at their first request it does not serve or hand to the router's handler itself (a request with a body, such as a shard PUT; another route; bytes that are not HTTP/1.1).",
    ),
    (
        "shardnode_http_connections_handed_off_total",
        Kind::Counter,
        "HTTP connections the connection front handed to the full server, at their first request that was not a shard request it serves (another route, a chunked body, an Expect, an upgrade, HTTP/1.0); every connection of an agent in a cluster is served by the full server and not counted here.",
    ),
    (
        "shardnode_body_memory_bytes",
        Kind::Gauge,
        "Request bodies held in memory now, in bytes of the budget each reserved (limits.body_memory_bytes_max); a put that would pass the budget is refused with 503.",
    ),
    (
        "shardnode_landing_records",
        Kind::Gauge,
        "Record buffers put bodies of 64 KiB or more land in (limits.landing_records), 1 MiB of payload each.",
    ),
    (
        "shardnode_landing_records_free",
        Kind::Gauge,
        "Landing record buffers free; at 0, arriving bodies are kept as they came and copied by the store threads.",
    ),
    (
        "shardnode_http_request_duration_seconds",
        Kind::Histogram,
        "Time from a request's arrival to its answer, in seconds, by operation.",
    ),
    (
        "shardnode_device_state",
        Kind::Gauge,
        "1 for the device's current state (open, fenced, failed), 0 for the others.",
    ),
    (
        "shardnode_device_health",
        Kind::Gauge,
        "1 for the device's current health (healthy, suspect, fenced, failed), 0 for the others.",
    ),
    (
        "shardnode_device_health_transitions_total",
        Kind::Counter,
        "Changes of the device's health, by the state entered.",
    ),
    (
        "shardnode_device_errors_total",
        Kind::Counter,
        "Device errors seen by requests and the scrubber, by kind (corruption: data that failed its checksum; io).",
    ),
    (
        "shardnode_device_operations_total",
        Kind::Counter,
        "Shard operations served by the device's store, by operation (get, put, delete).",
    ),
    ("shardnode_device_read_bytes_total", Kind::Counter, "Shard bytes read from the device and served, in bytes."),
    ("shardnode_device_written_bytes_total", Kind::Counter, "Shard bytes stored on the device, in bytes."),
    ("shardnode_device_capacity_bytes", Kind::Gauge, "Bytes the device's store can hold (its extents)."),
    (
        "shardnode_device_free_bytes",
        Kind::Gauge,
        "Bytes free for new shards on the device (the reclamation reserve excluded).",
    ),
    ("shardnode_device_used_bytes", Kind::Gauge, "Bytes the device's live shards take, headers and padding included."),
    ("shardnode_device_shards", Kind::Gauge, "Shards stored on the device."),
    ("shardnode_device_queue_depth", Kind::Gauge, "Requests waiting for the device's store thread."),
    (
        "shardnode_device_group_commits_total",
        Kind::Counter,
        "Group commits on the device (each one durable write of a batch).",
    ),
    (
        "shardnode_device_group_commit_operations_total",
        Kind::Counter,
        "Writes made durable by the device's group commits (divided by the commits: the mean batch).",
    ),
    (
        "shardnode_device_vouched_commits_total",
        Kind::Counter,
        "Group commits whose data and log one flush made durable, the log vouching for the data by its checksums.",
    ),
    (
        "shardnode_device_commit_confirmations_total",
        Kind::Counter,
        "Empty log writes that proved a vouched commit durable when no other commit followed it within 0.5 ms.",
    ),
    (
        "shardnode_device_store_requests_total",
        Kind::Counter,
        "Requests sent to the device's store thread (each a trip and a wake-up).",
    ),
    (
        "shardnode_device_store_local_reads_total",
        Kind::Counter,
        "Shard reads started on the device's store thread by a connection it serves itself, without a trip.",
    ),
    (
        "shardnode_device_io_stalled_seconds",
        Kind::Gauge,
        "How long the device's oldest I/O in flight has waited, while past the stall threshold (health.io_stall_ms); 0 otherwise.",
    ),
    ("shardnode_device_io_stalls_total", Kind::Counter, "Times the device stopped completing an I/O within the stall threshold."),
    (
        "shardnode_device_writes_split_total",
        Kind::Counter,
        "Long writes sent to the device in pieces so that reads queued beside them pass (limits.write_piece_bytes).",
    ),
    (
        "shardnode_reclaim_chunks_moved_total",
        Kind::Counter,
        "Live chunks copied out of extents being reclaimed, by how (along: in steps riding on group commits; whole: whole extents evacuated at once, when idle or as a last resort).",
    ),
    (
        "shardnode_reclaim_extents_total",
        Kind::Counter,
        "Extents reclaimed and reset for reuse, by how (along: emptied by steps riding on group commits; whole: evacuated at once).",
    ),
    (
        "shardnode_reclaim_passes_given_way_total",
        Kind::Counter,
        "Whole-extent passes of an idle store that gave way to an arriving write before the extent was empty (their moves logged, the rest left for a later pass).",
    ),
    (
        "shardnode_checkpoints_total",
        Kind::Counter,
        "Checkpoints of the device's index written since the agent started (one whenever a half of the metadata region is full of log).",
    ),
    (
        "shardnode_checkpoint_last_seconds",
        Kind::Gauge,
        "How long writes waited for the last checkpoint (for one written beside the commits, its longest slice of encoding and its switch; for one a full log forced on a commit, all of it).",
    ),
    (
        "shardnode_checkpoint_bytes",
        Kind::Gauge,
        "The size the device's next checkpoint would have (its index, extent table and lists).",
    ),
    (
        "shardnode_metadata_half_bytes",
        Kind::Gauge,
        "Bytes of a half of the device's metadata region, which holds a checkpoint and the log after it.",
    ),
    (
        "shardnode_read_cache_lookups_total",
        Kind::Counter,
        "Shard GETs and HEADs that looked in the device's read cache, by result (hit: answered from memory; miss: read from the device).",
    ),
    ("shardnode_read_cache_evictions_total", Kind::Counter, "Shards the device's read cache let go of to make room."),
    (
        "shardnode_read_cache_invalidations_total",
        Kind::Counter,
        "Shards dropped from the device's read cache because their key was written, deleted or found damaged.",
    ),
    (
        "shardnode_read_cache_bytes",
        Kind::Gauge,
        "Memory the device's read cache holds (shards, keys and overhead), at most read_cache.bytes_per_device.",
    ),
    ("shardnode_read_cache_shards", Kind::Gauge, "Shards in the device's read cache."),
    (
        "shardnode_read_cache_corrupt_total",
        Kind::Counter,
        "Cached shards whose bytes failed their CRC when looked up (memory damage): dropped and read from the device.",
    ),
    (
        "shardnode_placed_reads_total",
        Kind::Counter,
        "GETs of the device's shards read on another store thread's ring from where the device's thread placed them, by outcome (read: answered; stale: an extent was reset during the read; failed: the read failed or did not verify). Stale and failed reads were asked of the device's own thread.",
    ),
    (
        "shardnode_placed_shards",
        Kind::Gauge,
        "Shards of the device placed for reads on other store threads (hot small shards, at most 65536).",
    ),
    ("shardnode_admission_waiting", Kind::Gauge, "Requests waiting for room on the device (admission control)."),
    (
        "shardnode_admission_drops_total",
        Kind::Counter,
        "Requests refused by admission control, by reason (overloaded, deadline).",
    ),
    (
        "shardnode_scrub_oldest_unverified_seconds",
        Kind::Gauge,
        "Age in seconds of the live byte verified longest ago on the device: alert before it nears the scrub deadline.",
    ),
    (
        "shardnode_scrub_deadline_seconds",
        Kind::Gauge,
        "The scrub coverage deadline in seconds: every live byte is to be verified at least this often.",
    ),
    (
        "shardnode_scrub_rate_bytes_per_second",
        Kind::Gauge,
        "Bytes per second the scrubber needs now to meet its deadline (-1: unthrottled).",
    ),
    ("shardnode_scrub_pass_progress_ratio", Kind::Gauge, "Share of the current scrub pass done, 0 to 1."),
    (
        "shardnode_scrub_pass_eta_timestamp_seconds",
        Kind::Gauge,
        "When the current scrub pass should end, Unix time in seconds (0: unknown).",
    ),
    (
        "shardnode_scrub_last_pass_timestamp_seconds",
        Kind::Gauge,
        "When the last complete scrub pass ended, Unix time in seconds (0: never).",
    ),
    ("shardnode_scrub_paused", Kind::Gauge, "1 while the device's scrubber is paused by an operator."),
    ("shardnode_scrub_passes_total", Kind::Counter, "Complete scrub passes over the device."),
    (
        "shardnode_scrub_verified_bytes_total",
        Kind::Counter,
        "Bytes the scrubber read back and verified (shard data and metadata).",
    ),
    ("shardnode_scrub_read_errors_total", Kind::Counter, "Scrub reads the device failed."),
    ("shardnode_scrub_findings_total", Kind::Counter, "Damage the scrubber and recovery found, by kind."),
    ("shardnode_damaged_shards", Kind::Gauge, "Shards on the device's repair list (found damaged, not yet replaced)."),
    (
        "shardnode_cluster_members",
        Kind::Gauge,
        "Roster hosts by the state this host sees them in (alive, suspect, down, unknown).",
    ),
    ("shardnode_cluster_record_age_seconds", Kind::Gauge, "Age in seconds of the newest health record from each host."),
    ("shardnode_cluster_roster_epoch", Kind::Gauge, "Epoch of the roster in use."),
    ("shardnode_cluster_generation", Kind::Gauge, "This host's generation (one per start)."),
    ("shardnode_cluster_peer_requests_refused_total", Kind::Counter, "Peer HTTP requests refused, by reason."),
    ("shardnode_gossip_datagrams_total", Kind::Counter, "Gossip datagrams, by direction (sent, received)."),
    ("shardnode_gossip_bytes_total", Kind::Counter, "Gossip bytes, by direction (sent, received)."),
    ("shardnode_gossip_rejected_total", Kind::Counter, "Gossip datagrams dropped by the envelope checks, by reason."),
    ("shardnode_gossip_records_accepted_total", Kind::Counter, "Health records from other hosts taken."),
    ("shardnode_gossip_records_vetoed_total", Kind::Counter, "Health records from other hosts refused, by reason."),
    ("shardnode_object_operations_total", Kind::Counter, "Object API operations completed, by operation."),
    ("shardnode_object_decoded_shards_total", Kind::Counter, "Object shards rebuilt from parity by reads."),
    (
        "shardnode_object_degraded_writes_total",
        Kind::Counter,
        "Object PUTs acknowledged with fewer than all shards placed (the rest owed to repair).",
    ),
    (
        "shardnode_object_damaged_shards_read_total",
        Kind::Counter,
        "Object shards that failed verification when read (queued for repair).",
    ),
    ("shardnode_object_hedges_total", Kind::Counter, "Hedged shard reads, by outcome (sent, won)."),
    ("shardnode_object_range_reads_total", Kind::Counter, "Object range reads, by path (direct, whole shards)."),
    ("shardnode_object_requests_refused_total", Kind::Counter, "Object requests refused before any work, by reason."),
    (
        "shardnode_object_repairs_total",
        Kind::Counter,
        "Object shard repairs, by outcome (repaired, obsolete, busy, failed).",
    ),
    (
        "shardnode_repair_queue_shards",
        Kind::Gauge,
        "Shards in this host's repair queue, by the stripe's remaining redundancy.",
    ),
    (
        "shardnode_repair_queue_bytes",
        Kind::Gauge,
        "Bytes in this host's repair queue, by the stripe's remaining redundancy.",
    ),
    (
        "shardnode_stripes_at_risk",
        Kind::Gauge,
        "Stripes in the repair queue that may lose 0 or 1 more shard before an object is lost, by redundancy.",
    ),
    ("shardnode_repair_bytes_total", Kind::Counter, "Shard bytes rebuilt and written by repair."),
    (
        "shardnode_repair_unscanned_devices",
        Kind::Gauge,
        "Devices the last repair scan could not read (not open, or their repair list or owed shards unreadable): the repair queue lacks what they hold.",
    ),
    (
        "shardnode_repair_rate_bytes_per_second",
        Kind::Gauge,
        "The repair throttle in force, in bytes per second (0: paused).",
    ),
    (
        "shardnode_background_reads_refused_total",
        Kind::Counter,
        "Background (repair) reads this host refused for lack of room beside foreground requests.",
    ),
];

/// Registers every description with the installed recorder, and sets
/// `shardnode_build_info`.
pub fn describe_all() {
    for &(name, kind, help) in METRICS {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
    metrics::gauge!(
        "shardnode_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "commit" => env!("SHARDNODE_COMMIT")
    )
    .set(1.0);
}

#[cfg(test)]
mod tests {
    use super::METRICS;

    /// Every `"shardnode_…"` string literal in the agent's sources.
    fn recorded_names() -> std::collections::BTreeSet<String> {
        let mut names = std::collections::BTreeSet::new();
        let mut dirs = vec![std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") || path.ends_with("catalog.rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for (at, _) in text.match_indices("\"shardnode_") {
                    let name: String =
                        text[at + 1..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    names.insert(name);
                }
            }
        }
        names
    }

    #[test]
    fn every_recorded_metric_is_described_and_every_description_recorded() {
        let recorded = recorded_names();
        let described: std::collections::BTreeSet<String> =
            METRICS.iter().map(|(n, _, _)| (*n).to_owned()).filter(|n| n != "shardnode_build_info").collect();
        let undescribed: Vec<_> = recorded.difference(&described).collect();
        assert!(undescribed.is_empty(), "metrics recorded without a description: {undescribed:?}");
        let unused: Vec<_> = described.difference(&recorded).collect();
        assert!(unused.is_empty(), "descriptions of metrics nothing records: {unused:?}");
        assert!(recorded.len() > 40, "the scan found the agent's metrics ({})", recorded.len());
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        for (name, kind, help) in METRICS {
            assert!(!help.is_empty() && help.ends_with('.'), "{name}: help text");
            assert_eq!(name.ends_with("_total"), *kind == super::Kind::Counter, "{name}: counters end in _total");
        }
    }
}
