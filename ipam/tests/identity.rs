//! Node identity: configured values win, IMDSv2 fills the rest.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use nodeeni_conf::pool::NodeIdentity as Configured;
use nodeeni_ipam::identity::resolve;
use nodeeni_tests::imds::Imds;

fn metadata() -> BTreeMap<String, String> {
    [
        ("instance-id".to_string(), "i-0aaaabbbbccccdddd".to_string()),
        ("placement/availability-zone".to_string(), "eu-west-1b".to_string()),
        ("instance-type".to_string(), "c6in.8xlarge".to_string()),
    ]
    .into()
}

#[tokio::test]
async fn imdsv2_fills_what_the_config_leaves_out() {
    let imds = Imds::start(metadata());
    let configured = Configured { instance_type: Some("m5.large".into()), ..Default::default() };
    let id = resolve(&configured, Some(&imds.endpoint)).await.expect("resolve");
    assert_eq!(id.instance_id.as_str(), "i-0aaaabbbbccccdddd");
    assert_eq!(id.availability_zone, "eu-west-1b");
    assert_eq!(id.instance_type, "m5.large", "the configured value wins");
    assert_eq!(imds.served.load(Ordering::SeqCst), 2, "asked only for the two missing values");
    assert_eq!(imds.refused.load(Ordering::SeqCst), 0, "every metadata read carried the IMDSv2 token");
}

#[tokio::test]
async fn a_complete_config_never_asks_imds() {
    let imds = Imds::start(metadata());
    let configured = Configured {
        instance_id: Some("i-0123456789abcdef0".parse().expect("id")),
        availability_zone: Some("us-east-1a".into()),
        instance_type: Some("c5.large".into()),
        ..Default::default()
    };
    let id = resolve(&configured, Some(&imds.endpoint)).await.expect("resolve");
    assert_eq!(id.instance_id.as_str(), "i-0123456789abcdef0");
    assert_eq!(imds.served.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn missing_or_bad_metadata_is_a_clear_error() {
    let mut md = metadata();
    md.remove("placement/availability-zone");
    let imds = Imds::start(md);
    let err = resolve(&Configured::default(), Some(&imds.endpoint)).await.expect_err("no AZ");
    assert!(err.to_string().contains("placement/availability-zone"), "{err}");
    let mut md = metadata();
    md.insert("instance-id".into(), "not-an-instance".into());
    let imds = Imds::start(md);
    let err = resolve(&Configured::default(), Some(&imds.endpoint)).await.expect_err("bad id");
    assert!(err.to_string().contains("not-an-instance"), "{err}");
}
