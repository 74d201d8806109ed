//! The nodeeni demo: a node in a box (network namespaces, moto as EC2, a hot-plug stand-in, a kubelet
//! stand-in, the real libcni) and the daemon and CNI plugin doing their job on it, step by step.
//! Everything is removed on exit, also on Ctrl-C. Run through scripts/demo (root).

use std::process::Command;
use std::time::{Duration, Instant};

use nodeeni_proto::deviceplugin::v1beta1 as api;
use nodeeni_tests::apiserver::{ApiServer, Kind};
use nodeeni_tests::ec2world::cluster_enis;
use nodeeni_tests::netns::TestNs;
use nodeeni_tests::nodebox::{CLUSTER, DPDK_RESOURCE, KERNEL_RESOURCE, NodeBox, PodNet};
use nodeeni_tests::poll::eventually;
use tokio_stream::StreamExt;

fn step(title: &str) {
    println!("\n\x1b[1m== {title}\x1b[0m");
}

fn show(cmd: &str, args: &[&str]) {
    println!("$ {cmd} {}", args.join(" "));
    match Command::new(cmd).args(args).output() {
        Ok(out) => print!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        Err(e) => println!("({cmd}: {e})"),
    }
}

async fn walk(nb: &mut NodeBox) -> Result<(), String> {
    let driver = nodeeni_tests::bins::libcni_driver().ok_or("the libcni driver is missing")?;
    let plugin = nodeeni_tests::bins::path("nodeeni-device-plugin");
    let plugin = plugin.to_str().ok_or("path")?.to_string();

    step("The node in a box");
    println!("EC2 (moto):    {}", nb.moto.endpoint);
    println!(
        "VPC:           {} with subnets 10.0.1.0/24 ({}), 10.0.3.0/24 ({})",
        nb.world.vpc, nb.world.subnet_a, nb.world.subnet_c
    );
    println!("node instance: {} (c5.4xlarge, us-east-1a)", nb.world.instance);
    println!("namespaces:    node {}, vpc {} (holds each subnet's gateway)", nb.node.name(), nb.vpc.ns.name());
    println!("kubelet:       a stand-in on {}", nb.plugin_dir().join("kubelet.sock").display());

    step("The pool configuration: 2 kernel ENIs, 1 DPDK ENI, 1 host ENI (master for Multus ipvlan)");
    nb.write_config(&nb.standard_pools());
    print!("{}", std::fs::read_to_string(nb.config_path()).map_err(|e| e.to_string())?);
    show(&plugin, &["validate-config", &nb.config_path().display().to_string()]);

    step("Starting the daemon: it creates, tags and attaches the ENIs; the hot-plug stand-in makes them appear");
    let started = Instant::now();
    nb.start_daemon();
    nb.wait_for_state("the pool warmed", Duration::from_secs(120), |s| {
        s.enis.len() == 4 && s.enis.iter().all(|e| e.lifecycle == nodeeni_state::node::Lifecycle::Ready)
    })
    .await;
    println!("warmed in {:.1} s", started.elapsed().as_secs_f64());
    show(&plugin, &["status", "--state-dir", &nb.state_dir().display().to_string()]);

    step("What the kubelet sees: two resources (the host pool is not advertised)");
    for resource in [KERNEL_RESOURCE, DPDK_RESOURCE] {
        let reg = nb.kubelet.wait_registered(resource, 1, Duration::from_secs(30)).await;
        let mut client = nb.kubelet.client(&reg.endpoint).await;
        let mut stream = client.list_and_watch(api::Empty {}).await.map_err(|e| e.to_string())?.into_inner();
        let mut list = stream.next().await.ok_or("no list")?.map_err(|e| e.to_string())?;
        // Health is judged every 200 ms here: a device prepared a moment ago may not be Healthy yet.
        let deadline = Instant::now() + Duration::from_secs(10);
        while list.devices.iter().any(|d| d.health != api::HEALTHY) {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, stream.next()).await {
                Ok(Some(Ok(next))) => list = next,
                _ => break,
            }
        }
        let devices: Vec<String> = list.devices.iter().map(|d| format!("{} {}", d.id, d.health)).collect();
        println!("{resource:<18} registered {} (API {}), devices: {}", reg.endpoint, reg.version, devices.join(", "));
    }

    step("The host ENI stays on the node under its stable name, MTU 9001, up");
    show("ip", &["-n", nb.node.name(), "-br", "link", "show", "multus4"]);
    show("ip", &["-n", nb.node.name(), "-d", "link", "show", "multus4"]);

    step("The kubelet allocates one kernel ENI to a pod (Allocate)");
    let reg = nb.kubelet.wait_registered(KERNEL_RESOURCE, 1, Duration::from_secs(5)).await;
    let mut client = nb.kubelet.client(&reg.endpoint).await;
    let state = nb.state();
    let rec = state.enis.iter().find(|e| e.pool == "fast").ok_or("no fast ENI")?.clone();
    let eni = rec.eni_id.as_ref().ok_or("no id")?.to_string();
    let resp = client
        .allocate(api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest { devices_ids: vec![eni.clone()] }],
        })
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let mut envs: Vec<_> = resp.container_responses[0].envs.iter().collect();
    envs.sort();
    for (k, v) in envs {
        println!("  env {k}={v}");
    }

    step(&format!("The runtime (through libcni, as Multus delegates) runs ADD with deviceID={eni}"));
    let pod = TestNs::new("demo-pod");
    let at =
        PodNet { conf: nb.write_cni_conf("fast"), container: "pod-1".into(), pod: pod.path(), ifname: "net1".into() };
    let cap = format!("deviceID={eni}");
    let (ok, out) = nb.cni(&driver, "add", &at, &[&cap]);
    println!("{out}");
    if !ok {
        return Err("ADD failed".into());
    }

    step("Inside the pod: the whole ENI as net1, with its VPC address and MTU");
    show("ip", &["-n", pod.name(), "-br", "addr", "show", "net1"]);
    show("ip", &["-n", pod.name(), "link", "show", "net1"]);
    step("The pod reaches its subnet gateway in the VPC");
    show("ip", &["netns", "exec", pod.name(), "ping", "-c", "2", "-W", "2", "10.0.1.1"]);
    step("The node state says who holds it");
    show(&plugin, &["status", "--state-dir", &nb.state_dir().display().to_string()]);

    step("The pod goes away: DEL gives the ENI back to the node");
    let (ok, out) = nb.cni(&driver, "del", &at, &[&cap]);
    println!("{}", if out.is_empty() { "(DEL succeeded, no output)".to_string() } else { out });
    if !ok {
        return Err("DEL failed".into());
    }
    show("ip", &["-n", nb.node.name(), "-br", "link", "show"]);
    let mut stream = client.list_and_watch(api::Empty {}).await.map_err(|e| e.to_string())?.into_inner();
    let list = stream.next().await.ok_or("no list")?.map_err(|e| e.to_string())?;
    let back = list.devices.iter().find(|d| d.id == eni).map(|d| d.health.clone()).unwrap_or_default();
    println!("the kubelet sees {eni} as {back} again");

    step("Metrics (loopback) and probes");
    let (_, body) = nb.http_get("/metrics")?;
    for line in body.lines().filter(|l| {
        l.starts_with("nodeeni_pool_enis{")
            || l.starts_with("nodeeni_allocations_total")
            || l.starts_with("nodeeni_ec2_calls_total")
            || l.starts_with("nodeeni_ec2_circuit_breaker_state")
    }) {
        println!("  {line}");
    }
    println!("  /readyz: {:?}", nb.http_get("/readyz")?);

    step("SIGTERM: the daemon stops serving; the ENIs stay attached (a restart does not disturb pods)");
    if let Some(d) = nb.daemon.as_mut() {
        println!("daemon exited: {:?}", d.terminate());
    }
    for (id, status) in cluster_enis(&nb.raw, CLUSTER).await {
        println!("  {id}: {status}");
    }
    cluster_way(nb).await
}

