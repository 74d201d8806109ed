//! What a pass and a drain did, for logs, metrics and tests.

use nodeeni_conf::EniId;

/// What one reconcile did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub created: Vec<EniId>,
    pub attached: Vec<EniId>,
    pub adopted: Vec<EniId>,
    pub deleted: Vec<EniId>,
    /// Drift repaired: re-attached, security groups, description or source/destination check reset, records of vanished ENIs dropped.
    pub repaired: Vec<String>,
    /// Held by pods: waiting to be released before removal.
    pub draining: Vec<EniId>,
    /// Pools or slots that could not be served, and why; the others were still reconciled.
    pub refused: Vec<String>,
    /// Host ENIs' secondary IPs assigned for `nodeeni-ipam`, and returned.
    pub ips_assigned: Vec<String>,
    pub ips_released: Vec<String>,
}

impl Report {
    pub(crate) fn absorb(&mut self, other: Report) {
        self.created.extend(other.created);
        self.attached.extend(other.attached);
        self.adopted.extend(other.adopted);
        self.deleted.extend(other.deleted);
        self.repaired.extend(other.repaired);
        self.draining.extend(other.draining);
        self.refused.extend(other.refused);
        self.ips_assigned.extend(other.ips_assigned);
        self.ips_released.extend(other.ips_released);
    }

    /// Whether the pass changed anything in EC2 or the node state.
    pub fn changed_anything(&self) -> bool {
        !(self.created.is_empty()
            && self.attached.is_empty()
            && self.adopted.is_empty()
            && self.deleted.is_empty()
            && self.repaired.is_empty()
            && self.ips_assigned.is_empty()
            && self.ips_released.is_empty())
    }
}

/// What [`super::Reconciler::drain`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DrainReport {
    pub deleted: Vec<EniId>,
    /// Still on the node when the time ran out (held by pods).
    pub remaining: Vec<EniId>,
}
