//! Bounds on model transfers, so that no worker and no crowd of uploads can hold the
//! coordinator's memory or CPU: a per-worker cap on concurrent uploads and downloads, a
//! fleet-wide budget of upload bytes being received (an upload that would exceed it is refused
//! at its header with RESOURCE_EXHAUSTED and sent again by the worker: refused, not kept
//! waiting, because a waiting upload's unread data would hold its connection's HTTP/2 window and
//! stall every other stream on that connection); caps on uploads decoded at once (decoding is
//! CPU work on blocking threads; more at once than cores only adds copies of updates in memory)
//! and on downloads sending at once (each buffers encoded model in its stream's send buffer);
//! and the idle timeout after which a stalled transfer is cut off and its buffer freed.
//!
//! Kept apart from the coordinator's state lock: taking a slot never waits on a round.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Result, ServerError};
use crate::ids::WorkerId;

/// The limits, set from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferLimits {
    /// Uploads one worker may have open at once (a retry may overlap a dying attempt).
    pub uploads_per_worker: usize,
    /// Model downloads one worker may have open at once.
    pub downloads_per_worker: usize,
    /// Declared bytes of the uploads being received or decoded, over all workers.
    pub upload_buffer_bytes: u64,
    /// Uploads decoded and checked at once, over all workers.
    pub decoding_uploads: usize,
    /// Model downloads sending at once, over all workers; the rest wait their turn.
    pub sending_downloads: usize,
    /// A transfer that moves no data for this long is cut off.
    pub idle_timeout: Duration,
}

impl TransferLimits {
    pub const DEFAULT_UPLOADS_PER_WORKER: usize = 2;
    pub const DEFAULT_DOWNLOADS_PER_WORKER: usize = 2;
    pub const DEFAULT_UPLOAD_BUFFER_BYTES: u64 = 64 << 20;
    /// Enough streams to fill any coordinator's uplink; each holds up to a stream's send buffer.
    pub const DEFAULT_SENDING_DOWNLOADS: usize = 128;
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

    /// Checks each limit is usable; names the setting that is not.
    pub fn validate(&self) -> Result<()> {
        for (value, name) in [
            (self.uploads_per_worker, "max_uploads_per_worker"),
            (self.downloads_per_worker, "max_downloads_per_worker"),
            (self.decoding_uploads, "max_decoding_uploads"),
            (self.sending_downloads, "max_sending_downloads"),
        ] {
            if !(1..=100_000).contains(&value) {
                return Err(ServerError::config(format!(
                    "{name} must be in 1..=100000, got {value}"
                )));
            }
        }
        if !(1 << 20..=1 << 40).contains(&self.upload_buffer_bytes) {
            return Err(ServerError::config(format!(
                "max_upload_buffer_mib must be in 1..=1048576, got {} bytes",
                self.upload_buffer_bytes
            )));
        }
        if self.idle_timeout < Duration::from_millis(10)
            || self.idle_timeout > Duration::from_secs(3600)
        {
            return Err(ServerError::config(format!(
                "transfer_idle_timeout must be between 10 ms and 1 hour, got {:?}",
                self.idle_timeout
            )));
        }
        Ok(())
    }
}

