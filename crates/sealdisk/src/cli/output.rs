//! `-o json|jsonc|yaml|tsv|table|none`, following az (knack `output.py` + `tabulate`):
//!
//! - json/jsonc: keys sorted at every level, two-space indent (az passes `sort_keys=True`).
//! - yaml: keys sorted (PyYAML's `safe_dump` default).
//! - tsv: one line per item of a top-level list (a non-list is one item). An object prints its
//!   values tab-separated, keys sorted, or in `--query` order for multi-select hashes; a nested
//!   object prints as an empty field and a nested list as its length; null prints `None` and a
//!   nested boolean `True`/`False` (Python's `str`), a top-level boolean `true`/`false`.
//! - table: columns are the top-level keys whose values are scalars and not null, skipping
//!   `id`, `type` and `etag`, with the first letter capitalised. Keys are sorted unless a
//!   `--query` is active or the command has a table transformer (which then picks the columns).
//!   Each column is as wide as its widest cell and at least its header plus two; columns are
//!   separated by two spaces, under the header is a row of dashes, trailing blanks are trimmed.

use std::fmt::Write as _;

use serde_json::{Map, Value};

/// Output format, `-o/--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    // JSON, keys sorted.
    Json,
    // JSON (colour is not implemented; same as json).
    Jsonc,
    // YAML.
    Yaml,
    // YAML (colour is not implemented; same as yaml).
    Yamlc,
    // Tab-separated values, no keys.
    Tsv,
    // Human-readable table.
    Table,
    // No output.
    None,
}

/// Turns a command result into the rows az's `-o table` shows by default for that command.
pub type TableTransformer = fn(&Value) -> Value;

/// What a command produced, before `--query` and formatting.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The result; `None` prints nothing in every format (az's `None` result).
    pub value: Option<Value>,
    /// The command's default table columns, used by `-o table` when no `--query` is given.
    pub table: Option<TableTransformer>,
}

impl Outcome {
    /// A result without a table transformer.
    pub fn value(value: Value) -> Self {
        Outcome {
            value: Some(value),
            table: None,
        }
    }

    /// A result with a table transformer.
    pub fn with_table(value: Value, table: TableTransformer) -> Self {
        Outcome {
            value: Some(value),
            table: Some(table),
        }
    }

    /// No result (delete, logout, ...).
    pub fn nothing() -> Self {
        Outcome::default()
    }
}

/// Renders a (possibly queried) result. `query_active` is true when `value` came out of
/// `--query`; its object key order is then meaningful (see [`crate::cli::query`]).
pub fn render(
    value: &Value,
    format: OutputFormat,
    table: Option<TableTransformer>,
    query_active: bool,
) -> Result<String, String> {
    match format {
        OutputFormat::Json | OutputFormat::Jsonc => {
            let mut s = serde_json::to_string_pretty(&sorted(value)).map_err(|e| e.to_string())?;
            s.push('\n');
            Ok(s)
        }
        OutputFormat::Yaml | OutputFormat::Yamlc => {
            serde_yaml_ng::to_string(&sorted(value)).map_err(|e| e.to_string())
        }
        OutputFormat::Tsv => {
            if query_active {
                Ok(tsv(value))
            } else {
                Ok(tsv(&sorted(value)))
            }
        }
        OutputFormat::Table => {
            let rows = match table {
                Some(transform) if !query_active => transform(value),
                _ if !query_active => sorted(value),
                _ => value.clone(),
            };
            table_text(&rows)
        }
        OutputFormat::None => Ok(String::new()),
    }
}

