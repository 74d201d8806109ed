//! What an operator applies (deploy/), checked offline: every manifest against the
//! Kubernetes schemas (kubernetes-validate, strict) and yamllint; the ConfigMap's pools through
//! `validate-config`; the NetworkAttachmentDefinitions' CNI configs through the plugin's own parser;
//! the IAM policy against the EC2 operations the pool's code calls.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use nodeeni_tests::tools::{repo, venv_tool};
use serde_json::Value;

/// What `kubectl apply -f deploy/` reads: the folder's own .yaml, .yml and .json files (not its
/// subfolders), in name order.
fn installed() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("deploy"))
        .expect("deploy/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "the deploy folder holds the manifests: {files:?}");
    files
}

/// The examples an operator applies after the install (the NodeENI has its own schema test).
fn examples() -> Vec<PathBuf> {
    ["network-attachments.yaml", "pod.yaml"].iter().map(|f| repo().join("deploy/examples").join(f)).collect()
}

/// Every manifest with a Kubernetes schema: the installed ones and the examples.
fn manifests() -> Vec<PathBuf> {
    installed().into_iter().chain(examples()).collect()
}

/// Every YAML document of `files`, as JSON values.
fn documents_of(files: Vec<PathBuf>) -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            if !v.is_null() {
                out.push((f.clone(), v));
            }
        }
    }
    out
}

/// Every YAML document of every manifest.
fn documents() -> Vec<(PathBuf, Value)> {
    documents_of(manifests())
}

#[test]
fn every_manifest_validates_against_the_kubernetes_schemas() {
    let Some(tool) = venv_tool("kubernetes-validate") else { return };
    let out = Command::new(tool).arg("--strict").args(manifests()).output().expect("kubernetes-validate");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    // Kinds with a schema must have passed, not been skipped.
    for kind in [
        "configmap/nodeeni-pools",
        "daemonset/nodeeni",
        "namespace/nodeeni",
        "serviceaccount/nodeeni",
        "customresourcedefinition/nodeenis.networking.k8s.aws",
        "customresourcedefinition/nodeenistates.networking.k8s.aws",
        "clusterrole/nodeeni",
        "clusterrolebinding/nodeeni",
        "role/nodeeni-events",
        "rolebinding/nodeeni-events",
        "validatingadmissionpolicy/nodeeni-own-nodeenistate",
        "validatingadmissionpolicybinding/nodeeni-own-nodeenistate",
    ] {
        assert!(text.contains(&format!("passed for resource {kind}")), "{kind} was validated: {text}");
    }
}

/// Kinds the API server serves without a CRD, and whether they live in a namespace.
fn built_in_kind(api_version: &str, kind: &str) -> Option<bool> {
    match (api_version, kind) {
        ("v1", "Namespace") => Some(false),
        ("v1", "ConfigMap" | "ServiceAccount" | "Pod") => Some(true),
        ("apps/v1", "DaemonSet") => Some(true),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => Some(false),
        ("rbac.authorization.k8s.io/v1", "ClusterRole" | "ClusterRoleBinding") => Some(false),
        ("rbac.authorization.k8s.io/v1", "Role" | "RoleBinding") => Some(true),
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy" | "ValidatingAdmissionPolicyBinding") => {
            Some(false)
        }
        _ => None,
    }
}

