//! The `psync` engine: one blocking `pread`/`pwrite` per operation, done at
//! submission. It exists so the benchmark can compare io_uring with the
//! classic path on the same device, and as a second real implementation of
//! the seam.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::Path;

use super::file::open_target;
use super::{validate, BlockDevice, Completion, DeviceInfo, EngineFeatures, IoKind, IoOp, OpenOptions};
use crate::error::{Error, OpKind, Result};

#[derive(Debug)]
pub struct SyncDevice {
    info: DeviceInfo,
    file: File,
    read_only: bool,
    poisoned: bool,
    depth: usize,
    done: VecDeque<Completion>,
}

impl SyncDevice {
    pub fn open(path: &Path, options: &OpenOptions) -> Result<Self> {
        let target = open_target(path, options.read_only, options.exclusive, options.busy_wait_ms)?;
        Ok(SyncDevice {
            info: DeviceInfo {
                name: path.display().to_string(),
                kind: target.kind,
                size_bytes: target.size_bytes,
                logical_block_size: target.logical_block_size,
                physical_block_size: target.physical_block_size,
                features: EngineFeatures::default(),
            },
            file: target.file,
            read_only: options.read_only,
            poisoned: false,
            depth: options.queue_depth.max(1) as usize,
            done: VecDeque::with_capacity(options.queue_depth.max(1) as usize),
        })
    }

    fn execute(&mut self, kind: &mut IoKind) -> io::Result<()> {
        let full = |n: usize, want: usize, what: &str| {
            if n == want {
                Ok(())
            } else {
                Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("short {what}: {n} of {want} bytes")))
            }
        };
        match kind {
            IoKind::Read { offset, buf } => {
                let want = buf.len();
                let n = nix::sys::uio::pread(&self.file, buf.as_mut_slice(), offset_i64(*offset)?)?;
                full(n, want, "read")
            }
            IoKind::Write { offset, buf, fua } => {
                let n = nix::sys::uio::pwrite(&self.file, buf.as_slice(), offset_i64(*offset)?)?;
                full(n, buf.len(), "write")?;
                if *fua {
                    self.file.sync_data()?;
                }
                Ok(())
            }
            IoKind::Flush => self.file.sync_data(),
        }
    }
}

/// Offsets were validated against the device size, which fits in `off_t`.
fn offset_i64(offset: u64) -> io::Result<i64> {
    i64::try_from(offset).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset exceeds off_t"))
}

impl BlockDevice for SyncDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn submit(&mut self, op: IoOp) -> Result<()> {
        let IoOp { token, mut kind } = op;
        validate(&self.info, &kind, self.read_only, self.poisoned)?;
        if self.done.len() >= self.depth {
            return Err(Error::QueueFull { device: self.info.name.clone(), depth: self.depth });
        }
        let result = self.execute(&mut kind);
        let op = kind.op();
        let (offset, len, buf) = kind.into_parts();
        if op == OpKind::Flush && result.is_err() {
            self.poisoned = true;
        }
        let result = result.map_err(|e| Error::io(&self.info.name, op, offset, len, e));
        self.done.push_back(Completion { token, op, offset, len, result, buf });
        Ok(())
    }

    fn reap(&mut self, _min_complete: usize, out: &mut Vec<Completion>) -> Result<usize> {
        let n = self.done.len();
        out.extend(self.done.drain(..));
        Ok(n)
    }

    fn in_flight(&self) -> usize {
        self.done.len()
    }

    fn queue_depth(&self) -> usize {
        self.depth
    }

    fn is_poisoned(&self) -> bool {
        self.poisoned
    }
}