/// A copy with object keys sorted at every level.
pub fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                out.insert(k.clone(), sorted(&map[k]));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// A scalar as Python's `str()` would print it (az's tsv and table cells).
fn python_str(value: &Value) -> String {
    match value {
        Value::Null => "None".to_owned(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.len().to_string(),
        Value::Object(_) => String::new(),
    }
}

fn tsv(value: &Value) -> String {
    let single = std::slice::from_ref(value);
    let rows = match value {
        Value::Array(items) => items.as_slice(),
        _ => single,
    };
    let mut out = String::new();
    for row in rows {
        match row {
            Value::Object(map) => {
                let cells: Vec<String> = map.values().map(python_str).collect();
                out.push_str(&cells.join("\t"));
            }
            Value::Array(items) => {
                let cells: Vec<String> = items.iter().map(python_str).collect();
                out.push_str(&cells.join("\t"));
            }
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            other => out.push_str(&python_str(other)),
        }
        out.push('\n');
    }
    out
}

const TABLE_SKIP_KEYS: [&str; 3] = ["id", "type", "etag"];

fn capitalize_first(key: &str) -> String {
    let mut chars = key.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// One table row: (column, cell) in column order.
fn table_row(item: &Value) -> Vec<(String, String)> {
    match item {
        Value::Object(map) => map
            .iter()
            .filter(|(k, v)| {
                !TABLE_SKIP_KEYS.contains(&k.as_str())
                    && !matches!(v, Value::Null | Value::Array(_) | Value::Object(_))
            })
            .map(|(k, v)| (capitalize_first(k), python_str(v)))
            .collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("Column{}", i + 1), table_cell(v)))
            .collect(),
        other => vec![("Result".to_owned(), table_cell(other))],
    }
}

/// A cell holding a value of any type, as tabulate prints it (`None` is blank).
fn table_cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Array(_) | Value::Object(_) => value.to_string(),
        other => python_str(other),
    }
}

fn table_text(value: &Value) -> Result<String, String> {
    let single = std::slice::from_ref(value);
    let items = match value {
        Value::Array(items) => items.as_slice(),
        _ => single,
    };
    if items.is_empty() {
        return Ok("\n".to_owned());
    }
    let rows: Vec<Vec<(String, String)>> = items.iter().map(table_row).collect();
    // Columns in order of first appearance, like tabulate's headers="keys".
    let mut headers: Vec<String> = Vec::new();
    for row in &rows {
        for (k, _) in row {
            if !headers.contains(k) {
                headers.push(k.clone());
            }
        }
    }
    if headers.is_empty() {
        return Err(
            "Table output unavailable. Use the --query option to specify an appropriate \
                    query. Use --debug for more info."
                .to_owned(),
        );
    }
    let cells: Vec<Vec<&str>> = rows
        .iter()
        .map(|row| {
            headers
                .iter()
                .map(|h| {
                    row.iter()
                        .find(|(k, _)| k == h)
                        .map_or("", |(_, v)| v.as_str())
                })
                .collect()
        })
        .collect();
    let width = |s: &str| s.chars().count();
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            cells
                .iter()
                .map(|r| width(r[i]))
                .max()
                .unwrap_or(0)
                .max(width(h) + 2)
        })
        .collect();
    let mut out = String::new();
    let mut line = |cols: &mut dyn Iterator<Item = String>| {
        let text: Vec<String> = cols.collect();
        let _ = writeln!(out, "{}", text.join("  ").trim_end());
    };
    line(&mut headers.iter().zip(&widths).map(|(h, w)| pad(h, *w)));
    line(&mut widths.iter().map(|w| "-".repeat(*w)));
    for row in &cells {
        line(&mut row.iter().zip(&widths).map(|(c, w)| pad(c, *w)));
    }
    Ok(out)
}

