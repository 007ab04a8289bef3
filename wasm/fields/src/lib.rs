//! A header list kept as it crosses Roundtrip's component boundary: one buffer.
//!
//! WIT `fields` (`wit/types.wit`) is `list<u8>` holding each field as `name: value`
//! CRLF, in wire order, with no blank line after the last. A request's headers come
//! into the component as one allocation and are written to the wire, or looked up,
//! straight from it; a response's head goes out the same way, and the host builds its
//! `HeaderMap` from slices of that one buffer (`docs/performance.md`, "the head as
//! raw bytes"). The component, the wasi:http face and the host share this crate.

use std::fmt;

/// A field, or a line of a block, that cannot be sent; the message names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// Whether `text` is an RFC 9110 token (a method or a field name).
pub fn is_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(is_token_byte)
}

/// Checks one field: its name a token, its value visible bytes, SP and HTAB only.
pub fn check(name: &str, value: &[u8]) -> Result<(), Invalid> {
    if !is_token(name) {
        return Err(Invalid(format!("invalid header field name {name:?}")));
    }
    // RFC 9110 §5.5: field values are visible characters, SP, HTAB and obs-text;
    // no other control byte (Go's httpguts.ValidHeaderFieldValue says the same).
    if let Some(bad) = value
        .iter()
        .find(|&&b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(Invalid(format!(
            "invalid header field value for {name:?}: contains byte {bad:#04x}"
        )));
    }
    Ok(())
}

/// A header list in wire order, as one `name: value` CRLF buffer.
///
/// Every line holds a token name and a value with no control byte but HTAB: a block
/// from outside is checked once, in [`Fields::from_block`]; [`Fields::push`] takes
/// parts that are already valid (parsed by `httparse` or `h2`, or the transport's own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
    block: Vec<u8>,
    /// Where each field's `:` and its CRLF are in `block`, noted as the field is
    /// written or checked, so a lookup compares names without reading the block
    /// byte by byte (it did, and that was 7 % of a request's CPU at c64).
    lines: Vec<Line>,
}

/// One field's place in the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Line {
    start: u32,
    colon: u32,
    end: u32,
}

impl Fields {
    /// No fields.
    pub const fn new() -> Self {
        Fields {
            block: Vec::new(),
            lines: Vec::new(),
        }
    }

    /// No fields yet, with room for `fields` of them in `bytes`.
    pub fn with_capacity(bytes: usize, fields: usize) -> Self {
        Fields {
            block: Vec::with_capacity(bytes),
            lines: Vec::with_capacity(fields),
        }
    }

    /// Takes a block from a caller, checking each line: a name that is not a token, a
    /// value with a control byte, or a line not of the form `name: value` CRLF fails,
    /// named in the error.
    pub fn from_block(block: Vec<u8>) -> Result<Self, Invalid> {
        let mut lines = Vec::new();
        let mut start = 0;
        while start < block.len() {
            let rest = &block[start..];
            let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
                return Err(malformed("does not end with CRLF", rest));
            };
            let line = &rest[..end];
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                return Err(malformed("has no `:`", line));
            };
            let Some(value) = line[colon + 1..].strip_prefix(b" ") else {
                return Err(malformed("has no space after its `:`", line));
            };
            let name = std::str::from_utf8(&line[..colon])
                .map_err(|_| malformed("has a name that is not ASCII", line))?;
            check(name, value)?;
            lines.push(Line {
                start: offset(start),
                colon: offset(start + colon),
                end: offset(start + end),
            });
            start += end + 2;
        }
        Ok(Fields { block, lines })
    }

    /// Appends a field whose name is a token and whose value holds no CR or LF (the
    /// caller has checked it, or it came from a parser that did). Anything else is
    /// written as it is, and the block then fails [`Fields::from_block`] on the other
    /// side, naming the line.
    pub fn push(&mut self, name: &str, value: &[u8]) {
        let line = write_line(&mut self.block, name, value);
        self.lines.push(line);
    }

    /// Fields from (name, value) pairs that are already valid (a header map's), the
    /// buffer sized once: `pairs` is asked for them twice, to size and to write.
    pub fn from_pairs<'a, I>(pairs: impl Fn() -> I) -> Self
    where
        I: Iterator<Item = (&'a str, &'a [u8])>,
    {
        let mut fields = Fields::with_capacity(block_size(pairs()), pairs().size_hint().0);
        for (name, value) in pairs() {
            fields.push(name, value);
        }
        fields
    }

    /// A field's name and value.
    fn field(&self, line: Line) -> (&[u8], &[u8]) {
        let name = &self.block[line.start as usize..line.colon as usize];
        let value = self
            .block
            .get(line.colon as usize + 2..line.end as usize)
            .unwrap_or_default();
        (name, value)
    }

    /// The fields in order, as (name, value).
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            fields: self,
            at: 0,
        }
    }

    /// The fields of a block taken on trust (one this crate built, on the other side
    /// of the boundary), read line by line. A malformed line comes out as a field
    /// whose name is the whole line, which no header map accepts.
    pub fn iter_block(block: &[u8]) -> BlockIter<'_> {
        BlockIter(block)
    }

    /// Values of every field named `name` (case-insensitive), in order.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.lines.iter().filter_map(move |&line| {
            let (n, v) = self.field(line);
            n.eq_ignore_ascii_case(name.as_bytes()).then_some(v)
        })
    }

    /// Whether a field named `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.values(name).next().is_some()
    }

    /// Keeps only the fields `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &[u8]) -> bool) {
        let mut kept = Fields::with_capacity(self.block.len(), self.lines.len());
        for (name, value) in self.iter() {
            if keep(name, value) {
                kept.push(name, value);
            }
        }
        *self = kept;
    }

    /// How many fields there are.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The block, `name: value` CRLF each.
    pub fn as_bytes(&self) -> &[u8] {
        &self.block
    }

    /// The block, for the boundary.
    pub fn into_block(self) -> Vec<u8> {
        self.block
    }
}

