//! What the node last converged to in cluster mode, kept beside the node state: the NodeENI versions
//! in force, the Node's labels and the instance it named. A daemon that starts while the API is
//! down or slow acts on this until its watches have listed once, so a restart without the API takes
//! no ENI away and needs no IMDS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::compose::Declared;

/// The file's name in the state folder.
pub const FILE_NAME: &str = "cluster-view.json";

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedView {
    /// The Node's labels the last good pass ran with.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The NodeENI versions in force at the last good pass.
    #[serde(default)]
    pub in_force: Vec<Declared>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
}

impl SavedView {
    /// The versions in force by name: what the first composition after a start builds on, so an
    /// edit refused before the restart is refused again rather than run.
    pub fn versions_in_force(&self) -> BTreeMap<String, Declared> {
        self.in_force.iter().map(|d| (d.name.clone(), d.clone())).collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SavedError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a saved cluster view: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
}

/// The saved view in `state_dir`: Ok(None) when there is none yet.
pub fn load(state_dir: &Path) -> Result<Option<SavedView>, SavedError> {
    let path = state_dir.join(FILE_NAME);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|source| SavedError::Parse { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SavedError::Io { path, source }),
    }
}

/// Replaces the saved view (atomically and durably: a crash leaves the old one or the new one).
pub fn save(state_dir: &Path, view: &SavedView) -> Result<(), SavedError> {
    let path = state_dir.join(FILE_NAME);
    let bytes = serde_json::to_vec_pretty(view).map_err(|source| SavedError::Parse { path: path.clone(), source })?;
    nodeeni_state::atomic::write_atomic(&path, &bytes).map_err(|source| SavedError::Io { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::compose;
    use crate::compose::tests::{FILE_POOL, file, indexed};

    #[test]
    fn a_saved_view_reads_back_as_written_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(dir.path()).expect("load"), None);
        let view = SavedView {
            labels: BTreeMap::from([("role".into(), "upf".into())]),
            in_force: vec![indexed("up", 3, "2026-01-01T00:00:00Z", 2)],
            instance_id: Some("i-0123456789abcdef0".into()),
            availability_zone: Some("us-east-1a".into()),
            instance_type: Some("c5.4xlarge".into()),
        };
        save(dir.path(), &view).expect("save");
        assert_eq!(load(dir.path()).expect("load"), Some(view));
        std::fs::write(dir.path().join(FILE_NAME), b"{torn").expect("write");
        assert!(matches!(load(dir.path()), Err(SavedError::Parse { .. })));
    }

    /// The restart path, without a daemon: a colliding edit refused before the restart is refused
    /// again by a composition seeded from the saved view alone, and the version in force stays.
    #[test]
    fn a_composition_seeded_from_the_saved_view_keeps_refusing_a_refused_edit() {
        let base = file(FILE_POOL);
        let older = indexed("older", 1, "2026-01-01T00:00:00Z", 2);
        let younger = indexed("younger", 1, "2026-01-02T00:00:00Z", 3);
        let edited = indexed("older", 2, "2026-01-01T00:00:00Z", 3);
        let converged = compose(&base, &BTreeMap::new(), &[older.clone(), younger.clone()], &BTreeMap::new());
        let refused = compose(&base, &BTreeMap::new(), &[edited.clone(), younger.clone()], &converged.in_force);
        assert_eq!(refused.in_force["older"], older, "refused before the restart");

        let dir = tempfile::tempdir().expect("tempdir");
        let view = SavedView { in_force: refused.in_force.values().cloned().collect(), ..SavedView::default() };
        save(dir.path(), &view).expect("save");
        let restarted = load(dir.path()).expect("load").expect("saved");
        let c = compose(&base, &BTreeMap::new(), &[edited, younger], &restarted.versions_in_force());
        assert_eq!(c.in_force["older"], older, "generation 1 stays in force after the restart");
        assert_eq!(c.config.pool("older").map(|p| p.first_device_index), Some(2));
        let r = c.refused.iter().find(|r| r.nodeeni == "older").expect("the edit refused again");
        assert_eq!((r.generation, r.kept_generation), (2, Some(1)));
        // Seeded from nothing instead, the same lists would run the edit and refuse the unchanged one.
        let unseeded = compose(
            &base,
            &BTreeMap::new(),
            &[indexed("older", 2, "2026-01-01T00:00:00Z", 3), indexed("younger", 1, "2026-01-02T00:00:00Z", 3)],
            &BTreeMap::new(),
        );
        assert_ne!(unseeded.in_force.get("older"), Some(&older));
    }
}
