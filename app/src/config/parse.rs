//! Parsing SPDK's config format: `{"subsystems":[{"subsystem":S,"config":[{"method":M,"params":P}]}]}`
//! with `//` and `/* */` comments allowed, as SPDK allows them.

use serde_json::Value;

/// One method call of a config file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigEntry {
    /// Subsystem it is listed under.
    pub subsystem: String,
    /// Position within that subsystem's list (0-based).
    pub index: usize,
    /// Method name.
    pub method: String,
    /// Parameters (absent → None).
    pub params: Option<Value>,
}

impl ConfigEntry {
    /// "subsystem 'bdev' entry 2 (bdev_malloc_create)".
    pub fn describe(&self) -> String {
        format!(
            "subsystem '{}' entry {} ({})",
            self.subsystem, self.index, self.method
        )
    }
}

/// Removes comments outside strings (line numbers are kept: newlines stay).
fn strip_comments(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut in_str = false;
    while i < b.len() {
        let c = b[i];
        if in_str {
            out.push(c as char);
            if c == b'\\' && i + 1 < b.len() {
                out.push(b[i + 1] as char);
                i += 2;
                continue;
            }
            if c == b'"' {
                in_str = false;
            }
            i += 1;
        } else if c == b'"' {
            in_str = true;
            out.push('"');
            i += 1;
        } else if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                if b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 2;
        } else {
            out.push(c as char);
            i += 1;
        }
    }
    out
}

/// Parses a config text; `source` names it in errors ("config file 'x.json'").
pub fn parse_config(text: &str, source: &str) -> Result<Vec<ConfigEntry>, String> {
    // Work on bytes so that multi-byte characters survive comment stripping.
    let stripped = String::from_utf8(strip_comments_bytes(text.as_bytes()))
        .map_err(|_| format!("{source}: not valid UTF-8"))?;
    let v: Value = serde_json::from_str(&stripped).map_err(|e| {
        format!(
            "{source}: invalid JSON at line {} column {}: {e}",
            e.line(),
            e.column()
        )
    })?;
    entries_from_value(&v, source)
}

fn strip_comments_bytes(b: &[u8]) -> Vec<u8> {
    // Same automaton as strip_comments, byte-exact.
    let s = strip_comments(&String::from_utf8_lossy(b));
    if s.len() == b.len() || !b.iter().any(|c| *c >= 0x80) {
        return s.into_bytes();
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let mut in_str = false;
    while i < b.len() {
        let c = b[i];
        if in_str {
            out.push(c);
            if c == b'\\' && i + 1 < b.len() {
                out.push(b[i + 1]);
                i += 2;
                continue;
            }
            if c == b'"' {
                in_str = false;
            }
            i += 1;
        } else if c == b'"' {
            in_str = true;
            out.push(c);
            i += 1;
        } else if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                if b[i] == b'\n' {
                    out.push(b'\n');
                }
                i += 1;
            }
            i += 2;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Validates the shape and flattens it into entries, in file order.
pub fn entries_from_value(v: &Value, source: &str) -> Result<Vec<ConfigEntry>, String> {
    let subs = v
        .get("subsystems")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{source}: missing 'subsystems' array at the top level"))?;
    let mut out = Vec::new();
    for (si, s) in subs.iter().enumerate() {
        let name = s
            .get("subsystem")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{source}: subsystems[{si}]: missing 'subsystem' name"))?;
        let cfg = match s.get("config") {
            None | Some(Value::Null) => continue,
            Some(Value::Array(a)) => a,
            Some(_) => {
                return Err(format!(
                    "{source}: subsystem '{name}': 'config' must be an array or null"
                ))
            }
        };
        for (i, e) in cfg.iter().enumerate() {
            let method = e.get("method").and_then(Value::as_str).ok_or_else(|| {
                format!("{source}: subsystem '{name}' entry {i}: missing 'method'")
            })?;
            if let Some(obj) = e.as_object() {
                if let Some(k) = obj.keys().find(|k| *k != "method" && *k != "params") {
                    return Err(format!(
                        "{source}: subsystem '{name}' entry {i} ({method}): unknown key '{k}'"
                    ));
                }
            }
            let params = match e.get("params") {
                None | Some(Value::Null) => None,
                Some(p) => Some(p.clone()),
            };
            out.push(ConfigEntry {
                subsystem: name.to_string(),
                index: i,
                method: method.to_string(),
                params,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_shapes() {
        let text = r#"// top
        { /* c */ "subsystems": [ {"subsystem": "bdev", "config": [
            {"method": "bdev_malloc_create", "params": {"name": "M//0", "num_blocks": 8, "block_size": 512}} // x
        ]}, {"subsystem": "vhost", "config": null} ] }"#;
        let e = parse_config(text, "t").unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].params.as_ref().unwrap()["name"], "M//0");
        assert_eq!(
            e[0].describe(),
            "subsystem 'bdev' entry 0 (bdev_malloc_create)"
        );
    }

    #[test]
    fn errors_name_the_place() {
        let e = parse_config("{", "config file 'a.json'").unwrap_err();
        assert!(e.contains("a.json") && e.contains("line"), "{e}");
        let e = parse_config(
            r#"{"subsystems":[{"subsystem":"bdev","config":[{"params":{}}]}]}"#,
            "f",
        )
        .unwrap_err();
        assert!(e.contains("entry 0") && e.contains("method"), "{e}");
        let e = parse_config(
            r#"{"subsystems":[{"subsystem":"bdev","config":[{"method":"x","parms":{}}]}]}"#,
            "f",
        )
        .unwrap_err();
        assert!(e.contains("parms"), "{e}");
        assert!(parse_config("{}", "f").unwrap_err().contains("subsystems"));
    }

    #[test]
    fn non_ascii_survives() {
        let e = parse_config(r#"{"subsystems":[{"subsystem":"bdev","config":[{"method":"m","params":{"name":"é/*x*/"}}]}]} // ü"#, "f").unwrap();
        assert_eq!(e[0].params.as_ref().unwrap()["name"], "é/*x*/");
    }
}
