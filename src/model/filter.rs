//! A webhook's content filter: a JSON condition on the delivery envelope (`event`,
//! `timestamp`, `data`) that an event must pass, besides its name, to be delivered.
//!
//! The language, in the style of Convoy's body filters:
//! - `{"data.source": "linkedin"}` — a field (a dotted path, or nested objects:
//!   `{"data": {"source": "linkedin"}}`) equal to a value; an array field matches when it
//!   contains the value. Several keys in one object must all hold.
//! - Operators on a field: `$eq $neq $gt $gte $lt $lte $in $nin $exist`
//!   (`{"data.qualityScore": {"$gte": 80}}`); combinators `$and $or` (arrays of conditions)
//!   and `$not` (one condition). Nothing else: no regular expressions.
//!
//! Invariants:
//! - A filter is checked once, when it is set ([`Filter::parse`]), and kept compiled with its
//!   text; the text is what is stored and shown, so a stored filter compiles the same again.
//! - Numbers compare exactly as decimals, whatever their form (`87.50` equals `87.5`,
//!   `1e3` equals `1000`, `2^53 + 1` does not equal `2^53`), in time linear in their text.
//! - Evaluation is pure and total: a field that is missing or of another type fails the
//!   test (`$neq`, `$nin` and `$exist: false` pass on a missing field).

use serde_json::value::RawValue;
use serde_json::Value;
use std::cmp::Ordering;

/// Largest filter, as compact JSON text.
pub const MAX_FILTER_BYTES: usize = 4096;
/// Deepest nesting of objects and arrays in a filter.
pub const MAX_FILTER_DEPTH: usize = 8;
/// Most tests of a field one filter may hold.
pub const MAX_FILTER_CONDITIONS: usize = 64;

/// Why a filter was refused; the message names the place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FilterError(pub String);

/// A compiled filter and its text.
#[derive(Debug, Clone)]
pub struct Filter {
    text: String,
    root: Cond,
}

impl PartialEq for Filter {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}
impl Eq for Filter {}

#[derive(Debug, Clone)]
enum Cond {
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
    Test { path: Vec<String>, op: Op },
}

#[derive(Debug, Clone)]
enum Op {
    Eq(Value),
    Neq(Value),
    Cmp(Ordering, bool, Value),
    In(Vec<Value>),
    Nin(Vec<Value>),
    Exist(bool),
}

/// The envelope a filter reads, built once per event.
pub struct Envelope<'e, 'd> {
    pub event: &'e str,
    /// RFC 3339, as the delivery body carries it.
    pub timestamp: &'e str,
    pub data: &'e Document<'d>,
}

/// An event's `data`, read only as far as filters ask: its top-level fields are split once
/// (their values kept as raw text, a 1 KiB string among them neither copied nor decoded),
/// and a value is parsed only when a path reaches it. Ingest cost grows with what the
/// filters look at, not with the payload.
pub struct Document<'a> {
    text: &'a str,
    top: std::cell::OnceCell<Option<std::collections::HashMap<String, &'a RawValue>>>,
}

impl<'a> Document<'a> {
    /// `text` is a JSON object (what is not reads as having no fields).
    pub fn new(text: &'a str) -> Self {
        Self { text, top: std::cell::OnceCell::new() }
    }

    /// The value at `path` below `data`: a number or a string without escapes as its text
    /// (compared without being decoded), anything else parsed.
    fn get<'e>(&'e self, path: &[String]) -> Option<Found<'e>>
    where
        'a: 'e,
    {
        let Some((first, rest)) = path.split_first() else {
            return serde_json::from_str(self.text).ok().map(Found::Json);
        };
        let top = self.top.get_or_init(|| serde_json::from_str(self.text).ok()).as_ref()?;
        let mut at: &RawValue = top.get(first.as_str())?;
        for segment in rest {
            let raw = at.get();
            at = match raw.as_bytes().first() {
                Some(b'{') => {
                    let fields: std::collections::HashMap<String, &RawValue> = serde_json::from_str(raw).ok()?;
                    fields.get(segment.as_str()).copied()?
                }
                Some(b'[') => {
                    let items: Vec<&RawValue> = serde_json::from_str(raw).ok()?;
                    items.get(segment.parse::<usize>().ok()?).copied()?
                }
                _ => return None,
            };
        }
        let text: &'a str = at.get();
        match text.as_bytes().first() {
            Some(b'"') if !text.contains('\\') => Some(Found::Str(&text[1..text.len() - 1])),
            Some(b'-' | b'0'..=b'9') => Some(Found::Num(text)),
            _ => serde_json::from_str(text).ok().map(Found::Json),
        }
    }
}

