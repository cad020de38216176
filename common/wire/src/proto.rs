//! The generated fedcsg.v1 wire types and gRPC stubs. Only edges (gRPC handlers, clients and the
//! conversions in [`crate::wire`]) use these; domain code works with domain types.

#![allow(clippy::all, missing_docs)]

/// Version of the worker protocol; a worker with another version is refused at Join.
pub const PROTOCOL_VERSION: u32 = 1;

pub mod v1 {
    tonic::include_proto!("fedcsg.v1");

    /// Encoded `FileDescriptorSet` of fedcsg.v1, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("fedcsg_v1_descriptor");
}
