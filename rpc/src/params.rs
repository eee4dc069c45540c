//! Strict parameter decoding: unknown, missing and mistyped parameters become `-32602` errors
//! that name the parameter.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::RpcError;
use crate::registry::Params;

/// Decodes a method's params into `T` (normally a `#[serde(deny_unknown_fields)]` struct).
///
/// Absent or `null` params decode as an empty object, so a struct whose fields are all optional
/// accepts no params. Params that are not an object fail with `-32602 "params must be an object"`.
/// Decoding failures are `-32602` and name the parameter:
/// `unknown parameter 'foo'`, `missing required parameter 'name'`,
/// `parameter 'num_blocks': invalid type: string "x", expected u64`
/// (nested parameters are named by path, e.g. `parameter 'config.key'`, `'base_bdevs[1]'`).
///
/// Thread contract: pure function, any thread.
pub fn decode<T: DeserializeOwned>(params: Params) -> Result<T, RpcError> {
    let value = match params {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(v @ Value::Object(_)) => v,
        Some(_) => return Err(RpcError::invalid_params("params must be an object")),
    };
    serde_path_to_error::deserialize(&value).map_err(|e| describe(&e))
}

/// Fails with `-32602` if any params were given; for methods that take none
/// (SPDK: `framework_start_init`, `spdk_get_version`). `null` counts as no params.
///
/// Thread contract: pure function, any thread.
pub fn no_params(params: &Params) -> Result<(), RpcError> {
    match params {
        None | Some(Value::Null) => Ok(()),
        Some(_) => Err(RpcError::invalid_params("method takes no parameters")),
    }
}

/// Turns a path-annotated serde error into the message described on [`decode`].
fn describe(e: &serde_path_to_error::Error<serde_json::Error>) -> RpcError {
    let msg = e.inner().to_string();
    let path = e.path().to_string();
    // serde_path_to_error prints the root as ".".
    let parent = if path == "." { String::new() } else { path };
    let join = |name: &str| {
        if parent.is_empty() {
            name.to_owned()
        } else {
            format!("{parent}.{name}")
        }
    };
    if let Some(field) = quoted_after(&msg, "unknown field `") {
        // Here the path already ends with the unknown key itself.
        let full = if parent.is_empty() {
            field
        } else {
            parent.as_str()
        };
        return RpcError::invalid_params(format!("unknown parameter '{full}'"));
    }
    if let Some(field) = quoted_after(&msg, "missing field `") {
        return RpcError::invalid_params(format!("missing required parameter '{}'", join(field)));
    }
    if parent.is_empty() {
        RpcError::invalid_params(format!("invalid parameters: {msg}"))
    } else {
        RpcError::invalid_params(format!("parameter '{parent}': {msg}"))
    }
}

/// The text between `prefix` and the next backtick, if `msg` starts with `prefix`.
fn quoted_after<'a>(msg: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = msg.strip_prefix(prefix)?;
    rest.find('`').map(|end| &rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Create {
        name: String,
        num_blocks: u64,
        #[serde(default)]
        block_size: Option<u32>,
        #[serde(default)]
        base_bdevs: Vec<String>,
        #[serde(default)]
        config: BTreeMap<String, String>,
        #[serde(default)]
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        level: u32,
    }

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(deny_unknown_fields)]
    struct AllOptional {
        #[serde(default)]
        current: bool,
    }

    fn err(v: Value) -> String {
        let e = decode::<Create>(Some(v)).unwrap_err();
        assert_eq!(e.code, -32602);
        e.message
    }

    #[test]
    fn ok_and_defaults() {
        let c: Create = decode(Some(json!({"name":"M0","num_blocks":8}))).unwrap();
        assert_eq!(c.name, "M0");
        assert_eq!(c.num_blocks, 8);
        assert_eq!(c.block_size, None);
        assert_eq!(decode::<AllOptional>(None).unwrap(), AllOptional::default());
        assert_eq!(
            decode::<AllOptional>(Some(Value::Null)).unwrap(),
            AllOptional::default()
        );
    }

    #[test]
    fn messages_name_the_parameter() {
        assert_eq!(
            err(json!({"name":"a","num_blocks":1,"foo":1})),
            "unknown parameter 'foo'"
        );
        assert_eq!(
            err(json!({"num_blocks":1})),
            "missing required parameter 'name'"
        );
        assert_eq!(
            err(json!({"name":"a","num_blocks":"x"})),
            "parameter 'num_blocks': invalid type: string \"x\", expected u64"
        );
        assert_eq!(
            err(json!({"name":"a","num_blocks":1,"base_bdevs":["a",2]})),
            "parameter 'base_bdevs[1]': invalid type: integer `2`, expected a string"
        );
        assert_eq!(
            err(json!({"name":"a","num_blocks":1,"config":{"k":1}})),
            "parameter 'config.k': invalid type: integer `1`, expected a string"
        );
        assert_eq!(
            err(json!({"name":"a","num_blocks":1,"inner":{"level":1,"zz":2}})),
            "unknown parameter 'inner.zz'"
        );
        assert_eq!(
            err(json!({"name":"a","num_blocks":1,"inner":{}})),
            "missing required parameter 'inner.level'"
        );
        assert_eq!(
            err(json!({"name":"a","num_blocks":-1})),
            "parameter 'num_blocks': invalid value: integer `-1`, expected u64"
        );
    }

    #[test]
    fn non_object_params() {
        for v in [json!([1, 2]), json!(3), json!("s"), json!(true)] {
            assert_eq!(err(v), "params must be an object");
        }
    }

    #[test]
    fn no_params_rejects_any() {
        assert!(no_params(&None).is_ok());
        assert!(no_params(&Some(Value::Null)).is_ok());
        assert_eq!(no_params(&Some(json!({}))).unwrap_err().code, -32602);
        assert_eq!(no_params(&Some(json!([]))).unwrap_err().code, -32602);
    }
}
