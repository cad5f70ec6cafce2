//! Placeholder until the provider kit lands.
