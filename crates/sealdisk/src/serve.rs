//! `sealdisk serve`: opens (or creates) a deployment in the data directory and serves it.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use api::{AppState, Endpoints};
use control::ControlPlane;
use control::identity::TokenIssuer;
use control::store::SqliteStore;
use crypto::pki::TlsFiles;
use serde::{Deserialize, Serialize};

/// Options of `sealdisk serve`. Every one has a default: nothing needs configuring.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Directory holding all state: metadata database, keys, TLS files, connection file.
    #[arg(long, env = "SEALDISK_DATA_DIR", default_value = "./sealdisk-data")]
    data_dir: PathBuf,
    /// HTTPS address. `localhost` binds 127.0.0.1 and ::1; port 0 picks a free port.
    #[arg(long, default_value = "localhost:8443")]
    listen: String,
    /// NBD address for disk exports. `localhost` binds 127.0.0.1 and ::1; port 0 picks a free
    /// port.
    #[arg(long, default_value = "localhost:10809")]
    nbd_listen: String,
    /// TLS on the NBD endpoint: `on` (TLS-only, the default) or `off` (benchmarks only).
    #[arg(long, default_value = "on")]
    nbd_tls: NbdTls,
    /// Host name clients use; vaults are `NAME.vault.DOMAIN`.
    #[arg(long, default_value = "localhost")]
    domain: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum NbdTls {
    On,
    Off,
}

/// `DIR/connection.json`: everything a client needs to log in.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionFile {
    pub endpoint: String,
    pub tenant_id: String,
    pub subscription_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub ca_cert_file: PathBuf,
    pub key_vault_dns_suffix: String,
    pub nbd_endpoint: String,
}