/// A field found in the envelope.
enum Found<'a> {
    /// A string as it is (no escapes to decode).
    Str(&'a str),
    /// A number's text.
    Num(&'a str),
    Json(Value),
}

impl Filter {
    /// Checks and compiles a filter given as JSON.
    pub fn parse(value: &Value) -> Result<Filter, FilterError> {
        let text = serde_json::to_string(value).map_err(|e| FilterError(e.to_string()))?;
        if text.len() > MAX_FILTER_BYTES {
            return Err(FilterError(format!("is {} bytes; at most {MAX_FILTER_BYTES}", text.len())));
        }
        let depth = depth(value);
        if depth > MAX_FILTER_DEPTH {
            return Err(FilterError(format!("nests {depth} levels deep; at most {MAX_FILTER_DEPTH}")));
        }
        let Value::Object(_) = value else {
            return Err(FilterError("must be a JSON object of conditions".into()));
        };
        let mut count = 0;
        let root = compile(value, &[], &mut count)?;
        Ok(Filter { text, root })
    }

    /// A stored filter, compiled again from its text.
    pub fn from_text(text: &str) -> Result<Filter, FilterError> {
        let value: Value = serde_json::from_str(text).map_err(|e| FilterError(e.to_string()))?;
        Filter::parse(&value)
    }

    /// The filter as compact JSON.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether `envelope` passes.
    pub fn matches(&self, envelope: &Envelope) -> bool {
        eval(&self.root, envelope)
    }
}

impl serde::Serialize for Filter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Filter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Filter::from_text(&text).map_err(|e| serde::de::Error::custom(format!("stored filter: {e}")))
    }
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn shown(path: &[String]) -> String {
    if path.is_empty() {
        "the top level".into()
    } else {
        format!("`{}`", path.join("."))
    }
}

/// The fields of the envelope a path may start with.
const ROOTS: &[&str] = &["event", "timestamp", "data"];

/// The conditions of one object, all of which must hold, under `path`.
fn compile(value: &Value, path: &[String], count: &mut usize) -> Result<Cond, FilterError> {
    let Value::Object(map) = value else {
        return Err(FilterError(format!("a condition at {} must be an object", shown(path))));
    };
    if map.is_empty() {
        return Err(FilterError(format!("an empty condition at {}", shown(path))));
    }
    let mut all = Vec::with_capacity(map.len());
    for (key, v) in map {
        if let Some(name) = key.strip_prefix('$') {
            all.push(operator(name, v, path, count)?);
            continue;
        }
        let mut sub = path.to_vec();
        for segment in key.split('.') {
            if segment.is_empty() {
                return Err(FilterError(format!("the field `{key}` has an empty part")));
            }
            sub.push(segment.to_string());
        }
        if path.is_empty() && !ROOTS.contains(&sub[0].as_str()) {
            let why = if sub[0] == "id" {
                "an event's id is assigned after filters run".to_string()
            } else {
                format!("no field `{}` in the envelope", sub[0])
            };
            return Err(FilterError(format!("{why}; a path starts with event, timestamp or data")));
        }
        match v {
            Value::Object(_) => all.push(compile(v, &sub, count)?),
            other => all.push(test(sub, Op::Eq(other.clone()), count)?),
        }
    }
    Ok(if all.len() == 1 { all.remove(0) } else { Cond::All(all) })
}

fn test(path: Vec<String>, op: Op, count: &mut usize) -> Result<Cond, FilterError> {
    *count += 1;
    if *count > MAX_FILTER_CONDITIONS {
        return Err(FilterError(format!("holds more than {MAX_FILTER_CONDITIONS} conditions")));
    }
    Ok(Cond::Test { path, op })
}

