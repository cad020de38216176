//! The generated fedcsg.v1 wire types and gRPC stubs. Only edges (gRPC handlers, clients and the
//! conversions in [`crate::wire`]) use these; domain code works with domain types.

#![allow(clippy::all, missing_docs)]

/// Version of the worker protocol; a worker with another version is refused at Join.
/// 2: updates may be deltas (`UpdateHeader.kind`) and tensors compressed (f16, bf16, int8, top-k);
/// a version-1 worker could neither decode a compressed global model nor send what a job asks.
pub const PROTOCOL_VERSION: u32 = 2;

pub mod v1 {
    tonic::include_proto!("fedcsg.v1");

    /// Encoded `FileDescriptorSet` of fedcsg.v1, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("fedcsg_v1_descriptor");
}
