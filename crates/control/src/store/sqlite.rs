//! The embedded SQLite store: WAL journal, `synchronous=FULL` (a change is on disk before the
//! call returns), schema versioned with `PRAGMA user_version` and forward-only migrations.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, Row, params};
use uuid::Uuid;

use super::*;

/// Migration `i` moves the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE applications (
    object_id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE principals (
    object_id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    kind TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE credentials (
    key_id TEXT PRIMARY KEY,
    app_object_id TEXT NOT NULL REFERENCES applications(object_id) ON DELETE CASCADE,
    secret_hash TEXT NOT NULL,
    display_name TEXT,
    start_time INTEGER NOT NULL,
    end_time INTEGER NOT NULL
);
CREATE INDEX credentials_by_app ON credentials(app_object_id);
CREATE TABLE resources (
    id_lower TEXT PRIMARY KEY,
    id TEXT NOT NULL,
    type_lower TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX resources_by_type ON resources(type_lower);
CREATE TABLE operations (id TEXT PRIMARY KEY, body TEXT NOT NULL);
"#,
    r#"
CREATE TABLE key_versions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    vault TEXT NOT NULL,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    body TEXT NOT NULL,
    sealed BLOB NOT NULL,
    UNIQUE (vault, name, version)
);
CREATE INDEX key_versions_by_key ON key_versions(vault, name);
CREATE TABLE deleted_keys (
    vault TEXT NOT NULL,
    name TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (vault, name)
);
CREATE TABLE key_rotation_policies (
    vault TEXT NOT NULL,
    name TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (vault, name)
);
"#,
];

/// SQLite-backed [`Store`].
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it to the current schema.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        // Created owner-only; SQLite gives its -wal and -shm files the same mode.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(StoreError::Create)?;
        Self::with_connection(Connection::open(path)?)
    }

    /// A private in-memory database, for tests.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::with_connection(Connection::open_in_memory()?)
    }

    fn with_connection(mut conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite itself consistent (every change is one
        // transaction), so a poisoned lock is safe to keep using.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

fn parse_uuid(s: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(s).map_err(|_| StoreError::Corrupt(format!("bad uuid {s:?}")))
}

fn first<T>(rows: Vec<T>) -> Result<Option<T>, StoreError> {
    Ok(rows.into_iter().next())
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn unique_violation(e: rusqlite::Error, what: String) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Duplicate(what)
        }
        e => e.into(),
    }
}

type RawApp = (String, String, String, i64);

fn raw_app(row: &Row<'_>) -> rusqlite::Result<RawApp> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
}

fn app(raw: RawApp) -> Result<ApplicationRecord, StoreError> {
    Ok(ApplicationRecord {
        object_id: ObjectId(parse_uuid(&raw.0)?),
        app_id: AppId(parse_uuid(&raw.1)?),
        display_name: raw.2,
        created: raw.3,
    })
}

type RawPrincipal = (String, String, String, String, i64);

