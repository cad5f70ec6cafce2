//! Adapters at the edge: gRPC (tonic) and REST (axum) over the control plane.

pub mod auth;
pub mod grpc;
pub mod log_follow;
pub mod rest;
