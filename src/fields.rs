//! A record's structured fields: its own ([`Fields`]), those it shares
//! with other records ([`SharedFields`], written once for the many records
//! that carry them), and the one writer of their JSON text for the `fields`
//! jsonb column (NUL replaced by U+FFFD, since PostgreSQL refuses `\u0000`
//! in jsonb).

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::Value;

/// What a NUL byte becomes in stored text.
pub(crate) const REPLACEMENT: &str = "\u{FFFD}";

/// One field: its key and its JSON value.
type Field = (Cow<'static, str>, Value);

/// Structured fields of a record: key and JSON value, in the order added.
/// Stored as one jsonb object; when a key repeats, the last value wins.
///
/// Read it as a slice of `(key, value)` pairs; build it with
/// [`Fields::push`], or collect it from pairs.
///
/// ```
/// use pglogsink::Fields;
///
/// let mut fields = Fields::new();
/// fields.push("status", 200);
/// fields.push("path", "/recipes/7");
/// assert_eq!(fields.len(), 2);
/// assert_eq!(fields[0].0, "status");
///
/// let collected: Fields = [("k", "v")].into_iter().collect();
/// assert_eq!(collected[0].1, "v");
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields(pub(crate) Vec<Field>);

impl Fields {
    /// No fields.
    pub fn new() -> Fields {
        Fields(Vec::new())
    }

    /// No fields, with room for `n`.
    pub fn with_capacity(n: usize) -> Fields {
        Fields(Vec::with_capacity(n))
    }

    /// Add a field after the others.
    pub fn push(&mut self, key: impl Into<Cow<'static, str>>, value: impl Into<Value>) {
        self.0.push((key.into(), value.into()));
    }
}

impl std::ops::Deref for Fields {
    type Target = [Field];

    fn deref(&self) -> &[Field] {
        &self.0
    }
}

impl From<Vec<Field>> for Fields {
    fn from(pairs: Vec<Field>) -> Fields {
        Fields(pairs)
    }
}

impl<K: Into<Cow<'static, str>>, V: Into<Value>> FromIterator<(K, V)> for Fields {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Fields {
        Fields(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl<K: Into<Cow<'static, str>>, V: Into<Value>> Extend<(K, V)> for Fields {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, pairs: I) {
        self.0
            .extend(pairs.into_iter().map(|(k, v)| (k.into(), v.into())));
    }
}

