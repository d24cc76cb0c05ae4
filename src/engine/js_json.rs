//! JSON exactly as JavaScript's `JSON.stringify(JSON.parse(text))` writes it, for webhooks
//! with `body_format: javascript` — receivers that verify the signature over
//! `JSON.stringify(req.body)` after `express.json()` instead of over the raw bytes.
//!
//! What JavaScript changes, and this module does the same:
//! - numbers become IEEE doubles written the ECMAScript way (`87.50` → `87.5`, `1e3` →
//!   `1000`, `9007199254740993` → `9007199254740992`, `1e21` stays `1e+21`, `-0` → `0`;
//!   a number beyond the double range is `Infinity`, which `JSON.stringify` writes `null`);
//! - an object's integer-like keys (array indices: `"0"` … `"4294967294"`, no leading zero)
//!   come first in ascending numeric order, the other keys after them in their order;
//! - strings are written with the fewest escapes (`\u00e9` → `é`; only `"`, `\` and
//!   control characters are escaped, the short forms where they exist).
//!
//! Invariant: the input is JSON Herald accepted (no key twice in an object, no lone
//! surrogate: ingest refuses both), so there is no case where JavaScript would pick.

use serde_json::Value;

/// The text `JSON.stringify(JSON.parse(json))` gives, or `None` if `json` does not parse.
pub fn restringify(json: &[u8]) -> Option<Vec<u8>> {
    let value: Value = serde_json::from_slice(json).ok()?;
    let mut out = Vec::with_capacity(json.len());
    write(&value, &mut out);
    Some(out)
}

fn write(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => number(n.as_str(), out),
        Value::String(s) => string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut indices: Vec<(u32, &String, &Value)> =
                map.iter().filter_map(|(k, v)| array_index(k).map(|i| (i, k, v))).collect();
            indices.sort_by_key(|(i, _, _)| *i);
            let others = map.iter().filter(|(k, _)| array_index(k).is_none());
            out.push(b'{');
            let ordered = indices.into_iter().map(|(_, k, v)| (k, v)).chain(others);
            for (i, (k, v)) in ordered.enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(k, out);
                out.push(b':');
                write(v, out);
            }
            out.push(b'}');
        }
    }
}

/// A key JavaScript orders as an array index: the canonical decimal form of an integer
/// from 0 to 2^32 − 2.
fn array_index(key: &str) -> Option<u32> {
    if key.is_empty() || key.len() > 10 || !key.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if key.len() > 1 && key.starts_with('0') {
        return None;
    }
    let n: u64 = key.parse().ok()?;
    u32::try_from(n).ok().filter(|&n| n != u32::MAX)
}

fn number(text: &str, out: &mut Vec<u8>) {
    // Rust's parse rounds to the nearest double exactly as JavaScript's does.
    let x: f64 = text.parse().unwrap_or(f64::NAN);
    if !x.is_finite() {
        out.extend_from_slice(b"null");
    } else if x == 0.0 {
        out.push(b'0');
    } else {
        out.extend_from_slice(ryu_js::Buffer::new().format_finite(x).as_bytes());
    }
}

/// JSON.stringify's quoting: `"` and `\` escaped, control characters as `\b \t \n \f \r`
/// or `\u00xx` (lowercase), everything else as it is — serde_json writes exactly that.
fn string(s: &str, out: &mut Vec<u8>) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn js(text: &str) -> String {
        String::from_utf8(restringify(text.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn numbers_become_doubles_written_as_javascript_writes_them() {
        assert_eq!(js(r#"{"a":87.50}"#), r#"{"a":87.5}"#);
        assert_eq!(js(r#"{"a":1e3}"#), r#"{"a":1000}"#);
        assert_eq!(js(r#"{"a":1E+3}"#), r#"{"a":1000}"#);
        assert_eq!(js(r#"{"a":9007199254740993}"#), r#"{"a":9007199254740992}"#);
        assert_eq!(js(r#"{"a":1e21}"#), r#"{"a":1e+21}"#);
        assert_eq!(js(r#"{"a":123456789012345678901}"#), r#"{"a":123456789012345680000}"#);
        assert_eq!(js(r#"{"a":0.000001}"#), r#"{"a":0.000001}"#);
        assert_eq!(js(r#"{"a":0.0000001}"#), r#"{"a":1e-7}"#);
        assert_eq!(js(r#"{"a":-0}"#), r#"{"a":0}"#);
        assert_eq!(js(r#"{"a":-0.0}"#), r#"{"a":0}"#);
        assert_eq!(js(r#"{"a":1e400}"#), r#"{"a":null}"#);
        assert_eq!(js(r#"{"a":-1e400}"#), r#"{"a":null}"#);
        assert_eq!(js(r#"{"a":1e-400}"#), r#"{"a":0}"#);
        assert_eq!(js(r#"{"a":0.1}"#), r#"{"a":0.1}"#);
        assert_eq!(js(r#"{"a":-2.5e-3}"#), r#"{"a":-0.0025}"#);
    }

    #[test]
    fn integer_like_keys_come_first_in_numeric_order() {
        assert_eq!(js(r#"{"b":1,"2":2,"a":3,"10":4,"1":5}"#), r#"{"1":5,"2":2,"10":4,"b":1,"a":3}"#);
        // Not array indices: leading zero, negative, 2^32 − 1 and beyond, decimals.
        assert_eq!(
            js(r#"{"z":0,"01":1,"-1":2,"4294967295":3,"4294967294":4,"1.5":5}"#),
            r#"{"4294967294":4,"z":0,"01":1,"-1":2,"4294967295":3,"1.5":5}"#
        );
        assert_eq!(js(r#"{"o":{"9":1,"x":2,"0":3}}"#), r#"{"o":{"0":3,"9":1,"x":2}}"#);
    }

    #[test]
    fn strings_are_written_with_the_fewest_escapes() {
        assert_eq!(js(r#"{"a":"caf\u00e9"}"#), "{\"a\":\"café\"}");
        assert_eq!(js(r#"{"a":"\/\u0041"}"#), r#"{"a":"/A"}"#);
        assert_eq!(js(r#"{"a":"\u0001\u001f\b\t\n\f\r\"\\"}"#), r#"{"a":"\u0001\u001f\b\t\n\f\r\"\\"}"#);
        assert_eq!(js(r#"{"a":"\u007f\u2028\ud83d\ude00"}"#), "{\"a\":\"\u{7f}\u{2028}😀\"}");
        assert_eq!(js(r#"{"k\u00e9":[1.0, true, null, {"x": []}]}"#), r#"{"ké":[1,true,null,{"x":[]}]}"#);
    }

    #[test]
    fn what_javascript_leaves_alone_stays_as_it_was() {
        let compact =
            r#"{"event":"lead.qualified","data":{"leadId":"lead_789xyz","qualityScore":92,"tags":["a","b"]}}"#;
        assert_eq!(js(compact), compact);
        assert_eq!(restringify(b"{not json"), None);
    }
}