fn operator(name: &str, v: &Value, path: &[String], count: &mut usize) -> Result<Cond, FilterError> {
    let at = shown(path);
    let needs_field = || {
        if path.is_empty() {
            Err(FilterError(format!(
                "`${name}` must be applied to a field, e.g. {{\"data.score\": {{\"${name}\": …}}}}"
            )))
        } else {
            Ok(path.to_vec())
        }
    };
    let mut conditions = |v: &Value| -> Result<Vec<Cond>, FilterError> {
        match v {
            Value::Array(items) if !items.is_empty() => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.push(compile(item, path, count)?);
                }
                Ok(out)
            }
            _ => Err(FilterError(format!("`${name}` at {at} takes a non-empty array of conditions"))),
        }
    };
    match name {
        "and" => Ok(Cond::All(conditions(v)?)),
        "or" => Ok(Cond::Any(conditions(v)?)),
        "not" => Ok(Cond::Not(Box::new(compile(v, path, count)?))),
        "eq" => test(needs_field()?, Op::Eq(v.clone()), count),
        "neq" => test(needs_field()?, Op::Neq(v.clone()), count),
        "gt" | "gte" | "lt" | "lte" => {
            if !matches!(v, Value::Number(_) | Value::String(_)) {
                return Err(FilterError(format!("`${name}` at {at} compares with a number or a string")));
            }
            let (ord, or_equal) = match name {
                "gt" => (Ordering::Greater, false),
                "gte" => (Ordering::Greater, true),
                "lt" => (Ordering::Less, false),
                _ => (Ordering::Less, true),
            };
            test(needs_field()?, Op::Cmp(ord, or_equal, v.clone()), count)
        }
        "in" | "nin" => {
            let Value::Array(items) = v else {
                return Err(FilterError(format!("`${name}` at {at} takes an array of values")));
            };
            let op = if name == "in" { Op::In(items.clone()) } else { Op::Nin(items.clone()) };
            test(needs_field()?, op, count)
        }
        "exist" => {
            let Value::Bool(b) = v else {
                return Err(FilterError(format!("`$exist` at {at} takes true or false")));
            };
            test(needs_field()?, Op::Exist(*b), count)
        }
        _ => Err(FilterError(format!(
            "unknown operator `${name}` at {at}; known: $eq $neq $gt $gte $lt $lte $in $nin $exist $and $or $not"
        ))),
    }
}

fn eval(cond: &Cond, env: &Envelope) -> bool {
    match cond {
        Cond::All(cs) => cs.iter().all(|c| eval(c, env)),
        Cond::Any(cs) => cs.iter().any(|c| eval(c, env)),
        Cond::Not(c) => !eval(c, env),
        Cond::Test { path, op } => {
            let found = resolve(env, path);
            match (op, found) {
                (Op::Exist(want), found) => found.is_some() == *want,
                (Op::Neq(v), found) => !found.is_some_and(|f| contains_or_equals(&f, v)),
                (Op::Nin(vs), found) => !found.is_some_and(|f| vs.iter().any(|v| contains_or_equals(&f, v))),
                (_, None) => false,
                (Op::Eq(v), Some(f)) => contains_or_equals(&f, v),
                (Op::In(vs), Some(f)) => vs.iter().any(|v| contains_or_equals(&f, v)),
                (Op::Cmp(ord, or_equal, v), Some(f)) => {
                    let holds =
                        |o: Option<Ordering>| o.is_some_and(|o| o == *ord || (*or_equal && o == Ordering::Equal));
                    match f {
                        Found::Json(Value::Array(items)) => items.iter().any(|i| holds(compare_values(i, v))),
                        Found::Json(f) => holds(compare_values(&f, v)),
                        Found::Str(s) => holds(match v {
                            Value::String(t) => Some(s.cmp(t.as_str())),
                            _ => None,
                        }),
                        Found::Num(n) => holds(match v {
                            Value::Number(m) => decimal_cmp(n, m.as_str()),
                            _ => None,
                        }),
                    }
                }
            }
        }
    }
}

fn resolve<'e, 'd: 'e>(env: &Envelope<'e, 'd>, path: &[String]) -> Option<Found<'e>> {
    let (first, rest) = path.split_first()?;
    match first.as_str() {
        "event" => rest.is_empty().then_some(Found::Str(env.event)),
        "timestamp" => rest.is_empty().then_some(Found::Str(env.timestamp)),
        "data" => env.data.get(rest),
        _ => None,
    }
}

