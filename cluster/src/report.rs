//! What one node publishes as its `NodeENIState` status: its ENIs as the node state has them, the
//! conditions a pass and the composition give, and the NodeENI generations in force. Pure: the
//! server-side apply that sends it belongs to the API client.

use std::collections::BTreeMap;

use nodeeni_state::node::{Lifecycle, NodeState};

use crate::compose::Composition;
use crate::crd::{Condition, EniStatus, NodeENIStateStatus};

/// What the last pass said, as far as the status cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassOutcome {
    /// The pass converged what it could; `refused` are the pools or slots it could not serve, as
    /// `<pool>: <why>`.
    Done { refused: Vec<String> },
    /// The pass failed (EC2 unreachable, the breaker open, …).
    Failed { why: String },
}

/// Why a refusal degrades the node, as a condition reason (CamelCase, as Kubernetes reasons are).
pub fn degraded_reason(refusal: &str) -> &'static str {
    if refusal.contains("an ENI attaches only within its AZ") {
        "SubnetInAnotherAZ"
    } else if refusal.contains("has no free slot") {
        "InstanceFull"
    } else if refusal.contains("device index") {
        "DeviceIndexTaken"
    } else if refusal.contains("unknown subnet") || refusal.contains("no security group") {
        "NotFoundInEC2"
    } else {
        "PoolRefused"
    }
}

/// The status to publish. `now` is RFC 3339; a condition keeps its `lastTransitionTime` from
/// `previous` while its status does not change.
pub fn status_of(
    state: &NodeState,
    composition: &Composition,
    outcome: &PassOutcome,
    previous: Option<&NodeENIStateStatus>,
    now: &str,
) -> NodeENIStateStatus {
    let declared_by = |pool: &str| {
        if composition.in_force.contains_key(pool) { "NodeENI" } else { "PoolConfig" }
    };
    let enis: Vec<EniStatus> = state
        .enis
        .iter()
        .map(|e| EniStatus {
            eni_id: e.eni_id.as_ref().map(|i| i.to_string()).unwrap_or_default(),
            pool: e.pool.clone(),
            declared_by: declared_by(&e.pool).to_string(),
            mode: e.mode.as_str().to_string(),
            lifecycle: lifecycle_name(e.lifecycle),
            subnet_id: e.subnet_id.as_ref().map(|s| s.to_string()),
            device_index: e.device_index,
            network_card_index: e.device_index.map(|_| e.network_card.unwrap_or(0)),
            mac: e.mac.as_ref().map(|m| m.to_string()),
            pci_address: e.pci.map(|p| p.to_string()),
            driver: e.driver.as_ref().map(|d| d.to_string()),
            primary_ip: e.primary_ip.map(|ip| ip.to_string()),
            ipv6_addresses: e.ipv6_addresses.iter().map(ToString::to_string).collect(),
            source_dest_check: e.source_dest_check,
            held_by: e.allocation.as_ref().map(|a| a.container_id.to_string()),
        })
        .collect();

    let mut problems: Vec<(String, String)> = Vec::new();
    for r in composition.refused.iter().filter(|r| r.selects_node) {
        let kept = r.kept_generation.map(|g| format!(" (generation {g} stays in force)")).unwrap_or_default();
        problems.push((
            "NodeENIRefused".into(),
            format!("NodeENI {} generation {}{kept}: {}", r.nodeeni, r.generation, r.problems),
        ));
    }
    let failed = match outcome {
        PassOutcome::Done { refused } => {
            for r in refused {
                problems.push((degraded_reason(r).into(), r.clone()));
            }
            None
        }
        PassOutcome::Failed { why } => Some(why.clone()),
    };
    let converging = state.enis.iter().any(|e| matches!(e.lifecycle, Lifecycle::Creating | Lifecycle::Attaching));
    let (ready, ready_reason, ready_message) = match (&failed, problems.is_empty(), converging) {
        (Some(why), _, _) => ("False", "PassFailed", why.clone()),
        (None, _, true) => ("False", "Converging", "ENIs are being created or attached".to_string()),
        (None, true, false) => {
            ("True", "Converged", "every declaration that selects this node is converged".to_string())
        }
        (None, false, false) => {
            ("False", "Degraded", format!("{} problem(s); see the Degraded condition", problems.len()))
        }
    };
    let (degraded, degraded_reason_, degraded_message) = match problems.first() {
        None => ("False", "AsDeclared".to_string(), String::new()),
        Some((reason, _)) => {
            ("True", reason.clone(), problems.iter().map(|(_, m)| m.as_str()).collect::<Vec<_>>().join("; "))
        }
    };
    let previous_time = |type_: &str, status: &str| {
        previous
            .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_ && c.status == status))
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.to_string())
    };
    let conditions = vec![
        Condition {
            type_: "Ready".into(),
            status: ready.into(),
            reason: ready_reason.into(),
            message: ready_message,
            last_transition_time: previous_time("Ready", ready),
        },
        Condition {
            type_: "Degraded".into(),
            status: degraded.into(),
            reason: degraded_reason_,
            message: degraded_message,
            last_transition_time: previous_time("Degraded", degraded),
        },
    ];
    // Generations count as converged only after a pass that did not fail.
    let observed_generations: BTreeMap<String, i64> = match (&failed, previous) {
        (None, _) => composition.in_force.iter().map(|(n, d)| (n.clone(), d.generation)).collect(),
        (Some(_), Some(p)) => p.observed_generations.clone(),
        (Some(_), None) => BTreeMap::new(),
    };
    NodeENIStateStatus { eni_count: enis.len() as u32, enis, conditions, observed_generations }
}

