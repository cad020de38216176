//! The gRPC edge: handlers that convert wire types, validate them, authenticate the caller and
//! call the domain logic in [`crate::coordinator`].

pub mod convert;
pub mod operator_api;
pub mod paging;
pub mod refusals;
pub mod validate;
pub mod worker_api;

use tonic::metadata::MetadataMap;

/// The bearer token of a request, if any.
pub fn bearer(metadata: &MetadataMap) -> Option<&str> {
    metadata
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}
