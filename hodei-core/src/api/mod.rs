//! Adapters at the edge: gRPC (tonic) and REST (axum) over the control plane.

pub mod grpc;
