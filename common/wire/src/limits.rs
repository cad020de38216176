//! Size limits on everything a peer can send, set explicitly on both ends of every transfer.

/// Bytes of tensor data per chunk message a sender produces: far below gRPC's 4 MiB default.
pub const CHUNK_BYTES: usize = 1 << 20;

/// The gRPC message size both ends allow (a chunk plus its framing fits easily).
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireLimits {
    pub max_chunk_bytes: usize,
    pub max_total_bytes: u64,
    pub max_tensors: usize,
    pub max_name_len: usize,
    pub max_rank: usize,
    pub max_elements: u64,
}

impl Default for WireLimits {
    fn default() -> Self {
        Self {
            max_chunk_bytes: 2 * CHUNK_BYTES,
            max_total_bytes: 1 << 30,
            max_tensors: 4096,
            max_name_len: 256,
            max_rank: 8,
            max_elements: 1 << 28,
        }
    }
}
