//! Command handlers: each takes its parsed arguments and returns an [`Outcome`] for `mod.rs`
//! to query and print.

pub mod account;
pub mod ad;
pub mod disk;
pub mod encryption_set;
pub mod group;
pub mod keyvault;
pub mod login;
pub mod role;
pub mod snapshot;
pub mod vm;
pub mod vmss;

use serde_json::Value;

use super::error::CliResult;
use super::output::Outcome;
use super::{Command, Ctx};

/// Runs one command.
pub async fn run(ctx: &Ctx, command: Command) -> CliResult<Outcome> {
    match command {
        Command::Login(args) => login::login(ctx, args).await,
        Command::Logout => login::logout(ctx),
        Command::Account(cmd) => account::run(ctx, cmd).await,
        Command::Group(cmd) => group::run(ctx, cmd).await,
        Command::Role(cmd) => role::run(ctx, cmd).await,
        Command::Ad(cmd) => ad::run(ctx, cmd).await,
        Command::Keyvault(cmd) => keyvault::run(ctx, cmd).await,
        Command::Disk(cmd) => disk::run(ctx, cmd).await,
        Command::DiskEncryptionSet(cmd) => encryption_set::run(ctx, cmd).await,
        Command::Vm(cmd) => vm::run(ctx, cmd).await,
        Command::Vmss(cmd) => vmss::run(ctx, cmd).await,
        Command::Snapshot(cmd) => snapshot::run_snapshot(ctx, cmd).await,
        Command::Image(cmd) => snapshot::run_image(ctx, cmd).await,
    }
}

/// Adds the keys an az SDK model always prints, as null where the server left them out (the
/// Python models serialize every attribute), so that `--query` and `-o tsv` columns line up
/// with az.
pub fn with_model_keys(mut value: Value, keys: &[&str]) -> Value {
    if let Some(obj) = value.as_object_mut() {
        for k in keys {
            obj.entry((*k).to_owned()).or_insert(Value::Null);
        }
    }
    value
}

/// The resource group named in an ARM id.
pub fn resource_group_of(id: &str) -> Option<String> {
    let mut parts = id.split('/').filter(|s| !s.is_empty());
    while let Some(p) = parts.next() {
        if p.eq_ignore_ascii_case("resourceGroups") {
            return parts.next().map(str::to_owned);
        }
    }
    None
}

/// A Microsoft.Compute resource as az prints it: `properties` flattened into the resource,
/// plus `resourceGroup` from the id.
pub fn flattened(wire: Value) -> Value {
    let Value::Object(mut obj) = wire else {
        return wire;
    };
    if let Some(Value::Object(props)) = obj.remove("properties") {
        for (k, v) in props {
            obj.entry(k).or_insert(v);
        }
    }
    if let Some(group) = obj
        .get("id")
        .and_then(Value::as_str)
        .and_then(resource_group_of)
    {
        obj.entry("resourceGroup").or_insert(Value::String(group));
    }
    Value::Object(obj)
}

/// `word` with its first letter upper-case and the rest lower-case, as Azure spells enum
/// values (`read` → `Read`).
pub fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(c) => c.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn model_keys_are_added_as_null_only_when_missing() {
        let v = with_model_keys(
            json!({"name":"a","tags":{"x":"y"}}),
            &["name", "tags", "managedBy"],
        );
        assert_eq!(v, json!({"name":"a","tags":{"x":"y"},"managedBy":null}));
        assert_eq!(with_model_keys(json!(null), &["a"]), json!(null));
    }
}
