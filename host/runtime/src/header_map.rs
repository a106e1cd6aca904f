//! Header maps as Envoy keeps them (lower-case keys, pseudo-headers first) and the
//! Proxy-Wasm wire format for pairs.

use crate::Headers;

/// The first value of `key`, as Envoy's `get_header_map_value` answers.
pub(crate) fn get<'a>(map: &'a Headers, key: &str) -> Option<&'a [u8]> {
    map.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_slice())
}

/// Append a value, keeping pseudo-headers ahead of regular ones.
pub(crate) fn add(map: &mut Headers, key: String, value: Vec<u8>) {
    if key.starts_with(':') {
        let at = map
            .iter()
            .position(|(k, _)| !k.starts_with(':'))
            .unwrap_or(map.len());
        map.insert(at, (key, value));
    } else {
        map.push((key, value));
    }
}

/// Remove every value of `key`, then add one: Envoy's `replace_header_map_value`.
pub(crate) fn replace(map: &mut Headers, key: String, value: Vec<u8>) {
    remove(map, &key);
    add(map, key, value);
}

pub(crate) fn remove(map: &mut Headers, key: &str) {
    map.retain(|(k, _)| k != key);
}

/// Keys are case-insensitive; maps store them lower-case. A UTF-8 key (any real one) is
/// lowered in its own buffer, which saves the second allocation a lossy copy would make on
/// every header call.
pub(crate) fn lower(key: Vec<u8>) -> String {
    match String::from_utf8(key) {
        Ok(mut key) => {
            key.make_ascii_lowercase();
            key
        }
        Err(e) => String::from_utf8_lossy(e.as_bytes()).to_ascii_lowercase(),
    }
}

/// Envoy's `HeaderMap::byteSize`: the sum of key and value lengths.
pub(crate) fn byte_size(map: &Headers) -> usize {
    map.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// Serialise pairs: u32 count, count x (u32 key len, u32 value len), then `key\0value\0`.
pub(crate) fn encode_pairs<'a, I>(pairs: I) -> Vec<u8>
where
    I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    let count = pairs.clone().count();
    let data: usize = pairs.clone().map(|(k, v)| k.len() + v.len() + 2).sum();
    let mut out = Vec::with_capacity(4 + count * 8 + data);
    out.extend_from_slice(&wire_len(count).to_le_bytes());
    for (k, v) in pairs.clone() {
        out.extend_from_slice(&wire_len(k.len()).to_le_bytes());
        out.extend_from_slice(&wire_len(v.len()).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

pub(crate) fn encode_map(map: &Headers) -> Vec<u8> {
    encode_pairs(map.iter().map(|(k, v)| (k.as_bytes(), v.as_slice())))
}

/// Parse the pairs format; malformed input yields `None` (proxy-wasm-cpp-host treats it as
/// no pairs, callers decide).
pub(crate) fn decode_pairs(data: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if data.is_empty() {
        return Some(Vec::new());
    }
    let count = read_u32(data, 0)? as usize;
    let mut sizes_at = 4usize;
    let mut data_at = 4usize.checked_add(count.checked_mul(8)?)?;
    if data_at > data.len() {
        return None;
    }
    let mut pairs = Vec::with_capacity(count);
    for _ in 0..count {
        let klen = read_u32(data, sizes_at)? as usize;
        let vlen = read_u32(data, sizes_at + 4)? as usize;
        sizes_at += 8;
        let key = data.get(data_at..data_at.checked_add(klen)?)?.to_vec();
        data_at += klen + 1;
        let value = data.get(data_at..data_at.checked_add(vlen)?)?.to_vec();
        data_at += vlen + 1;
        pairs.push((key, value));
    }
    Some(pairs)
}

/// Pairs from the guest as a header map (keys lower-cased, pseudo-headers first).
pub(crate) fn decode_map(data: &[u8]) -> Option<Headers> {
    let mut map = Headers::new();
    for (k, v) in decode_pairs(data)? {
        add(&mut map, lower(k), v);
    }
    Some(map)
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = data.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

fn wire_len(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_and_keep_pseudo_headers_first() {
        let mut map: Headers = vec![
            (":path".into(), b"/a".to_vec()),
            ("x".into(), b"1".to_vec()),
        ];
        add(&mut map, ":method".into(), b"GET".to_vec());
        assert_eq!(map[1].0, ":method");
        let decoded = decode_map(&encode_map(&map)).unwrap();
        assert_eq!(decoded, map);
    }

    #[test]
    fn malformed_pairs_are_refused() {
        assert!(decode_pairs(&[5, 0, 0, 0, 1]).is_none());
        assert!(decode_pairs(&[1, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, b'a']).is_none());
    }

    #[test]
    fn keys_are_lowered_and_invalid_utf8_replaced() {
        assert_eq!(lower(b"X-Model-Name".to_vec()), "x-model-name");
        assert_eq!(lower(b"A\xffB".to_vec()), "a\u{fffd}b");
    }

    #[test]
    fn replace_drops_every_value() {
        let mut map: Headers = vec![("a".into(), b"1".to_vec()), ("a".into(), b"2".to_vec())];
        replace(&mut map, "a".into(), b"3".to_vec());
        assert_eq!(map, vec![("a".to_string(), b"3".to_vec())]);
    }
}