pub fn main(args: ServeArgs) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ERROR: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ERROR: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: ServeArgs) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&args.data_dir)
        .with_context(|| format!("creating data directory {}", args.data_dir.display()))?;
    let dir = args
        .data_dir
        .canonicalize()
        .context("resolving the data directory")?;
    let connection_path = dir.join("connection.json");

    let store = Arc::new(SqliteStore::open(&dir.join("sealdisk.db")).context("opening metadata")?);
    let previous: Option<ConnectionFile> = fs::read(&connection_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let keys = dir.join("keys");
    let root = crypto::RootKey::load_or_create(&keys.join("platform-root.key"))
        .context("loading the platform root key")?;
    let root = Arc::new(root);
    let (control, bootstrap) = ControlPlane::open(
        store,
        root.clone(),
        previous.as_ref().map(|c| c.client_secret.as_str()),
    )
    .context("opening the deployment")?;
    let signing_key = crypto::TokenSigningKey::load_or_create(&keys.join("token-signing.pk8"))
        .context("loading the token signing key")?;

    let (listeners, port) = api::server::bind(&args.listen).await?;
    let (nbd_listeners, nbd_port) = api::server::bind(&args.nbd_listen)
        .await
        .with_context(|| format!("binding the NBD address {}", args.nbd_listen))?;
    let scheme = match args.nbd_tls {
        NbdTls::On => "nbds",
        NbdTls::Off => "nbd",
    };
    let nbd_endpoint = format!("{scheme}://{}:{nbd_port}", args.domain);
    let audit = Arc::new(
        keyvault::audit::AuditLog::open(&dir.join("audit/keyvault.log"), &root)
            .context("opening the Key Vault audit log")?,
    );
    let volumes = control::volumes::Volumes::in_dir(dir.join("disks"), root.clone())
        .context("opening the disk volume directory")?;
    let control = control
        .with_data_plane(control::disks::DataPlane::new(
            volumes,
            Some(nbd_endpoint.clone()),
            Some(audit.clone()),
        ))
        .context("loading disk access grants")?;

    let tls_dir = dir.join("tls");
    let mut names = vec![
        args.domain.clone(),
        "localhost".to_string(),
        "*.vault.localhost".to_string(),
        format!("*.vault.{}", args.domain),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    names.dedup();
    names.sort();
    names.dedup();
    let tls_files = TlsFiles::in_dir(&tls_dir);
    let identity = crypto::pki::load_or_create(&tls_files, &names).context("setting up TLS")?;
    write_ca_bundle(&tls_dir, &identity.ca_cert_pem)?;
    let tls = api::server::tls_config(&identity.cert_chain_pem, &identity.key_pem)?;

    let endpoints = Endpoints {
        domain: args.domain.clone(),
        port,
    };
    let tokens = TokenIssuer::new(
        &signing_key,
        endpoints.issuer(control.tenant()),
        control.tenant(),
        endpoints.audiences(),
    )
    .context("loading the token signing key into the JWT encoder")?;

    let connection = ConnectionFile {
        endpoint: endpoints.arm(),
        tenant_id: control.tenant().to_string(),
        subscription_id: control.subscription().to_string(),
        client_id: bootstrap.client_id.to_string(),
        client_secret: bootstrap.client_secret.to_string(),
        ca_cert_file: tls_files.ca_cert.clone(),
        key_vault_dns_suffix: endpoints.vault_suffix(),
        nbd_endpoint,
    };
    crypto::files::write_atomic(
        &connection_path,
        &serde_json::to_vec_pretty(&connection)?,
        true,
    )?;
    print_summary(&dir, &connection);

    let state = Arc::new(AppState {
        control,
        tokens,
        endpoints,
        audit,
    });
    let nbd_config = match args.nbd_tls {
        NbdTls::On => {
            let mut config = (*tls).clone();
            config.alpn_protocols.clear();
            nbd::ServerConfig::tls(Arc::new(config))
        }
        NbdTls::Off => nbd::ServerConfig::plain(),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let catalog: Arc<dyn nbd::ExportCatalog> =
        Arc::new(crate::exports::Grants(state.control.clone()));
    for listener in nbd_listeners {
        tokio::spawn(nbd::serve(
            listener,
            nbd_config.clone(),
            catalog.clone(),
            stop.clone(),
        ));
    }
    tokio::spawn(rotation_scheduler(state.clone()));
    match state.control.finish_rotations() {
        Ok(0) => {}
        Ok(n) => tracing::info!(volumes = n, "finished interrupted key rotations"),
        Err(e) => tracing::error!(error = %e, "finishing interrupted key rotations failed"),
    }
    match state.control.resume_reencryptions() {
        Ok(0) => {}
        Ok(n) => tracing::info!(disks = n, "resumed interrupted re-encryptions"),
        Err(e) => tracing::error!(error = %e, "resuming re-encryptions failed"),
    }
    match state.control.resume_running_vms() {
        Ok(failed) => {
            for (vm, error) in failed {
                tracing::warn!(vm, error, "a running VM could not resume; it is stopped");
            }
        }
        Err(e) => tracing::error!(error = %e, "resuming running VMs failed"),
    }
    tokio::spawn(disk_watch(state.clone()));
    api::server::serve(listeners, tls, api::router(state), shutdown_signal()).await;
    stop.cancel();
    tracing::info!("sealdisk stopped");
    Ok(())
}

/// How often disk access is re-checked: expired grants, and customer keys that were disabled,
/// deleted, expired or de-authorized (their disks are cut off within this period).
const DISK_WATCH: std::time::Duration = std::time::Duration::from_millis(250);
/// Disk encryption sets with automatic rotation look for new key versions every this many
/// watch periods (2 s).
const SET_ROTATION_EVERY: u32 = 8;

/// Ends expired grants, cuts off disks whose customer key became unusable, and moves disk
/// encryption sets with automatic rotation to their key's newest version.
async fn disk_watch(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(DISK_WATCH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round: u32 = 0;
    loop {
        tick.tick().await;
        round = round.wrapping_add(1);
        let control = state.control.clone();
        let rotate = round.is_multiple_of(SET_ROTATION_EVERY);
        let result = tokio::task::spawn_blocking(move || {
            let expired = control.expire_disk_grants()?;
            let cut = control.enforce_key_revocations()?;
            let rotated = if rotate {
                control.rotate_sets_to_latest_keys()?
            } else {
                Vec::new()
            };
            Ok::<_, control::ControlError>((expired, cut, rotated))
        })
        .await;
        match result {
            Ok(Ok((expired, cut, rotated))) => {
                if expired > 0 {
                    tracing::info!(grants = expired, "disk access grants expired");
                }
                for (disk, reason) in cut {
                    tracing::warn!(
                        disk,
                        reason,
                        "disk cut off: its customer key cannot be used"
                    );
                }
                for set in rotated {
                    tracing::info!(set, "disk encryption set moved to its key's newest version");
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "disk watch failed"),
            Err(e) => tracing::error!(error = %e, "disk watch task failed"),
        }
    }
}

/// How often due key rotations (rotation policies) are looked for.
const ROTATION_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Performs the rotations that key rotation policies make due, each audited as the system.
async fn rotation_scheduler(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(ROTATION_CHECK);
    loop {
        tick.tick().await;
        let suffix = state.endpoints.vault_suffix();
        let result = state
            .control
            .run_due_rotations(|vault| format!("https://{vault}.{suffix}"));
        match result {
            Ok(done) => {
                for (vault, key, version) in done {
                    tracing::info!(vault, key, version, "rotated key by policy");
                    let record = keyvault::audit::AuditRecord {
                        caller_object_id: keyvault::audit::SYSTEM_CALLER.to_string(),
                        vault,
                        key: Some(key),
                        version: Some(version),
                        operation: "KeyRotateByPolicy".into(),
                        result: "Success".into(),
                        detail: None,
                    };
                    if let Err(e) = state.audit.append(record) {
                        tracing::error!(error = %e, "audit log append failed for a policy rotation");
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "key rotation scheduler failed"),
        }
    }
}

/// `tls/ca-bundle.pem`: the system trust store plus the deployment CA, for `REQUESTS_CA_BUNDLE`.
fn write_ca_bundle(tls_dir: &Path, ca_pem: &str) -> Result<()> {
    let system = fs::read_to_string("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
    let bundle = format!("{system}\n{ca_pem}");
    crypto::files::write_atomic(&tls_dir.join("ca-bundle.pem"), bundle.as_bytes(), false)?;
    fs::set_permissions(
        tls_dir.join("ca-bundle.pem"),
        fs::Permissions::from_mode(0o644),
    )?;
    Ok(())
}

fn print_summary(dir: &Path, c: &ConnectionFile) {
    let endpoint = &c.endpoint;
    let suffix = &c.key_vault_dns_suffix;
    println!(
        "sealdisk is serving {endpoint}\n\
         \x20 data directory   {dir}\n\
         \x20 tenant           {tenant}\n\
         \x20 subscription     {sub}\n\
         \x20 connection file  {dir}/connection.json (mode 0600)\n\
         \x20 NBD              {nbd}\n\
         \n\
         Azure CLI:\n\
         \x20 export REQUESTS_CA_BUNDLE={dir}/tls/ca-bundle.pem\n\
         \x20 az cloud register -n sealdisk --endpoint-resource-manager {endpoint} --suffix-keyvault-dns .{suffix}\n\
         \x20 az cloud set -n sealdisk\n\
         \x20 az config set core.instance_discovery=false\n\
         \x20 az login --service-principal -u {client} -p {secret} --tenant {tenant}\n\
         \n\
         sealdisk CLI:\n\
         \x20 sealdisk login --connection-file {dir}/connection.json",
        dir = dir.display(),
        tenant = c.tenant_id,
        sub = c.subscription_id,
        nbd = c.nbd_endpoint,
        client = c.client_id,
        // The secret goes to a terminal, never into a log file that captures stdout.
        secret = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            c.client_secret.clone()
        } else {
            format!(
                "\"$(jq -r .clientSecret {}/connection.json)\"",
                dir.display()
            )
        },
    );
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM; stop with SIGINT");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