/// A block from (name, value) pairs that are already valid, for the other side of the
/// boundary: the buffer alone, sized once (no field places noted); `pairs` is asked
/// for them twice, to size and to write.
pub fn block_of<'a, I>(pairs: impl Fn() -> I) -> Vec<u8>
where
    I: Iterator<Item = (&'a str, &'a [u8])>,
{
    let mut block = Vec::with_capacity(block_size(pairs()));
    for (name, value) in pairs() {
        write_line(&mut block, name, value);
    }
    block
}

/// Bytes the pairs take as lines.
fn block_size<'a>(pairs: impl Iterator<Item = (&'a str, &'a [u8])>) -> usize {
    pairs
        .map(|(name, value)| name.len() + value.len() + 4)
        .sum()
}

/// Writes `name: value` CRLF at the end of `block`; returns where it stands.
fn write_line(block: &mut Vec<u8>, name: &str, value: &[u8]) -> Line {
    let start = block.len();
    block.reserve(name.len() + value.len() + 4);
    block.extend_from_slice(name.as_bytes());
    block.extend_from_slice(b": ");
    block.extend_from_slice(value);
    let end = block.len();
    block.extend_from_slice(b"\r\n");
    Line {
        start: offset(start),
        colon: offset(start + name.len()),
        end: offset(end),
    }
}

/// An offset in a block: a header section over 4 GiB is refused long before.
fn offset(at: usize) -> u32 {
    u32::try_from(at).unwrap_or(u32::MAX)
}

impl<'a> IntoIterator for &'a Fields {
    type Item = (&'a str, &'a [u8]);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl<'a, V: AsRef<[u8]> + ?Sized + 'a> FromIterator<(&'a str, &'a V)> for Fields {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a V)>>(fields: I) -> Self {
        let mut out = Fields::new();
        for (name, value) in fields {
            out.push(name, value.as_ref());
        }
        out
    }
}

/// The fields of a [`Fields`], in order.
pub struct Iter<'a> {
    fields: &'a Fields,
    at: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let line = *self.fields.lines.get(self.at)?;
        self.at += 1;
        let (name, value) = self.fields.field(line);
        // Names are tokens (checked, or from a parser): ASCII.
        Some((std::str::from_utf8(name).unwrap_or_default(), value))
    }
}

/// The fields of a block taken on trust, read line by line.
pub struct BlockIter<'a>(&'a [u8]);

impl<'a> Iterator for BlockIter<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let end = self
            .0
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .unwrap_or(self.0.len());
        let line = &self.0[..end];
        let skip = if self.0[end..].starts_with(b"\r\n") {
            2
        } else {
            1
        };
        self.0 = self.0.get(end + skip..).unwrap_or_default();
        let colon = line.iter().position(|&b| b == b':').unwrap_or(line.len());
        let name = std::str::from_utf8(&line[..colon]).unwrap_or_default();
        let value = line.get(colon + 2..).unwrap_or_default();
        Some((name, value))
    }
}

