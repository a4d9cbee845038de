//! The operator tools: `shardctl` (format, inspect) and `shardbench` (a
//! fio-style benchmark of the device engine). Each subcommand is a module
//! with its arguments and a `run`; the work itself lives in `shardstore`.

pub mod bench;
pub mod http;
pub mod shardctl;
pub mod units;
