//! Listing what a console polls: the most recent run records and the
//! actions still waiting for a person. Bounded, and a record this version
//! cannot read is counted, not failed on.
//!
//! Design note: a bucket lists its keys in the order their latest revision
//! was stored, so reading from the end reads the most recently changed
//! records first; at most [`MAX_SCAN`] records are read per listing, however
//! many the bucket holds (they expire with sessions anyway).

use serde::de::DeserializeOwned;
use sophia_kit::kv::{Bucket, KvErrorKind};

use super::{Store, StoreError};
use crate::jobs::RunJob;
use crate::run::{ActionStatus, PendingAction};

/// The most records one listing reads.
pub const MAX_SCAN: usize = 500;

/// Records a listing found, newest first, and how many it skipped.
#[derive(Clone, Debug, PartialEq)]
pub struct Listed<T> {
    /// The records.
    pub items: Vec<T>,
    /// Records this version cannot read (left out).
    pub skipped: usize,
}

/// Up to `limit` records of `bucket` that `keep` keeps, reading the most
/// recently changed first, at most [`MAX_SCAN`] of them.
async fn newest<T: DeserializeOwned>(
    bucket: &Bucket,
    limit: usize,
    keep: impl Fn(&T) -> bool,
) -> Result<Listed<T>, StoreError> {
    let keys = bucket.keys().await?;
    let mut out = Listed {
        items: Vec::new(),
        skipped: 0,
    };
    for key in keys.iter().rev().take(MAX_SCAN) {
        if out.items.len() >= limit {
            break;
        }
        match bucket.get::<T>(key).await {
            Ok(Some(item)) if keep(&item) => out.items.push(item),
            Ok(_) => {} // not wanted, or gone since the listing
            Err(e) if e.kind() == KvErrorKind::Corrupt => out.skipped += 1,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

impl Store {
    /// Up to `limit` run records `keep` keeps, newest (by start) first.
    pub async fn recent_jobs(
        &self,
        limit: usize,
        keep: impl Fn(&RunJob) -> bool,
    ) -> Result<Listed<RunJob>, StoreError> {
        let mut listed = newest(&self.jobs, limit, keep).await?;
        listed
            .items
            .sort_by(|a, b| (b.started_ms, &b.id).cmp(&(a.started_ms, &a.id)));
        Ok(listed)
    }

    /// Up to `limit` actions still waiting for a person, newest first.
    pub async fn pending_actions(&self, limit: usize) -> Result<Listed<PendingAction>, StoreError> {
        let waiting = |a: &PendingAction| a.status == ActionStatus::Pending;
        let mut listed = newest(&self.pending, limit, waiting).await?;
        listed
            .items
            .sort_by(|a, b| (b.created_ms, &b.id).cmp(&(a.created_ms, &a.id)));
        Ok(listed)
    }
}
