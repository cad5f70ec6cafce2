//! Proto <-> domain conversions (filled in by the proto work).
