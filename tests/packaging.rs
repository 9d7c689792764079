//! Packaging: `etc/postrelay.toml`, `Dockerfile` and `systemd/postrelay.service`
//! are checked against what the binary actually accepts, so none of them can
//! drift from `src/config.rs` unnoticed.
//!
//! The systemd test needs `systemd-analyze` (Debian/Ubuntu package `systemd`;
//! no running systemd is required). Without it the test fails on purpose.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use support::{BIN, tempdir};
use toml::Value;

/// Exposure `systemd-analyze security --offline=true` measured for the unit:
/// 1.1 with systemd 252 (Debian 12). The margin absorbs scoring changes in
/// other systemd versions; a real loosening of the sandbox goes above it.
const MAX_EXPOSURE: f64 = 1.5;

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read_repo_file(rel: &str) -> String {
    std::fs::read_to_string(repo_file(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// Runs the binary with a clean environment (only PATH plus `env`), so a
/// developer's or CI's own `POSTRELAY_*` / `POSTMARK_*` variables play no part.
fn postrelay(args: &[&str], env: &[(String, String)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run postrelay")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `postrelay check-config`, asserting success; returns the printed config.
fn check_config(args: &[&str], env: &[(String, String)]) -> toml::Table {
    let mut all = vec!["check-config"];
    all.extend_from_slice(args);
    let out = postrelay(&all, env);
    assert!(
        out.status.success(),
        "postrelay {all:?} with env {env:?} failed ({}):\n{}",
        out.status,
        text(&out.stderr)
    );
    text(&out.stdout)
        .parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("check-config printed invalid TOML: {e}"))
}

/// Looks up `smtp.listen` style paths in a printed config.
fn lookup<'a>(table: &'a toml::Table, dotted: &str) -> Option<&'a Value> {
    let mut parts = dotted.split('.');
    let mut value = table.get(parts.next()?)?;
    for part in parts {
        value = value.as_table()?.get(part)?;
    }
    Some(value)
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `POSTRELAY_SMTP__LISTEN` → `smtp.listen`.
fn env_to_key(var: &str) -> String {
    var.strip_prefix("POSTRELAY_")
        .unwrap_or_else(|| panic!("{var} is not a POSTRELAY_ variable"))
        .to_ascii_lowercase()
        .replace("__", ".")
}

/// Every key `src/config.rs` accepts, learned from the binary itself: an
/// unknown key makes serde list the known ones ("expected one of `a`, `b`").
/// Root keys first; then each root key that is a table is probed the same way.
fn keys_the_binary_accepts() -> BTreeSet<String> {
    fn fields_listed(var: &str, table: &str) -> Option<Vec<String>> {
        let out = postrelay(&["check-config"], &[(var.to_string(), "1".to_string())]);
        assert_eq!(out.status.code(), Some(78), "{var} should be refused");
        let err = text(&out.stderr);
        let marker = if table.is_empty() {
            "unknown field `zz_probe`, expected ".to_string()
        } else {
            format!("{table}.zz_probe: unknown field `zz_probe`, expected ")
        };
        let listed = &err[err.find(&marker)? + marker.len()..];
        let listed = listed.lines().next().unwrap_or_default();
        Some(
            listed
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect(),
        )
    }
    let roots = fields_listed("POSTRELAY_ZZ_PROBE", "")
        .expect("an unknown root key should make the binary list the known ones");
    assert!(roots.len() > 5, "too few root keys: {roots:?}");
    let mut keys = BTreeSet::new();
    for root in roots {
        let var = format!("POSTRELAY_{}__ZZ_PROBE", root.to_ascii_uppercase());
        match fields_listed(&var, &root) {
            Some(fields) => keys.extend(fields.into_iter().map(|f| format!("{root}.{f}"))),
            None => {
                keys.insert(root);
            }
        }
    }
    keys
}

/// Every key a printed (effective) config holds, dotted.
fn printed_keys(table: &toml::Table) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for (k, v) in table {
        match v {
            Value::Table(t) => keys.extend(t.keys().map(|f| format!("{k}.{f}"))),
            _ => {
                keys.insert(k.clone());
            }
        }
    }
    keys
}

/// The keys written in the example, set (`key = v`) and commented out (`# key = v`).
fn example_keys(example: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut set, mut commented) = (BTreeSet::new(), BTreeSet::new());
    let mut table = String::new();
    for line in example.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = name.trim().to_string();
            continue;
        }
        let (is_comment, body) = match line.strip_prefix('#') {
            Some(rest) => (true, rest.trim_start()),
            None => (false, line),
        };
        let Some((key, _)) = body.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            continue;
        }
        let dotted = if table.is_empty() {
            key.to_string()
        } else {
            format!("{table}.{key}")
        };
        if is_comment {
            commented.insert(dotted);
        } else {
            set.insert(dotted);
        }
    }
    (set, commented)
}

