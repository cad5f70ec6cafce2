//! Firecracker's metrics file: one JSON object per flush (every 60 s, and on
//! each `FlushMetrics` action). Its counters are deltas since the previous
//! flush, so the totals are the sums over every line written so far.

use std::io::SeekFrom;
use std::path::Path;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Running totals of the counters a worker reports as [`ResourceUsage`](hodei_core::provider::ResourceUsage).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlushedTotals {
    /// Bytes the guest read from its block devices (`block.read_bytes`).
    pub block_read_bytes: u64,
    /// Bytes the guest wrote to its block devices (`block.write_bytes`).
    pub block_write_bytes: u64,
    /// Bytes the guest received on its network interfaces (`net.rx_bytes_count`).
    pub net_rx_bytes: u64,
    /// Bytes the guest sent (`net.tx_bytes_count`).
    pub net_tx_bytes: u64,
    /// Flushes absorbed.
    pub flushes: u64,
}

impl FlushedTotals {
    /// Adds one flushed line; `false` (nothing added) when it is not a metrics object.
    pub fn absorb_line(&mut self, line: &str) -> bool {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            return false;
        };
        if v.get("utc_timestamp_ms").is_none() {
            return false;
        }
        let n = |group: &str, key: &str| v[group][key].as_u64().unwrap_or(0);
        self.block_read_bytes += n("block", "read_bytes");
        self.block_write_bytes += n("block", "write_bytes");
        self.net_rx_bytes += n("net", "rx_bytes_count");
        self.net_tx_bytes += n("net", "tx_bytes_count");
        self.flushes += 1;
        true
    }
}

/// Reads a metrics file incrementally: each call absorbs the complete lines
/// appended since the previous one.
#[derive(Debug, Default)]
pub(crate) struct MetricsFile {
    offset: u64,
    partial: Vec<u8>,
    totals: FlushedTotals,
}

impl MetricsFile {
    /// The totals after reading what was appended to `path`; the previous
    /// totals when it cannot be read.
    pub(crate) async fn totals(&mut self, path: &Path) -> FlushedTotals {
        let Ok(mut file) = tokio::fs::File::open(path).await else {
            return self.totals;
        };
        if file.seek(SeekFrom::Start(self.offset)).await.is_err() {
            return self.totals;
        }
        let mut new = Vec::new();
        if file.read_to_end(&mut new).await.is_err() {
            return self.totals;
        }
        self.offset += new.len() as u64;
        self.partial.extend_from_slice(&new);
        if let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') {
            let complete: Vec<u8> = self.partial.drain(..=end).collect();
            for line in String::from_utf8_lossy(&complete).lines() {
                self.totals.absorb_line(line);
            }
        }
        self.totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"utc_timestamp_ms":1,"block":{"read_bytes":100,"write_bytes":20},"net":{"rx_bytes_count":3,"tx_bytes_count":4},"vcpu":{"exit_io_in":9}}"#;

    #[test]
    fn lines_are_deltas_summed() {
        let mut t = FlushedTotals::default();
        assert!(t.absorb_line(LINE));
        assert!(t.absorb_line(LINE));
        assert!(!t.absorb_line("not json"));
        assert!(!t.absorb_line(r#"{"other":1}"#));
        assert_eq!(t.block_read_bytes, 200);
        assert_eq!(t.block_write_bytes, 40);
        assert_eq!(t.net_rx_bytes, 6);
        assert_eq!(t.net_tx_bytes, 8);
        assert_eq!(t.flushes, 2);
    }

    #[tokio::test]
    async fn the_file_is_read_incrementally_and_partial_lines_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.json");
        let mut m = MetricsFile::default();
        assert_eq!(m.totals(&path).await, FlushedTotals::default());
        let (head, tail) = LINE.split_at(30);
        std::fs::write(&path, format!("{LINE}\n{head}")).unwrap();
        assert_eq!(m.totals(&path).await.flushes, 1);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, format!("{tail}\n").as_bytes()).unwrap();
        let t = m.totals(&path).await;
        assert_eq!(t.flushes, 2);
        assert_eq!(t.block_read_bytes, 200);
        // Nothing new: the same totals.
        assert_eq!(m.totals(&path).await, t);
    }
}
