//! Calls to a device's store thread as futures (`ask`): each one gives up
//! on a device whose I/O has stalled instead of waiting for it.

use shardstore::store::scrub::{DamagedShard, ScrubSettings, ScrubStatus};
use shardstore::store::thread::StoreHandle;
use shardstore::store::{ByteRange, Listed, Lookup, Op, PutData, Read};
use shardstore::Error;
use tokio::sync::oneshot;

/// How often a request waiting for a store's answer looks at whether the
/// device's I/O has stalled.
const STALL_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// A store call's answer, turned into a future. A device whose I/O is
/// stalled (an operation in flight past `health.io_stall_ms`) is not sent
/// the request, and a request already waiting looks at the stall watch
/// once a second: once the device stalls it is given up on. Either way the
/// answer is `Error::Stalled`, never a wait for a drive that may never
/// answer. The store thread still carries out a request given up on if
/// the device does answer: such a write may take effect (it was never
/// acknowledged).
async fn ask<T: Send + 'static>(
    store: &StoreHandle,
    submit: impl FnOnce(Box<dyn FnOnce(Result<T, Error>) + Send>) -> Result<(), Error>,
) -> Result<T, Error> {
    let stalled = || {
        let waited = store.counters().io_stall.stalled_for()?;
        Some(Error::Stalled { device: store.name().to_owned(), waited_s: waited.as_secs() })
    };
    if let Some(e) = stalled() {
        return Err(e);
    }
    let (tx, mut rx) = oneshot::channel();
    submit(Box::new(move |r| {
        let _ = tx.send(r);
    }))?;
    loop {
        match tokio::time::timeout(STALL_CHECK, &mut rx).await {
            Ok(answer) => return answer.map_err(|_| store.gone())?,
            Err(_) => {
                if let Some(e) = stalled() {
                    return Err(e);
                }
            }
        }
    }
}

pub async fn scrub_status(store: &StoreHandle) -> Result<ScrubStatus, Error> {
    ask(store, |done| store.submit_scrub_status(done)).await
}

pub async fn set_scrub(store: &StoreHandle, settings: ScrubSettings) -> Result<(), Error> {
    update_scrub(store, move |s| *s = settings).await.map(|_| ())
}

pub async fn update_scrub(
    store: &StoreHandle,
    change: impl FnOnce(&mut ScrubSettings) + Send + 'static,
) -> Result<ScrubSettings, Error> {
    ask(store, |done| store.submit_update_scrub(change, done)).await
}

pub async fn damaged_shards(store: &StoreHandle) -> Result<Vec<DamagedShard>, Error> {
    ask(store, |done| store.submit_damaged_shards(done)).await
}

/// A key's newest state on one store and, for a shard, the verified bytes
/// of `range`, in one trip to its thread.
pub async fn read(store: &StoreHandle, key: &[u8], range: Option<ByteRange>) -> Result<Read, Error> {
    let key = key.to_vec();
    ask(store, |done| store.submit_read(key, range, done)).await
}

pub async fn lookup(store: &StoreHandle, key: &[u8]) -> Result<Lookup, Error> {
    let key = key.to_vec();
    ask(store, |done| store.submit_lookup(key, done)).await
}

/// Any write operation, once durable.
pub async fn submit(store: &StoreHandle, op: Op) -> Result<(), Error> {
    ask(store, |done| store.submit_op(op, done)).await
}

pub async fn get(store: &StoreHandle, key: &[u8], offset: u64, len: u64) -> Result<Vec<u8>, Error> {
    let key = key.to_vec();
    ask(store, |done| store.submit_get(key, offset, len, done)).await
}

/// Stores `data`, which must have the CRC32C `crc` (checked by the store
/// against the bytes it writes), as `version` of the key.
pub async fn put(store: &StoreHandle, key: &[u8], data: PutData, crc: u32, version: u64) -> Result<(), Error> {
    submit(store, Op::Put { key: key.to_vec(), data, crc32c: Some(crc), version: Some(version) }).await
}

pub async fn delete(store: &StoreHandle, key: &[u8]) -> Result<(), Error> {
    let key = key.to_vec();
    ask(store, |done| store.submit_delete(key, done)).await
}

pub async fn list(
    store: &StoreHandle,
    prefix: &[u8],
    start_after: Option<&[u8]>,
    limit: usize,
) -> Result<Vec<Listed>, Error> {
    let (prefix, start_after) = (prefix.to_vec(), start_after.map(<[u8]>::to_vec));
    ask(store, |done| store.submit_list(prefix, start_after, limit, done)).await
}
