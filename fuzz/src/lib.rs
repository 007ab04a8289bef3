//! The fuzz targets' checks, as functions: `fuzz_targets/` hands them libFuzzer's
//! input, and the tests at the bottom replay the seed corpus and every reproducer
//! kept under `regressions/` on stable Rust (`cargo test --manifest-path fuzz/Cargo.toml`).

use roundtrip_component::core::decode::{
    BodyDecoder, Fields, Framing, framing, parse_response_head,
};
use roundtrip_component::core::encode::{
    BodyFraming, LAST_CHUNK, RequestHead, encode_chunk, encode_head,
};
use roundtrip_component::core::fields::check;
use roundtrip_component::core::request::check_method;

/// A decoded body, its trailers, and the input bytes the decoder consumed.
pub type Decoded = (Vec<u8>, Option<Fields>, usize);

/// Decodes `parts` one after another (as reads from a socket would deliver them);
/// with `eof`, the connection closes after the last part.
pub fn decode_parts(framing: Framing, parts: &[&[u8]], eof: bool) -> Result<Decoded, String> {
    let mut decoder = BodyDecoder::new(framing);
    let mut buffered: Vec<u8> = Vec::new();
    let mut body = Vec::new();
    let mut consumed_total = 0;
    for part in parts {
        buffered.extend_from_slice(part);
        while !decoder.is_done() {
            let step = decoder.decode(&buffered).map_err(|e| e.to_string())?;
            if let Some(range) = step.data {
                assert!(range.end <= step.consumed, "data outside what was consumed");
                body.extend_from_slice(&buffered[range]);
            }
            assert!(step.consumed <= buffered.len(), "consumed more than given");
            buffered.drain(..step.consumed);
            consumed_total += step.consumed;
            if step.consumed == 0 {
                break;
            }
        }
    }
    if !decoder.is_done() {
        if !eof {
            return Err("incomplete".to_owned());
        }
        decoder.finish_at_eof().map_err(|e| e.to_string())?;
    }
    let trailers = decoder.take_trailers();
    Ok((body, trailers, consumed_total))
}

/// Any bytes as a response head: no panic; a parsed head never claims more bytes
/// than it was given, and its framing decision never panics either.
pub fn response_head(data: &[u8]) {
    for limit in [64, 4096, 1 << 20] {
        if let Ok(Some((head, consumed))) = parse_response_head(data, limit) {
            assert!(consumed <= data.len());
            assert!(consumed <= limit);
            for method in ["GET", "HEAD"] {
                let _ = framing(method, &head);
            }
            let _ = head.allows_keep_alive();
            let _ = head.has_ambiguous_framing();
        }
    }
}

/// Body decoders (length, chunked, until close) on any bytes cut at any points:
/// the result never depends on where the reads split the input, and a body is never
/// longer than the input nor, with a length, different from it.
pub fn body_decoders(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Some((&cuts, body)) = rest.split_first() else {
        return;
    };
    let framing = match selector % 3 {
        0 => Framing::Length(u64::from(selector / 3) * 7),
        1 => Framing::Chunked,
        _ => Framing::UntilClose,
    };
    // Cut points from the seed byte: up to 8 pieces.
    let mut parts: Vec<&[u8]> = Vec::new();
    let mut at = 0;
    let mut state = u32::from(cuts) | 1;
    for _ in 0..8 {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let take = (state as usize >> 8) % (body.len() - at + 1);
        parts.push(&body[at..at + take]);
        at += take;
    }
    parts.push(&body[at..]);
    for eof in [false, true] {
        let whole = decode_parts(framing, &[body], eof);
        let split = decode_parts(framing, &parts, eof);
        assert_eq!(
            whole, split,
            "framing {framing:?}, eof {eof}, parts {parts:?}"
        );
        if let Ok((decoded, _, consumed)) = &whole {
            assert!(decoded.len() <= body.len());
            assert!(*consumed <= body.len());
            if let Framing::Length(n) = framing {
                assert_eq!(decoded.len() as u64, n);
                assert_eq!(decoded.as_slice(), &body[..n as usize]);
            }
        }
    }
}

