//! A provider's stored load, recounted off the job path.
//!
//! Each assignment and each release changes a provider's job count, and
//! recounting it is a count, a read and a save: three round trips on
//! Postgres. Awaited in the dispatch loop and in the result handler, they
//! held back the next job of a burst and the next job of the same worker.
//! Now the job path only asks for a recount; one task per provider does it,
//! and requests that arrive meanwhile fold into one more recount after it
//! (the last recount always starts after the last change, so the stored
//! count ends right, and two recounts of one provider never race to save).
//! A recount first waits a moment, so that a burst of changes costs one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::domain::ids::ProviderId;

use super::{ControlPlane, lock};

/// How long a recount waits for more changes to fold in: the stored load
/// lags the workers' slots by about this much more (the slots, not the
/// stored load, are what a job is placed on).
const RECOUNT_DELAY: Duration = Duration::from_millis(20);

/// The providers being recounted, and whether another change came since
/// their recount started.
#[derive(Debug, Default)]
pub(super) struct LoadRecounts {
    running: Mutex<HashMap<ProviderId, bool>>,
}

impl LoadRecounts {
    /// Marks a recount as wanted; true when the caller must start one (none
    /// is running for this provider).
    fn want(&self, id: ProviderId) -> bool {
        let mut running = lock(&self.running);
        match running.get_mut(&id) {
            Some(again) => {
                *again = true;
                false
            }
            None => {
                running.insert(id, false);
                true
            }
        }
    }

    /// A recount begins: it covers every change asked for so far.
    fn begin(&self, id: ProviderId) {
        if let Some(again) = lock(&self.running).get_mut(&id) {
            *again = false;
        }
    }

    /// A recount ended: true when another is wanted (and now running).
    fn again(&self, id: ProviderId) -> bool {
        let mut running = lock(&self.running);
        match running.get_mut(&id) {
            Some(again) if *again => {
                *again = false;
                true
            }
            _ => {
                running.remove(&id);
                false
            }
        }
    }
}

impl ControlPlane {
    /// Recounts the provider's load soon, off the caller's path (see the
    /// module docs); [`Self::refresh_provider_load`] does it in place.
    pub(super) fn refresh_provider_load_soon(&self, id: ProviderId) {
        if !self.inner.load_recounts.want(id) {
            return;
        }
        let cp = self.clone();
        tokio::spawn(async move {
            loop {
                // The changes of the next moment fold into this recount: at
                // hundreds of jobs a second a recount per change was several
                // statements per job on Postgres.
                tokio::time::sleep(RECOUNT_DELAY).await;
                cp.inner.load_recounts.begin(id);
                cp.refresh_provider_load(id).await;
                if !cp.inner.load_recounts.again(id) {
                    break;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_during_a_recount_fold_into_one_more() {
        let r = LoadRecounts::default();
        let p = ProviderId::new();
        assert!(r.want(p), "the first change starts a recount");
        assert!(!r.want(p), "a change meanwhile does not start another");
        assert!(!r.want(p), "nor does a third");
        assert!(r.again(p), "one more recount, after the running one");
        assert!(!r.again(p), "then none");
        assert!(r.want(p));
        assert!(!r.want(p), "a change before the recount begins…");
        r.begin(p);
        assert!(!r.again(p), "…is covered by it: no second recount");
        assert!(r.want(p), "the next change starts again");
        assert!(r.want(ProviderId::new()), "providers are independent");
    }
}
