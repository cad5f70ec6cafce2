//! In-memory stores: the embedded default (filled in by the stores work).
