//! The configuration a node runs in cluster mode: the file's pools (the embedded default) and the
//! NodeENI objects of the API, with the node's labels from its Node object. Pure: no API call here.
//!
//! NodeENIs are admitted one at a time, oldest first (creation time, then name), against everything
//! admitted before: a NodeENI that is invalid, or that collides with an earlier pool (a name both
//! use, device indexes both take on nodes both select, one resource in two modes), is refused with
//! the reason and the rest are admitted. The versions in force before keep their places first, and a
//! new or changed version is then judged against everything else in force: a refused edit keeps the
//! previous version, and never pushes out a NodeENI that did not change, so a bad edit takes no ENIs
//! away. (A file pool added later still wins over a NodeENI it collides with: the file comes first.)

use std::collections::BTreeMap;

use nodeeni_conf::load::{admit, nodeeni_pool};
use nodeeni_conf::{Pool, PoolConfig, Problems};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A NodeENI as the API gave it: what identifies its version, and the whole object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Declared {
    pub name: String,
    /// `metadata.generation`: bumped by the API server on every spec change.
    pub generation: i64,
    /// `metadata.creationTimestamp` (RFC 3339, so it sorts as text).
    pub created: String,
    /// The object, read by conf's NodeENI reader.
    pub object: Value,
}

impl Declared {
    /// Reads the identifying fields of a NodeENI object.
    pub fn of(object: Value) -> Option<Self> {
        let meta = object.get("metadata")?;
        Some(Self {
            name: meta.get("name")?.as_str()?.to_string(),
            generation: meta.get("generation").and_then(Value::as_i64).unwrap_or(0),
            created: meta.get("creationTimestamp").and_then(Value::as_str).unwrap_or_default().to_string(),
            object,
        })
    }

    /// Whether the object's selector picks a node with these labels (an unreadable selector is
    /// taken to pick it, so its refusal is reported rather than hidden).
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        match self.object.pointer("/spec/nodeSelector") {
            None | Some(Value::Null) => true,
            Some(Value::Object(sel)) => {
                sel.iter().all(|(k, v)| v.as_str().is_some_and(|v| labels.get(k).map(String::as_str) == Some(v)))
            }
            Some(_) => true,
        }
    }
}

/// A NodeENI not admitted as it is now.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub nodeeni: String,
    pub generation: i64,
    /// What is wrong, every problem with its field.
    pub problems: Problems,
    /// The generation still in force instead, when an earlier one was admitted.
    pub kept_generation: Option<i64>,
    /// Whether the NodeENI selects this node (only then does this node report it).
    pub selects_node: bool,
}

/// The configuration to run, and what was refused on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Composition {
    pub config: PoolConfig,
    /// The NodeENI versions in force, by name: what the node converges to.
    pub in_force: BTreeMap<String, Declared>,
    pub refused: Vec<Refusal>,
}

/// Composes the file's configuration with the NodeENIs `declared`, for a node with `labels`.
/// `previous` are the versions in force before (a refused new version falls back to its old one).
pub fn compose(
    file: &PoolConfig,
    labels: &BTreeMap<String, String>,
    declared: &[Declared],
    previous: &BTreeMap<String, Declared>,
) -> Composition {
    let mut config = file.clone();
    config.node.labels = labels.clone();
    let mut order: Vec<&Declared> = declared.iter().collect();
    order.sort_by(|a, b| (&a.created, &a.name).cmp(&(&b.created, &b.name)));
    // What was in force keeps its place first (for NodeENIs that still exist), so a change to one
    // NodeENI is judged against the others as they are, and can never push out one that did not change.
    let mut in_force: Vec<(Declared, Pool)> = Vec::new();
    for d in &order {
        if let Some(old) = previous.get(&d.name)
            && let Ok(pool) = try_admit(&pools_with(&config.pools, &in_force, None), old)
        {
            in_force.push((old.clone(), pool));
        }
    }
    // Then each new or changed version, oldest first, against everything else in force.
    let mut refused = Vec::new();
    for d in order {
        let current = in_force.iter().position(|(k, _)| k.name == d.name);
        if current.is_some_and(|i| in_force[i].0.generation == d.generation) {
            continue;
        }
        match try_admit(&pools_with(&config.pools, &in_force, Some(&d.name)), d) {
            Ok(pool) => match current {
                Some(i) => in_force[i] = (d.clone(), pool),
                None => in_force.push((d.clone(), pool)),
            },
            Err(problems) => refused.push(Refusal {
                nodeeni: d.name.clone(),
                generation: d.generation,
                problems,
                kept_generation: current.map(|i| in_force[i].0.generation),
                selects_node: d.selects(labels),
            }),
        }
    }
    config.pools = pools_with(&config.pools, &in_force, None);
    let in_force = in_force.into_iter().map(|(d, _)| (d.name.clone(), d)).collect();
    Composition { config, in_force, refused }
}