impl Default for TransferLimits {
    fn default() -> Self {
        Self {
            uploads_per_worker: Self::DEFAULT_UPLOADS_PER_WORKER,
            downloads_per_worker: Self::DEFAULT_DOWNLOADS_PER_WORKER,
            upload_buffer_bytes: Self::DEFAULT_UPLOAD_BUFFER_BYTES,
            decoding_uploads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            sending_downloads: Self::DEFAULT_SENDING_DOWNLOADS,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Upload,
    Download,
}

impl Direction {
    fn noun(self) -> &'static str {
        match self {
            Direction::Upload => "uploads",
            Direction::Download => "model downloads",
        }
    }
}

/// Counts, permits and the gauge of buffered upload bytes.
#[derive(Debug)]
pub struct Transfers {
    limits: TransferLimits,
    open: Mutex<HashMap<(WorkerId, Direction), usize>>,
    /// Declared bytes of the uploads holding a reservation.
    reserved: Arc<Mutex<u64>>,
    decoding: Arc<Semaphore>,
    sending: Arc<Semaphore>,
    buffered: Arc<AtomicU64>,
}

impl Transfers {
    pub fn new(limits: TransferLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            open: Mutex::default(),
            reserved: Arc::default(),
            decoding: Arc::new(Semaphore::new(limits.decoding_uploads)),
            sending: Arc::new(Semaphore::new(limits.sending_downloads)),
            buffered: Arc::default(),
        })
    }

    pub fn limits(&self) -> &TransferLimits {
        &self.limits
    }

    /// Opens one of `worker`'s transfers in `direction`, or refuses (RESOURCE_EXHAUSTED) when
    /// it already has as many open as it may. The slot is given back when dropped.
    pub fn open(self: &Arc<Self>, worker: &WorkerId, direction: Direction) -> Result<TransferSlot> {
        let cap = match direction {
            Direction::Upload => self.limits.uploads_per_worker,
            Direction::Download => self.limits.downloads_per_worker,
        };
        let key = (worker.clone(), direction);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(key.clone()).or_insert(0);
        if *n >= cap {
            return Err(ServerError::ResourceExhausted {
                why: format!(
                    "worker {worker} already has {n} {} open, the most one worker may have at once; finish or cancel one first",
                    direction.noun()
                ),
            });
        }
        *n += 1;
        Ok(TransferSlot {
            transfers: Arc::clone(self),
            key: Some(key),
        })
    }

    /// Reserves `bytes` (an upload's declared size) of the fleet-wide upload budget until the
    /// returned reservation is dropped; refuses (RESOURCE_EXHAUSTED, worth retrying shortly)
    /// when the budget is taken. One upload alone is always admitted.
    pub fn reserve_upload(&self, bytes: u64) -> Result<UploadReservation> {
        let mut reserved = self.reserved.lock().unwrap_or_else(|p| p.into_inner());
        let budget = self.limits.upload_buffer_bytes;
        if *reserved > 0 && *reserved + bytes > budget {
            return Err(ServerError::ResourceExhausted {
                why: format!(
                    "the coordinator is receiving {:.1} MiB of uploads, and this one ({:.1} MiB) would exceed its budget of {} MiB (max_upload_buffer_mib): send it again shortly",
                    *reserved as f64 / f64::from(1 << 20),
                    bytes as f64 / f64::from(1 << 20),
                    budget >> 20
                ),
            });
        }
        *reserved += bytes;
        Ok(UploadReservation {
            reserved: Arc::clone(&self.reserved),
            bytes,
        })
    }

    /// Declared bytes of the uploads now admitted.
    pub fn reserved_upload_bytes(&self) -> u64 {
        *self.reserved.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for one of the fleet-wide slots for decoding an upload.
    pub async fn decode_permit(&self) -> OwnedSemaphorePermit {
        Arc::clone(&self.decoding)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// Waits for one of the fleet-wide slots for sending a model download.
    pub async fn send_permit(&self) -> OwnedSemaphorePermit {
        Arc::clone(&self.sending)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// Counts bytes an upload holds while it arrives; they are released when the returned
    /// counter is dropped (the upload finished, failed or was cut off).
    pub fn buffer(&self) -> BufferedBytes {
        BufferedBytes {
            gauge: Arc::clone(&self.buffered),
            held: 0,
        }
    }

    /// Bytes of upload data received and not yet decoded or dropped, over all uploads.
    pub fn buffered_bytes(&self) -> u64 {
        self.buffered.load(Ordering::Relaxed)
    }

    /// Open transfers of one worker in one direction.
    pub fn open_count(&self, worker: &WorkerId, direction: Direction) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&(worker.clone(), direction)).copied().unwrap_or(0)
    }
}