/// The example sets every key to its default. The one deliberate difference:
/// the `[http]` table is present (with its default `listen`), because
/// operators want health and metrics, while the embedded default leaves it off.
/// Keys without a default (secrets, `postal.api_url`, `postal.max_message_size`)
/// are written commented out.
#[test]
fn example_config_lists_every_key_with_its_default() {
    let example_path = repo_file("etc/postrelay.toml");
    let example_path = example_path.to_str().unwrap();
    let mut example = check_config(&["--config", example_path], &[]);
    let default = check_config(&[], &[]);

    assert_eq!(
        example.get("backend").and_then(Value::as_str),
        Some("dry-run"),
        "the example keeps backend = \"dry-run\" so it loads without a token"
    );
    assert!(
        default.get("http").is_none(),
        "the embedded default has the http listener off"
    );
    let http = example
        .remove("http")
        .expect("the example has an [http] table");
    let http_default = check_config(
        &[],
        &[(
            "POSTRELAY_HTTP__LISTEN".to_string(),
            "127.0.0.1:9025".to_string(),
        )],
    );
    assert_eq!(
        Some(&http),
        http_default.get("http"),
        "[http] in the example should hold the default listen address"
    );
    assert_eq!(
        example, default,
        "apart from [http], etc/postrelay.toml should load to exactly the embedded defaults"
    );

    let accepted = keys_the_binary_accepts();
    let printed = printed_keys(&default);
    let (set, commented) = example_keys(&read_repo_file("etc/postrelay.toml"));

    let mut expected_set = printed.clone();
    expected_set.insert("http.listen".to_string());
    assert_eq!(
        set, expected_set,
        "etc/postrelay.toml should set every key `check-config` prints (plus http.listen), and nothing else"
    );
    let without_default: BTreeSet<String> = accepted
        .iter()
        .filter(|k| !expected_set.contains(*k))
        .cloned()
        .collect();
    assert_eq!(
        commented, without_default,
        "etc/postrelay.toml should show, commented out, exactly the keys the binary accepts that have no default"
    );
    assert!(
        accepted.is_superset(&set),
        "keys in the example the binary does not know: {:?}",
        set.difference(&accepted).collect::<Vec<_>>()
    );
    for key in [
        "postmark.server_token",
        "postal.api_key",
        "shutdown_timeout",
    ] {
        assert!(
            accepted.contains(key),
            "key discovery missed {key}: {accepted:?}"
        );
    }
}

/// A Dockerfile, reduced to the final stage's instructions (keyword, arguments).
fn final_stage(dockerfile: &str) -> Vec<(String, String)> {
    let joined = dockerfile.replace("\\\n", " ");
    let mut stage = Vec::new();
    for line in joined.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let keyword = keyword.to_ascii_uppercase();
        if keyword == "FROM" {
            stage.clear();
        }
        stage.push((keyword, args.trim().to_string()));
    }
    stage
}