/// The file's pools and the NodeENI pools in force, but for the NodeENI named `except`.
fn pools_with(file: &[Pool], in_force: &[(Declared, Pool)], except: Option<&str>) -> Vec<Pool> {
    let mut pools = file.to_vec();
    pools.extend(in_force.iter().filter(|(d, _)| Some(d.name.as_str()) != except).map(|(_, p)| p.clone()));
    pools
}

fn try_admit(admitted: &[Pool], d: &Declared) -> Result<Pool, Problems> {
    let pool = nodeeni_pool(&d.object)?;
    admit(admitted, &pool)?;
    Ok(pool)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use nodeeni_conf::LoadOptions;
    use serde_json::json;

    pub(crate) fn file(pools_yaml: &str) -> PoolConfig {
        let text = format!("clusterName: c1\npools:\n{pools_yaml}");
        PoolConfig::from_text(&text, &LoadOptions::default()).expect("valid file")
    }

    pub(crate) fn nodeeni(name: &str, generation: i64, created: &str, spec: Value) -> Declared {
        Declared::of(json!({
            "apiVersion": "networking.k8s.aws/v1alpha1",
            "kind": "NodeENI",
            "metadata": {"name": name, "generation": generation, "creationTimestamp": created, "uid": "u-1"},
            "spec": spec,
        }))
        .expect("a NodeENI")
    }

    /// A NodeENI with one ENI in the test subnet at `index`.
    pub(crate) fn indexed(name: &str, generation: i64, created: &str, index: u32) -> Declared {
        nodeeni(name, generation, created, json!({"subnetID": "subnet-0aaaabbbbcccceeee", "deviceIndex": index}))
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    pub(crate) const FILE_POOL: &str = "  - name: fast\n    mode: kernel\n    resourceName: nodeeni.io/fast\n    subnetIds: [subnet-0aaaabbbbccccdddd]\n    firstDeviceIndex: 1\n";

    #[test]
    fn nodeenis_join_the_file_pools_and_the_nodes_labels_replace_the_files() {
        let mut base = file(FILE_POOL);
        base.node.labels = labels(&[("from", "file")]);
        let d = nodeeni(
            "user-plane",
            1,
            "2026-01-01T00:00:00Z",
            json!({"subnetID": "subnet-0aaaabbbbcccceeee", "deviceIndex": 2, "enableDPDK": true, "nodeSelector": {"role": "upf"}}),
        );
        let c = compose(&base, &labels(&[("role", "upf")]), &[d], &BTreeMap::new());
        assert!(c.refused.is_empty(), "{:?}", c.refused);
        let names: Vec<&str> = c.config.pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["fast", "user-plane"]);
        assert_eq!(c.config.node.labels, labels(&[("role", "upf")]));
        assert_eq!(c.config.pools_for(&c.config.node.labels).count(), 2);
        assert_eq!(c.in_force["user-plane"].generation, 1);
    }

    #[test]
    fn the_later_of_two_colliding_declarations_is_refused_and_the_rest_admitted() {
        let base = file(FILE_POOL);
        // Takes device index 1 like the file's pool: refused, with the field named.
        let overlap = nodeeni(
            "late",
            1,
            "2026-01-02T00:00:00Z",
            json!({"subnetID": "subnet-0aaaabbbbcccceeee", "deviceIndex": 1, "dpdkResourceName": "nodeeni.io/late"}),
        );
        // Uses the file pool's name.
        let same_name = indexed("fast", 1, "2026-01-01T00:00:00Z", 5);
        // Fine: admitted even though the others are refused.
        let fine = indexed("fine", 1, "2026-01-03T00:00:00Z", 3);
        // Two NodeENIs at one index: the one created later is refused, whatever the list order.
        let first = indexed("first", 1, "2026-01-04T00:00:00Z", 7);
        let second = indexed("second", 1, "2026-01-05T00:00:00Z", 7);
        let c = compose(&base, &BTreeMap::new(), &[second, overlap, fine, same_name, first], &BTreeMap::new());
        let admitted: Vec<&str> = c.config.pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(admitted, ["fast", "fine", "first"]);
        let refused: BTreeMap<&str, String> =
            c.refused.iter().map(|r| (r.nodeeni.as_str(), r.problems.to_string())).collect();
        assert_eq!(refused.keys().copied().collect::<Vec<_>>(), ["fast", "late", "second"]);
        assert!(
            refused["fast"].contains("NodeENI(fast).metadata.name")
                && refused["fast"].contains("already used by pools[0]"),
            "{}",
            refused["fast"]
        );
        assert!(
            refused["late"].contains("NodeENI(late).spec.deviceIndex") && refused["late"].contains("overlap"),
            "{}",
            refused["late"]
        );
        assert!(refused["second"].contains("NodeENI(first)"), "{}", refused["second"]);
        assert!(c.refused.iter().all(|r| r.kept_generation.is_none() && r.selects_node));
    }

    #[test]
    fn an_invalid_new_version_keeps_the_admitted_one_in_force() {
        let base = file(FILE_POOL);
        let good = indexed("up", 1, "2026-01-01T00:00:00Z", 2);
        let bad =
            nodeeni("up", 2, "2026-01-01T00:00:00Z", json!({"subnetID": "subnet-xyz", "deviceIndex": 2, "mtu": 20000}));
        let previous = BTreeMap::from([("up".to_string(), good.clone())]);
        let c = compose(&base, &BTreeMap::new(), std::slice::from_ref(&bad), &previous);
        assert_eq!(c.in_force["up"], good);
        assert!(c.config.pool("up").is_some());
        let r = &c.refused[0];
        assert_eq!((r.generation, r.kept_generation), (2, Some(1)));
        assert!(r.problems.to_string().contains("spec.subnetID") && r.problems.to_string().contains("spec.mtu"));
        // Without an admitted version there is nothing to keep.
        let c = compose(&base, &BTreeMap::new(), &[bad], &BTreeMap::new());
        assert!(c.config.pool("up").is_none() && c.refused[0].kept_generation.is_none());
    }

    #[test]
    fn an_edit_that_collides_is_refused_and_never_pushes_out_a_nodeeni_that_did_not_change() {
        let base = file(FILE_POOL);
        let older = indexed("older", 1, "2026-01-01T00:00:00Z", 2);
        let younger = indexed("younger", 1, "2026-01-02T00:00:00Z", 3);
        let previous = compose(&base, &BTreeMap::new(), &[older.clone(), younger.clone()], &BTreeMap::new()).in_force;
        assert_eq!(previous.len(), 2);
        // The older one is edited onto the younger one's device index: the edit is refused, both stay.
        let edited = indexed("older", 2, "2026-01-01T00:00:00Z", 3);
        let c = compose(&base, &BTreeMap::new(), &[edited, younger.clone()], &previous);
        assert_eq!(c.in_force["younger"], younger);
        assert_eq!(c.in_force["older"], older);
        let r = &c.refused[0];
        assert_eq!((r.nodeeni.as_str(), r.generation, r.kept_generation), ("older", 2, Some(1)));
        assert!(r.problems.to_string().contains("NodeENI(younger)"), "{}", r.problems);
        let pools: Vec<&str> = c.config.pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(pools, ["fast", "older", "younger"]);
        // An edit that fits replaces the version in force.
        let moved = indexed("older", 3, "2026-01-01T00:00:00Z", 5);
        let c = compose(&base, &BTreeMap::new(), &[moved, younger], &previous);
        assert!(c.refused.is_empty(), "{:?}", c.refused);
        assert_eq!(
            (c.in_force["older"].generation, c.config.pool("older").map(|p| p.first_device_index)),
            (3, Some(5))
        );
    }

    #[test]
    fn a_refusal_says_whether_the_nodeeni_selects_this_node() {
        let base = file(FILE_POOL);
        let elsewhere =
            nodeeni("elsewhere", 1, "t", json!({"subnetID": "subnet-xyz", "nodeSelector": {"role": "other"}}));
        let here = nodeeni("here", 1, "t", json!({"subnetID": "subnet-xyz", "nodeSelector": {"role": "upf"}}));
        let c = compose(&base, &labels(&[("role", "upf")]), &[elsewhere, here], &BTreeMap::new());
        let selects: BTreeMap<&str, bool> = c.refused.iter().map(|r| (r.nodeeni.as_str(), r.selects_node)).collect();
        assert_eq!(selects, BTreeMap::from([("elsewhere", false), ("here", true)]));
    }

    #[test]
    fn a_deleted_nodeeni_leaves_the_configuration() {
        let base = file(FILE_POOL);
        let d = indexed("up", 1, "t", 2);
        let previous = compose(&base, &BTreeMap::new(), &[d], &BTreeMap::new()).in_force;
        let c = compose(&base, &BTreeMap::new(), &[], &previous);
        assert!(c.config.pool("up").is_none() && c.in_force.is_empty() && c.refused.is_empty());
    }
}