/// `kubectl apply -f deploy/` works on a cluster with nothing of ours: every file it reads is a
/// Kubernetes object of a kind the cluster serves or a CRD earlier in the folder defines (no IAM
/// policy, no Multus object), every namespaced object's namespace exists or comes earlier, and the
/// DaemonSet comes after its service account and ConfigMap (else its first pods fail to create).
#[test]
fn kubectl_apply_of_the_deploy_folder_creates_each_object_after_what_it_needs() {
    let mut namespaces: BTreeSet<String> = ["default".to_string(), "kube-system".to_string()].into();
    // (kind, namespace, name) of the namespaced objects applied so far.
    let mut applied: BTreeSet<(String, String, String)> = BTreeSet::new();
    let mut daemonsets = 0;
    // (group, kind) → namespaced, of the CRDs applied so far.
    let mut custom: BTreeMap<(String, String), bool> = BTreeMap::new();
    for (file, doc) in documents_of(installed()) {
        let (api_version, kind) = (doc["apiVersion"].as_str(), doc["kind"].as_str());
        let (Some(api_version), Some(kind)) = (api_version, kind) else {
            panic!("{}: not a Kubernetes object (no apiVersion and kind): kubectl refuses it", file.display());
        };
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g).to_string();
        let namespaced = built_in_kind(api_version, kind)
            .or_else(|| custom.get(&(group, kind.to_string())).copied())
            .unwrap_or_else(|| {
                panic!("{}: {kind} ({api_version}) needs a CRD nothing before it applies", file.display())
            });
        let name = doc["metadata"]["name"].as_str().expect("metadata.name");
        if namespaced {
            let ns = doc["metadata"]["namespace"].as_str().unwrap_or("default");
            assert!(namespaces.contains(ns), "{}: {kind}/{name} in namespace {ns}, created only later", file.display());
        }
        let ns = doc["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
        if kind == "DaemonSet" {
            daemonsets += 1;
            let pod = &doc["spec"]["template"]["spec"];
            let account = pod["serviceAccountName"].as_str().unwrap_or("default");
            assert!(
                account == "default" || applied.contains(&("ServiceAccount".into(), ns.clone(), account.into())),
                "{}: DaemonSet/{name} runs as ServiceAccount {account}, created only later",
                file.display()
            );
            for volume in pod["volumes"].as_array().into_iter().flatten() {
                if let Some(cm) = volume["configMap"]["name"].as_str() {
                    assert!(
                        applied.contains(&("ConfigMap".into(), ns.clone(), cm.into())),
                        "{}: DaemonSet/{name} mounts ConfigMap {cm}, created only later",
                        file.display()
                    );
                }
            }
        }
        if namespaced {
            applied.insert((kind.to_string(), ns, name.to_string()));
        }
        match kind {
            "Namespace" => {
                namespaces.insert(name.to_string());
            }
            "CustomResourceDefinition" => {
                let spec = &doc["spec"];
                let key = (
                    spec["group"].as_str().expect("group").to_string(),
                    spec["names"]["kind"].as_str().expect("kind").to_string(),
                );
                custom.insert(key, spec["scope"] == "Namespaced");
            }
            _ => {}
        }
    }
    assert!(namespaces.contains("nodeeni"), "the install creates its namespace");
    assert_eq!(daemonsets, 1, "the install runs the daemon");
    assert_eq!(custom.len(), 2, "the install defines NodeENI and NodeENIState: {custom:?}");
}

#[test]
fn manifests_are_yamllint_clean() {
    let Some(tool) = venv_tool("yamllint") else { return };
    let out = Command::new(tool)
        .args(["--strict", "-c"])
        .arg(repo().join(".yamllint"))
        .args(installed())
        .arg(repo().join("deploy/examples"))
        .output()
        .expect("yamllint");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

fn pools_yaml() -> String {
    let (_, cm) = documents().into_iter().find(|(_, d)| d["kind"] == "ConfigMap").expect("the ConfigMap");
    cm["data"]["pools.yaml"].as_str().expect("data.pools.yaml").to_string()
}

#[test]
fn the_configmap_pools_pass_validate_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pools.yaml");
    std::fs::write(&file, pools_yaml()).expect("write");
    let out = Command::new(nodeeni_tests::bins::path("nodeeni-device-plugin"))
        .arg("validate-config")
        .arg(&file)
        .output()
        .expect("validate-config");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("kernel") && text.contains("dpdk"), "a kernel and a DPDK pool: {text}");
}

#[test]
fn network_attachments_name_configured_resources_and_parse_as_our_netconf() {
    let config = nodeeni_conf::PoolConfig::from_text(&pools_yaml(), &Default::default()).expect("pools");
    let resources: BTreeSet<String> =
        config.pools.iter().filter_map(|p| p.resource_name.as_ref().map(ToString::to_string)).collect();
    let nads: Vec<Value> =
        documents().into_iter().map(|(_, d)| d).filter(|d| d["kind"] == "NetworkAttachmentDefinition").collect();
    assert_eq!(nads.len(), 2, "a kernel and a DPDK network");
    let mut modes = BTreeSet::new();
    for nad in &nads {
        assert_eq!(nad["apiVersion"], "k8s.cni.cncf.io/v1");
        let resource = nad["metadata"]["annotations"]["k8s.v1.cni.cncf.io/resourceName"].as_str().expect("annotation");
        assert!(resources.contains(resource), "{resource} is a resource of the ConfigMap's pools: {resources:?}");
        let conf = nad["spec"]["config"].as_str().expect("spec.config");
        let parsed = nodeeni_conf::cni::NetConf::parse(conf.as_bytes()).unwrap_or_else(|e| panic!("{conf}: {e:?}"));
        assert_eq!(parsed.plugin_type, "nodeeni");
        assert_eq!(parsed.capabilities.get("deviceID"), Some(&true), "Multus passes the allocated ENI as deviceID");
        modes.insert(format!("{:?}", parsed.mode));
    }
    assert_eq!(modes.len(), 2, "one kernel, one DPDK: {modes:?}");
}

