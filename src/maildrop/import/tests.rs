//! The importer against a real spool in a temp directory: what it imports,
//! what it moves aside, and what it never touches.

use super::*;
use crate::maildrop::DropFile;
use std::io::Write;

struct Fixture {
    _tmp: tempfile::TempDir,
    maildrop: PathBuf,
    spool: Arc<Spool>,
    importer: Importer,
}

fn fixture(max_message_size: usize) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(&tmp.path().join("spool"), 0).unwrap();
    let spool = Arc::new(spool);
    let mut cfg = Config::default();
    cfg.sendmail.maildrop = tmp.path().join("maildrop");
    cfg.smtp.max_message_size = max_message_size;
    cfg.smtp.max_recipients = 5;
    let importer = Importer::new(&cfg, spool.clone());
    importer.prepare().unwrap();
    Fixture {
        maildrop: cfg.sendmail.maildrop.clone(),
        _tmp: tmp,
        spool,
        importer,
    }
}

fn drop_file(dir: &Path, bytes: &[u8]) -> PathBuf {
    let mut f = DropFile::create(dir).unwrap();
    f.file().write_all(bytes).unwrap();
    f.commit().unwrap()
}

fn valid(subject: &str) -> Vec<u8> {
    let env = Envelope {
        mail_from: "app@example.com".into(),
        rcpt_to: vec!["r@example.org".into()],
    };
    let mut bytes = format::encode(&env).unwrap();
    bytes.extend_from_slice(format!("Subject: {subject}\r\n\r\nbody\r\n").as_bytes());
    bytes
}

/// The queued messages, wherever the spool keeps them.
fn queued_messages(spool: &Spool) -> Vec<String> {
    let mut v: Vec<String> = spool
        .queued_ids()
        .unwrap()
        .iter()
        .map(|id| {
            let (_, raw) = crate::spool::read(spool.root(), crate::spool::Area::Queue, id).unwrap();
            String::from_utf8(raw).unwrap()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn the_maildrop_is_created_sticky_setgid_and_unlistable() {
    let f = fixture(1000);
    let mode = fs::metadata(&f.maildrop).unwrap().mode() & 0o7777;
    assert_eq!(mode, DIR_MODE);
    let bad = fs::metadata(f.maildrop.join("bad")).unwrap().mode() & 0o7777;
    assert_eq!(bad, 0o700);
}

#[test]
fn a_listable_maildrop_is_refused_naming_the_fix() {
    let f = fixture(1000);
    fs::set_permissions(&f.maildrop, fs::Permissions::from_mode(0o1777)).unwrap();
    let e = f.importer.prepare().unwrap_err();
    assert!(e.contains("chmod 3733"), "{e}");
}

#[tokio::test]
async fn a_drop_file_is_imported_with_its_owner_uid_then_removed() {
    let f = fixture(1000);
    let path = drop_file(&f.maildrop, &valid("hello"));
    let scan = f.importer.scan().await;
    assert_eq!(
        scan,
        Scan {
            imported: 1,
            refused: 0,
            deferred: 0
        }
    );
    assert!(!path.exists());
    let queued = queued_messages(&f.spool);
    assert_eq!(queued.len(), 1);
    let uid = rustix::process::geteuid().as_raw();
    assert!(
        queued[0].starts_with(&format!(
            "Received: by relay.local (postrelay maildrop, from userid {uid});\r\n\t"
        )),
        "{}",
        queued[0]
    );
    assert!(
        queued[0].ends_with("\r\nSubject: hello\r\n\r\nbody\r\n"),
        "{}",
        queued[0]
    );
}

#[tokio::test]
async fn a_corrupt_file_is_moved_aside_with_its_reason_and_the_others_imported() {
    let f = fixture(1000);
    drop_file(&f.maildrop, &valid("one"));
    let bad = drop_file(
        &f.maildrop,
        b"POSTRELAY-MAILDROP 1\nF a@x\nR r@x\r\nRCPT TO:<v@evil>\n\nx",
    );
    drop_file(&f.maildrop, &valid("two"));
    let scan = f.importer.scan().await;
    assert_eq!(
        scan,
        Scan {
            imported: 2,
            refused: 1,
            deferred: 0
        }
    );
    let name = bad.file_name().unwrap().to_string_lossy().into_owned();
    let aside = f.maildrop.join("bad").join(&name);
    assert!(aside.exists());
    let reason = fs::read_to_string(f.maildrop.join("bad").join(format!("{name}.reason"))).unwrap();
    assert_eq!(reason, "address on envelope line 3 is not valid\n");
    assert_eq!(queued_messages(&f.spool).len(), 2);
}

#[tokio::test]
async fn a_message_over_the_size_limit_is_refused() {
    let f = fixture(100);
    let mut bytes = valid("big");
    bytes.extend_from_slice(&[b'x'; 200]);
    drop_file(&f.maildrop, &bytes);
    assert_eq!(f.importer.scan().await.refused, 1);
    assert!(queued_messages(&f.spool).is_empty());
}

#[tokio::test]
async fn symlinks_and_hard_links_are_moved_aside_and_their_targets_untouched() {
    let f = fixture(1000);
    let outside = f.maildrop.parent().unwrap().join("precious");
    fs::write(&outside, valid("secret")).unwrap();
    std::os::unix::fs::symlink(&outside, f.maildrop.join("01-link")).unwrap();
    fs::hard_link(&outside, f.maildrop.join("02-hard")).unwrap();
    let scan = f.importer.scan().await;
    assert_eq!(
        scan,
        Scan {
            imported: 0,
            refused: 2,
            deferred: 0
        }
    );
    assert_eq!(fs::read(&outside).unwrap(), valid("secret"));
    assert!(queued_messages(&f.spool).is_empty());
    let reason = fs::read_to_string(f.maildrop.join("bad/01-link.reason")).unwrap();
    assert_eq!(reason, "a symbolic link\n");
}

#[tokio::test]
async fn temp_files_in_progress_are_left_alone() {
    let f = fixture(1000);
    let mut pending = DropFile::create(&f.maildrop).unwrap();
    pending.file().write_all(&valid("pending")).unwrap();
    assert_eq!(f.importer.scan().await, Scan::default());
    assert!(queued_messages(&f.spool).is_empty());
    pending.commit().unwrap();
    assert_eq!(f.importer.scan().await.imported, 1);
}

#[test]
fn missing_parents_are_created_reachable_whatever_the_umask() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(&tmp.path().join("spool"), 0).unwrap();
    let mut cfg = Config::default();
    cfg.sendmail.maildrop = tmp.path().join("a/b/maildrop");
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let prepared = Importer::new(&cfg, Arc::new(spool)).prepare();
    rustix::process::umask(old);
    prepared.unwrap();
    for dir in ["a", "a/b"] {
        let mode = fs::metadata(tmp.path().join(dir)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o755, "{dir}");
    }
}