/// The cluster way: the daemon as node `NODE` against the API-server stand-in, its identity and labels
/// from its Node, an ENI declared as a NodeENI with kubectl's verb (apply), its NodeENIState read back.
async fn cluster_way(nb: &mut NodeBox) -> Result<(), String> {
    const NODE: &str = "ip-10-0-1-10.ec2.internal";
    step("Cluster mode: an API-server stand-in (the Kubernetes wire protocol) holding this node's Node");
    let api = ApiServer::start().await;
    api.put_node(NODE, "us-east-1a", &nb.world.instance, &nb.instance_type, &[("role", "upf")]);
    let node = api.get(Kind::Node, NODE).ok_or("the Node")?;
    println!("Node {NODE}: providerID {}, labels {}", node["spec"]["providerID"], node["metadata"]["labels"]);
    nb.cluster_mode(&api, NODE);
    nb.write_config(&nb.standard_pools());
    println!("the daemon restarts with --node-name {NODE} --kubeconfig …; the file keeps its pools, no instance in it");
    nb.start_daemon();

    step("kubectl apply: a NodeENI for nodes with role=upf, and one whose device index the file's pool fast holds");
    let manifests = format!(
        "apiVersion: networking.k8s.aws/v1alpha1\nkind: NodeENI\nmetadata: {{name: upf-n3}}\n\
         spec: {{nodeSelector: {{role: upf}}, subnetID: {a}, securityGroupIDs: [{sg}], deviceIndex: 5, \
         dpdkResourceName: nodeeni.io/n3, mtu: 9001, description: N3 user plane}}\n---\n\
         apiVersion: networking.k8s.aws/v1alpha1\nkind: NodeENI\nmetadata: {{name: n3-clash}}\n\
         spec: {{nodeSelector: {{role: upf}}, subnetID: {a}, securityGroupIDs: [{sg}], deviceIndex: 2, \
         dpdkResourceName: nodeeni.io/n3}}\n",
        a = nb.world.subnet_a,
        sg = nb.world.sg
    );
    print!("{manifests}");
    api.apply_yaml(&manifests);

    let state = eventually(
        "the NodeENIState with upf-n3 converged",
        Duration::from_secs(120),
        async || {
            api.get(Kind::NodeENIState, NODE).filter(|o| {
                o.pointer("/status/observedGenerations/upf-n3").is_some()
                    && o["status"]["enis"]
                        .as_array()
                        .is_some_and(|enis| enis.iter().any(|e| e["pool"] == "upf-n3" && e["lifecycle"] == "Ready"))
            })
        },
        || format!("{:?}\n--- daemon log ---\n{}", api.get(Kind::NodeENIState, NODE), nb.daemon_log()),
    )
    .await;
    step(&format!("kubectl get nodeenistate {NODE} -o yaml (written only by this node's daemon, server-side apply)"));
    print!("{}", serde_yaml_ng::to_string(&state).map_err(|e| e.to_string())?);
    let n3 = state["status"]["enis"]
        .as_array()
        .and_then(|enis| enis.iter().find(|e| e["pool"] == "upf-n3"))
        .and_then(|e| e["eniID"].as_str())
        .ok_or("upf-n3's ENI in the NodeENIState")?
        .to_string();

    step("kubectl get events: the refusal, on the NodeENI it refused");
    let event = eventually(
        "an Event on n3-clash",
        Duration::from_secs(30),
        async || api.list(Kind::Event).into_iter().find(|e| e["involvedObject"]["name"] == "n3-clash"),
        || format!("{:?}", api.list(Kind::Event)),
    )
    .await;
    let field = |name: &str| event[name].as_str().unwrap_or_default().to_string();
    println!("{}  {}  NodeENI/n3-clash  {}", field("type"), field("reason"), field("message"));

    step("kubectl delete nodeeni upf-n3: the daemon drains it and deletes its ENI in EC2");
    api.delete(Kind::NodeENI, "upf-n3");
    api.delete(Kind::NodeENI, "n3-clash");
    let started = Instant::now();
    eventually(
        "upf-n3's ENI gone from EC2",
        Duration::from_secs(120),
        async || {
            let enis = cluster_enis(&nb.raw, CLUSTER).await;
            (!enis.iter().any(|(id, _)| *id == n3)).then_some(enis)
        },
        || nb.daemon_log(),
    )
    .await;
    println!("{n3} deleted in {:.1} s; the file's pools stay:", started.elapsed().as_secs_f64());
    for (id, status) in cluster_enis(&nb.raw, CLUSTER).await {
        println!("  {id}: {status}");
    }
    if let Some(d) = nb.daemon.as_mut() {
        println!("daemon exited: {:?}", d.terminate());
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the demo needs root (it creates network namespaces)");
        return std::process::ExitCode::FAILURE;
    }
    let Some(mut nb) = NodeBox::start("demo").await else {
        eprintln!("moto is missing: run scripts/install-deps");
        return std::process::ExitCode::FAILURE;
    };
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let code = tokio::select! {
        r = walk(&mut nb) => match r {
            Ok(()) => {
                step("Done: the ENI went to the pod and came back, and a NodeENI came and went. Removing everything the demo made.");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("demo failed: {e}\n--- daemon log ---\n{}", nb.daemon_log());
                std::process::ExitCode::FAILURE
            }
        },
        _ = tokio::signal::ctrl_c() => { eprintln!("\ninterrupted: cleaning up"); std::process::ExitCode::from(130) }
        _ = term.recv() => { eprintln!("\nterminated: cleaning up"); std::process::ExitCode::from(143) }
    };
    drop(nb);
    code
}