/// `create_network_interface` → `CreateNetworkInterface`.
fn pascal(snake: &str) -> String {
    snake.split('_').map(|w| w[..1].to_uppercase() + &w[1..]).collect()
}

/// A statement's actions (`Action` is a string or a list).
fn actions_of(s: &Value) -> Vec<String> {
    match &s["Action"] {
        Value::String(a) => vec![a.clone()],
        Value::Array(a) => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        _ => vec![],
    }
}

#[test]
fn the_iam_policy_grants_exactly_the_ec2_operations_the_pool_calls() {
    // What the pool's EC2 client calls: the SDK operations on `self.client`, cross-checked with the
    // names the resilience layer counts them under.
    let source = std::fs::read_to_string(repo().join("ipam/src/ec2/aws.rs")).expect("ec2/aws.rs");
    let compact: String = source.chars().filter(|c| !c.is_whitespace()).collect();
    let mut sdk_ops = BTreeSet::new();
    for part in compact.split("self.client.").skip(1).chain(compact.split(".client.").skip(1)) {
        let method: String = part.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if part[method.len()..].starts_with("()") {
            sdk_ops.insert(pascal(&method));
        }
    }
    let counted: BTreeSet<String> =
        compact.split(".call(\"").skip(1).filter_map(|p| p.split('"').next()).map(str::to_string).collect();
    assert_eq!(sdk_ops, counted, "every SDK call goes through the resilience layer under its own name");
    let mut needed = sdk_ops.clone();
    if compact.contains(".tag_specifications(") {
        needed.insert("CreateTags".into()); // tagging on create needs ec2:CreateTags
    }

    let policy: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("deploy/aws/iam-policy.json")).expect("policy"))
            .expect("policy json");
    let statements = policy["Statement"].as_array().expect("statements");
    let granted: BTreeSet<String> = statements
        .iter()
        .flat_map(actions_of)
        .map(|a| a.strip_prefix("ec2:").unwrap_or_else(|| panic!("only EC2 actions: {a}")).to_string())
        .collect();
    assert_eq!(granted, needed, "the policy grants exactly what the code calls");

    // Mutations of ENIs only on ENIs carrying the cluster tag.
    for op in [
        "AttachNetworkInterface",
        "DetachNetworkInterface",
        "DeleteNetworkInterface",
        "ModifyNetworkInterfaceAttribute",
        "AssignPrivateIpAddresses",
        "UnassignPrivateIpAddresses",
    ] {
        let on_enis: Vec<&Value> = statements
            .iter()
            .filter(|s| actions_of(s).contains(&format!("ec2:{op}")))
            .filter(|s| s["Resource"].to_string().contains("network-interface"))
            .collect();
        assert!(!on_enis.is_empty(), "{op} is granted on network interfaces");
        for s in on_enis {
            assert!(
                s["Condition"]["StringEquals"]["ec2:ResourceTag/nodeeni.io/cluster"].is_string(),
                "{op} on ENIs is limited to the cluster tag: {s}"
            );
        }
    }
    for s in statements {
        if s["Resource"] == "*" {
            assert!(actions_of(s).iter().all(|a| a.starts_with("ec2:Describe")), "only reads on every resource: {s}");
        }
    }
}

/// Every Rust file under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The text after `marker` up to the first `end` (both excluded), for each occurrence.
fn each_after<'a>(text: &'a str, marker: &str, end: char) -> Vec<&'a str> {
    text.split(marker).skip(1).filter_map(|rest| rest.split(end).next()).collect()
}

