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
    // Every row of `$arr` through `$text` (the row's value as text, or why it is not).
    macro_rules! rows {
        ($arr:expr, $text:expr) => {{
            let a = $arr;
            for i in 0..n {
                let r = if a.is_null(i) {
                    Err(format!("text column '{column}' is null"))
                } else {
                    $text(a.value(i))
                };
                match r {
                    Ok(s) => texts.push(Some(s)),
                    Err(reason) => {
                        errors.push(RecordError::new(i, Stage::Source, reason));
                        texts.push(None);
                    }
                }
            }
        }};
    }
    let utf8 = |v: &[u8]| {
        std::str::from_utf8(v)
            .map(Arc::from)
            .map_err(|e| format!("text column '{column}' is not valid UTF-8: {e}"))
    };
    let string = |v: &str| Ok::<Arc<str>, String>(Arc::from(v));
    // The whole column is unusable: every row fails with `reason`.
    let all_fail = |reason: String| {
        let errors = (0..n)
            .map(|i| RecordError::new(i, Stage::Source, reason.clone()))
            .collect();
        (vec![None; n], errors)
    };
    match col.data_type() {
        DataType::Utf8 => rows!(col.as_string::<i32>(), string),
        DataType::LargeUtf8 => rows!(col.as_string::<i64>(), string),
        DataType::Utf8View => rows!(col.as_string_view(), string),
        DataType::Binary => rows!(col.as_binary::<i32>(), utf8),
        DataType::LargeBinary => rows!(col.as_binary::<i64>(), utf8),
        DataType::BinaryView => rows!(col.as_binary_view(), utf8),
        DataType::Dictionary(_, v) if v.is_string() || **v == DataType::Utf8 => {
            match arrow::compute::cast(col, &DataType::Utf8) {
                Ok(flat) => rows!(flat.as_string::<i32>(), string),
                Err(e) => return all_fail(format!("text column '{column}': {e}")),
            }
        }
        other => {
            return all_fail(format!(
                "text column '{column}' has type {other}, expected a string"
            ))
        }
    }
    (texts, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        BinaryArray, DictionaryArray, Int32Array, LargeStringArray, StringArray, StringViewArray,
    };
    use arrow::datatypes::Int8Type;

    fn run(col: &dyn Array) -> (Vec<Option<String>>, Vec<(usize, String)>) {
        let (texts, errors) = extract_texts(col, "body");
        assert_eq!(texts.len(), col.len());
        for e in &errors {
            assert_eq!(e.stage, Stage::Source);
            assert!(
                texts[e.row].is_none(),
                "row {} failed and has a text",
                e.row
            );
        }
        (
            texts
                .into_iter()
                .map(|t| t.map(|s| s.to_string()))
                .collect(),
            errors.into_iter().map(|e| (e.row, e.reason)).collect(),
        )
    }

    #[test]
    fn every_string_type_gives_its_texts_and_nulls_become_errors() {
        let want = vec![Some("a".to_string()), None, Some("ç".to_string())];
        let values = [Some("a"), None, Some("ç")];
        let arrays: Vec<Box<dyn Array>> = vec![
            Box::new(StringArray::from(values.to_vec())),
            Box::new(LargeStringArray::from(values.to_vec())),
            Box::new(StringViewArray::from(values.to_vec())),
            Box::new(values.into_iter().collect::<DictionaryArray<Int8Type>>()),
            Box::new(BinaryArray::from(vec![
                Some(&b"a"[..]),
                None,
                Some("ç".as_bytes()),
            ])),
        ];
        for a in arrays {
            let (texts, errors) = run(a.as_ref());
            assert_eq!(texts, want, "{}", a.data_type());
            assert_eq!(errors, vec![(1, "text column 'body' is null".to_string())]);
        }
    }

    #[test]
    fn invalid_utf8_and_other_types_become_errors_of_their_rows() {
        let bin = BinaryArray::from(vec![Some(&b"ok"[..]), Some(&[0xff, 0xfe][..])]);
        let (texts, errors) = run(&bin);
        assert_eq!(texts[0].as_deref(), Some("ok"));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, 1);
        assert!(errors[0]
            .1
            .contains("text column 'body' is not valid UTF-8"));

        let ints = Int32Array::from(vec![1, 2, 3]);
        let (texts, errors) = run(&ints);
        assert!(texts.iter().all(Option::is_none));
        let rows: Vec<usize> = errors.iter().map(|e| e.0).collect();
        assert_eq!(rows, vec![0, 1, 2]);
        assert!(errors
            .iter()
            .all(|e| e.1 == "text column 'body' has type Int32, expected a string"));
    }
}
