use super::*;

const A: &str = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
const B: &str = "01BX5ZZKBKACTAV9WEVGEMMVRZ";

fn frame(id: &str, record: &[u8], message: &[u8]) -> Vec<u8> {
    let mut out = head(id, record, message);
    out.extend_from_slice(message);
    out
}

fn ids(found: &[Found]) -> Vec<String> {
    found
        .iter()
        .map(|f| match f {
            Found::Frame(f) => f.id.clone(),
            Found::Gap { len, tail, .. } => format!("gap {len} tail={tail}"),
        })
        .collect()
}

#[test]
fn frames_read_back_with_their_record_and_message() {
    let mut seg = frame(A, b"{\"r\":1}", b"Subject: a\r\n\r\nbody\r\n");
    seg.extend(frame(B, b"{}", b""));
    let found = scan(&seg);
    assert_eq!(ids(&found), [A, B]);
    let Found::Frame(a) = &found[0] else { panic!() };
    assert_eq!(&seg[a.record.clone()], b"{\"r\":1}");
    assert_eq!(&seg[a.message.clone()], b"Subject: a\r\n\r\nbody\r\n");
    let Found::Frame(b) = &found[1] else { panic!() };
    assert_eq!(b.offset as usize, a.len());
}

#[test]
fn damage_is_a_gap_and_the_scan_resumes_at_the_next_whole_frame() {
    let a = frame(A, b"{}", b"first");
    let b = frame(B, b"{}", b"second");
    let joined = [a.clone(), b.clone()].concat();
    let flip = |at: usize| {
        let mut s = joined.clone();
        s[at] ^= 0x40;
        s
    };
    let cut = |len: usize| joined[..len].to_vec();
    let gap = |len: usize, tail: bool| format!("gap {len} tail={tail}");
    let cases: Vec<(&str, Vec<u8>, Vec<String>)> = vec![
        ("whole", joined.clone(), vec![A.into(), B.into()]),
        (
            "magic of the first",
            flip(0),
            vec![gap(a.len(), false), B.into()],
        ),
        ("a length", flip(9), vec![gap(a.len(), false), B.into()]),
        (
            "the checksum",
            flip(17),
            vec![gap(a.len(), false), B.into()],
        ),
        ("the id", flip(25), vec![gap(a.len(), false), B.into()]),
        (
            "the message",
            flip(a.len() - 1),
            vec![gap(a.len(), false), B.into()],
        ),
        (
            "a torn tail",
            cut(joined.len() - 3),
            vec![A.into(), gap(b.len() - 3, true)],
        ),
        (
            "a torn header",
            cut(a.len() + 10),
            vec![A.into(), gap(10, true)],
        ),
        (
            "garbage before",
            [b"xx".to_vec(), joined.clone()].concat(),
            vec![gap(2, false), A.into(), B.into()],
        ),
        (
            "zeros after",
            [joined.clone(), vec![0; 100]].concat(),
            vec![A.into(), B.into(), gap(100, true)],
        ),
        ("empty", vec![], vec![]),
    ];
    for (what, bytes, want) in cases {
        assert_eq!(ids(&scan(&bytes)), want, "{what}");
    }
}

#[test]
fn lengths_beyond_the_bounds_or_the_file_are_never_trusted() {
    let mut seg = frame(A, b"{}", b"m");
    seg[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(ids(&scan(&seg)), [format!("gap {} tail=true", seg.len())]);
    let mut seg = frame(A, b"{}", b"m");
    seg[8..12].copy_from_slice(&((MAX_RECORD + 1) as u32).to_le_bytes());
    assert_eq!(scan(&seg).len(), 1);
    // A header that claims more than the file holds.
    let mut seg = frame(A, b"{}", b"m");
    seg[12..16].copy_from_slice(&1000u32.to_le_bytes());
    assert!(matches!(scan(&seg)[..], [Found::Gap { tail: true, .. }]));
}

#[test]
fn a_frame_whose_id_is_not_a_ulid_is_refused() {
    let mut seg = frame(A, b"{}", b"m");
    seg[20..46].copy_from_slice(b"../../outside/precious/xxx");
    // The checksum no longer matches either; fix it to prove the id check.
    let mut sum = crc32fast::Hasher::new();
    sum.update(&seg[8..16]);
    sum.update(&seg[20..]);
    seg[16..20].copy_from_slice(&sum.finalize().to_le_bytes());
    assert!(matches!(scan(&seg)[..], [Found::Gap { .. }]));
}

/// Every input: gaps and frames tile it exactly, in order, and each frame
/// is whole (it scans back as itself) with its ranges inside the input.
fn check_tiling(bytes: &[u8]) {
    let mut at = 0u64;
    for f in scan(bytes) {
        match f {
            Found::Frame(f) => {
                assert_eq!(f.offset, at);
                assert!(f.message.end <= bytes.len());
                assert!(valid_id(&f.id));
                let again = frame_at(bytes, at as usize).expect("a frame scans back");
                assert_eq!(again, f);
                at += f.len() as u64;
            }
            Found::Gap { offset, len, .. } => {
                assert_eq!(offset, at);
                assert!(len > 0);
                at += len as u64;
            }
        }
    }
    assert_eq!(at, bytes.len() as u64, "gaps and frames cover the input");
}

#[test]
fn any_damage_to_a_segment_scans_without_panic_and_tiles_the_input() {
    use rand::{Rng, SeedableRng};
    let mut whole = Vec::new();
    for (i, id) in [A, B, A, B].iter().enumerate() {
        whole.extend(frame(
            id,
            format!("{{\"n\":{i}}}").as_bytes(),
            &vec![b'm'; i * 300],
        ));
    }
    let seed = rand::random::<u64>();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for round in 0..3000 {
        let mut bytes = whole.clone();
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(0..bytes.len());
            match rng.random_range(0..4) {
                0 => bytes[at] ^= 1 << rng.random_range(0..8),
                1 => bytes.truncate(at),
                2 => bytes.insert(at, rng.random()),
                _ => bytes.splice(at..at, MAGIC.iter().copied()).for_each(drop),
            }
            if bytes.is_empty() {
                break;
            }
        }
        let result = std::panic::catch_unwind(|| check_tiling(&bytes));
        assert!(result.is_ok(), "seed {seed}, round {round}");
    }
}