fn raw_principal(row: &Row<'_>) -> rusqlite::Result<RawPrincipal> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

fn principal(raw: RawPrincipal) -> Result<PrincipalRecord, StoreError> {
    Ok(PrincipalRecord {
        object_id: ObjectId(parse_uuid(&raw.0)?),
        app_id: AppId(parse_uuid(&raw.1)?),
        display_name: raw.2,
        kind: serde_json::from_str(&raw.3).map_err(corrupt)?,
        created: raw.4,
    })
}

fn resource(id: String, type_lower: String, body: String) -> Result<ResourceRecord, StoreError> {
    let body: serde_json::Value = serde_json::from_str(&body).map_err(corrupt)?;
    let resource_type = body
        .get("type")
        .and_then(|t| t.as_str())
        .map(str::to_string)
        .unwrap_or(type_lower);
    Ok(ResourceRecord {
        id,
        resource_type,
        body,
    })
}

/// `LIKE` pattern for everything strictly below `scope`.
fn below(scope: &str) -> String {
    let escaped = scope
        .trim_end_matches('/')
        .to_ascii_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("{escaped}/%")
}

const APP_COLUMNS: &str = "object_id, app_id, display_name, created";
const PRINCIPAL_COLUMNS: &str = "object_id, app_id, display_name, kind, created";

impl Store for SqliteStore {
    fn generation(&self) -> Result<Generation, StoreError> {
        let conn = self.conn();
        // Both counters are read under the connection lock, which every write holds until
        // its transaction has ended: a generation never shows a write half done.
        let others = conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?;
        Ok(Generation {
            own_changes: conn.total_changes(),
            others,
        })
    }

    fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO settings(key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [key, value],
        )?;
        Ok(())
    }

    fn insert_application(&self, a: &ApplicationRecord) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO applications(object_id, app_id, display_name, created)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    a.object_id.to_string(),
                    a.app_id.to_string(),
                    a.display_name,
                    a.created
                ],
            )
            .map_err(|e| unique_violation(e, format!("application {}", a.app_id)))?;
        Ok(())
    }

    fn application(&self, object_id: ObjectId) -> Result<Option<ApplicationRecord>, StoreError> {
        let sql = format!("SELECT {APP_COLUMNS} FROM applications WHERE object_id = ?1");
        first(self.query(&sql, [object_id.to_string()], raw_app, app)?)
    }

    fn application_by_app_id(
        &self,
        app_id: AppId,
    ) -> Result<Option<ApplicationRecord>, StoreError> {
        let sql = format!("SELECT {APP_COLUMNS} FROM applications WHERE app_id = ?1");
        first(self.query(&sql, [app_id.to_string()], raw_app, app)?)
    }

    fn applications(&self) -> Result<Vec<ApplicationRecord>, StoreError> {
        let sql = format!("SELECT {APP_COLUMNS} FROM applications ORDER BY created, object_id");
        self.query(&sql, [], raw_app, app)
    }

    fn delete_application(&self, object_id: ObjectId) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "DELETE FROM applications WHERE object_id = ?1",
            [object_id.to_string()],
        )?;
        Ok(n > 0)
    }

    fn insert_principal(&self, p: &PrincipalRecord) -> Result<(), StoreError> {
        let kind = serde_json::to_string(&p.kind).map_err(corrupt)?;
        self.conn()
            .execute(
                "INSERT INTO principals(object_id, app_id, display_name, kind, created)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    p.object_id.to_string(),
                    p.app_id.to_string(),
                    p.display_name,
                    kind,
                    p.created
                ],
            )
            .map_err(|e| unique_violation(e, format!("service principal for app {}", p.app_id)))?;
        Ok(())
    }

    fn principal(&self, object_id: ObjectId) -> Result<Option<PrincipalRecord>, StoreError> {
        let sql = format!("SELECT {PRINCIPAL_COLUMNS} FROM principals WHERE object_id = ?1");
        first(self.query(&sql, [object_id.to_string()], raw_principal, principal)?)
    }

    fn principal_by_app_id(&self, app_id: AppId) -> Result<Option<PrincipalRecord>, StoreError> {
        let sql = format!("SELECT {PRINCIPAL_COLUMNS} FROM principals WHERE app_id = ?1");
        first(self.query(&sql, [app_id.to_string()], raw_principal, principal)?)
    }

    fn principals(&self) -> Result<Vec<PrincipalRecord>, StoreError> {
        let sql = format!("SELECT {PRINCIPAL_COLUMNS} FROM principals ORDER BY created, object_id");
        self.query(&sql, [], raw_principal, principal)
    }

    fn delete_principal(&self, object_id: ObjectId) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "DELETE FROM principals WHERE object_id = ?1",
            [object_id.to_string()],
        )?;
        Ok(n > 0)
    }

    fn insert_credential(&self, c: &CredentialRecord) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO credentials(key_id, app_object_id, secret_hash, display_name, start_time, end_time)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                c.key_id.to_string(),
                c.app_object_id.to_string(),
                c.secret_hash,
                c.display_name,
                c.start,
                c.end
            ],
        )?;
        Ok(())
    }

    fn credentials(&self, app_object_id: ObjectId) -> Result<Vec<CredentialRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT key_id, app_object_id, secret_hash, display_name, start_time, end_time
             FROM credentials WHERE app_object_id = ?1 ORDER BY start_time",
        )?;
        let raws = stmt
            .query_map([app_object_id.to_string()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        raws.into_iter()
            .map(|(key_id, app, secret_hash, display_name, start, end)| {
                Ok(CredentialRecord {
                    key_id: parse_uuid(&key_id)?,
                    app_object_id: ObjectId(parse_uuid(&app)?),
                    secret_hash,
                    display_name,
                    start,
                    end,
                })
            })
            .collect()
    }

    fn delete_credential(&self, key_id: Uuid) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "DELETE FROM credentials WHERE key_id = ?1",
            [key_id.to_string()],
        )?;
        Ok(n > 0)
    }

    fn put_resource(&self, r: &ResourceRecord) -> Result<(), StoreError> {
        let body = serde_json::to_string(&r.body).map_err(corrupt)?;
        self.conn().execute(
            "INSERT INTO resources(id_lower, id, type_lower, body) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(id_lower) DO UPDATE SET type_lower = excluded.type_lower, body = excluded.body",
            params![r.id.to_ascii_lowercase(), r.id, r.resource_type.to_ascii_lowercase(), body],
        )?;
        Ok(())
    }

    fn resource(&self, id: &str) -> Result<Option<ResourceRecord>, StoreError> {
        let raw = self
            .conn()
            .query_row(
                "SELECT id, type_lower, body FROM resources WHERE id_lower = ?1",
                [id.trim_end_matches('/').to_ascii_lowercase()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        raw.map(|(id, t, body)| resource(id, t, body)).transpose()
    }

    fn resources(&self, query: &ResourceQuery<'_>) -> Result<Vec<ResourceRecord>, StoreError> {
        let conn = self.conn();
        // With a type, the type index narrows the rows first (a `?1 IS NULL OR` test would
        // keep SQLite from using it, and every lookup would scan every resource).
        let mut stmt = conn.prepare_cached(if query.resource_type.is_some() {
            "SELECT id, type_lower, body FROM resources INDEXED BY resources_by_type
             WHERE type_lower = ?1
               AND (?2 IS NULL OR id_lower = ?2 OR id_lower LIKE ?3 ESCAPE '\\')
             ORDER BY id_lower"
        } else {
            "SELECT id, type_lower, body FROM resources
             WHERE ?1 IS NULL
               AND (?2 IS NULL OR id_lower = ?2 OR id_lower LIKE ?3 ESCAPE '\\')
             ORDER BY id_lower"
        })?;
        let type_lower = query.resource_type.map(str::to_ascii_lowercase);
        let scope = query
            .scope
            .map(|s| s.trim_end_matches('/').to_ascii_lowercase());
        let pattern = query.scope.map(below);
        let raws = stmt
            .query_map(params![type_lower, scope, pattern], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<Result<Vec<(String, String, String)>, _>>()?;
        raws.into_iter()
            .map(|(id, t, body)| resource(id, t, body))
            .collect()
    }

    fn delete_resource(&self, id: &str) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "DELETE FROM resources WHERE id_lower = ?1",
            [id.trim_end_matches('/').to_ascii_lowercase()],
        )?;
        Ok(n > 0)
    }

    fn delete_resources_under(&self, scope: &str) -> Result<usize, StoreError> {
        let n = self.conn().execute(
            "DELETE FROM resources WHERE id_lower = ?1 OR id_lower LIKE ?2 ESCAPE '\\'",
            params![
                scope.trim_end_matches('/').to_ascii_lowercase(),
                below(scope)
            ],
        )?;
        Ok(n)
    }

    fn put_operation(&self, op: &OperationRecord) -> Result<(), StoreError> {
        let body = serde_json::to_string(&op.body).map_err(corrupt)?;
        self.conn().execute(
            "INSERT INTO operations(id, body) VALUES (?1, ?2)
             ON CONFLICT(id) DO UPDATE SET body = excluded.body",
            params![op.id, body],
        )?;
        Ok(())
    }

    fn operation(&self, id: &str) -> Result<Option<OperationRecord>, StoreError> {
        let body: Option<String> = self
            .conn()
            .query_row("SELECT body FROM operations WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        body.map(|b| {
            Ok(OperationRecord {
                id: id.to_string(),
                body: serde_json::from_str(&b).map_err(corrupt)?,
            })
        })
        .transpose()
    }
    fn insert_key_version(&self, k: &KeyVersionRecord) -> Result<(), StoreError> {
        let body = serde_json::to_string(&k.body).map_err(corrupt)?;
        self.conn()
            .execute(
                "INSERT INTO key_versions(vault, name, version, body, sealed) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![lower(&k.vault), lower(&k.name), k.version, body, k.sealed],
            )
            .map_err(|e| unique_violation(e, format!("key version {}/{}", k.name, k.version)))?;
        Ok(())
    }

    fn update_key_version(
        &self,
        vault: &str,
        name: &str,
        version: &str,
        body: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        let body = serde_json::to_string(body).map_err(corrupt)?;
        let n = self.conn().execute(
            "UPDATE key_versions SET body = ?4 WHERE vault = ?1 AND name = ?2 AND version = ?3",
            params![lower(vault), lower(name), version, body],
        )?;
        Ok(n > 0)
    }

    fn key_version(
        &self,
        vault: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<KeyVersionRecord>, StoreError> {
        let v = self.keys_where(
            "vault = ?1 AND name = ?2 AND version = ?3",
            &[&lower(vault), &lower(name), version],
        )?;
        Ok(v.into_iter().next())
    }

    fn latest_key_version(
        &self,
        vault: &str,
        name: &str,
    ) -> Result<Option<KeyVersionRecord>, StoreError> {
        let v = self.keys_where(
            "vault = ?1 AND name = ?2 ORDER BY seq DESC LIMIT 1",
            &[&lower(vault), &lower(name)],
        )?;
        Ok(v.into_iter().next())
    }

    fn key_versions(&self, vault: &str, name: &str) -> Result<Vec<KeyVersionRecord>, StoreError> {
        self.keys_where(
            "vault = ?1 AND name = ?2 ORDER BY seq",
            &[&lower(vault), &lower(name)],
        )
    }

    fn latest_key_versions(&self, vault: &str) -> Result<Vec<KeyVersionRecord>, StoreError> {
        self.keys_where(
            "seq IN (SELECT MAX(seq) FROM key_versions WHERE vault = ?1 GROUP BY name) ORDER BY name",
            &[&lower(vault)],
        )
    }

    fn put_deleted_key(
        &self,
        vault: &str,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.put_key_document("deleted_keys", vault, name, body)
    }

    fn deleted_key(
        &self,
        vault: &str,
        name: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        self.key_document("deleted_keys", vault, name)
    }

    fn deleted_keys(&self, vault: &str) -> Result<Vec<serde_json::Value>, StoreError> {
        self.json_rows(
            "SELECT body FROM deleted_keys WHERE vault = ?1 ORDER BY name",
            &[&lower(vault)],
        )
    }

    fn remove_deleted_key(&self, vault: &str, name: &str) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "DELETE FROM deleted_keys WHERE vault = ?1 AND name = ?2",
            params![lower(vault), lower(name)],
        )?;
        Ok(n > 0)
    }

    fn purge_key(&self, vault: &str, name: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for table in ["key_versions", "deleted_keys", "key_rotation_policies"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE vault = ?1 AND name = ?2"),
                params![lower(vault), lower(name)],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn put_rotation_policy(
        &self,
        vault: &str,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.put_key_document("key_rotation_policies", vault, name, body)
    }

    fn rotation_policy(
        &self,
        vault: &str,
        name: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        self.key_document("key_rotation_policies", vault, name)
    }

    fn rotation_policies(&self) -> Result<Vec<(String, String, serde_json::Value)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT vault, name, body FROM key_rotation_policies ORDER BY vault, name")?;
        let raws = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        raws.into_iter()
            .map(|(v, n, b)| Ok((v, n, serde_json::from_str(&b).map_err(corrupt)?)))
            .collect()
    }
}

