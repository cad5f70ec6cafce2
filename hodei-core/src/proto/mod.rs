//! The generated `hodei.v1` wire types and gRPC stubs, and the one module that
//! converts them to and from the domain ([`convert`]).
//!
//! Client stubs are always generated; server stubs only with the `server`
//! feature, so an agent-only build compiles no server code.

/// Generated code for package `hodei.v1`. Never edited by hand.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("hodei.v1");

    /// Encoded file descriptor set of the protos, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/hodei_v1_descriptor.bin"));
}

pub mod codec;
pub mod convert;
pub mod template_convert;
pub mod worker_convert;