fn instruction<'a>(stage: &'a [(String, String)], keyword: &str) -> Vec<&'a str> {
    stage
        .iter()
        .filter(|(k, _)| k == keyword)
        .map(|(_, a)| a.as_str())
        .collect()
}

/// `["a", "b"]` (exec form) or `a b` (shell/space form).
fn words(args: &str) -> Vec<String> {
    if args.starts_with('[') {
        serde_json::from_str(args).unwrap_or_else(|e| panic!("bad JSON array {args}: {e}"))
    } else {
        args.split_whitespace().map(str::to_string).collect()
    }
}

/// `ENV A=1 B=2` (or the legacy `ENV A 1`), unquoted values.
fn env_pairs(args: &str) -> Vec<(String, String)> {
    if !args.split_whitespace().next().unwrap_or("").contains('=') {
        let (k, v) = args.split_once(char::is_whitespace).expect("ENV key value");
        return vec![(k.to_string(), v.trim().to_string())];
    }
    args.split_whitespace()
        .map(|pair| {
            let (k, v) = pair.split_once('=').expect("ENV key=value");
            (k.to_string(), v.trim_matches('"').to_string())
        })
        .collect()
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr:?} has no port"))
}

/// Serves one connection: records the request line, answers `status`.
fn one_shot_http(status: &str) -> (u16, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    let status = status.to_string();
    let handle = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let body = "{}";
        let _ = write!(
            conn,
            "HTTP/1.0 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        text(&request)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    });
    (port, handle)
}

/// Runs the image's HEALTHCHECK command here, with the image's environment but
/// the http port moved to a scripted server; returns (exit ok, request line).
fn run_healthcheck(
    argv: &[String],
    env: &[(String, String)],
    http_var: &str,
    status: &str,
) -> (bool, String) {
    let (port, server) = one_shot_http(status);
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.env(http_var, format!("0.0.0.0:{port}"));
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("run HEALTHCHECK {argv:?}: {e}"));
    if !server.is_finished() {
        // The check never connected: unblock the accept so the thread ends.
        let _ = std::net::TcpStream::connect(("127.0.0.1", port));
    }
    let request = server.join().unwrap_or_default();
    (out.status.success(), request)
}

