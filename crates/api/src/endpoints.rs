//! The URLs a deployment advertises, derived from its domain and port in one place.

use control::identity::Audiences;
use control::ids::TenantId;

/// Where clients reach this deployment.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// The host name clients use (`localhost` by default).
    pub domain: String,
    /// The HTTPS port.
    pub port: u16,
}

impl Endpoints {
    /// `https://DOMAIN:PORT/`: Resource Manager, login authority and ARM audience.
    pub fn arm(&self) -> String {
        format!("https://{}:{}/", self.domain, self.port)
    }

    /// The Microsoft Graph base URL and audience.
    pub fn graph(&self) -> String {
        format!("{}graph/", self.arm())
    }

    /// `vault.DOMAIN:PORT`: the Key Vault DNS suffix, port included.
    pub fn vault_suffix(&self) -> String {
        format!("vault.{}:{}", self.domain, self.port)
    }

    /// `https://vault.DOMAIN:PORT`: the Key Vault token resource.
    pub fn vault_resource(&self) -> String {
        format!("https://{}", self.vault_suffix())
    }

    /// The token issuer of `tenant`.
    pub fn issuer(&self, tenant: TenantId) -> String {
        format!("{}{tenant}/v2.0", self.arm())
    }

    /// The audiences tokens may be issued for. ARM is also reachable by loopback address.
    pub fn audiences(&self) -> Audiences {
        let mut arm = vec![self.arm()];
        for host in ["localhost", "127.0.0.1", "[::1]"] {
            let alias = format!("https://{host}:{}/", self.port);
            if !arm.contains(&alias) {
                arm.push(alias);
            }
        }
        Audiences {
            arm,
            graph: vec![self.graph()],
            vault: vec![
                self.vault_resource(),
                format!("https://vault.{}", self.domain),
            ],
        }
    }

    /// The Key Vault name addressed by `host` (`NAME.vault.DOMAIN[:PORT]`), if any.
    pub fn vault_name<'h>(&self, host: &'h str) -> Option<&'h str> {
        let host = host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        });
        let suffix = format!(".vault.{}", self.domain);
        let len = host.len().checked_sub(suffix.len())?;
        (len > 0 && host[len..].eq_ignore_ascii_case(&suffix)).then(|| &host[..len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_names_from_hosts() {
        let e = Endpoints {
            domain: "localhost".into(),
            port: 8443,
        };
        assert_eq!(e.vault_name("kv1.vault.localhost:8443"), Some("kv1"));
        assert_eq!(e.vault_name("KV1.VAULT.localhost"), Some("KV1"));
        assert_eq!(e.vault_name("vault.localhost:8443"), None);
        assert_eq!(e.vault_name("localhost:8443"), None);
        assert_eq!(e.vault_resource(), "https://vault.localhost:8443");
    }
}
