//! `ferrite rpc`: a JSON-RPC client for the target's socket.
//!
//! `ferrite rpc METHOD` with parameters as `--key value` pairs (values parsed as JSON when they
//! parse, else taken as strings; `-` in keys becomes `_`) or one JSON object argument, or, for
//! `load_config` with no parameters, the document on standard input. Prints the result as
//! pretty JSON; prints an error as `error CODE: MESSAGE` on standard error and exits 1.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde_json::{json, Map, Value};

/// Options of `ferrite rpc`.
#[derive(Debug, Clone, Args)]
pub struct RpcOptions {
    /// Socket of the target.
    #[arg(short = 's', long = "server", default_value = ferrite_rpc::DEFAULT_RPC_ADDR)]
    pub server: PathBuf,
    /// Seconds to wait for the answer.
    #[arg(short = 't', long = "timeout", default_value_t = 60.0)]
    pub timeout: f64,
    /// Method name.
    pub method: String,
    /// Parameters: `--key value ...` or one JSON object.
    #[arg(allow_hyphen_values = true, trailing_var_arg = true)]
    pub params: Vec<String>,
}

fn parse_params(method: &str, args: &[String]) -> Result<Option<Value>, String> {
    if args.is_empty() {
        if method == "load_config" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            let v: Value =
                serde_json::from_str(&s).map_err(|e| format!("standard input is not JSON: {e}"))?;
            return Ok(Some(v));
        }
        return Ok(None);
    }
    if args.len() == 1 && args[0].trim_start().starts_with('{') {
        let v: Value = serde_json::from_str(&args[0])
            .map_err(|e| format!("parameters are not a JSON object: {e}"))?;
        return Ok(Some(v));
    }
    let mut m = Map::new();
    let mut it = args.iter();
    while let Some(k) = it.next() {
        let key = k
            .strip_prefix("--")
            .ok_or_else(|| format!("expected --key, found '{k}'"))?;
        let key = key.replace('-', "_");
        let val = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
        let v = serde_json::from_str::<Value>(val).unwrap_or_else(|_| Value::String(val.clone()));
        m.insert(key, v);
    }
    Ok(Some(Value::Object(m)))
}

/// Sends one request and waits for its answer.
pub fn call(
    server: &PathBuf,
    method: &str,
    params: Option<Value>,
    timeout: Duration,
) -> Result<Value, String> {
    let mut s = UnixStream::connect(server)
        .map_err(|e| format!("cannot connect to {}: {e}", server.display()))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut req = json!({"jsonrpc": "2.0", "method": method, "id": 1});
    if let Some(p) = params {
        req["params"] = p;
    }
    s.write_all(req.to_string().as_bytes())
        .map_err(|e| format!("cannot send: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let n = s.read(&mut chunk).map_err(|e| {
            format!(
                "no answer from {} within {:?}: {e}",
                server.display(),
                timeout
            )
        })?;
        if n == 0 {
            return Err(format!(
                "{} closed the connection without answering",
                server.display()
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut de = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
        match de.next() {
            Some(Ok(v)) => {
                if let Some(e) = v.get("error") {
                    let code = e.get("code").and_then(Value::as_i64).unwrap_or(0);
                    let msg = e.get("message").and_then(Value::as_str).unwrap_or("");
                    return Err(format!("error {code}: {msg}"));
                }
                return Ok(v.get("result").cloned().unwrap_or(Value::Null));
            }
            Some(Err(e)) if e.is_eof() => continue,
            Some(Err(e)) => return Err(format!("malformed answer: {e}")),
            None => continue,
        }
    }
}

/// Runs `ferrite rpc`; returns the exit code.
pub fn run(o: RpcOptions) -> i32 {
    let params = match parse_params(&o.method, &o.params) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ferrite rpc: {e}");
            return 2;
        }
    };
    let timeout = Duration::from_secs_f64(o.timeout.clamp(0.001, 86_400.0));
    match call(&o.server, &o.method, params, timeout) {
        Ok(v) => {
            match serde_json::to_string_pretty(&v) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("ferrite rpc: {e}"),
            }
            0
        }
        Err(e) => {
            eprintln!("ferrite rpc {}: {e}", o.method);
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_params() {
        let a: Vec<String> = ["--name", "M0", "--num-blocks", "16", "--flag", "true"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let v = parse_params("x", &a).unwrap().unwrap();
        assert_eq!(v, json!({"name": "M0", "num_blocks": 16, "flag": true}));
        assert!(parse_params("x", &["name".to_string()]).is_err());
        assert!(parse_params("x", &["--name".to_string()]).is_err());
        let j = parse_params("x", &[r#"{"a": [1]}"#.to_string()])
            .unwrap()
            .unwrap();
        assert_eq!(j, json!({"a": [1]}));
    }
}
