//! Which instance this node is: from the config where it says, else from the instance metadata
//! service (IMDSv2, session-token based).

use std::time::Duration;

use nodeeni_conf::InstanceId;
use nodeeni_conf::pool::NodeIdentity as Configured;

/// The node as EC2 knows it. (Its labels travel in the configuration, `PoolConfig::node.labels`, so
/// a label change reaches the pool as a new configuration does.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    pub instance_id: InstanceId,
    pub availability_zone: String,
    pub instance_type: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("instance metadata (IMDSv2) {path}: {msg}")]
    Imds { path: String, msg: String },
    #[error("the instance metadata service gave an invalid instance ID {0:?}")]
    BadInstanceId(String),
}

/// The node's identity: configured values win; IMDSv2 (at `imds_endpoint`, or the standard one) is
/// asked only for what is missing.
pub async fn resolve(configured: &Configured, imds_endpoint: Option<&str>) -> Result<NodeIdentity, IdentityError> {
    let complete = configured.instance_id.is_some()
        && configured.availability_zone.is_some()
        && configured.instance_type.is_some();
    let client = if complete {
        None
    } else {
        let mut builder = aws_config::imds::Client::builder()
            .max_attempts(3)
            .connect_timeout(Duration::from_secs(1))
            .read_timeout(Duration::from_secs(2));
        if let Some(url) = imds_endpoint {
            builder =
                builder.endpoint(url).map_err(|e| IdentityError::Imds { path: url.to_string(), msg: e.to_string() })?;
        }
        Some(builder.build())
    };
    let get = |path: &'static str| {
        let client = client.clone();
        async move {
            let full = format!("/latest/meta-data/{path}");
            match client {
                Some(c) => c
                    .get(full.clone())
                    .await
                    .map(String::from)
                    .map_err(|e| IdentityError::Imds { path: full, msg: e.to_string() }),
                None => Err(IdentityError::Imds { path: full, msg: "not consulted".into() }),
            }
        }
    };
    let instance_id = match &configured.instance_id {
        Some(i) => i.clone(),
        None => {
            let raw = get("instance-id").await?;
            raw.parse::<InstanceId>().map_err(|_| IdentityError::BadInstanceId(raw))?
        }
    };
    let availability_zone = match &configured.availability_zone {
        Some(az) => az.clone(),
        None => get("placement/availability-zone").await?,
    };
    let instance_type = match &configured.instance_type {
        Some(t) => t.clone(),
        None => get("instance-type").await?,
    };
    Ok(NodeIdentity { instance_id, availability_zone, instance_type })
}