/// The tag keys the pool puts on the ENIs it creates, read from ipam/src: the `tags` of every
/// `CreateEni` the code builds is a set started from the pool's own `tags` (the user's) into which the
/// code inserts its keys, named by string constants. Returns the keys the code inserts.
fn tag_keys_the_code_sets() -> BTreeSet<String> {
    let files = rust_files(&repo().join("ipam/src"));
    let sources: Vec<(PathBuf, String)> = files
        .iter()
        .map(|f| {
            (f.clone(), std::fs::read_to_string(f).expect("source").chars().filter(|c| !c.is_whitespace()).collect())
        })
        .collect();
    // Every `const NAME: &str = "value";`, by name.
    let mut consts: BTreeMap<String, String> = BTreeMap::new();
    for (_, src) in &sources {
        for decl in each_after(src, "const", ';') {
            let Some((name, value)) = decl.split_once(":&str=") else { continue };
            let ident = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            let Some(value) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).filter(|_| ident) else {
                continue;
            };
            let value = value.to_string();
            if let Some(old) = consts.insert(name.to_string(), value.clone()) {
                assert_eq!(old, value, "two string constants named {name}: the derivation would be ambiguous");
            }
        }
    }
    let mut keys = BTreeSet::new();
    let mut creates = 0;
    for (file, src) in &sources {
        let literals = src.match_indices("CreateEni{").filter(|(i, _)| !src[..*i].ends_with("struct"));
        for fields in literals.filter_map(|(i, m)| src[i + m.len()..].split('}').next()) {
            let set = fields
                .split(',')
                .find_map(|f| f.strip_prefix("tags:"))
                .unwrap_or_else(|| panic!("{}: a CreateEni names its tags: {fields}", file.display()));
            creates += 1;
            assert!(
                src.contains(&format!("letmut{set}=pool.tags.clone();")),
                "{}: the ENI's tags start from the pool's own (user) tags, then the code's",
                file.display()
            );
            for arg in each_after(src, &format!("{set}.insert("), ',') {
                let key = match arg.strip_prefix('"') {
                    Some(literal) => literal.split('"').next().unwrap_or_default().to_string(),
                    None => {
                        let name = arg.trim_end_matches(".into()").trim_end_matches(".to_string()");
                        let name = name.rsplit("::").next().unwrap_or(name);
                        consts
                            .get(name)
                            .unwrap_or_else(|| panic!("{}: tag key {arg} is no constant", file.display()))
                            .clone()
                    }
                };
                keys.insert(key);
            }
        }
    }
    assert_eq!(creates, 1, "one place builds a create request (the create of a slot)");
    assert!(keys.len() >= 4, "the code's own tags were found: {keys:?}");
    keys
}

#[test]
fn the_iam_policy_keeps_creates_in_the_vpc_attaches_on_cluster_nodes_and_tags_to_the_codes_keys() {
    let policy: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("deploy/aws/iam-policy.json")).expect("policy"))
            .expect("policy json");
    let statements = policy["Statement"].as_array().expect("statements");
    let config = nodeeni_conf::PoolConfig::from_text(&pools_yaml(), &Default::default()).expect("pools");
    let cluster = Value::String(config.cluster_name.clone());
    let grants = |action: &str, resource: &str| -> Vec<&Value> {
        statements
            .iter()
            .filter(|s| actions_of(s).contains(&format!("ec2:{action}")))
            .filter(|s| s["Resource"].to_string().contains(&format!(":{resource}/")))
            .collect()
    };
    // Create-time tags: exactly the keys the code sets, plus the user tags of the shipped pools (a
    // pool's `tags` need their keys added here, as the README's Install says).
    let mut keys = tag_keys_the_code_sets();
    for pool in &config.pools {
        keys.extend(pool.tags.keys().cloned());
    }
    let tag_keys_of = |s: &Value| -> BTreeSet<String> {
        serde_json::from_value(s["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"].clone())
            .unwrap_or_else(|e| panic!("create-time tags limited by aws:TagKeys ({e}): {s}"))
    };
    let creates = grants("CreateNetworkInterface", "network-interface");
    assert_eq!(creates.len(), 1, "one statement creates ENIs");
    assert_eq!(creates[0]["Condition"]["StringEquals"]["aws:RequestTag/nodeeni.io/cluster"], cluster);
    assert_eq!(tag_keys_of(creates[0]), keys, "the tag keys a create may carry are the code's");
    let tagging = grants("CreateTags", "network-interface");
    assert_eq!(tagging.len(), 1, "one statement tags");
    assert_eq!(tagging[0]["Condition"]["StringEquals"]["ec2:CreateAction"], "CreateNetworkInterface");
    assert_eq!(tag_keys_of(tagging[0]), keys, "tagging while creating: the same keys");
    // Creates only in the cluster's VPC: every subnet and security group a statement names is limited
    // to one VPC (which also covers the groups ModifyNetworkInterfaceAttribute sets).
    let mut vpcs = BTreeSet::new();
    for resource in ["subnet", "security-group"] {
        assert!(!grants("CreateNetworkInterface", resource).is_empty(), "create names the {resource}");
        for s in statements.iter().filter(|s| s["Resource"].to_string().contains(&format!(":{resource}/"))) {
            let vpc =
                s["Condition"]["ArnEquals"]["ec2:Vpc"].as_str().unwrap_or_else(|| panic!("{resource}: ec2:Vpc: {s}"));
            assert!(vpc.starts_with("arn:aws:ec2:") && vpc.contains(":vpc/vpc-"), "a VPC ARN: {vpc}");
            vpcs.insert(vpc.to_string());
        }
    }
    assert_eq!(vpcs.len(), 1, "one VPC: {vpcs:?}");
    // Attach and detach only on instances of the cluster (the tag the README tells operators to put
    // on nodes), as on ENIs of the cluster.
    for action in ["AttachNetworkInterface", "DetachNetworkInterface"] {
        for resource in ["instance", "network-interface"] {
            let found = grants(action, resource);
            assert!(!found.is_empty(), "{action} is granted on {resource}");
            for s in found {
                assert_eq!(
                    s["Condition"]["StringEquals"]["ec2:ResourceTag/nodeeni.io/cluster"], cluster,
                    "{action} on {resource}: {s}"
                );
            }
        }
    }
    // Every statement that changes something is conditioned.
    for s in statements {
        if !actions_of(s).iter().all(|a| a.starts_with("ec2:Describe")) {
            assert!(s["Condition"].is_object(), "a mutation without a condition: {s}");
        }
    }
}