fn key_record(row: &Row<'_>) -> rusqlite::Result<(String, String, String, String, Vec<u8>)> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

fn key(raw: (String, String, String, String, Vec<u8>)) -> Result<KeyVersionRecord, StoreError> {
    Ok(KeyVersionRecord {
        vault: raw.0,
        name: raw.1,
        version: raw.2,
        body: serde_json::from_str(&raw.3).map_err(corrupt)?,
        sealed: raw.4,
    })
}

const KEY_COLUMNS: &str = "vault, name, version, body, sealed";

fn lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

impl SqliteStore {
    fn keys_where(&self, clause: &str, args: &[&str]) -> Result<Vec<KeyVersionRecord>, StoreError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM key_versions WHERE {clause}");
        self.query(
            &sql,
            rusqlite::params_from_iter(args.iter()),
            key_record,
            key,
        )
    }

    /// Upserts the JSON document of key `name` in `table` (a `(vault, name, body)` table).
    fn put_key_document(
        &self,
        table: &str,
        vault: &str,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_string(body).map_err(corrupt)?;
        self.conn().execute(
            &format!(
                "INSERT INTO {table}(vault, name, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT(vault, name) DO UPDATE SET body = excluded.body"
            ),
            params![lower(vault), lower(name), body],
        )?;
        Ok(())
    }

    /// The JSON document of key `name` in `table`.
    fn key_document(
        &self,
        table: &str,
        vault: &str,
        name: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let sql = format!("SELECT body FROM {table} WHERE vault = ?1 AND name = ?2");
        first(self.json_rows(&sql, &[&lower(vault), &lower(name)])?)
    }

    /// Runs `sql` and converts every row: `read` takes the columns out of the row, `convert`
    /// checks and types them.
    fn query<R, T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        read: fn(&Row<'_>) -> rusqlite::Result<R>,
        convert: fn(R) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(sql)?;
        let raws = stmt
            .query_map(params, read)?
            .collect::<Result<Vec<_>, _>>()?;
        raws.into_iter().map(convert).collect()
    }

    fn json_rows(&self, sql: &str, args: &[&str]) -> Result<Vec<serde_json::Value>, StoreError> {
        let read = |r: &Row<'_>| r.get::<_, String>(0);
        let parse = |b: String| serde_json::from_str(&b).map_err(corrupt);
        self.query(sql, rusqlite::params_from_iter(args.iter()), read, parse)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rg(id: &str) -> ResourceRecord {
        ResourceRecord {
            id: id.into(),
            resource_type: "Microsoft.Resources/resourceGroups".into(),
            body: json!({"id": id, "type": "Microsoft.Resources/resourceGroups"}),
        }
    }

    #[test]
    fn resources_are_case_insensitive_and_scoped() {
        let store = SqliteStore::open_in_memory().unwrap();
        store
            .put_resource(&rg("/subscriptions/s/resourceGroups/A_b"))
            .unwrap();
        store
            .put_resource(&rg("/subscriptions/s/resourceGroups/A_bc"))
            .unwrap();
        store
            .put_resource(&rg("/subscriptions/s/resourceGroups/AxB"))
            .unwrap();
        let got = store
            .resource("/SUBSCRIPTIONS/s/resourcegroups/a_b")
            .unwrap()
            .unwrap();
        assert_eq!(got.id, "/subscriptions/s/resourceGroups/A_b");
        let under = store
            .resources(&ResourceQuery {
                scope: Some("/subscriptions/s/resourceGroups/a_b"),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            under.len(),
            1,
            "'_' in a scope is not a wildcard and siblings are not children"
        );
        assert_eq!(store.delete_resources_under("/subscriptions/S").unwrap(), 3);
        assert!(
            store
                .resources(&ResourceQuery::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn reopen_keeps_data_and_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        {
            let store = SqliteStore::open(&path).unwrap();
            store.set_setting("tenant", "t").unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.setting("tenant").unwrap().as_deref(), Some("t"));
        let version: i64 = store
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn the_generation_moves_with_every_change_by_anyone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let store = SqliteStore::open(&path).unwrap();
        let first = store.generation().unwrap();
        store.setting("tenant").unwrap();
        assert_eq!(store.generation().unwrap(), first, "a read changes nothing");
        store.set_setting("tenant", "t").unwrap();
        let second = store.generation().unwrap();
        assert_ne!(second, first);
        // A write that matches no row changes nothing either.
        assert!(!store.delete_resource("/nothing").unwrap());
        assert_eq!(store.generation().unwrap(), second);
        // Another connection's commit.
        let other = Connection::open(&path).unwrap();
        other
            .execute("UPDATE settings SET value = 'u' WHERE key = 'tenant'", [])
            .unwrap();
        assert_ne!(store.generation().unwrap(), second);
    }

    #[test]
    fn key_versions_latest_deleted_and_purge() {
        let store = SqliteStore::open_in_memory().unwrap();
        let rec = |name: &str, version: &str| KeyVersionRecord {
            vault: "KV".into(),
            name: name.into(),
            version: version.into(),
            body: json!({"v": version}),
            sealed: vec![1, 2, 3],
        };
        store.insert_key_version(&rec("K", "b")).unwrap();
        store.insert_key_version(&rec("k", "a")).unwrap();
        store.insert_key_version(&rec("other", "c")).unwrap();
        assert!(matches!(
            store.insert_key_version(&rec("k", "a")),
            Err(StoreError::Duplicate(_))
        ));
        assert_eq!(
            store
                .latest_key_version("kv", "K")
                .unwrap()
                .unwrap()
                .version,
            "a"
        );
        assert_eq!(store.key_versions("kv", "k").unwrap().len(), 2);
        assert_eq!(store.latest_key_versions("kv").unwrap().len(), 2);
        assert!(
            store
                .update_key_version("kv", "k", "b", &json!({"x": 1}))
                .unwrap()
        );
        assert_eq!(
            store.key_version("kv", "k", "b").unwrap().unwrap().body,
            json!({"x": 1})
        );
        store
            .put_deleted_key("kv", "k", &json!({"deleted": true}))
            .unwrap();
        store
            .put_rotation_policy("kv", "k", &json!({"p": 1}))
            .unwrap();
        assert_eq!(store.deleted_keys("kv").unwrap().len(), 1);
        store.purge_key("kv", "k").unwrap();
        assert!(store.key_versions("kv", "k").unwrap().is_empty());
        assert!(store.deleted_key("kv", "k").unwrap().is_none());
        assert!(store.rotation_policy("kv", "k").unwrap().is_none());
        assert_eq!(store.latest_key_versions("kv").unwrap().len(), 1);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        assert!(matches!(
            SqliteStore::open(&path),
            Err(StoreError::SchemaTooNew { .. })
        ));
    }
}
