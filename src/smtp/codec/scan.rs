//! Byte search for the DATA decoder's hot loop: the first of two bytes in
//! a slice, eight bytes per step (SWAR), since every message byte passes
//! through it. Pure; the result is exactly `position(|b| b == x || b == y)`.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Index of the first byte of `bytes` equal to `x` or `y`.
pub fn find2(bytes: &[u8], x: u8, y: u8) -> Option<usize> {
    let (xs, ys) = (LO * u64::from(x), LO * u64::from(y));
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        if has_zero(w ^ xs) | has_zero(w ^ ys) != 0 {
            break;
        }
        at += 8;
    }
    bytes[at..]
        .iter()
        .position(|&b| b == x || b == y)
        .map(|p| at + p)
}

/// Non-zero when some byte of `w` is zero (may flag bytes after the first
/// zero byte too: only used to pick the 8-byte block to search).
fn has_zero(w: u64) -> u64 {
    w.wrapping_sub(LO) & !w & HI
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_a_bytewise_search_finds() {
        let mut cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"\r".to_vec(),
            b"abc".to_vec(),
            b"abcdefgh\n".to_vec(),
            b"abcdefghijklmnop\r\n".to_vec(),
            b"\x8d\x0d\x8a\x01\xff\x0b\x0c\x0e\x0a".to_vec(),
            vec![0xff; 40],
        ];
        for len in 0..24 {
            for at in 0..len {
                let mut v = vec![b'x'; len];
                v[at] = if at % 2 == 0 { b'\r' } else { b'\n' };
                cases.push(v);
            }
        }
        for bytes in cases {
            let want = bytes.iter().position(|&b| b == b'\r' || b == b'\n');
            assert_eq!(find2(&bytes, b'\r', b'\n'), want, "{bytes:?}");
            let lf = bytes.iter().position(|&b| b == b'\n');
            assert_eq!(find2(&bytes, b'\n', b'\n'), lf, "{bytes:?}");
        }
    }
}
