//! shardstore: everything one storage device needs and nothing else.
//!
//! The crate owns the device engine (the [`device::BlockDevice`] seam, its
//! io_uring O_DIRECT implementation and the simulated device used to reach
//! crash and fault states), the on-disk layout and the crash-consistent
//! superblock. It never opens a socket (the socket ring, [`sockets`],
//! drives connections the agent accepted and gave a store thread), never
//! starts an async runtime and never parses command lines: the agent and
//! the tools build on it.

mod codec;
pub mod constants;
pub mod device;
pub mod error;
pub mod format;
pub mod health;
pub mod layout;
pub mod rng;
pub mod signature;
pub mod sockets;
pub mod store;
pub mod superblock;

pub use error::{Error, Result};