/// The lifecycle in the CamelCase Kubernetes statuses use (`Ready`), from the node state's name.
fn lifecycle_name(l: Lifecycle) -> String {
    let name = l.as_str();
    name[..1].to_uppercase() + &name[1..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::tests::{indexed, nodeeni};
    use crate::compose::{Declared, compose};
    use nodeeni_conf::{LoadOptions, Mode, PoolConfig};
    use nodeeni_state::node::{Allocation, EniRecord};
    use serde_json::json;

    fn composition(nodeenis: &[Declared]) -> Composition {
        let file = PoolConfig::from_text(
            "clusterName: c1\npools:\n  - {name: fast, mode: kernel, resourceName: nodeeni.io/fast, subnetIds: [subnet-0aaaabbbbccccdddd]}\n",
            &LoadOptions::default(),
        )
        .expect("file");
        compose(&file, &[("role".to_string(), "upf".to_string())].into(), nodeenis, &BTreeMap::new())
    }

    fn state() -> NodeState {
        let mut fast = EniRecord::new("fast", Mode::Kernel, Lifecycle::Ready);
        fast.eni_id = Some("eni-0123456789abcdef0".parse().expect("id"));
        fast.device_index = Some(1);
        fast.allocation = Some(Allocation {
            container_id: "pod-1".parse().expect("container"),
            ifname: "net1".into(),
            netns: None,
            since_unix: 0,
        });
        let mut up = EniRecord::new("up", Mode::Host, Lifecycle::Ready);
        up.eni_id = Some("eni-0123456789abcdef1".parse().expect("id"));
        up.device_index = Some(2);
        up.network_card = Some(1);
        up.ipv6_addresses = vec!["2600:1f18::2".parse().expect("ipv6")];
        NodeState { enis: vec![fast, up], ..NodeState::default() }
    }

    fn condition<'a>(s: &'a NodeENIStateStatus, type_: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == type_).expect("condition")
    }

    /// The NodeENI `up` at `generation`: one ENI at device index 2.
    fn up(generation: i64) -> Declared {
        indexed("up", generation, "2026-01-01T00:00:00Z", 2)
    }

    #[test]
    fn a_converged_node_is_ready_with_every_eni_its_pool_and_holder() {
        let c = composition(&[up(3)]);
        let s = status_of(&state(), &c, &PassOutcome::Done { refused: vec![] }, None, "T1");
        assert_eq!(s.eni_count, 2);
        let by_pool: BTreeMap<&str, &EniStatus> = s.enis.iter().map(|e| (e.pool.as_str(), e)).collect();
        assert_eq!(by_pool["fast"].declared_by, "PoolConfig");
        assert_eq!(by_pool["up"].declared_by, "NodeENI");
        assert_eq!(by_pool["fast"].held_by.as_deref(), Some("pod-1"));
        assert_eq!((by_pool["up"].held_by.as_ref(), by_pool["up"].device_index), (None, Some(2)));
        assert_eq!((by_pool["up"].network_card_index, by_pool["fast"].network_card_index), (Some(1), Some(0)));
        assert_eq!(
            (by_pool["up"].ipv6_addresses.as_slice(), by_pool["fast"].ipv6_addresses.len()),
            (&["2600:1f18::2".to_string()][..], 0)
        );
        assert_eq!(
            (condition(&s, "Ready").status.as_str(), condition(&s, "Degraded").status.as_str()),
            ("True", "False")
        );
        assert_eq!(s.observed_generations, BTreeMap::from([("up".to_string(), 3)]));
    }

    #[test]
    fn a_subnet_in_another_az_degrades_the_node_with_that_reason() {
        let c = composition(&[up(1)]);
        let refused = vec!["up: subnet subnet-0aaaabbbbcccceeee is in us-east-1b, the node is in us-east-1a: an ENI attaches only within its AZ".to_string()];
        let s = status_of(&state(), &c, &PassOutcome::Done { refused }, None, "T1");
        let d = condition(&s, "Degraded");
        assert_eq!((d.status.as_str(), d.reason.as_str()), ("True", "SubnetInAnotherAZ"));
        assert!(d.message.contains("us-east-1b"), "{d:?}");
        assert_eq!(condition(&s, "Ready").status, "False");
        assert_eq!(
            degraded_reason("fast: the instance takes 4 ENIs and has no free slot for device index 4"),
            "InstanceFull"
        );
    }

    #[test]
    fn only_a_refused_nodeeni_that_selects_the_node_degrades_it() {
        let bad = |name: &str, role: &str| {
            nodeeni(name, 2, "2026-01-01T00:00:00Z", json!({"subnetID": "subnet-xyz", "nodeSelector": {"role": role}}))
        };
        let s = status_of(
            &state(),
            &composition(&[bad("elsewhere", "smf")]),
            &PassOutcome::Done { refused: vec![] },
            None,
            "T1",
        );
        assert_eq!(condition(&s, "Degraded").status, "False", "{s:?}");
        let s = status_of(
            &state(),
            &composition(&[bad("here", "upf")]),
            &PassOutcome::Done { refused: vec![] },
            None,
            "T1",
        );
        let d = condition(&s, "Degraded");
        assert_eq!((d.status.as_str(), d.reason.as_str()), ("True", "NodeENIRefused"));
        assert!(d.message.contains("NodeENI here generation 2") && d.message.contains("spec.subnetID"), "{d:?}");
    }

    #[test]
    fn a_failed_pass_is_not_ready_and_keeps_the_generations_last_converged() {
        let c1 = composition(&[up(1)]);
        let good = status_of(&state(), &c1, &PassOutcome::Done { refused: vec![] }, None, "T1");
        let c2 = composition(&[up(2)]);
        let failed = PassOutcome::Failed { why: "EC2: circuit open".into() };
        let s = status_of(&state(), &c2, &failed, Some(&good), "T2");
        let r = condition(&s, "Ready");
        assert_eq!(
            (r.status.as_str(), r.reason.as_str(), r.last_transition_time.as_str()),
            ("False", "PassFailed", "T2")
        );
        assert_eq!(s.observed_generations["up"], 1, "generation 2 is not converged yet");
        // Degraded stayed False: its transition time is the first one.
        assert_eq!(condition(&s, "Degraded").last_transition_time, "T1");
        let again = status_of(&state(), &c2, &PassOutcome::Done { refused: vec![] }, Some(&s), "T3");
        assert_eq!((condition(&again, "Ready").status.as_str(), again.observed_generations["up"]), ("True", 2));
        assert_eq!(condition(&again, "Ready").last_transition_time, "T3");
    }

    #[test]
    fn enis_being_created_keep_the_node_converging() {
        let mut st = state();
        st.enis.push(EniRecord::new("up", Mode::Host, Lifecycle::Creating));
        let s = status_of(&st, &composition(&[]), &PassOutcome::Done { refused: vec![] }, None, "T1");
        let r = condition(&s, "Ready");
        assert_eq!((r.status.as_str(), r.reason.as_str()), ("False", "Converging"));
        assert_eq!(s.enis.iter().find(|e| e.lifecycle == "Creating").map(|e| e.eni_id.as_str()), Some(""));
    }
}
