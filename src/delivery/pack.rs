//! How full a batch call is: its elements and the bytes of its JSON body
//! (`[` + the elements' encoded lengths joined by `,` + `]`), and whether a
//! message's parts still fit. Pure arithmetic, so the caps are table tests.
//!
//! Invariant: a call built by adding only what [`Load::fits`] accepts never
//! holds more than `max_elements` elements or `max_bytes` bytes of body.

/// A batch call's caps: the backend's (and the pacer's) element cap and the
/// backend's body size cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_elements: usize,
    pub max_bytes: usize,
}

/// What one batch call holds so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    pub elements: usize,
    /// The body's length: the array's brackets and commas included.
    pub bytes: usize,
}

impl Load {
    /// This call with elements of `sizes` (encoded JSON lengths) added.
    pub fn with(self, sizes: &[usize]) -> Load {
        let mut load = self;
        for size in sizes {
            load.bytes += match load.elements {
                0 => 2 + size, // "[" + element + "]"
                _ => 1 + size, // "," + element
            };
            load.elements += 1;
        }
        load
    }

    pub fn within(self, limits: Limits) -> bool {
        self.elements <= limits.max_elements && self.bytes <= limits.max_bytes
    }

    /// Whether a message of `sizes` fits in this call.
    pub fn fits(self, sizes: &[usize], limits: Limits) -> bool {
        self.with(sizes).within(limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_elements: 3,
        max_bytes: 100,
    };

    #[test]
    fn the_body_length_counts_brackets_and_commas() {
        assert_eq!(Load::default().with(&[10]).bytes, 12);
        assert_eq!(Load::default().with(&[10, 20]).bytes, 33);
        let sizes = [10, 20, 5];
        let body = format!("[{}]", sizes.map(|n| "x".repeat(n)).join(","));
        assert_eq!(Load::default().with(&sizes).bytes, body.len());
    }

    #[test]
    fn a_message_fits_only_under_both_caps() {
        let table: [(&[usize], &[usize], bool); 7] = [
            (&[], &[10], true),
            (&[], &[98], true),  // 100 bytes exactly
            (&[], &[99], false), // 101
            (&[10], &[10, 10], true),
            (&[10, 10], &[10, 10], false), // 4 elements
            (&[50], &[46], true),          // 2 + 50 + 1 + 46 = 99
            (&[50], &[48], false),         // 101
        ];
        for (held, message, want) in table {
            let load = Load::default().with(held);
            assert_eq!(load.fits(message, LIMITS), want, "{held:?} + {message:?}");
        }
    }
}
