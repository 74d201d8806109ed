//! Each log line of a pass says what it is about: the pass's span names the instance, a slot's span
//! its pool, device index and ENI, a removal's span its ENI, an EC2 call's span the operation and the
//! attempt. Read from what a real `tracing-subscriber` formatter writes during passes against the
//! in-memory EC2.
//!
//! The only test in this binary, on purpose: the subscriber is the process's global one, so no other
//! test's threads race it for tracing's per-callsite interest cache (a thread-local subscriber next
//! to other tests loses lines at random).

use std::sync::{Arc, Mutex};

use nodeeni_conf::PoolConfig;
use nodeeni_conf::load::LoadOptions;
use nodeeni_ipam::identity::NodeIdentity;
use nodeeni_ipam::reconcile::Reconciler;
use nodeeni_tests::fake_ec2::{FakeEc2, Fault};
use nodeeni_tests::fake_host::NamedNetdevs;

/// Log output, kept for the test to read.
#[derive(Debug, Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).lines().map(str::to_string).collect()
    }

    /// The one line holding every piece of `parts`, split into its spans and its event.
    fn line_with(&self, parts: &[&str]) -> (String, String) {
        let lines = self.lines();
        let found: Vec<&String> = lines.iter().filter(|l| parts.iter().all(|p| l.contains(p))).collect();
        assert_eq!(found.len(), 1, "one line with {parts:?} in:\n{}", lines.join("\n"));
        // `<time> <LEVEL> span{fields}:span{fields}: <target>: <message> <fields>`
        let (spans, event) = found[0].split_once(": nodeeni_ipam").expect("spans, then the event's target");
        (spans.to_string(), event.to_string())
    }
}

#[tokio::test(start_paused = true)]
async fn each_log_line_of_a_pass_says_which_slot_eni_and_ec2_call_it_is_about() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .init();

    let ec2 = Arc::new(FakeEc2::new(&Default::default()));
    let subnet = ec2.add_subnet("10.0.1.0/24", "us-east-1a", None);
    ec2.add_security_group("enis");
    let instance = ec2.add_instance("c5.xlarge", "us-east-1a");
    let state = tempfile::tempdir().expect("state");
    let config = |enis: u32| {
        let text = format!(
            "clusterName: test\nstateDir: {}\nec2: {{retry: {{baseDelayMs: 10, maxDelayMs: 100}}}}\npools:\n  - \
             {{name: fast, mode: kernel, resourceName: nodeeni.io/fast, subnetIds: [{subnet}], \
             securityGroupNames: [enis], enisPerSubnet: {enis}}}\n",
            state.path().display()
        );
        PoolConfig::from_text(&text, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}\n{text}"))
    };
    let node = NodeIdentity {
        instance_id: instance.clone(),
        availability_zone: "us-east-1a".into(),
        instance_type: "c5.xlarge".into(),
    };
    let reconciler = |enis| Reconciler::new(ec2.clone(), NamedNetdevs, config(enis), node.clone());

    // Two ENIs; the first attach is throttled and retried.
    ec2.fail("AttachNetworkInterface", 0, 1, Fault::throttled());
    let r = reconciler(2);
    r.reconcile().await.expect("warm");
    let enis = r.store.load(std::time::Duration::from_secs(1)).expect("state").enis;
    let eni_at = |index| enis.iter().find(|e| e.device_index == Some(index)).and_then(|e| e.eni_id.clone());
    let pass = format!("pass{{instance={instance}}}");
    for index in [1, 2] {
        let eni = eni_at(index).expect("an ENI at each index");
        let slot = format!("slot{{pool=fast device_index={index} network_card=0");
        // The span's fields, not the event's own (which has `pool="fast"` too): the prefix.
        let (spans, _) = logs.line_with(&["created ENI", &format!("eni={eni} ")]);
        assert!(spans.ends_with(&format!("{pass}:{slot} eni={eni}}}")), "the pass's and the slot's spans: {spans}");
        let (spans, _) = logs.line_with(&["attached ENI", &format!("eni={eni} ")]);
        assert!(spans.ends_with(&format!("{pass}:{slot} eni={eni}}}")), "{spans}");
    }
    // The retry's warning is in its EC2 call's span, inside the slot of the ENI it is about.
    let (spans, _) = logs.line_with(&["EC2 call throttled; retrying"]);
    assert!(spans.ends_with(r#"}:ec2{op="AttachNetworkInterface" attempt=1}"#), "{spans}");
    assert!(spans.contains(&format!("{pass}:slot{{pool=fast device_index=")) && spans.contains(" eni=eni-"), "{spans}");

    // Shrinking: the removal's line is in the removal's span, which names the ENI.
    let gone = eni_at(2).expect("the ENI at index 2");
    reconciler(1).reconcile().await.expect("shrink");
    let (spans, _) = logs.line_with(&["deleted ENI"]);
    assert!(spans.ends_with(&format!("{pass}:removal{{eni={gone} pool=fast}}")), "{spans}");
}
