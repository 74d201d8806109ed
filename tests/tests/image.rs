//! The image, built for real: `scripts/image` (buildah, FROM scratch) from this build's binaries,
//! then its filesystem exported (`podman create` + `podman export`: no container can be started
//! here) and the binaries run from a chroot of it as the image's non-root user. The release build
//! is `scripts/image` without `--binaries`; this checks the same script, layout, labels and libraries.

use std::path::Path;
use std::process::Command;

use nodeeni_tests::root::require_root;
use nodeeni_tests::tools::{installed, output_text, repo};
use serde_json::Value;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", output_text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The image's tag, removed from the local storage when the test ends.
struct Tagged(String);

impl Drop for Tagged {
    fn drop(&mut self) {
        let _ = Command::new("podman").args(["rmi", "--force", &self.0]).output();
    }
}

fn pools_of_the_shipped_configmap() -> String {
    let text = std::fs::read_to_string(repo().join("deploy/configmap.yaml")).expect("configmap");
    let cm: Value = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("yaml"))
        .find(|v: &Value| v["kind"] == "ConfigMap")
        .expect("a ConfigMap");
    cm["data"]["pools.yaml"].as_str().expect("pools.yaml").to_string()
}

#[test]
fn the_image_holds_working_binaries_their_libraries_and_nothing_else() {
    if !require_root("the_image_holds_working_binaries_their_libraries_and_nothing_else")
        || installed("/usr/bin/podman").is_none()
        || installed("/usr/bin/buildah").is_none()
    {
        return;
    }
    // This build's binaries, stripped as the release profile strips them (`strip = true`).
    let dir = tempfile::tempdir().expect("tempdir");
    let binaries = dir.path().join("bin");
    std::fs::create_dir(&binaries).expect("mkdir");
    for bin in ["nodeeni", "nodeeni-device-plugin"] {
        std::fs::copy(nodeeni_tests::bins::path(bin), binaries.join(bin)).expect("copy");
        run(Command::new("strip").arg(binaries.join(bin)));
    }
    let archive = dir.path().join("nodeeni.oci.tar");
    let tag = Tagged(format!("localhost/nodeeni-image-test:{}", std::process::id()));
    let built = run(Command::new("bash")
        .arg(repo().join("scripts/image"))
        .arg("--binaries")
        .arg(&binaries)
        .args(["--tag", &tag.0, "--out"])
        .arg(&archive));
    assert_eq!(built.trim(), tag.0, "the script prints the tag it built");

    // The OCI archive holds an image layout.
    let listing = run(Command::new("tar").arg("-tf").arg(&archive));
    for entry in ["oci-layout", "index.json"] {
        assert!(listing.lines().any(|l| l.trim_start_matches("./") == entry), "{entry} in the archive: {listing}");
    }

    // Labels, user, entrypoint.
    let inspect: Value =
        serde_json::from_str(&run(Command::new("podman").args(["image", "inspect", &tag.0]))).expect("inspect json");
    let config = &inspect[0]["Config"];
    let labels = &inspect[0]["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], env!("CARGO_PKG_VERSION"));
    let head = run(Command::new("git").arg("-C").arg(repo()).args(["rev-parse", "HEAD"]));
    let revision = labels["org.opencontainers.image.revision"].as_str().expect("revision");
    assert!(revision.starts_with(head.trim()), "revision {revision} is HEAD {}", head.trim());
    assert!(labels["org.opencontainers.image.source"].as_str().is_some_and(|s| s.starts_with("https://")));
    assert_eq!(config["User"], "65532:65532", "non-root by default");
    assert_eq!(config["Entrypoint"], serde_json::json!(["/usr/local/bin/nodeeni-device-plugin"]));

    // Its filesystem, exported.
    let fs = dir.path().join("fs");
    std::fs::create_dir(&fs).expect("mkdir");
    let container = run(Command::new("podman").args(["create", &tag.0])).trim().to_string();
    let exported = dir.path().join("fs.tar");
    let export = Command::new("podman").args(["export", "-o"]).arg(&exported).arg(&container).output();
    let _ = Command::new("podman").args(["rm", "--force", &container]).output();
    assert!(export.as_ref().is_ok_and(|o| o.status.success()), "podman export: {export:?}");
    run(Command::new("tar").arg("-xf").arg(&exported).arg("-C").arg(&fs));
    let mut files: Vec<String> = run(Command::new("find").arg(".").args(["-type", "f"]).current_dir(&fs))
        .lines()
        .map(|l| l.trim_start_matches("./").to_string())
        .collect();
    files.sort();
    for f in ["usr/local/bin/nodeeni", "usr/local/bin/nodeeni-device-plugin", "etc/ssl/certs/ca-certificates.crt"] {
        assert!(files.contains(&f.to_string()), "{f} in the image: {files:?}");
    }
    assert!(!fs.join("bin/sh").exists() && !fs.join("usr/bin").exists(), "no shell, no tools: {files:?}");
    // Every file is one of ours, the CA bundle, the account files, or a library the binaries load.
    let libraries = run(Command::new("ldd").arg(binaries.join("nodeeni-device-plugin")))
        + &run(Command::new("ldd").arg(binaries.join("nodeeni")));
    for f in &files {
        let expected =
            f.starts_with("usr/local/bin/") || f.starts_with("etc/") || libraries.contains(&format!("/{f} "));
        assert!(expected, "{f} is in the image but nothing needs it");
    }

    // Run from a chroot of it, as the image's user.
    let in_image = |args: &[&str]| {
        let mut cmd = Command::new("/usr/sbin/chroot");
        cmd.arg("--userspec=65532:65532").arg(&fs).args(args).env_clear();
        cmd
    };
    let help = run(&mut in_image(&["/usr/local/bin/nodeeni-device-plugin", "--help"]));
    assert!(help.contains("Usage: nodeeni-device-plugin"), "{help}");
    std::fs::write(fs.join("tmp/pools.yaml"), pools_of_the_shipped_configmap()).expect("write pools");
    let checked = run(&mut in_image(&["/usr/local/bin/nodeeni-device-plugin", "validate-config", "/tmp/pools.yaml"]));
    assert!(checked.contains("kernel") && checked.contains("dpdk"), "the shipped pools validate: {checked}");
    // The folder exists, as the DaemonSet's hostPath does, and is the image user's to write.
    std::fs::create_dir(fs.join("tmp/cni-bin")).expect("mkdir");
    std::os::unix::fs::chown(fs.join("tmp/cni-bin"), Some(65532), Some(65532)).expect("chown");
    let installed = run(in_image(&[
        "/usr/local/bin/nodeeni-device-plugin",
        "install-cni",
        "--from",
        "/usr/local/bin/nodeeni",
        "--to",
        "/tmp/cni-bin",
    ])
    .env("NODEENI_NODE_FILE", "/tmp/node/node.json"));
    let copied = std::fs::read(fs.join("tmp/cni-bin/nodeeni")).expect("installed plugin");
    assert_eq!(copied, std::fs::read(fs.join("usr/local/bin/nodeeni")).expect("plugin"), "{installed}");
    assert!(fs.join("tmp/node/node.json").is_file(), "the node file written: {installed}");
    let version = run(in_image(&["/usr/local/bin/nodeeni"]).env("CNI_COMMAND", "VERSION"));
    let version: Value = serde_json::from_str(&version).expect("VERSION answers JSON");
    assert!(version["supportedVersions"].as_array().is_some_and(|v| v.contains(&"1.0.0".into())), "{version}");

    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len() / 1024).unwrap_or(0);
    let image_size: u64 = run(Command::new("podman").args(["image", "inspect", "--format", "{{.Size}}", &tag.0]))
        .trim()
        .parse()
        .unwrap_or(0);
    println!(
        "image {} KiB; stripped binaries: nodeeni {} KiB, nodeeni-device-plugin {} KiB (this build's; the release build is smaller)",
        image_size / 1024,
        size(&binaries.join("nodeeni")),
        size(&binaries.join("nodeeni-device-plugin"))
    );
}
