//! `--query`: JMESPath over the command result, keeping az's key order.
//!
//! The `jmespath` crate stores objects in a `BTreeMap`, so every object comes back with sorted
//! keys. Python's jmespath (which az uses) keeps the order written in a multi-select hash
//! (`{Name:name, Loc:location}`), and that order shows in `-o table` and `-o tsv`. We get it back
//! by collecting the key lists of every multi-select hash in the expression and re-ordering any
//! result object whose key set is exactly one of them; other objects stay sorted, which is what
//! az does for them in tsv.

use std::fmt;

use jmespath::ast::Ast;
use serde_json::{Map, Value};

/// A compiled `--query` expression.
pub struct Query {
    expression: jmespath::Expression<'static>,
    hash_key_orders: Vec<Vec<String>>,
}

impl fmt::Debug for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Query")
            .field(&self.expression.as_str())
            .finish()
    }
}

impl Query {
    /// Compiles an expression; the error text is jmespath's.
    pub fn parse(text: &str) -> Result<Self, String> {
        let expression = jmespath::compile(text).map_err(|e| e.to_string())?;
        let mut hash_key_orders = Vec::new();
        collect_hash_orders(expression.as_ast(), &mut hash_key_orders);
        Ok(Query {
            expression,
            hash_key_orders,
        })
    }

    /// Applies the expression to a result.
    pub fn apply(&self, data: &Value) -> Result<Value, String> {
        let found = self
            .expression
            .search(data.clone())
            .map_err(|e| e.to_string())?;
        self.to_value(&found)
    }

    fn to_value(&self, var: &jmespath::Variable) -> Result<Value, String> {
        use jmespath::Variable;
        Ok(match var {
            Variable::Null => Value::Null,
            Variable::Bool(b) => Value::Bool(*b),
            Variable::Number(n) => Value::Number(n.clone()),
            Variable::String(s) => Value::String(s.clone()),
            Variable::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| self.to_value(i))
                    .collect::<Result<_, _>>()?,
            ),
            Variable::Object(map) => {
                let order = self.hash_key_orders.iter().find(|keys| {
                    keys.len() == map.len() && keys.iter().all(|k| map.contains_key(k))
                });
                let mut out = Map::new();
                match order {
                    Some(keys) => {
                        for k in keys {
                            out.insert(k.clone(), self.to_value(&map[k])?);
                        }
                    }
                    None => {
                        for (k, v) in map {
                            out.insert(k.clone(), self.to_value(v)?);
                        }
                    }
                }
                Value::Object(out)
            }
            Variable::Expref(_) => {
                return Err("the query result is an expression reference".to_owned());
            }
        })
    }
}

fn collect_hash_orders(ast: &Ast, out: &mut Vec<Vec<String>>) {
    let mut walk = |a: &Ast| collect_hash_orders(a, out);
    match ast {
        Ast::MultiHash { elements, .. } => {
            let keys: Vec<String> = elements.iter().map(|kv| kv.key.clone()).collect();
            for kv in elements {
                walk(&kv.value);
            }
            out.push(keys);
        }
        Ast::Comparison { lhs, rhs, .. }
        | Ast::Projection { lhs, rhs, .. }
        | Ast::And { lhs, rhs, .. }
        | Ast::Or { lhs, rhs, .. }
        | Ast::Subexpr { lhs, rhs, .. } => {
            walk(lhs);
            walk(rhs);
        }
        Ast::Condition {
            predicate, then, ..
        } => {
            walk(predicate);
            walk(then);
        }
        Ast::Expref { ast, .. } => walk(ast),
        Ast::Flatten { node, .. } | Ast::Not { node, .. } | Ast::ObjectValues { node, .. } => {
            walk(node)
        }
        Ast::Function { args, .. } => args.iter().for_each(walk),
        Ast::MultiList { elements, .. } => elements.iter().for_each(walk),
        Ast::Identity { .. }
        | Ast::Field { .. }
        | Ast::Index { .. }
        | Ast::Literal { .. }
        | Ast::Slice { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(q: &str, data: Value) -> Value {
        Query::parse(q).unwrap().apply(&data).unwrap()
    }

    #[test]
    fn field_and_projection() {
        let data = json!([{"name":"a","location":"x"},{"name":"b","location":"y"}]);
        assert_eq!(run("[].name", data.clone()), json!(["a", "b"]));
        assert_eq!(run("[?name=='b'].location | [0]", data), json!("y"));
    }

    #[test]
    fn multiselect_hash_keeps_written_order() {
        let data = json!([{"name":"a","location":"x"}]);
        let out = run("[].{Name:name, Loc:location}", data);
        let keys: Vec<&String> = out[0].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["Name", "Loc"]);
    }

    #[test]
    fn nested_hash_orders_are_found() {
        let data = json!({"a":{"z":1,"y":2}});
        let out = run("{outer: {z2: a.z, a1: a.y}}", data);
        let inner: Vec<&String> = out["outer"].as_object().unwrap().keys().collect();
        assert_eq!(inner, ["z2", "a1"]);
    }

    #[test]
    fn passthrough_objects_come_back_sorted() {
        let data = json!({"b":1,"a":2});
        let out = run("@", data);
        let keys: Vec<&String> = out.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["a", "b"]);
    }

    #[test]
    fn missing_field_is_null() {
        assert_eq!(run("nope", json!({"a":1})), Value::Null);
    }

    #[test]
    fn bad_expression_is_rejected() {
        assert!(Query::parse("[?name==").is_err());
    }

    #[test]
    fn numbers_survive() {
        assert_eq!(run("length(@)", json!([1, 2, 3])), json!(3));
        assert_eq!(run("a", json!({"a": 1.5})), json!(1.5));
    }
}
