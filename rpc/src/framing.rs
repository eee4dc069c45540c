//! Incremental splitter for a stream of JSON values with no delimiter between them (SPDK's
//! framing): tracks nesting depth, strings and escapes so each complete top-level value is
//! parsed exactly once, however the bytes were split across reads.

use serde_json::Value;

/// Why the stream cannot go on; the connection is answered with an error and closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// A complete top-level value was not valid JSON.
    Parse,
    /// A value (complete or not) is longer than the configured limit.
    TooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `{...}` or `[...]`.
    Container,
    /// A top-level string.
    Str,
    /// A top-level number, literal or garbage: ends at whitespace or a structural character.
    Bare,
}

/// Splits a byte stream into top-level JSON values.
///
/// Thread contract: plain owned state, used by one thread at a time.
#[derive(Debug)]
pub(crate) struct Splitter {
    buf: Vec<u8>,
    /// Bytes before this offset are consumed and dropped on the next [`Splitter::push`].
    consumed: usize,
    /// Next byte to scan.
    scan: usize,
    /// Start of the value being scanned.
    start: Option<usize>,
    kind: Kind,
    depth: usize,
    in_str: bool,
    escaped: bool,
    max_value: usize,
    failed: bool,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn is_delim(b: u8) -> bool {
    is_ws(b) || matches!(b, b'{' | b'}' | b'[' | b']' | b',' | b':' | b'"')
}

impl Splitter {
    /// A splitter refusing values longer than `max_value` bytes.
    pub(crate) fn new(max_value: usize) -> Self {
        Self {
            buf: Vec::new(),
            consumed: 0,
            scan: 0,
            start: None,
            kind: Kind::Container,
            depth: 0,
            in_str: false,
            escaped: false,
            max_value,
            failed: false,
        }
    }

    /// Appends received bytes (dropping what earlier values consumed).
    pub(crate) fn push(&mut self, data: &[u8]) {
        if self.consumed > 0 {
            self.buf.drain(..self.consumed);
            self.scan -= self.consumed;
            self.start = self.start.map(|s| s - self.consumed);
            self.consumed = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Whether part of a value has been received but not its end (whitespace does not count).
    pub(crate) fn has_partial(&self) -> bool {
        self.start.is_some()
    }

    /// The next complete value, `None` if more bytes are needed. A value that is not valid
    /// JSON is consumed and reported as [`FrameError::Parse`]; after [`FrameError::TooLarge`]
    /// the splitter keeps returning it.
    pub(crate) fn next_value(&mut self) -> Option<Result<Value, FrameError>> {
        if self.failed {
            return Some(Err(FrameError::TooLarge));
        }
        let end = self.find_end();
        let start = self.start?;
        let Some(end) = end else {
            if self.buf.len() - start > self.max_value {
                self.failed = true;
                return Some(Err(FrameError::TooLarge));
            }
            return None;
        };
        self.start = None;
        self.consumed = end;
        if end - start > self.max_value {
            self.failed = true;
            return Some(Err(FrameError::TooLarge));
        }
        Some(serde_json::from_slice(&self.buf[start..end]).map_err(|_| FrameError::Parse))
    }

    /// Scans on from `self.scan`; returns the end (exclusive) of the current value if found.
    fn find_end(&mut self) -> Option<usize> {
        while self.scan < self.buf.len() {
            let b = self.buf[self.scan];
            let Some(start) = self.start else {
                if is_ws(b) {
                    self.scan += 1;
                    self.consumed = self.scan;
                    continue;
                }
                self.start = Some(self.scan);
                self.scan += 1;
                self.in_str = false;
                self.escaped = false;
                match b {
                    b'{' | b'[' => {
                        self.kind = Kind::Container;
                        self.depth = 1;
                    }
                    b'"' => {
                        self.kind = Kind::Str;
                        self.in_str = true;
                    }
                    // A lone structural character is a complete (invalid) value by itself.
                    b'}' | b']' | b',' | b':' => return Some(self.scan),
                    _ => self.kind = Kind::Bare,
                }
                continue;
            };
            debug_assert!(start < self.scan);
            if self.kind == Kind::Bare {
                if is_delim(b) {
                    return Some(self.scan);
                }
                self.scan += 1;
                continue;
            }
            self.scan += 1;
            if self.in_str {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_str = false;
                    if self.kind == Kind::Str {
                        return Some(self.scan);
                    }
                }
                continue;
            }
            match b {
                b'"' => self.in_str = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        return Some(self.scan);
                    }
                }
                _ => {}
            }
        }
        None
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// Small deterministic PRNG (xorshift64*), so the property tests need no extra crates.
    pub(crate) struct Rng(u64);