#[test]
fn dockerfile_matches_what_the_binary_expects() {
    let dockerfile = read_repo_file("Dockerfile");
    let stage = final_stage(&dockerfile);
    let from = instruction(&stage, "FROM");
    assert_eq!(from, ["debian:bookworm-slim"], "final stage base image");
    assert!(
        dockerfile.contains("cargo build --release --locked"),
        "the builder stage builds with --release --locked"
    );

    // ENV: every variable is a config override the binary accepts and applies.
    let env: Vec<(String, String)> = instruction(&stage, "ENV")
        .into_iter()
        .flat_map(env_pairs)
        .collect();
    assert!(!env.is_empty(), "the image sets its config through ENV");
    let printed = check_config(&[], &env);
    for (var, value) in &env {
        let key = env_to_key(var);
        let shown = lookup(&printed, &key)
            .unwrap_or_else(|| panic!("ENV {var}: check-config does not show {key}"));
        assert_eq!(&value_text(shown), value, "ENV {var} → {key}");
    }

    // EXPOSE = the ports of the listen addresses.
    let listen: Vec<&(String, String)> = env
        .iter()
        .filter(|(k, _)| k.ends_with("__LISTEN"))
        .collect();
    let listen_ports: BTreeSet<u16> = listen.iter().map(|(_, v)| port_of(v)).collect();
    let exposed: BTreeSet<u16> = instruction(&stage, "EXPOSE")
        .into_iter()
        .flat_map(words)
        .map(|p| p.trim_end_matches("/tcp").parse().expect("EXPOSE port"))
        .collect();
    assert_eq!(
        exposed, listen_ports,
        "EXPOSE should list exactly the ports of the *__LISTEN variables"
    );
    for (var, value) in &listen {
        assert!(
            value.starts_with("0.0.0.0:") || value.starts_with("[::]:"),
            "{var}={value}: inside a container the listener must not be loopback-only"
        );
    }

    // VOLUME = the spool directory, created for the service user.
    let spool = env
        .iter()
        .find(|(k, _)| k == "POSTRELAY_SPOOL__DIR")
        .map(|(_, v)| v.clone())
        .expect("ENV POSTRELAY_SPOOL__DIR");
    let volumes: Vec<String> = instruction(&stage, "VOLUME")
        .into_iter()
        .flat_map(words)
        .collect();
    assert_eq!(
        volumes,
        std::slice::from_ref(&spool),
        "VOLUME is the spool directory"
    );

    // USER is not root, and owns the spool.
    let user = instruction(&stage, "USER");
    assert_eq!(user.len(), 1, "exactly one USER in the final stage");
    let uid = user[0].split(':').next().unwrap();
    assert!(
        uid != "root" && uid != "0" && !uid.is_empty(),
        "USER {} must not be root",
        user[0]
    );
    assert!(
        instruction(&stage, "RUN")
            .iter()
            .any(|r| r.contains(&spool) && r.contains(uid)),
        "a RUN in the final stage should create {spool} owned by {uid}"
    );
    let volume_at = stage.iter().position(|(k, _)| k == "VOLUME").unwrap();
    let last_run = stage.iter().rposition(|(k, _)| k == "RUN").unwrap();
    assert!(
        last_run < volume_at,
        "RUN after VOLUME cannot change the volume's contents or ownership"
    );

    // ENTRYPOINT is the postrelay binary the final stage copies in; CMD serve.
    let entrypoint = words(instruction(&stage, "ENTRYPOINT")[0]);
    assert_eq!(
        Path::new(&entrypoint[0])
            .file_name()
            .and_then(|n| n.to_str()),
        Some("postrelay"),
        "ENTRYPOINT {entrypoint:?}"
    );
    assert!(
        instruction(&stage, "COPY")
            .iter()
            .any(|c| c.starts_with("--from=") && c.ends_with(entrypoint[0].as_str())),
        "the final stage should COPY the binary to {}",
        entrypoint[0]
    );
    assert_eq!(words(instruction(&stage, "CMD")[0]), ["serve"]);

    // HEALTHCHECK: GET /healthz on the http port, 200 = healthy, anything else not.
    let health = instruction(&stage, "HEALTHCHECK");
    assert_eq!(health.len(), 1, "one HEALTHCHECK");
    let cmd_at = health[0].find("CMD ").expect("HEALTHCHECK ... CMD ...");
    let cmd = health[0][cmd_at + 4..].trim();
    let argv = if cmd.starts_with('[') {
        words(cmd)
    } else {
        vec!["/bin/sh".into(), "-c".into(), cmd.to_string()]
    };
    assert!(
        cmd.contains("/healthz"),
        "HEALTHCHECK should probe /healthz"
    );
    let http_var = "POSTRELAY_HTTP__LISTEN";
    assert!(
        env.iter().any(|(k, _)| k == http_var),
        "the image turns the http listener on"
    );
    let (ok, request) = run_healthcheck(&argv, &env, http_var, "200 OK");
    assert!(
        request.starts_with("GET /healthz "),
        "HEALTHCHECK should send GET /healthz to the port in {http_var}; it sent {request:?}"
    );
    assert!(ok, "HEALTHCHECK should pass on 200");
    let (ok, _) = run_healthcheck(&argv, &env, http_var, "503 Service Unavailable");
    assert!(!ok, "HEALTHCHECK should fail on 503");

    let dockerignore = read_repo_file(".dockerignore");
    for entry in ["target", ".git", "postrelay-spool"] {
        assert!(
            dockerignore
                .lines()
                .any(|l| l.trim().trim_end_matches('/') == entry),
            ".dockerignore should list {entry}/"
        );
    }
}

