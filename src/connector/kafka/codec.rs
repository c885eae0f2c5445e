//! Decoding Kafka messages: the value as text or JSON (id, text and question by path or
//! pointer), and the passthrough columns built from message attributes or JSON fields.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, Int32Array, Int64Array, MapBuilder, StringArray, StringBuilder,
};
use arrow::datatypes::{DataType, Field, FieldRef};

use super::config::{KafkaSourceConfig, ValueFormat};
use super::KafkaMessage;
use crate::error::{Error, Result};

/// Names of the message attributes that `sink.passthrough` can copy to the output; any other
/// name is read from the JSON value.
pub const MESSAGE_FIELDS: &[&str] = &[
    "key",
    "headers",
    "topic",
    "partition",
    "offset",
    "timestamp",
];

/// Where each output column of a passthrough comes from.
#[derive(Debug, Clone)]
pub(crate) enum Passthrough {
    Key,
    Headers,
    Topic,
    Partition,
    Offset,
    Timestamp,
    Json(String),
}

/// One decoded message.
pub(crate) struct Decoded {
    pub(crate) id: String,
    pub(crate) text: std::result::Result<Arc<str>, String>,
    /// The further text fields asked for, in order (`None`: the message failed).
    pub(crate) columns: Vec<Option<Arc<str>>>,
    pub(crate) json: Option<serde_json::Value>,
}

/// A further text field read from JSON values: what it holds (for messages) and its path.
#[derive(Debug, Clone)]
pub(crate) struct ColumnField {
    pub(crate) role: &'static str,
    pub(crate) path: String,
}

/// Per passthrough column its name and where it comes from; the source's output fields.
pub(crate) type PassthroughPlan = (Vec<(String, Passthrough)>, Vec<FieldRef>);

/// Where each passthrough column comes from, and the source's output fields (`id` first).
pub(crate) fn passthrough_plan(
    cfg: &KafkaSourceConfig,
    passthrough: &[String],
) -> Result<PassthroughPlan> {
    let mut pass = Vec::new();
    for name in passthrough {
        let p = match name.as_str() {
            "key" => Passthrough::Key,
            "headers" => Passthrough::Headers,
            "topic" => Passthrough::Topic,
            "partition" => Passthrough::Partition,
            "offset" => Passthrough::Offset,
            "timestamp" => Passthrough::Timestamp,
            other if cfg.format == ValueFormat::Json => Passthrough::Json(other.to_string()),
            other => {
                return Err(Error::config(format!(
                    "sink.passthrough: '{other}' is not a message attribute ({}); JSON fields can be passed through only with source.kafka.format: json",
                    MESSAGE_FIELDS.join(", ")
                )))
            }
        };
        pass.push((name.clone(), p));
    }
    let mut fields: Vec<FieldRef> = vec![Arc::new(Field::new("id", DataType::Utf8, false))];
    for (name, p) in &pass {
        let dt = match p {
            Passthrough::Key => DataType::Binary,
            Passthrough::Headers => headers_type(),
            Passthrough::Topic | Passthrough::Json(_) => DataType::Utf8,
            Passthrough::Partition => DataType::Int32,
            Passthrough::Offset | Passthrough::Timestamp => DataType::Int64,
        };
        fields.push(Arc::new(Field::new(name, dt, true)));
    }
    Ok((pass, fields))
}