/// Equality, or, for an array field and a value that is not an array, membership.
fn contains_or_equals(found: &Found, v: &Value) -> bool {
    match found {
        Found::Str(s) => matches!(v, Value::String(t) if t == s),
        Found::Num(n) => matches!(v, Value::Number(m) if decimal_cmp(n, m.as_str()) == Some(Ordering::Equal)),
        Found::Json(f) => {
            equal(f, v) || matches!(f, Value::Array(items) if !v.is_array() && items.iter().any(|i| equal(i, v)))
        }
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => decimal_cmp(x.as_str(), y.as_str()) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| equal(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, a)| y.get(k).is_some_and(|b| equal(a, b)))
        }
        (a, b) => a == b,
    }
}

/// Numbers with numbers, strings with strings (by code point); anything else: no order.
fn compare_values(found: &Value, v: &Value) -> Option<Ordering> {
    match (found, v) {
        (Value::String(s), Value::String(t)) => Some(s.as_str().cmp(t.as_str())),
        (Value::Number(x), Value::Number(y)) => decimal_cmp(x.as_str(), y.as_str()),
        _ => None,
    }
}

/// A JSON number as `sign × 0.digits × 10^point`, digits without leading or trailing zeros:
/// the significant digits are `len` digits of `int` and `frac` read as one run, from `skip`.
/// Borrowed from the text (no allocation: filters compare numbers on every ingest).
struct Decimal<'a> {
    negative: bool,
    int: &'a [u8],
    frac: &'a [u8],
    skip: usize,
    len: usize,
    point: i64,
}

impl Decimal<'_> {
    fn digit(&self, i: usize) -> u8 {
        let at = self.skip + i;
        if i >= self.len {
            b'0'
        } else if at < self.int.len() {
            self.int[at]
        } else {
            self.frac[at - self.int.len()]
        }
    }

    fn digits_cmp(&self, other: &Decimal) -> Ordering {
        (0..self.len.max(other.len))
            .map(|i| self.digit(i).cmp(&other.digit(i)))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    }
}

fn decimal(text: &str) -> Option<Decimal<'_>> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    // The exponent saturates: a number's text is bounded, so past ±2^62 only the sign matters.
    let exp: i64 = if exp.is_empty() {
        0
    } else {
        let (neg, digits) = match exp.as_bytes()[0] {
            b'-' => (true, &exp[1..]),
            b'+' => (false, &exp[1..]),
            _ => (false, exp),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let magnitude = digits.bytes().fold(0i64, |acc, b| acc.saturating_mul(10).saturating_add(i64::from(b - b'0')));
        let magnitude = magnitude.min(1 << 62);
        if neg {
            -magnitude
        } else {
            magnitude
        }
    };
    let all = || int.bytes().chain(frac.bytes());
    let total = int.len() + frac.len();
    let skip = all().take_while(|&d| d == b'0').count();
    let trailing = if skip == total { 0 } else { all().rev().take_while(|&d| d == b'0').count() };
    let len = total - skip - trailing;
    let point = (int.len() as i64).saturating_add(exp).saturating_sub(skip as i64);
    Some(Decimal { negative: negative && len > 0, int: int.as_bytes(), frac: frac.as_bytes(), skip, len, point })
}

