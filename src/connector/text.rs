//! Texts of an Arrow column, as every connector that reads Arrow reads them: strings of any
//! Arrow string type, or binary holding UTF-8; every row that is not usable text (null, not a
//! string, invalid UTF-8) becomes an error row naming the column.

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;

use crate::record::{RecordError, Stage};

/// Extract the texts of a column; rows that are not usable text become errors.
pub fn extract_texts(col: &dyn Array, column: &str) -> (Vec<Option<Arc<str>>>, Vec<RecordError>) {
    let n = col.len();
    let mut texts = Vec::with_capacity(n);
    let mut errors = Vec::new();
    let null =
        |i: usize| RecordError::new(i, Stage::Source, format!("text column '{column}' is null"));
    macro_rules! strings {
        ($arr:expr) => {{
            let a = $arr;
            for i in 0..n {
                if a.is_null(i) {
                    errors.push(null(i));
                    texts.push(None);
                } else {
                    texts.push(Some(Arc::from(a.value(i))));
                }
            }
        }};
    }
    macro_rules! binaries {
        ($arr:expr) => {{
            let a = $arr;
            for i in 0..n {
                if a.is_null(i) {
                    errors.push(null(i));
                    texts.push(None);
                } else {
                    match std::str::from_utf8(a.value(i)) {
                        Ok(s) => texts.push(Some(Arc::from(s))),
                        Err(e) => {
                            errors.push(RecordError::new(
                                i,
                                Stage::Source,
                                format!("text column '{column}' is not valid UTF-8: {e}"),
                            ));
                            texts.push(None);
                        }
                    }
                }
            }
        }};
    }
    match col.data_type() {
        DataType::Utf8 => strings!(col.as_string::<i32>()),
        DataType::LargeUtf8 => strings!(col.as_string::<i64>()),
        DataType::Utf8View => strings!(col.as_string_view()),
        DataType::Binary => binaries!(col.as_binary::<i32>()),
        DataType::LargeBinary => binaries!(col.as_binary::<i64>()),
        DataType::BinaryView => binaries!(col.as_binary_view()),
        DataType::Dictionary(_, v) if v.is_string() || **v == DataType::Utf8 => {
            match arrow::compute::cast(col, &DataType::Utf8) {
                Ok(flat) => strings!(flat.as_string::<i32>()),
                Err(e) => {
                    for i in 0..n {
                        errors.push(RecordError::new(
                            i,
                            Stage::Source,
                            format!("text column '{column}': {e}"),
                        ));
                        texts.push(None);
                    }
                }
            }
        }
        other => {
            for i in 0..n {
                errors.push(RecordError::new(
                    i,
                    Stage::Source,
                    format!("text column '{column}' has type {other}, expected a string"),
                ));
                texts.push(None);
            }
        }
    }
    (texts, errors)
}