/// Read one message into an id, a text (or why not) and, for JSON, the parsed value.
pub(crate) fn decode(
    cfg: &KafkaSourceConfig,
    columns: &[ColumnField],
    m: &KafkaMessage,
) -> Decoded {
    let position = m.position();
    let mut d = Decoded {
        id: position.clone(),
        text: Err(String::new()),
        columns: vec![None; columns.len()],
        json: None,
    };
    let Some(value) = &m.value else {
        d.text = Err("message has no value (null or tombstone)".into());
        return d;
    };
    if value.len() > cfg.max_value_bytes {
        d.text = Err(format!(
            "value of {} bytes exceeds source.kafka.max_value_bytes ({})",
            value.len(),
            cfg.max_value_bytes
        ));
        return d;
    }
    let s = match std::str::from_utf8(value) {
        Ok(s) => s,
        Err(e) => {
            d.text = Err(format!(
                "value is not valid UTF-8 (first bad byte at {})",
                e.valid_up_to()
            ));
            return d;
        }
    };
    match cfg.format {
        ValueFormat::Text => d.text = Ok(Arc::from(s)),
        ValueFormat::Json => {
            let v: serde_json::Value = match serde_json::from_str(s) {
                Ok(v) => v,
                Err(e) => {
                    d.text = Err(format!("value is not valid JSON: {e}"));
                    return d;
                }
            };
            let j = &cfg.json;
            if let Some(idp) = &j.id {
                match lookup(&v, idp) {
                    Some(serde_json::Value::String(s)) => d.id = s.clone(),
                    Some(serde_json::Value::Number(n)) => d.id = n.to_string(),
                    Some(other) => {
                        d.text = Err(format!(
                            "id field '{idp}' is {}, expected a string or a number",
                            kind(other)
                        ));
                        d.json = Some(v);
                        return d;
                    }
                    None => {
                        d.text = Err(format!("id field '{idp}' is missing"));
                        d.json = Some(v);
                        return d;
                    }
                }
            }
            d.text = match lookup(&v, &j.text) {
                Some(serde_json::Value::String(s)) => Ok(Arc::from(s.as_str())),
                Some(serde_json::Value::Null) => Err(format!("text field '{}' is null", j.text)),
                Some(other) => Err(format!(
                    "text field '{}' is {}, expected a string",
                    j.text,
                    kind(other)
                )),
                None => Err(format!("text field '{}' is missing", j.text)),
            };
            for (slot, c) in d.columns.iter_mut().zip(columns) {
                match lookup(&v, &c.path) {
                    Some(serde_json::Value::String(s)) => *slot = Some(Arc::from(s.as_str())),
                    other => {
                        if d.text.is_ok() {
                            d.text = Err(format!(
                                "{} field '{}' is {}, expected a string",
                                c.role,
                                c.path,
                                other.map(kind).unwrap_or("missing")
                            ));
                        }
                    }
                }
            }
            d.json = Some(v);
        }
    }
    d
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A field of a JSON value by dotted path (`doc.body`) or JSON pointer (`/doc/body`).
pub fn lookup<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    if path.starts_with('/') {
        return v.pointer(path);
    }
    let mut cur = v;
    for part in path.split('.') {
        cur = match cur {
            serde_json::Value::Object(m) => m.get(part)?,
            serde_json::Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

pub(crate) fn headers_type() -> DataType {
    let mut b = MapBuilder::new(None, StringBuilder::new(), BinaryBuilder::new());
    use arrow::array::Array;
    b.finish().data_type().clone()
}

pub(crate) fn passthrough_column(
    p: &Passthrough,
    messages: &[KafkaMessage],
    jsons: &[Option<serde_json::Value>],
) -> ArrayRef {
    match p {
        Passthrough::Key => {
            let mut b = BinaryBuilder::new();
            for m in messages {
                b.append_option(m.key.as_deref());
            }
            Arc::new(b.finish())
        }
        Passthrough::Headers => {
            let mut b = MapBuilder::new(None, StringBuilder::new(), BinaryBuilder::new());
            for m in messages {
                for (k, v) in &m.headers {
                    b.keys().append_value(k);
                    b.values().append_option(v.as_deref());
                }
                b.append(true).expect("keys and values appended together");
            }
            Arc::new(b.finish())
        }
        Passthrough::Topic => Arc::new(StringArray::from_iter_values(
            messages.iter().map(|m| m.topic.as_ref()),
        )),
        Passthrough::Partition => Arc::new(Int32Array::from_iter_values(
            messages.iter().map(|m| m.partition),
        )),
        Passthrough::Offset => Arc::new(Int64Array::from_iter_values(
            messages.iter().map(|m| m.offset),
        )),
        Passthrough::Timestamp => {
            Arc::new(Int64Array::from_iter(messages.iter().map(|m| m.timestamp)))
        }
        Passthrough::Json(path) => Arc::new(StringArray::from_iter(jsons.iter().map(|j| {
            j.as_ref()
                .and_then(|v| lookup(v, path))
                .and_then(|f| match f {
                    serde_json::Value::Null => None,
                    serde_json::Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                })
        }))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;

    fn cfg(format: ValueFormat) -> KafkaSourceConfig {
        let mut c: KafkaSourceConfig = serde_yaml::from_str(
            "{bootstrap_servers: x, topics: [t], group_id: g, max_value_bytes: 64}",
        )
        .unwrap();
        c.format = format;
        c
    }

    fn msg(value: Option<&[u8]>) -> KafkaMessage {
        KafkaMessage {
            topic: Arc::from("t"),
            partition: 3,
            offset: 42,
            timestamp: None,
            key: None,
            value: value.map(|v| v.to_vec()),
            headers: Vec::new(),
        }
    }

    fn reason(d: &Decoded) -> &str {
        d.text.as_ref().err().map(String::as_str).unwrap_or("")
    }

    #[test]
    fn text_values_and_their_failures() {
        let c = cfg(ValueFormat::Text);
        let d = decode(&c, &[], &msg(Some("héllo".as_bytes())));
        assert_eq!(d.id, "t/3/42");
        assert_eq!(d.text.as_deref().ok(), Some("héllo"));
        assert!(reason(&decode(&c, &[], &msg(None))).contains("no value"));
        assert!(reason(&decode(&c, &[], &msg(Some(&[b'a', 0xff]))))
            .contains("UTF-8 (first bad byte at 1)"));
        assert!(reason(&decode(&c, &[], &msg(Some(&[b'a'; 65])))).contains("max_value_bytes (64)"));
        // Empty text is a valid record.
        assert_eq!(
            decode(&c, &[], &msg(Some(b""))).text.as_deref().ok(),
            Some("")
        );
    }

    #[test]
    fn json_fields_by_path_and_pointer() {
        let mut c = cfg(ValueFormat::Json);
        c.json.text = "/doc/body".into();
        c.json.id = Some("doc.id".into());
        let q = [ColumnField {
            role: "question",
            path: "q".into(),
        }];
        let d = decode(
            &c,
            &q,
            &msg(Some(br#"{"doc":{"id":7,"body":"b"},"q":"why?"}"#)),
        );
        assert_eq!(d.id, "7");
        assert_eq!(d.text.as_deref().ok(), Some("b"));
        assert_eq!(d.columns[0].as_deref(), Some("why?"));
        let cases: &[(&[u8], &str)] = &[
            (b"{", "not valid JSON"),
            (
                br#"{"doc":{"id":"a"}}"#,
                "text field '/doc/body' is missing",
            ),
            (br#"{"doc":{"id":"a","body":null}}"#, "is null"),
            (
                br#"{"doc":{"id":"a","body":[1]}}"#,
                "is an array, expected a string",
            ),
            (br#"{"doc":{"body":"x"}}"#, "id field 'doc.id' is missing"),
            (
                br#"{"doc":{"id":{},"body":"x"}}"#,
                "id field 'doc.id' is an object",
            ),
            (
                br#"{"doc":{"id":1,"body":"x"}}"#,
                "question field 'q' is missing",
            ),
        ];
        for (v, want) in cases {
            let d = decode(&c, &q, &msg(Some(v)));
            assert!(
                reason(&d).contains(want),
                "{}: {}",
                String::from_utf8_lossy(v),
                reason(&d)
            );
        }
    }

    #[test]
    fn lookup_paths() {
        let v: serde_json::Value = serde_json::from_str(r#"{"a":{"b":[{"c":1}]}}"#).unwrap();
        assert_eq!(lookup(&v, "a.b.0.c"), Some(&serde_json::json!(1)));
        assert_eq!(lookup(&v, "/a/b/0/c"), Some(&serde_json::json!(1)));
        assert_eq!(lookup(&v, "a.x"), None);
        assert_eq!(lookup(&v, "a.b.9"), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2000,
            // A failing case is kept beside this file and tried first next time.
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
            )),
            ..Default::default()
        })]

        /// Any value, in either format, gives a text or a reason; never a panic. A text value
        /// is kept byte for byte.
        #[test]
        fn any_value_decodes_to_a_text_or_a_reason(
            v in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
            json in proptest::prelude::any::<bool>(),
        ) {
            let mut c = cfg(if json { ValueFormat::Json } else { ValueFormat::Text });
            c.json.id = Some("a.b".into());
            let d = decode(&c, &[], &msg(Some(&v)));
            match &d.text {
                Ok(t) => {
                    let s = std::str::from_utf8(&v).expect("a text comes from valid UTF-8");
                    if !json {
                        proptest::prop_assert_eq!(&**t, s);
                    }
                }
                Err(r) => proptest::prop_assert!(!r.is_empty()),
            }
        }

        /// JSON objects with arbitrary field values: a string text field is taken as is,
        /// anything else is a reason naming the field.
        #[test]
        fn json_text_field_of_any_type(
            text in proptest::prop_oneof![
                proptest::prelude::any::<String>().prop_map(serde_json::Value::String),
                proptest::prelude::any::<i64>().prop_map(serde_json::Value::from),
                proptest::prelude::any::<bool>().prop_map(serde_json::Value::Bool),
                proptest::prelude::Just(serde_json::Value::Null),
            ],
        ) {
            let mut c = cfg(ValueFormat::Json);
            c.max_value_bytes = 1 << 20;
            let v = serde_json::json!({"text": text.clone()}).to_string();
            let d = decode(&c, &[], &msg(Some(v.as_bytes())));
            match (&text, &d.text) {
                (serde_json::Value::String(s), Ok(t)) => proptest::prop_assert_eq!(&**t, s.as_str()),
                (serde_json::Value::String(_), Err(r)) => proptest::prop_assert!(false, "{}", r),
                (_, Ok(t)) => proptest::prop_assert!(false, "non-string accepted: {}", t),
                (_, Err(r)) => proptest::prop_assert!(r.contains("text field 'text'")),
            }
        }
    }
}
