//! The Debian package's metadata (`[package.metadata.deb]` in `Cargo.toml`,
//! `debian/`) checked against the rest of the repository without building
//! it, so that a renamed file, a moved maildrop or a lost MTA relation is
//! caught by `cargo test` as well as by the root-only
//! `tests/system/deb-install.sh`, which builds, lints and installs it.

use std::path::{Path, PathBuf};

use toml::Value;

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read_repo_file(rel: &str) -> String {
    std::fs::read_to_string(repo_file(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

fn deb_metadata() -> toml::Table {
    let manifest: toml::Table = read_repo_file("Cargo.toml").parse().expect("Cargo.toml");
    manifest["package"]["metadata"]["deb"]
        .as_table()
        .expect("[package.metadata.deb]")
        .clone()
}

/// Each asset as (source or None for a symlink, destination, link target).
fn assets(deb: &toml::Table) -> Vec<(Option<String>, String, Option<String>)> {
    let text = |v: &Value| v.as_str().expect("asset field is a string").to_string();
    deb["assets"]
        .as_array()
        .expect("assets")
        .iter()
        .map(|a| match a {
            Value::Array(fields) => (Some(text(&fields[0])), text(&fields[1]), None),
            Value::Table(t) => (
                t.get("source").map(text),
                text(&t["dest"]),
                t.get("link_name").map(text),
            ),
            other => panic!("asset {other:?}"),
        })
        .collect()
}

#[test]
fn every_packaged_file_exists_and_the_links_reach_the_binary() {
    let deb = deb_metadata();
    let assets = assets(&deb);
    for (source, dest, _) in &assets {
        if let Some(source) = source
            && !source.starts_with("target/release/")
        {
            assert!(
                repo_file(source).is_file(),
                "asset {source} → {dest} is missing"
            );
        }
    }
    assert!(
        assets
            .iter()
            .any(|(s, d, _)| s.as_deref() == Some("target/release/postrelay") && d == "usr/bin/"),
        "the binary goes to /usr/bin/postrelay"
    );
    // Each MTA entry point is a symlink that resolves to /usr/bin/postrelay.
    for link in ["usr/sbin/sendmail", "usr/bin/mailq", "usr/bin/newaliases"] {
        let target = assets
            .iter()
            .find(|(_, d, _)| d == link)
            .and_then(|(_, _, t)| t.clone())
            .unwrap_or_else(|| panic!("{link} is not a packaged symlink"));
        let resolved = Path::new("/")
            .join(link)
            .parent()
            .unwrap()
            .join(&target)
            .components()
            .fold(PathBuf::new(), |mut p, c| {
                match c {
                    std::path::Component::ParentDir => {
                        p.pop();
                    }
                    c => p.push(c),
                }
                p
            });
        assert_eq!(
            resolved,
            Path::new("/usr/bin/postrelay"),
            "{link} → {target}"
        );
    }
    let unit_dir = deb["systemd-units"]["unit-scripts"]
        .as_str()
        .expect("unit-scripts");
    assert!(
        repo_file(unit_dir).join("postrelay.service").is_file(),
        "the systemd unit is packaged from {unit_dir}"
    );
}

#[test]
fn the_package_is_the_hosts_one_mail_transport_agent() {
    let deb = deb_metadata();
    for field in ["provides", "conflicts", "replaces"] {
        assert_eq!(
            deb[field].as_str(),
            Some("mail-transport-agent"),
            "{field}: Debian's MTAs provide, conflict with and replace mail-transport-agent"
        );
    }
}

#[test]
fn postinst_creates_the_maildrop_where_the_config_and_the_unit_expect_it() {
    let config: toml::Table = read_repo_file("etc/postrelay.toml")
        .parse()
        .expect("config");
    let maildrop = config["sendmail"]["maildrop"]
        .as_str()
        .expect("sendmail.maildrop");
    let create = format!("install -d -o postrelay -g postrelay -m 3733 {maildrop}");

    let postinst = read_repo_file("debian/postinst");
    assert!(
        postinst.contains(&create),
        "postinst should run `{create}` (the maildrop at the configured default)"
    );
    let unit = read_repo_file("systemd/postrelay.service");
    assert!(
        unit.contains(&format!("ExecStartPre=+/usr/bin/{create}")),
        "the unit should create the same maildrop: {create}"
    );
    assert!(
        unit.contains("User=postrelay"),
        "the unit runs as the user postinst creates"
    );
    assert!(
        postinst.contains("useradd --system"),
        "postinst creates a system user"
    );
    for script in ["debian/postinst", "debian/postrm"] {
        assert!(
            read_repo_file(script).contains("#DEBHELPER#"),
            "{script} needs #DEBHELPER# for the generated systemd snippets"
        );
    }
}