// The DaemonSet's semantics (the command line the daemon accepts, probes, mounts, capabilities,
// cluster mode) are checked on every rendering of the chart, this folder's included, by
// tests/tests/chart.rs (`daemonset_runs_what_it_is_given`).

/// Validates each YAML document of `files` against the NodeENI CRD's openAPIV3Schema with the venv's
/// JSON Schema validator; prints, per file, `ok` or the paths of the fields it refuses.
fn nodeeni_schema_verdicts(files: &[PathBuf]) -> Option<String> {
    let python = venv_tool("python")?;
    let crds = repo().join("deploy/crds.yaml");
    let script = r#"
import json, sys, yaml, jsonschema
crds = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
crd = next(c for c in crds if c["spec"]["names"]["kind"] == "NodeENI")
schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
validator = jsonschema.Draft4Validator(schema)
for f in sys.argv[2:]:
    for doc in yaml.safe_load_all(open(f)):
        if not doc:
            continue
        errors = sorted(".".join(str(p) for p in e.absolute_path) for e in validator.iter_errors(doc))
        print(f, doc["metadata"]["name"], "ok" if not errors else " ".join(errors))
"#;
    let out = Command::new(python).arg("-c").arg(script).arg(&crds).args(files).output().expect("python");
    assert!(out.status.success(), "schema check failed: {}", String::from_utf8_lossy(&out.stderr));
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn the_nodeeni_examples_validate_against_the_crd_schema_and_invalid_yaml_is_refused_field_by_field() {
    let fixtures = repo().join("conf/tests/fixtures/nodeeni");
    let good: Vec<PathBuf> = ["single-subnet.yaml", "multi-subnet-by-name.yaml", "dpdk.yaml"]
        .iter()
        .map(|f| fixtures.join(f))
        .chain([repo().join("deploy/examples/nodeeni.yaml")])
        .collect();
    let Some(verdicts) = nodeeni_schema_verdicts(&good) else { return };
    assert!(verdicts.lines().count() >= good.len(), "a verdict per manifest: {verdicts}");
    assert!(verdicts.lines().all(|l| l.ends_with(" ok")), "{verdicts}");

    let invalid = fixtures.join("invalid.yaml");
    let Some(verdict) = nodeeni_schema_verdicts(std::slice::from_ref(&invalid)) else { return };
    let refused: BTreeSet<String> = verdict.split_whitespace().skip(2).map(String::from).collect();
    // The fields validate-config names for the same file, in the schema validator's spelling
    // (`securityGroupIDs[0]` is `spec.securityGroupIDs.0` there).
    let out = Command::new(nodeeni_tests::bins::path("nodeeni-device-plugin"))
        .arg("validate-config")
        .arg(&invalid)
        .output()
        .expect("validate-config");
    let problems = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{problems}");
    let named: BTreeSet<String> = problems
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- NodeENI(broken)."))
        .filter_map(|l| l.split_once(':').map(|(path, _)| path.replace('[', ".").replace(']', "")))
        .collect();
    assert_eq!(named.len(), 7, "validate-config names seven fields: {problems}");
    assert_eq!(refused, named, "schema: {verdict}\nvalidate-config: {problems}");
}