    impl Rng {
        pub(crate) fn new(seed: u64) -> Self {
            Self(seed.max(1))
        }
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        pub(crate) fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn drain(s: &mut Splitter) -> Vec<Result<Value, FrameError>> {
        let mut out = Vec::new();
        while let Some(v) = s.next_value() {
            let stop = v.is_err();
            out.push(v);
            if stop {
                break;
            }
        }
        out
    }

    fn split_all(chunks: &[&[u8]]) -> Vec<Result<Value, FrameError>> {
        let mut s = Splitter::new(1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c);
            out.extend(drain(&mut s));
            if out.last().is_some_and(|r| r.is_err()) {
                break;
            }
        }
        out
    }

    #[test]
    fn back_to_back_values_and_whitespace() {
        let out = split_all(&[b"{\"a\":1}{\"b\":\"}{\\\"\"} \n\t[1,[2]]\"s\" 12 true "]);
        assert_eq!(
            out,
            vec![
                Ok(json!({"a":1})),
                Ok(json!({"b":"}{\""})),
                Ok(json!([1, [2]])),
                Ok(json!("s")),
                Ok(json!(12)),
                Ok(json!(true)),
            ]
        );
    }

    #[test]
    fn byte_by_byte() {
        let text = br#" {"method":"x","params":{"s":"a\\\"}]"},"id":1} [ ] "#;
        let chunks: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(
            split_all(&chunks),
            vec![
                Ok(json!({"method":"x","params":{"s":"a\\\"}]"},"id":1})),
                Ok(json!([]))
            ]
        );
    }

    #[test]
    fn bare_token_waits_for_delimiter() {
        let mut s = Splitter::new(100);
        s.push(b"12");
        assert!(s.next_value().is_none());
        assert!(s.has_partial());
        s.push(b"3 ");
        assert_eq!(s.next_value(), Some(Ok(json!(123))));
        assert!(!s.has_partial());
        s.push(b"   \n");
        assert!(s.next_value().is_none());
        assert!(!s.has_partial());
    }

    #[test]
    fn errors() {
        assert_eq!(split_all(&[b"{\"a\":}"]), vec![Err(FrameError::Parse)]);
        assert_eq!(split_all(&[b"}"]), vec![Err(FrameError::Parse)]);
        assert_eq!(split_all(&[b"{]"]), vec![Err(FrameError::Parse)]);
        assert_eq!(split_all(&[b"nul "]), vec![Err(FrameError::Parse)]);
        let deep = "[".repeat(1000) + &"]".repeat(1000);
        assert_eq!(split_all(&[deep.as_bytes()]), vec![Err(FrameError::Parse)]);
        let mut s = Splitter::new(10);
        s.push(b"{\"aaaaaaaaaaaaaa");
        assert_eq!(s.next_value(), Some(Err(FrameError::TooLarge)));
        assert_eq!(s.next_value(), Some(Err(FrameError::TooLarge)));
        let mut s = Splitter::new(10);
        s.push(b"{\"a\":1}   {\"a\":123456789}");
        assert_eq!(s.next_value(), Some(Ok(json!({"a":1}))));
        assert_eq!(s.next_value(), Some(Err(FrameError::TooLarge)));
    }

    #[test]
    fn whitespace_does_not_accumulate() {
        let mut s = Splitter::new(16);
        for _ in 0..1000 {
            s.push(&[b' '; 100]);
            assert!(s.next_value().is_none());
        }
        assert!(s.buf.len() <= 100);
    }