/// A line of a block that is not `name: value` CRLF, named in the message.
fn malformed(why: &str, line: &[u8]) -> Invalid {
    let shown = String::from_utf8_lossy(&line[..line.len().min(64)]);
    Invalid(format!("malformed header field {shown:?}: it {why}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_block_round_trips_field_by_field() {
        let mut fields = Fields::new();
        fields.push("Host", b"example.com");
        fields.push("X-Empty", b"");
        fields.push("X-A", b" spaced\tvalue ");
        assert_eq!(
            fields.as_bytes(),
            b"Host: example.com\r\nX-Empty: \r\nX-A:  spaced\tvalue \r\n"
        );
        let back = Fields::from_block(fields.as_bytes().to_vec()).unwrap();
        let listed: Vec<_> = back.iter().collect();
        assert_eq!(
            listed,
            [
                ("Host", &b"example.com"[..]),
                ("X-Empty", b""),
                ("X-A", b" spaced\tvalue "),
            ]
        );
        assert_eq!(back.len(), 3);
        assert!(back.contains("x-empty"));
        assert_eq!(back.values("HOST").collect::<Vec<_>>(), [b"example.com"]);
    }

    #[test]
    fn a_malformed_block_is_refused_with_its_cause() {
        for (block, why) in [
            (&b"Host: a"[..], "does not end with CRLF"),
            (b"Host a\r\n", "has no `:`"),
            (b"Host:a\r\n", "\"Host:a\": it has no space after"),
            (b"Bad Name: a\r\n", "invalid header field name"),
            (b"X: a\nb\r\n", "contains byte 0x0a"),
            (b"X: a\rb\r\n", "contains byte 0x0d"),
            (b"X: a\0\r\n", "contains byte 0x00"),
        ] {
            let error = Fields::from_block(block.to_vec()).unwrap_err();
            assert!(error.0.contains(why), "{block:?}: {error}");
        }
        assert!(Fields::from_block(Vec::new()).unwrap().is_empty());
    }

    #[test]
    fn a_block_taken_on_trust_is_read_line_by_line_whatever_it_holds() {
        let listed: Vec<_> = Fields::iter_block(b"A: 1\r\nbroken\nB: 2").collect();
        assert_eq!(
            listed,
            [("A", &b"1"[..]), ("broken", b""), ("B", b"2")],
            "a line without `: ` keeps its bytes in the name, which no map accepts"
        );
        assert_eq!(Fields::iter_block(b"").count(), 0);
    }

    #[test]
    fn fields_refuse_control_bytes_and_bad_names() {
        assert!(check("X-Ok", b"any bytes \xff at all, \ttabs too").is_ok());
        for (name, value) in [
            ("X-A", &b"a\r\nInjected: 1"[..]),
            ("X-A", b"a\nb"),
            ("X-A", b"a\0b"),
            // Found by the request_roundtrip fuzz target: DEL and other controls.
            ("X-A", b"a\x7fb"),
            ("X-A", b"a\x01b"),
            ("X-A", b"a\x1bb"),
            ("Bad Name", b"v"),
            ("", b"v"),
            ("X:A", b"v"),
        ] {
            assert!(check(name, value).is_err(), "{name:?}");
        }
    }

    #[test]
    fn a_block_of_pairs_is_the_block_fields_write() {
        let pairs = [("A", &b"1"[..]), ("B-c", b"")];
        let fields = Fields::from_pairs(|| pairs.iter().copied());
        assert_eq!(block_of(|| pairs.iter().copied()), fields.as_bytes());
        assert_eq!(fields.as_bytes(), b"A: 1\r\nB-c: \r\n");
        assert_eq!(fields.values("b-C").collect::<Vec<_>>(), [b""]);
    }

    #[test]
    fn retain_keeps_order_and_drops_the_rest() {
        let mut fields: Fields = [("A", "1"), ("Content-Length", "2"), ("B", "3")]
            .into_iter()
            .collect();
        fields.retain(|name, _| !name.eq_ignore_ascii_case("content-length"));
        assert_eq!(fields.as_bytes(), b"A: 1\r\nB: 3\r\n");
    }
}