/// The request encoder against an independent parser (httparse): any method, target,
/// headers and body that pass the transport's checks come out the other side as
/// they went in, and the body decodes back to the same bytes.
pub fn request_roundtrip(data: &[u8]) {
    // Fields separated by 0xff: method, target, then name/value pairs, the body last.
    let mut fields = data.split(|&b| b == 0xff);
    let (Some(method), Some(target)) = (fields.next(), fields.next()) else {
        return;
    };
    let Ok(method) = std::str::from_utf8(method) else {
        return;
    };
    if check_method(method).is_err() {
        return;
    }
    let target: String = std::iter::once('/')
        .chain(
            target
                .iter()
                .filter(|b| b.is_ascii_graphic())
                .map(|&b| char::from(b)),
        )
        .collect();
    let mut rest: Vec<&[u8]> = fields.collect();
    let body = rest.pop().unwrap_or_default().to_vec();
    let headers: Vec<(String, Vec<u8>)> = rest
        .chunks(2)
        .filter_map(|pair| {
            let name = std::str::from_utf8(pair.first()?).ok()?.to_owned();
            let value = pair.get(1)?.to_vec();
            check(&name, &value).ok()?;
            // Framing and Host are the encoder's own.
            let own = ["content-length", "transfer-encoding", "host"];
            (!own.iter().any(|o| name.eq_ignore_ascii_case(o))).then_some((name, value))
        })
        .collect();
    // As one `fields` block, the way they cross the boundary: it checks out and reads
    // back to the same fields.
    let block: Fields = headers.iter().map(|(n, v)| (n.as_str(), v)).collect();
    let checked = Fields::from_block(block.as_bytes().to_vec()).expect("a valid block refused");
    assert!(
        checked
            .iter()
            .eq(headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())))
    );
    let chunked = body.first().is_some_and(|b| b % 2 == 1);
    let framing = if chunked {
        BodyFraming::Chunked
    } else {
        BodyFraming::Length(body.len() as u64)
    };
    let mut wire = Vec::new();
    encode_head(
        &mut wire,
        &RequestHead {
            method,
            target: &target,
            authority: "example.com",
            user_agent: "",
            headers: &block,
            framing,
            close: false,
            accept_gzip: false,
        },
    );
    let head_len = wire.len();
    if chunked {
        for piece in body.chunks(7) {
            encode_chunk(&mut wire, piece);
        }
        wire.extend_from_slice(LAST_CHUNK);
    } else {
        wire.extend_from_slice(&body);
    }

    let mut slots = vec![httparse::EMPTY_HEADER; headers.len() + 4];
    let mut parsed = httparse::Request::new(&mut slots);
    let status = parsed
        .parse(&wire)
        .expect("the encoder wrote a head httparse rejects");
    assert_eq!(status, httparse::Status::Complete(head_len));
    assert_eq!(parsed.method, Some(method));
    assert_eq!(parsed.path, Some(target.as_str()));
    let sent: Vec<(String, Vec<u8>)> = parsed
        .headers
        .iter()
        .filter(|h| {
            !["host", "content-length", "transfer-encoding"]
                .iter()
                .any(|own| h.name.eq_ignore_ascii_case(own))
        })
        .map(|h| (h.name.to_owned(), h.value.to_vec()))
        .collect();
    // Values are sent as given, less the surrounding whitespace a parser strips.
    let expected: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(n, v)| (n.clone(), v.trim_ascii().to_vec()))
        .collect();
    assert_eq!(sent, expected);
    let framing = if chunked {
        Framing::Chunked
    } else {
        Framing::Length(body.len() as u64)
    };
    let (decoded, _, consumed) =
        decode_parts(framing, &[&wire[head_len..]], false).expect("the body does not decode");
    assert_eq!(decoded, body);
    assert_eq!(head_len + consumed, wire.len());
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Runs `check` on every file under `corpus/NAME` and `regressions/NAME`.
    fn replay(name: &str, check: fn(&[u8])) -> usize {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut count = 0;
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                continue;
            };
            for entry in entries.flatten() {
                let data = std::fs::read(entry.path()).expect("readable seed");
                check(&data);
                count += 1;
            }
        }
        count
    }

    #[test]
    fn response_head_seeds_and_regressions_hold() {
        assert!(replay("response_head", super::response_head) > 10);
    }

    #[test]
    fn body_decoder_seeds_and_regressions_hold() {
        assert!(replay("body_decoders", super::body_decoders) > 10);
    }

    #[test]
    fn request_roundtrip_seeds_and_regressions_hold() {
        assert!(replay("request_roundtrip", super::request_roundtrip) > 5);
    }
}