    fn random_value(rng: &mut Rng, depth: usize) -> Value {
        match rng.below(if depth > 3 { 5 } else { 7 }) {
            0 => Value::Null,
            1 => json!(rng.below(2) == 0),
            2 => json!(rng.next() as i64),
            3 => json!((rng.below(1000) as f64) / 8.0),
            4 => {
                let pool = [
                    "", "a", "}", "{", "]", "[", "\"", "\\", "\\\"", "é", "\u{1}", " ",
                ];
                let s: String = (0..rng.below(6))
                    .map(|_| pool[rng.below(pool.len())])
                    .collect();
                json!(s)
            }
            5 => Value::Array(
                (0..rng.below(4))
                    .map(|_| random_value(rng, depth + 1))
                    .collect(),
            ),
            _ => Value::Object(
                (0..rng.below(4))
                    .map(|i| {
                        (
                            format!("k{i}{}", ["", "}", "\"", "\\"][rng.below(4)]),
                            random_value(rng, depth + 1),
                        )
                    })
                    .collect(),
            ),
        }
    }

    /// Property: any sequence of containers, separated by any whitespace and split at any
    /// points, comes out value for value.
    #[test]
    fn prop_random_values_random_splits() {
        let mut rng = Rng::new(0x5eed);
        for _ in 0..2000 {
            let mut text = Vec::new();
            let mut expected = Vec::new();
            for _ in 0..rng.below(5) + 1 {
                let v = if rng.below(2) == 0 {
                    Value::Array(vec![random_value(&mut rng, 1)])
                } else {
                    json!({"v": random_value(&mut rng, 1)})
                };
                text.extend(serde_json::to_vec(&v).unwrap());
                for _ in 0..rng.below(3) {
                    text.push([b' ', b'\n', b'\t', b'\r'][rng.below(4)]);
                }
                expected.push(Ok(v));
            }
            let mut chunks = Vec::new();
            let mut rest: &[u8] = &text;
            while !rest.is_empty() {
                let n = rng.below(rest.len().min(9)) + 1;
                chunks.push(&rest[..n]);
                rest = &rest[n..];
            }
            assert_eq!(split_all(&chunks), expected);
        }
    }

    /// Property: random bytes and random mutations of valid requests never panic, always
    /// terminate, and each complete value comes out as a value or an error.
    #[test]
    fn fuzz_random_bytes_and_mutations() {
        let mut rng = Rng::new(42);
        let valid = br#"{"jsonrpc":"2.0","method":"bdev_get_bdevs","params":{"name":"M\"0","x":[1,{"y":null}]},"id":7}"#;
        let alphabet = b"{}[]\",:\\ \n0123456789.eE+-truefalsnl\x00\xff\xc3\xa9a";
        for i in 0..5000 {
            let data: Vec<u8> = if i % 2 == 0 {
                (0..rng.below(200))
                    .map(|_| {
                        if rng.below(3) == 0 {
                            rng.next() as u8
                        } else {
                            alphabet[rng.below(alphabet.len())]
                        }
                    })
                    .collect()
            } else {
                let mut d = valid.to_vec();
                for _ in 0..rng.below(4) + 1 {
                    match rng.below(3) {
                        0 if !d.is_empty() => {
                            let p = rng.below(d.len());
                            d.remove(p);
                        }
                        1 => {
                            let p = rng.below(d.len() + 1);
                            d.insert(p, alphabet[rng.below(alphabet.len())]);
                        }
                        _ if !d.is_empty() => {
                            let p = rng.below(d.len());
                            d[p] = rng.next() as u8;
                        }
                        _ => {}
                    }
                }
                d
            };
            let mut s = Splitter::new(1 << 10);
            let mut rest: &[u8] = &data;
            let mut n = 0;
            while !rest.is_empty() {
                let k = rng.below(rest.len().min(32)) + 1;
                s.push(&rest[..k]);
                rest = &rest[k..];
                while let Some(r) = s.next_value() {
                    n += 1;
                    assert!(n <= data.len() + 1, "splitter does not terminate");
                    if r.is_err() {
                        rest = &[];
                        break;
                    }
                }
            }
        }
    }
}
