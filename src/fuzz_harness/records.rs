//! `maildrop_reader` and `spool_entry`: the two readers of files a crash,
//! a disk fault or a local user may have shaped.
//!
//! `maildrop_reader`: the drop file's envelope block. Input: the first byte
//! holds options (bit 0: prefix the magic line; bits 1-7: the recipient cap,
//! 1-128). Properties: an accepted block is exactly what `encode` writes for
//! the envelope read (nothing `sendmail` could not have written), within the
//! cap; no shorter prefix of it reads as a complete block (the importer reads
//! the file in pieces and must not stop early); and the block fits
//! `max_block`, which bounds what the importer buffers.
//!
//! `spool_entry`: a record (`<id>.json`) of any content, read from a
//! scratch spool through the same reader the daemon and `queue` use.
//! Properties: it is refused as corrupt with a reason, reported as newer, or
//! read with the id of its file name; a record read is one the daemon can
//! rewrite and read back unchanged (write → read → write is stable).

use crate::maildrop::format::{self, FormatError, MAGIC};
use crate::spool::{self, Area, META_VERSION, Meta, SpoolError, fsio};

const ID: &str = "01ARZ3NDEKTSV4RRFFQ69G5FAV";

pub fn maildrop_reader(data: &[u8]) {
    let (options, rest) = super::split_options(data);
    let max_recipients = usize::from(options >> 1) + 1;
    let mut head = Vec::with_capacity(rest.len() + MAGIC.len() + 1);
    if options & 1 != 0 {
        head.extend_from_slice(MAGIC.as_bytes());
        head.push(b'\n');
    }
    head.extend_from_slice(rest);
    let Ok((envelope, offset)) = format::decode(&head, max_recipients) else {
        return;
    };
    assert!(!envelope.rcpt_to.is_empty() && envelope.rcpt_to.len() <= max_recipients);
    let block = &head[..offset];
    assert!(
        block.len() <= format::max_block(max_recipients),
        "block over max_block"
    );
    assert_eq!(
        format::encode(&envelope).as_deref(),
        Ok(block),
        "accepted a block encode would not write"
    );
    for (i, &b) in block.iter().enumerate() {
        if b == b'\n' && i + 1 < block.len() {
            assert_eq!(
                format::decode(&block[..=i], max_recipients).map(|_| ()),
                Err(FormatError::Unterminated),
                "a prefix of a valid block reads as complete"
            );
        }
    }
}

pub fn spool_entry(data: &[u8]) {
    let root = super::scratch_dir().join("spool");
    let queue = root.join("queue");
    if !queue.exists() {
        fsio::create_dir(&root).expect("create the scratch spool");
        fsio::create_dir(&queue).expect("create the scratch queue");
    }
    std::fs::write(queue.join(format!("{ID}.eml")), b"Subject: x\r\n\r\nx\r\n").expect("write");
    std::fs::write(queue.join(format!("{ID}.json")), data).expect("write the record");
    let meta = match spool::read(&root, Area::Queue, ID) {
        Err(SpoolError::Corrupt { reason, .. }) => {
            assert!(!reason.is_empty(), "refused without a reason");
            return;
        }
        Err(SpoolError::Newer { version, .. }) => {
            assert!(version > META_VERSION);
            return;
        }
        Err(e) => panic!("a record read failed other than as corrupt or newer: {e}"),
        Ok((meta, _)) => meta,
    };
    assert_eq!(meta.id, ID, "the id comes from the file name");
    // What delivery and `queue show` ask of a record.
    let pending = meta.pending_recipients().len();
    let answered = meta.accepted_count() + meta.refused_count();
    assert_eq!(
        pending + answered,
        meta.envelope.rcpt_to.len(),
        "each recipient is pending, accepted or refused"
    );
    let _ = meta.first_refusal();
    let _ = meta.credential.label();
    // The daemon rewrites records it reads (progress, backoff, hold), in
    // the form `entry::encode` writes.
    let written = encode(&meta);
    std::fs::write(queue.join(format!("{ID}.json")), &written).expect("write the record");
    let again = match spool::read(&root, Area::Queue, ID) {
        Ok((m, _)) => m,
        Err(e) => panic!("a rewritten record does not read back: {e}"),
    };
    assert_eq!(
        encode(&again),
        written,
        "a rewritten record changes when read back"
    );
}

fn encode(meta: &Meta) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(meta).expect("a record serializes");
    v.push(b'\n');
    v
}