/// One open transfer of one worker; closes when dropped.
#[derive(Debug)]
pub struct TransferSlot {
    transfers: Arc<Transfers>,
    key: Option<(WorkerId, Direction)>,
}

impl Drop for TransferSlot {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut open = self
            .transfers
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&key);
            }
        }
    }
}

/// One upload's share of the upload budget; given back when dropped.
#[derive(Debug)]
pub struct UploadReservation {
    reserved: Arc<Mutex<u64>>,
    bytes: u64,
}

impl Drop for UploadReservation {
    fn drop(&mut self) {
        let mut reserved = self.reserved.lock().unwrap_or_else(|p| p.into_inner());
        *reserved -= self.bytes;
    }
}

/// The bytes one upload has buffered, counted in the fleet-wide gauge until dropped.
#[derive(Debug)]
pub struct BufferedBytes {
    gauge: Arc<AtomicU64>,
    held: u64,
}

impl BufferedBytes {
    pub fn add(&mut self, bytes: u64) {
        self.held += bytes;
        self.gauge.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl Drop for BufferedBytes {
    fn drop(&mut self) {
        self.gauge.fetch_sub(self.held, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> TransferLimits {
        TransferLimits {
            uploads_per_worker: 2,
            downloads_per_worker: 1,
            ..TransferLimits::default()
        }
    }

    #[test]
    fn a_worker_gets_its_cap_of_slots_per_direction_and_gets_them_back_when_dropped() {
        let t = Transfers::new(limits());
        let (a, b) = (WorkerId::new("w-a"), WorkerId::new("w-b"));
        let u1 = t.open(&a, Direction::Upload).unwrap();
        let _u2 = t.open(&a, Direction::Upload).unwrap();
        let err = t.open(&a, Direction::Upload).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(
            err.to_string().contains("already has 2 uploads open"),
            "{err}"
        );
        // Another worker and another direction are counted apart.
        let _other = t.open(&b, Direction::Upload).unwrap();
        let d1 = t.open(&a, Direction::Download).unwrap();
        assert!(t.open(&a, Direction::Download).is_err());
        drop(u1);
        drop(d1);
        assert_eq!(t.open_count(&a, Direction::Upload), 1);
        t.open(&a, Direction::Upload).unwrap();
        t.open(&a, Direction::Download).unwrap();
        assert_eq!(t.open_count(&a, Direction::Download), 0);
    }

    #[test]
    fn buffered_bytes_are_released_when_the_upload_is_dropped() {
        let t = Transfers::new(limits());
        let mut one = t.buffer();
        let mut two = t.buffer();
        one.add(100);
        two.add(20);
        one.add(5);
        assert_eq!(t.buffered_bytes(), 125);
        drop(one);
        assert_eq!(t.buffered_bytes(), 20);
        drop(two);
        assert_eq!(t.buffered_bytes(), 0);
    }

    #[test]
    fn the_upload_budget_admits_until_full_and_always_admits_one() {
        let t = Transfers::new(TransferLimits {
            upload_buffer_bytes: 10 << 20,
            ..limits()
        });
        let a = t.reserve_upload(6 << 20).unwrap();
        let b = t.reserve_upload(4 << 20).unwrap();
        let err = t.reserve_upload(1).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.to_string().contains("max_upload_buffer_mib"), "{err}");
        drop(a);
        assert_eq!(t.reserved_upload_bytes(), 4 << 20);
        let _c = t.reserve_upload(5 << 20).unwrap();
        drop(b);
        // Alone, even an upload larger than the budget is admitted.
        let t = Transfers::new(limits());
        let _huge = t.reserve_upload(1 << 30).unwrap();
        assert!(t.reserve_upload(1).is_err());
    }

    #[test]
    fn limits_out_of_range_are_refused_by_name() {
        let bad = TransferLimits {
            decoding_uploads: 0,
            ..limits()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("max_decoding_uploads")
        );
        let bad = TransferLimits {
            idle_timeout: Duration::ZERO,
            ..limits()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("transfer_idle_timeout")
        );
        limits().validate().unwrap();
    }
}
