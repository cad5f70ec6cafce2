//! REST adapter tests (being written).