/// A unit file as section → key → values (a key may repeat).
type Unit = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn parse_unit(source: &str) -> Unit {
    let mut unit = Unit::new();
    let mut section = String::new();
    for line in source.replace("\\\n", " ").lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("unit line without '=': {line}"));
        unit.entry(section.clone())
            .or_default()
            .entry(k.trim().to_string())
            .or_default()
            .push(v.trim().to_string());
    }
    unit
}

/// `30s`, `1m30s`, `2min`: enough of systemd's and humantime's forms for the unit.
fn seconds(text: &str) -> u64 {
    let mut total = 0;
    let mut number = String::new();
    let mut unit = String::new();
    let mut flush = |number: &mut String, unit: &mut String| {
        if number.is_empty() {
            return;
        }
        let n: u64 = number.parse().unwrap();
        total += n * match unit.as_str() {
            "" | "s" | "sec" => 1,
            "m" | "min" => 60,
            "h" => 3600,
            other => panic!("unit {other:?} in {text:?}"),
        };
        number.clear();
        unit.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !unit.is_empty() {
                flush(&mut number, &mut unit);
            }
            number.push(c);
        } else if !c.is_whitespace() {
            unit.push(c);
        }
    }
    flush(&mut number, &mut unit);
    total
}

#[test]
fn systemd_unit_verifies_and_is_sandboxed() {
    let source = read_repo_file("systemd/postrelay.service");
    let unit = parse_unit(&source);
    let service = unit.get("Service").expect("[Service] section");
    let one = |key: &str| -> &str {
        let values = service
            .get(key)
            .unwrap_or_else(|| panic!("[Service] {key}= is missing"));
        values.last().unwrap()
    };

    let required = [
        ("Type", "notify"),
        ("Restart", "on-failure"),
        ("RestartPreventExitStatus", "78"),
        ("DynamicUser", "yes"),
        ("StateDirectory", "postrelay"),
        ("UMask", "0077"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectProc", "invisible"),
        ("ProcSubset", "pid"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("ProtectClock", "yes"),
        ("ProtectHostname", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictRealtime", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallArchitectures", "native"),
    ];
    for (key, value) in required {
        assert_eq!(one(key), value, "[Service] {key}=");
    }
    assert_eq!(
        service["SystemCallFilter"][0], "@system-service",
        "SystemCallFilter starts from @system-service"
    );
    assert!(
        !service.contains_key("AmbientCapabilities")
            || service["AmbientCapabilities"].iter().all(|v| v.is_empty()),
        "no ambient capabilities (port 2525 needs none)"
    );

    // Exit 78 really is what a bad configuration gives.
    let bad = postrelay(
        &["check-config"],
        &[("POSTRELAY_BACKEND".to_string(), "bogus".to_string())],
    );
    assert_eq!(bad.status.code(), Some(78), "bad config exit status");

    // ExecStart: the real binary path, and arguments the binary accepts.
    let exec: Vec<&str> = one("ExecStart").split_whitespace().collect();
    assert_eq!(exec[0], "/usr/bin/postrelay", "ExecStart binary");
    assert_eq!(
        exec[1..],
        ["serve", "--config", "/etc/postrelay/postrelay.toml"]
    );
    let example = repo_file("etc/postrelay.toml");
    let mut args: Vec<&str> = exec[1..].to_vec();
    args[0] = "check-config";
    args[2] = example.to_str().unwrap();
    let out = postrelay(&args, &[]);
    assert!(
        out.status.success(),
        "ExecStart's arguments with check-config: {}",
        text(&out.stderr)
    );

    // Stop timeout: a little above the daemon's own drain deadline.
    let default = check_config(&[], &[]);
    let drain = seconds(default["shutdown_timeout"].as_str().unwrap());
    let stop = seconds(one("TimeoutStopSec"));
    assert!(
        stop > drain && stop <= drain + 30,
        "TimeoutStopSec={stop}s should be a little above shutdown_timeout ({drain}s)"
    );

    // Environment= sets real config overrides; specifiers resolved as systemd
    // would: %S = /var/lib (state root), %d = $CREDENTIALS_DIRECTORY.
    let dir = tempdir();
    let state_root = dir.path().join("state");
    let creds = dir.path().join("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    let mut credentials = BTreeSet::new();
    for spec in &service["LoadCredential"] {
        let (name, source) = spec.split_once(':').expect("LoadCredential=name:path");
        assert!(
            source.starts_with("/etc/postrelay/"),
            "credential {name} comes from /etc/postrelay"
        );
        std::fs::write(creds.join(name), "test-token\n").unwrap();
        credentials.insert(name.to_string());
    }
    let mut env = Vec::new();
    for line in &service["Environment"] {
        for pair in line.split_whitespace() {
            let (k, v) = pair.trim_matches('"').split_once('=').expect("K=V");
            assert!(k.starts_with("POSTRELAY_"), "Environment {k}");
            if let Some(name) = v.strip_prefix("%d/") {
                assert!(
                    credentials.contains(name),
                    "{k}={v}: no LoadCredential={name}:..."
                );
            }
            let v = v
                .replace("%S", state_root.to_str().unwrap())
                .replace("%d", creds.to_str().unwrap());
            env.push((k.to_string(), v));
        }
    }
    let printed = check_config(&[], &env);
    for (var, value) in &env {
        let key = env_to_key(var);
        let shown = lookup(&printed, &key)
            .unwrap_or_else(|| panic!("Environment {var}: check-config does not show {key}"));
        assert_eq!(&value_text(shown), value, "Environment {var} → {key}");
    }
    let spool = env
        .iter()
        .find(|(k, _)| k == "POSTRELAY_SPOOL__DIR")
        .expect("the unit sets the spool directory")
        .1
        .clone();
    assert_eq!(
        Path::new(&spool),
        state_root.join(one("StateDirectory")),
        "the spool is the StateDirectory (/var/lib/postrelay)"
    );

    // systemd-analyze, on a copy whose ExecStart is the binary under test.
    let analyze = which("systemd-analyze").unwrap_or_else(|| {
        panic!(
            "systemd-analyze is not on PATH: install the `systemd` package \
             (apt-get install systemd; no running systemd is needed) to verify the unit"
        )
    });
    let copy = dir.path().join("postrelay.service");
    let rewritten = source.replace(
        "ExecStart=/usr/bin/postrelay ",
        &format!("ExecStart={BIN} "),
    );
    assert_ne!(rewritten, source, "ExecStart rewrite");
    std::fs::write(&copy, rewritten).unwrap();

    let out = Command::new(&analyze)
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze verify");
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    // verify exits 0 on unknown keys and bad values ("..., ignoring"), so the
    // output must not mention the unit at all.
    let about_unit: Vec<&str> = report
        .lines()
        .filter(|l| l.contains("postrelay.service"))
        .collect();
    assert!(
        out.status.success() && about_unit.is_empty(),
        "systemd-analyze verify {} ({}):\n{report}",
        copy.display(),
        out.status
    );

    let out = Command::new(&analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&copy)
        .output()
        .expect("systemd-analyze security");
    let report = text(&out.stdout);
    let marker = "Overall exposure level for postrelay.service: ";
    let exposure: f64 = report
        .lines()
        .find_map(|l| l.split_once(marker).map(|(_, rest)| rest))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no exposure level in systemd-analyze security output ({}):\n{report}{}",
                out.status,
                text(&out.stderr)
            )
        });
    assert!(
        exposure <= MAX_EXPOSURE,
        "exposure {exposure} is above {MAX_EXPOSURE}: the sandbox got looser\n{report}"
    );
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}