impl IntoIterator for Fields {
    type Item = Field;
    type IntoIter = std::vec::IntoIter<Field>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Fields {
    type Item = &'a Field;
    type IntoIter = std::slice::Iter<'a, Field>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Write `fields` as the members of a JSON object (`"k":v,"k2":v2`,
/// without braces) onto `out`, a comma first when `out` already holds
/// members (`comma`). Returns true if NULs had to be replaced.
pub(crate) fn write_members(
    out: &mut Vec<u8>,
    fields: &[(Cow<'static, str>, Value)],
    mut comma: bool,
) -> bool {
    let has_nul = fields
        .iter()
        .any(|(k, v)| k.contains('\0') || value_has_nul(v));
    for (key, value) in fields {
        if comma {
            out.push(b',');
        }
        comma = true;
        if has_nul {
            write_json(out, &Value::String(key.replace('\0', REPLACEMENT)));
            out.push(b':');
            write_json(out, &without_nul(value));
        } else {
            write_json(out, &**key);
            out.push(b':');
            write_json(out, value);
        }
    }
    has_nul
}

/// Serialize `value` onto `out`.
pub(crate) fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing a string, number or Value into a Vec cannot fail: map keys in a
    // Value are always strings and non-finite floats are stored as null.
    let _ = serde_json::to_writer(&mut *out, value);
}

fn value_has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(value_has_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || value_has_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

fn without_nul(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(s.replace('\0', REPLACEMENT)),
        Value::Array(a) => Value::Array(a.iter().map(without_nul).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.replace('\0', REPLACEMENT), without_nul(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Fields that many records carry, such as the attributes of the service
/// and library that sent them: written as JSON once, when made, and shared
/// by every record that carries them (a clone is a reference count).
///
/// A record's own fields ([`Record::field`](crate::Record::field)) come
/// after these in its row, so a key of its own wins over a shared one. In
/// the sink's memory budget the shared text counts once, however many
/// queued records carry it.
///
/// ```
/// use pglogsink::{Level, Record, SharedFields};
///
/// let service = SharedFields::new(vec![
///     ("service.name".into(), "checkout".into()),
///     ("host.name".into(), "web-7".into()),
/// ]);
/// let records: Vec<Record> = (0..3)
///     .map(|i| Record::new(Level::Info, format!("order {i}")).shared_fields(service.clone()))
///     .collect();
/// assert_eq!(records.len(), 3);
/// ```
#[derive(Clone)]
pub struct SharedFields(Arc<SharedText>);

struct SharedText {
    /// The members of the JSON object, NULs replaced.
    members: Box<[u8]>,
    nul_replaced: bool,
    /// Records carrying these fields that are in the sink's queue now.
    queued: AtomicUsize,
}

impl SharedFields {
    /// Write `fields` once, for every record that will carry them.
    pub fn new(fields: impl Into<Fields>) -> SharedFields {
        let fields = fields.into();
        let mut members = Vec::new();
        let nul_replaced = write_members(&mut members, &fields, false);
        SharedFields(Arc::new(SharedText {
            members: members.into_boxed_slice(),
            nul_replaced,
            queued: AtomicUsize::new(0),
        }))
    }

    /// True when there are no fields.
    pub fn is_empty(&self) -> bool {
        self.0.members.is_empty()
    }

    /// The fields as a JSON object.
    ///
    /// ```
    /// let shared = pglogsink::SharedFields::new(vec![("service.name".into(), "shop".into())]);
    /// assert_eq!(shared.to_json(), r#"{"service.name":"shop"}"#);
    /// ```
    pub fn to_json(&self) -> String {
        format!("{{{}}}", String::from_utf8_lossy(&self.0.members))
    }

    /// The fields as the members of a JSON object, without braces.
    pub(crate) fn members(&self) -> &[u8] {
        &self.0.members
    }

    /// True if NULs were replaced when the fields were written.
    pub(crate) fn nul_replaced(&self) -> bool {
        self.0.nul_replaced
    }

    /// Heap bytes the shared text holds (the text and its reference-counted
    /// box).
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of::<SharedText>() + 16 + self.0.members.len()
    }

    /// A record carrying these fields enters the queue: true when it is the
    /// only one there, so that their bytes start to count.
    pub(crate) fn enter_queue(&self) -> bool {
        self.0.queued.fetch_add(1, Ordering::AcqRel) == 0
    }

    /// A record carrying these fields leaves the queue: true when it was
    /// the last one there, so that their bytes stop counting.
    pub(crate) fn leave_queue(&self) -> bool {
        self.0.queued.fetch_sub(1, Ordering::AcqRel) == 1
    }
}

impl fmt::Debug for SharedFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedFields")
            .field(&String::from_utf8_lossy(&self.0.members))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_written_once_with_nuls_replaced() {
        let shared = SharedFields::new(vec![
            ("service.name".into(), "shop".into()),
            ("n\0".into(), serde_json::json!({"x": ["\0"]})),
        ]);
        assert!(shared.nul_replaced());
        let text = String::from_utf8(shared.members().to_vec()).unwrap();
        assert_eq!(
            text,
            "\"service.name\":\"shop\",\"n\u{FFFD}\":{\"x\":[\"\u{FFFD}\"]}"
        );
        assert!(SharedFields::new(Vec::new()).is_empty());
    }

    #[test]
    fn the_first_record_in_and_the_last_out_are_told() {
        let shared = SharedFields::new(vec![("k".into(), 1.into())]);
        assert!(shared.enter_queue());
        assert!(!shared.clone().enter_queue());
        assert!(!shared.leave_queue());
        assert!(shared.leave_queue());
        assert!(shared.enter_queue(), "empty again: the next one counts");
    }
}
