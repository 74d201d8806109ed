//! Adopt: bring the node state in line with what EC2 says exists before anything is planned. A create
//! interrupted by a crash is finished (its intent tag names the record), an ENI tagged for this node
//! but unknown here is adopted, and the record of an ENI gone from EC2 is dropped — but only once a
//! describe of that ID confirms it is gone, since EC2's tag listings are eventually consistent and a
//! record forgotten too early would have its ENI re-created and the first one leak.

use nodeeni_conf::Mode;
use nodeeni_state::node::{EniRecord, Lifecycle, NodeState};

use super::{INTENT_TAG, PoolError, Reconciler, Report, fill_from};
use crate::ec2::{Ec2, Eni, tags};
use crate::host::HostPrep;

impl<E: Ec2, H: HostPrep> Reconciler<E, H> {
    /// Adopts what `listed` shows and drops records of ENIs confirmed gone. Returns the ENIs the
    /// listing missed but a describe found, to be planned with the listed ones, and the node state as
    /// it wrote it (a snapshot: whatever is decided from it about a record is decided again under the
    /// lock).
    pub(super) async fn adopt(&self, listed: &[Eni], report: &mut Report) -> Result<(Vec<Eni>, NodeState), PoolError> {
        // Records whose ENI the listing does not show: ask EC2 about each before forgetting it.
        let unlisted: Vec<_> = self
            .load()?
            .enis
            .into_iter()
            .filter_map(|r| r.eni_id)
            .filter(|id| !listed.iter().any(|e| &e.id == id))
            .collect();
        let mut found = Vec::new();
        let mut gone = Vec::new();
        for id in unlisted {
            match self.ec2.describe_eni(&id).await {
                Ok(Some(eni)) => {
                    tracing::debug!(eni = %id, "missing from the tag listing but present in EC2: kept");
                    found.push(eni);
                }
                Ok(None) => gone.push(id),
                // Not knowing is no reason to forget: the record stays until a describe answers.
                Err(e) => {
                    tracing::warn!(eni = %id, error = %e, "cannot confirm an unlisted ENI is gone; keeping its record")
                }
            }
        }
        let pool_names: Vec<String> = self.config.pools.iter().map(|p| p.name.clone()).collect();
        let known: Vec<&Eni> = listed.iter().chain(&found).collect();
        self.update(|s| {
            for eni in listed {
                if s.eni(&eni.id).is_some() {
                    continue;
                }
                let token = eni.tags.get(INTENT_TAG);
                if let Some(rec) = s
                    .enis
                    .iter_mut()
                    .find(|r| r.eni_id.is_none() && token.is_some() && r.client_token.as_ref() == token)
                {
                    tracing::info!(eni = %eni.id, "finishing a create interrupted by a restart");
                    fill_from(rec, eni, None);
                    rec.lifecycle = Lifecycle::Attaching;
                    report.adopted.push(eni.id.clone());
                    continue;
                }
                let pool = eni.tags.get(tags::POOL).cloned().unwrap_or_default();
                tracing::info!(eni = %eni.id, pool, known_pool = pool_names.contains(&pool), "adopting an ENI tagged for this node");
                let mode = self.config.pool(&pool).map_or(Mode::Kernel, |p| p.mode);
                let mut rec = EniRecord {
                    device_index: eni.attachment.as_ref().and_then(|a| a.device_index),
                    network_card: eni.attachment.as_ref().and_then(|a| a.place()).map(|p| p.network_card),
                    client_token: token.cloned(),
                    ..EniRecord::new(pool, mode, Lifecycle::Attaching)
                };
                fill_from(&mut rec, eni, None);
                s.enis.push(rec);
                report.adopted.push(eni.id.clone());
            }
            s.enis.retain(|r| match &r.eni_id {
                Some(id) if gone.contains(id) && !known.iter().any(|e| &e.id == id) => {
                    // Decided here, under the lock: a pod may have claimed it since the snapshot.
                    if r.is_held() {
                        tracing::warn!(eni = %id, "ENI held by a pod is gone from EC2; keeping its record until the pod lets go");
                        return true;
                    }
                    tracing::warn!(eni = %id, "ENI gone from EC2 (deleted outside nodeeni); dropping its record");
                    report.repaired.push(format!("{id}: vanished from EC2, record dropped"));
                    false
                }
                // A create whose intent never reached EC2 (or is not listed yet: then it is adopted
                // by its tags at a later pass, and a duplicate of its slot is removed as undesired).
                None if r.lifecycle == Lifecycle::Creating => false,
                _ => true,
            });
            s.clone()
        })
        .map(|state| (found, state))
    }
}