fn pad(text: &str, width: usize) -> String {
    let len = text.chars().count();
    format!("{text}{}", " ".repeat(width.saturating_sub(len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(value: Value, format: OutputFormat, query_active: bool, expect: &str) {
        assert_eq!(render(&value, format, None, query_active).unwrap(), expect);
    }

    fn group_list_table(v: &Value) -> Value {
        Value::Array(
            v.as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    json!({"Name": r["name"], "Location": r["location"],
                           "Status": r["properties"]["provisioningState"]})
                })
                .collect(),
        )
    }

    fn groups() -> Value {
        json!([
            {"id":"/subscriptions/s/resourceGroups/rg1","name":"rg1","type":"Microsoft.Resources/resourceGroups",
             "location":"eastus","managedBy":null,"tags":null,"properties":{"provisioningState":"Succeeded"}},
            {"id":"/subscriptions/s/resourceGroups/longer-name","name":"longer-name","type":"Microsoft.Resources/resourceGroups",
             "location":"westeurope","managedBy":null,"tags":{"a":"b"},"properties":{"provisioningState":"Deleting"}}
        ])
    }

    #[test]
    fn json_sorts_keys_at_every_level() {
        check(
            json!({"b":1,"a":{"d":[{"z":1,"y":2}],"c":null}}),
            OutputFormat::Json,
            false,
            "{\n  \"a\": {\n    \"c\": null,\n    \"d\": [\n      {\n        \"y\": 2,\n        \"z\": 1\n      }\n    ]\n  },\n  \"b\": 1\n}\n",
        );
        check(json!([]), OutputFormat::Json, false, "[]\n");
        check(json!(true), OutputFormat::Json, false, "true\n");
    }

    #[test]
    fn yaml_sorted() {
        check(
            json!([{"name":"x","isDefault":true,"user":{"type":"servicePrincipal","name":"c"}}]),
            OutputFormat::Yaml,
            false,
            "- isDefault: true\n  name: x\n  user:\n    name: c\n    type: servicePrincipal\n",
        );
    }

    #[test]
    fn tsv_like_az() {
        // az: keys sorted; null -> None; nested object -> empty; nested list -> its length.
        check(
            groups(),
            OutputFormat::Tsv,
            false,
            "/subscriptions/s/resourceGroups/rg1\teastus\tNone\trg1\t\tNone\tMicrosoft.Resources/resourceGroups\n\
             /subscriptions/s/resourceGroups/longer-name\twesteurope\tNone\tlonger-name\t\t\tMicrosoft.Resources/resourceGroups\n",
        );
        check(
            json!({"b":[1,2,3],"a":true}),
            OutputFormat::Tsv,
            false,
            "True\t3\n",
        );
        check(json!(false), OutputFormat::Tsv, false, "false\n");
        check(json!("plain"), OutputFormat::Tsv, false, "plain\n");
        check(json!(["a", "b"]), OutputFormat::Tsv, false, "a\nb\n");
        check(json!([["a", 1]]), OutputFormat::Tsv, false, "a\t1\n");
    }

    #[test]
    fn tsv_keeps_query_order() {
        let mut m = Map::new();
        m.insert("Name".into(), json!("rg1"));
        m.insert("Loc".into(), json!("eastus"));
        check(
            json!([Value::Object(m)]),
            OutputFormat::Tsv,
            true,
            "rg1\teastus\n",
        );
    }

    #[test]
    fn table_with_transformer() {
        let out = render(
            &groups(),
            OutputFormat::Table,
            Some(group_list_table),
            false,
        )
        .unwrap();
        assert_eq!(
            out,
            "Name         Location    Status\n\
             -----------  ----------  ---------\n\
             rg1          eastus      Succeeded\n\
             longer-name  westeurope  Deleting\n"
        );
    }

    #[test]
    fn table_auto_columns_sorted_and_skipped() {
        // id/type skipped, null/object/array skipped, keys sorted and capitalised.
        check(
            groups()[0].clone(),
            OutputFormat::Table,
            false,
            "Location    Name\n----------  ------\neastus      rg1\n",
        );
    }

    #[test]
    fn table_query_order_and_transformer_ignored() {
        let mut m = Map::new();
        m.insert("zeta".into(), json!(1));
        m.insert("alpha".into(), json!(true));
        let out = render(
            &json!([Value::Object(m)]),
            OutputFormat::Table,
            Some(group_list_table),
            true,
        )
        .unwrap();
        assert_eq!(out, "Zeta    Alpha\n------  -------\n1       True\n");
    }

    #[test]
    fn table_missing_cells_and_scalars() {
        check(
            json!([{"a":"x"},{"b":"y"}]),
            OutputFormat::Table,
            false,
            "A    B\n---  ---\nx\n     y\n",
        );
        check(
            json!(["one", "two"]),
            OutputFormat::Table,
            true,
            "Result\n--------\none\ntwo\n",
        );
        check(json!([]), OutputFormat::Table, false, "\n");
        check(
            json!([["a", null]]),
            OutputFormat::Table,
            true,
            "Column1    Column2\n---------  ---------\na\n",
        );
    }

    #[test]
    fn table_without_columns_is_an_error() {
        assert!(render(&json!([{"id":"x"}]), OutputFormat::Table, None, false).is_err());
    }

    #[test]
    fn none_prints_nothing() {
        check(json!({"a":1}), OutputFormat::None, false, "");
    }
}