/// Exact order of two JSON numbers given as text (`None` if one is not a number).
pub fn decimal_cmp(a: &str, b: &str) -> Option<Ordering> {
    let (a, b) = (decimal(a)?, decimal(b)?);
    let magnitude = |x: &Decimal, y: &Decimal| match (x.len == 0, y.len == 0) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => x.point.cmp(&y.point).then_with(|| x.digits_cmp(y)),
    };
    Some(match (a.negative, b.negative) {
        (false, false) => magnitude(&a, &b),
        (true, true) => magnitude(&b, &a),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filter(v: Value) -> Filter {
        Filter::parse(&v).unwrap_or_else(|e| panic!("{v}: {e}"))
    }

    fn refused(v: Value) -> String {
        match Filter::parse(&v) {
            Ok(_) => panic!("{v} was accepted"),
            Err(e) => e.0,
        }
    }

    fn passes(f: &Filter, event: &str, data: &str) -> bool {
        let data = Document::new(data);
        f.matches(&Envelope { event, timestamp: "2025-01-20T10:30:00.000Z", data: &data })
    }

    #[test]
    fn the_seeds_threshold_passes_scores_at_or_above_it() {
        let f = filter(json!({"data.qualityScore": {"$gte": 80}}));
        assert!(passes(&f, "lead.qualified", r#"{"qualityScore": 92}"#));
        assert!(passes(&f, "lead.qualified", r#"{"qualityScore": 80.0}"#));
        assert!(!passes(&f, "lead.qualified", r#"{"qualityScore": 79.99}"#));
        assert!(!passes(&f, "lead.qualified", r#"{"qualityScore": "92"}"#), "a string is not a number");
        assert!(!passes(&f, "lead.qualified", r#"{}"#));
    }

    #[test]
    fn numbers_compare_exactly_as_decimals() {
        let eq = |a: &str, b: &str| decimal_cmp(a, b) == Some(Ordering::Equal);
        assert!(eq("87.50", "87.5"));
        assert!(eq("1e3", "1000"));
        assert!(eq("1E+3", "1000.000"));
        assert!(eq("0.001", "1e-3"));
        assert!(eq("-0", "0"));
        assert!(eq("0e999999999999999999999", "0.0"));
        assert!(!eq("9007199254740993", "9007199254740992"), "2^53 + 1 is not 2^53");
        assert_eq!(decimal_cmp("9007199254740993", "9007199254740992"), Some(Ordering::Greater));
        assert_eq!(decimal_cmp("-5", "3"), Some(Ordering::Less));
        assert_eq!(decimal_cmp("-5", "-30"), Some(Ordering::Greater));
        assert_eq!(decimal_cmp("0.5", "0.51"), Some(Ordering::Less));
        assert_eq!(decimal_cmp("1e400", "1e399"), Some(Ordering::Greater));
        assert_eq!(decimal_cmp("1e-400", "0"), Some(Ordering::Greater));
        assert_eq!(decimal_cmp("1e99999999999999999999", "1e99999999999999999998"), Some(Ordering::Equal));
        assert_eq!(decimal_cmp("abc", "1"), None);
        let f = filter(json!({"data.score": 87.50}));
        assert!(passes(&f, "e", r#"{"score": 87.5}"#));
        let big = filter(json!({"data.n": {"$eq": serde_json::from_str::<Value>("9007199254740993").unwrap()}}));
        assert!(passes(&big, "e", r#"{"n": 9007199254740993}"#));
        assert!(!passes(&big, "e", r#"{"n": 9007199254740992}"#));
    }

    /// Every pair of n / 10^k (n in -30..30, k in 0..3), each written three ways (plain with
    /// trailing zeros, an exponent, leading zeros), orders as the rationals do.
    #[test]
    fn decimal_order_agrees_with_exact_arithmetic_in_every_form() {
        let forms = |n: i64, k: u32| {
            let sign = if n < 0 { "-" } else { "" };
            let m = n.unsigned_abs();
            let scale = 10u64.pow(k);
            let plain = format!("{sign}{}.{:0width$}00", m / scale, m % scale, width = k as usize);
            vec![plain, format!("{n}e-{k}"), format!("{sign}000{m}0E-{}", k + 1)]
        };
        for n1 in -30..30i64 {
            for k1 in 0..3u32 {
                for n2 in -30..30i64 {
                    for k2 in 0..3u32 {
                        let expected = (n1 * 10i64.pow(k2)).cmp(&(n2 * 10i64.pow(k1)));
                        for a in forms(n1, k1) {
                            for b in forms(n2, k2) {
                                assert_eq!(decimal_cmp(&a, &b), Some(expected), "{a} vs {b}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn bare_values_nested_objects_and_dotted_paths_match_by_equality() {
        let dotted = filter(json!({"data.source": "linkedin", "event": "lead.qualified"}));
        let nested = filter(json!({"data": {"source": "linkedin"}, "event": "lead.qualified"}));
        for f in [&dotted, &nested] {
            assert!(passes(f, "lead.qualified", r#"{"source": "linkedin"}"#));
            assert!(!passes(f, "lead.qualified", r#"{"source": "google"}"#));
            assert!(!passes(f, "lead.created", r#"{"source": "linkedin"}"#));
        }
        let deep = filter(json!({"data.lead.address.city": "Lyon"}));
        assert!(passes(&deep, "e", r#"{"lead": {"address": {"city": "Lyon"}}}"#));
        assert!(!passes(&deep, "e", r#"{"lead": {"address": "Lyon"}}"#));
        let indexed = filter(json!({"data.items.1": "b"}));
        assert!(passes(&indexed, "e", r#"{"items": ["a", "b"]}"#));
        let object = filter(json!({"data.owner": {"$eq": {"id": 1, "team": "x"}}}));
        assert!(passes(&object, "e", r#"{"owner": {"team": "x", "id": 1.0}}"#), "objects equal in any key order");
        assert!(!passes(&object, "e", r#"{"owner": {"team": "x", "id": 1, "more": 1}}"#));
        assert!(passes(&filter(json!({"data.flag": null})), "e", r#"{"flag": null}"#));
        assert!(!passes(&filter(json!({"data.flag": null})), "e", r#"{}"#));
    }

    #[test]
    fn an_array_field_matches_when_it_contains_the_value() {
        let f = filter(json!({"data.tags": "vip"}));
        assert!(passes(&f, "e", r#"{"tags": ["new", "vip"]}"#));
        assert!(!passes(&f, "e", r#"{"tags": ["new"]}"#));
        let whole = filter(json!({"data.tags": ["new", "vip"]}));
        assert!(passes(&whole, "e", r#"{"tags": ["new", "vip"]}"#));
        assert!(!passes(&whole, "e", r#"{"tags": ["vip", "new"]}"#));
        let any_above = filter(json!({"data.scores": {"$gt": 90}}));
        assert!(passes(&any_above, "e", r#"{"scores": [10, 95]}"#));
        assert!(!passes(&any_above, "e", r#"{"scores": [10, 90]}"#));
        let neq = filter(json!({"data.tags": {"$neq": "spam"}}));
        assert!(passes(&neq, "e", r#"{"tags": ["new"]}"#));
        assert!(!passes(&neq, "e", r#"{"tags": ["new", "spam"]}"#));
    }

    #[test]
    fn every_operator_does_what_it_says() {
        let cases: &[(Value, &str, bool)] = &[
            (json!({"data.n": {"$eq": 5}}), r#"{"n": 5}"#, true),
            (json!({"data.n": {"$neq": 5}}), r#"{"n": 5}"#, false),
            (json!({"data.n": {"$neq": 5}}), r#"{}"#, true),
            (json!({"data.n": {"$gt": 5}}), r#"{"n": 5}"#, false),
            (json!({"data.n": {"$gte": 5}}), r#"{"n": 5}"#, true),
            (json!({"data.n": {"$lt": 5}}), r#"{"n": 4.999}"#, true),
            (json!({"data.n": {"$lte": 5}}), r#"{"n": 5.001}"#, false),
            (json!({"data.n": {"$gt": 1, "$lt": 10}}), r#"{"n": 5}"#, true),
            (json!({"data.n": {"$gt": 1, "$lt": 10}}), r#"{"n": 10}"#, false),
            (json!({"data.s": {"$gt": "m"}}), r#"{"s": "n"}"#, true),
            (json!({"data.s": {"$gt": 1}}), r#"{"s": "n"}"#, false),
            (json!({"timestamp": {"$gte": "2025-01-20T00:00:00Z"}}), r#"{}"#, true),
            (json!({"timestamp": {"$lt": "2025-01-20T00:00:00Z"}}), r#"{}"#, false),
            (json!({"data.c": {"$in": ["fr", "de"]}}), r#"{"c": "de"}"#, true),
            (json!({"data.c": {"$in": ["fr", "de"]}}), r#"{"c": "us"}"#, false),
            (json!({"data.c": {"$in": []}}), r#"{"c": "us"}"#, false),
            (json!({"data.c": {"$nin": ["fr", "de"]}}), r#"{"c": "us"}"#, true),
            (json!({"data.c": {"$nin": ["fr", "de"]}}), r#"{}"#, true),
            (json!({"data.c": {"$nin": ["fr"]}}), r#"{"c": ["us", "fr"]}"#, false),
            (json!({"data.c": {"$exist": true}}), r#"{"c": null}"#, true),
            (json!({"data.c": {"$exist": false}}), r#"{"c": null}"#, false),
            (json!({"data.c": {"$exist": false}}), r#"{}"#, true),
            (json!({"event": {"$in": ["lead.qualified", "lead.created"]}}), r#"{}"#, true),
            (json!({"$or": [{"data.a": 1}, {"data.b": 2}]}), r#"{"b": 2}"#, true),
            (json!({"$or": [{"data.a": 1}, {"data.b": 2}]}), r#"{"b": 3}"#, false),
            (json!({"$and": [{"data.a": 1}, {"data.b": 2}]}), r#"{"a": 1, "b": 2}"#, true),
            (json!({"$and": [{"data.a": 1}, {"data.b": 2}]}), r#"{"a": 1}"#, false),
            (json!({"$not": {"data.a": 1}}), r#"{"a": 2}"#, true),
            (json!({"$not": {"data.a": 1}}), r#"{"a": 1}"#, false),
            (json!({"data": {"$or": [{"a": 1}, {"b.c": 2}]}}), r#"{"b": {"c": 2}}"#, true),
            (json!({"data.s": {"$eq": "1"}}), r#"{"s": 1}"#, false),
            (json!({"data.b": true}), r#"{"b": true}"#, true),
            (json!({"data.b": true}), r#"{"b": "true"}"#, false),
            (json!({"data.name": "Renée"}), r#"{"name": "Ren\u00e9e"}"#, true),
            (json!({"data.name": "Renée"}), r#"{"name": "Renée"}"#, true),
            (json!({"data.name": {"$gt": "Rena"}}), r#"{"name": "Ren\u00e9e"}"#, true),
            (json!({"data.q": "a\"b"}), r#"{"q": "a\"b"}"#, true),
            (json!({"data.n": {"$lt": 0}}), r#"{"n": -1.5e0}"#, true),
            (json!({"data.n": null}), r#"{"n": null}"#, true),
        ];
        for (f, data, expected) in cases {
            assert_eq!(passes(&filter(f.clone()), "lead.qualified", data), *expected, "{f} on {data}");
        }
    }

    #[test]
    fn bad_filters_are_refused_with_the_place_named() {
        assert!(refused(json!({"data.email": {"$regex": ".*"}})).contains("unknown operator `$regex` at `data.email`"));
        assert!(refused(json!(["data.a"])).contains("object"));
        assert!(refused(json!({})).contains("empty"));
        assert!(refused(json!({"data.a": {}})).contains("empty condition at `data.a`"));
        assert!(refused(json!({"score": 1})).contains("no field `score`"));
        assert!(refused(json!({"id": "evt_x"})).contains("assigned after filters run"));
        assert!(refused(json!({"data..a": 1})).contains("empty part"));
        assert!(refused(json!({"$gt": 1})).contains("must be applied to a field"));
        assert!(refused(json!({"data.a": {"$gt": true}})).contains("number or a string"));
        assert!(refused(json!({"data.a": {"$in": 1}})).contains("array of values"));
        assert!(refused(json!({"data.a": {"$exist": 1}})).contains("true or false"));
        assert!(refused(json!({"$or": []})).contains("non-empty array"));
        assert!(refused(json!({"$and": {"data.a": 1}})).contains("non-empty array"));
        assert!(refused(json!({"$not": [1]})).contains("must be an object"));
        let mut deep = json!({"data.a": 1});
        for _ in 0..8 {
            deep = json!({ "$not": deep });
        }
        assert!(refused(deep).contains("levels deep"));
        let many: serde_json::Map<String, Value> = (0..65).map(|i| (format!("data.f{i}"), json!(i))).collect();
        assert!(refused(Value::Object(many)).contains("more than 64 conditions"));
        let big = json!({"data.a": {"$in": vec!["x".repeat(100); 50]}});
        assert!(refused(big).contains("at most 4096"));
    }

    #[test]
    fn a_filter_keeps_its_text_and_compiles_the_same_from_it() {
        // As a client's JSON arrives (`json!` would make the number an f64 first).
        let f = filter(serde_json::from_str(r#"{"data.score": {"$gte": 80.50}, "event": "lead.qualified"}"#).unwrap());
        assert_eq!(f.text(), r#"{"data.score":{"$gte":80.50},"event":"lead.qualified"}"#);
        let again = Filter::from_text(f.text()).unwrap();
        assert_eq!(again, f);
        assert!(passes(&again, "lead.qualified", r#"{"score": 80.5}"#));
        let bytes = bincode::serde::encode_to_vec(&f, bincode::config::standard()).unwrap();
        let (back, _): (Filter, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!(back.text(), f.text());
    }
}
