//! Which control-plane replica to dial: the configured addresses in turn.
//!
//! Replicas on one database are interchangeable for an agent: its session lives in the
//! shared store, so it can resume it on any of them. The agent stays on the address that
//! works and moves to the next one whenever a connection attempt fails or its stream
//! breaks (the supervisor sleeps its backoff between attempts).

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::ServerAddresses;

/// The configured addresses and the one in use.
#[derive(Debug)]
pub(crate) struct ServerRotation {
    servers: ServerAddresses,
    current: AtomicUsize,
}

impl ServerRotation {
    /// Starts at the first address.
    pub(crate) fn new(servers: ServerAddresses) -> Self {
        Self {
            servers,
            current: AtomicUsize::new(0),
        }
    }

    /// The address to dial now.
    pub(crate) fn current(&self) -> &str {
        self.servers
            .get_wrapping(self.current.load(Ordering::Acquire))
    }

    /// The address in use failed: the next one (after the last comes the first again).
    pub(crate) fn advance(&self) -> &str {
        let len = self.servers.len();
        let prev = self
            .current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |i| Some((i + 1) % len))
            .unwrap_or_else(|i| i);
        self.servers.get_wrapping(prev + 1)
    }

    /// Every address, starting with the one in use (for best-effort calls that may try each).
    pub(crate) fn in_turn_from_current(&self) -> impl Iterator<Item = &str> {
        let start = self.current.load(Ordering::Acquire);
        (0..self.servers.len()).map(move |k| self.servers.get_wrapping(start + k))
    }

    /// Every configured address.
    pub(crate) fn all(&self) -> impl Iterator<Item = &str> {
        self.servers.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotation(list: &str) -> ServerRotation {
        ServerRotation::new(ServerAddresses::parse("HODEI_SERVER", list).unwrap())
    }

    #[test]
    fn addresses_are_dialled_in_turn_and_wrap_around() {
        let r = rotation("http://a:1,http://b:2,http://c:3");
        assert_eq!(r.current(), "http://a:1");
        // Staying on a working address: asking again does not move.
        assert_eq!(r.current(), "http://a:1");
        assert_eq!(r.advance(), "http://b:2");
        assert_eq!(r.current(), "http://b:2");
        assert_eq!(
            r.in_turn_from_current().collect::<Vec<_>>(),
            vec!["http://b:2", "http://c:3", "http://a:1"]
        );
        assert_eq!(r.advance(), "http://c:3");
        assert_eq!(r.advance(), "http://a:1");
        assert_eq!(r.advance(), "http://b:2");
        assert_eq!(r.all().count(), 3);
    }

    #[test]
    fn a_single_address_is_dialled_again() {
        let r = rotation("http://only:1");
        assert_eq!(r.advance(), "http://only:1");
        assert_eq!(r.current(), "http://only:1");
        assert_eq!(
            r.in_turn_from_current().collect::<Vec<_>>(),
            vec!["http://only:1"]
        );
    }
}
