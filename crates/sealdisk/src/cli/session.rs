//! A logged-in session: the profile, its HTTP client, access tokens, and requests to ARM and
//! Microsoft Graph with az's conventions (api-version, paging, long-running operations).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::{Method, Url};
use serde_json::Value;

use super::error::{CliError, CliResult, ServiceError, ServiceKind};
use super::http::{Body, Http, Request, Response};
use super::lro::{self, Finish, LroHeaders, LroMethod, Poll, Progress, Start};
use super::profile::{self, CachedToken, CloudEndpoints, Profile, Secret};

/// Tokens closer than this to expiry are renewed (MSAL does the same).
const TOKEN_RENEW_MARGIN_SECS: i64 = 300;
/// Longest time a long-running operation is polled.
const LRO_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Most pages followed for one list (a guard against a server that loops).
const MAX_PAGES: usize = 1000;

/// ARM api-versions az uses.
pub mod api_version {
    /// Subscriptions.
    pub const SUBSCRIPTIONS: &str = "2022-12-01";
    /// Resource groups.
    pub const RESOURCE_GROUPS: &str = "2024-11-01";
    /// Role assignments.
    pub const ROLE_ASSIGNMENTS: &str = "2022-04-01";
    /// Role definitions.
    pub const ROLE_DEFINITIONS: &str = "2022-05-01-preview";
    /// Cloud metadata document.
    pub const METADATA: &str = "2022-09-01";
    /// Managed disks.
    pub const DISKS: &str = "2025-01-02";
    /// Disk encryption sets.
    pub const DISK_ENCRYPTION_SETS: &str = "2023-04-02";
    /// Virtual machines.
    pub const VIRTUAL_MACHINES: &str = "2025-04-01";
}

/// Current Unix time in seconds.
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The OAuth2 scope az asks for a resource: the resource plus `/.default`, even after a slash.
pub fn scope_for_resource(resource: &str) -> String {
    format!("{resource}/.default")
}

/// URL of the token endpoint.
pub fn token_url(cloud: &CloudEndpoints, tenant: &str) -> CliResult<Url> {
    parse_url(&format!(
        "{}{tenant}/oauth2/v2.0/token",
        profile::with_slash(&cloud.login_endpoint)
    ))
}

/// Parses a URL, as a usage error when it is not one.
pub fn parse_url(text: &str) -> CliResult<Url> {
    Url::parse(text).map_err(|e| CliError::Usage(format!("'{text}' is not a valid URL: {e}")))
}

/// `base` with `path` appended segment by segment (each percent-encoded as needed).
pub fn join_path(base: &str, path: &str) -> CliResult<Url> {
    let mut url = parse_url(&profile::with_slash(base))?;
    {
        let mut segs = url
            .path_segments_mut()
            .map_err(|()| CliError::BadResponse {
                url: base.to_owned(),
                detail: "endpoint cannot have a path".to_owned(),
            })?;
        segs.pop_if_empty();
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            segs.push(seg);
        }
    }
    Ok(url)
}

/// Requests a token for `scope` with the client-credentials grant.
pub async fn request_token(
    http: &Http,
    cloud: &CloudEndpoints,
    tenant: &str,
    client_id: &str,
    client_secret: &Secret,
    scope: &str,
) -> CliResult<CachedToken> {
    let url = token_url(cloud, tenant)?;
    let mut req = Request::new(Method::POST, url.clone());
    req.body = Body::Form(vec![
        ("grant_type", Secret::new("client_credentials".into())),
        ("client_id", Secret::new(client_id.to_owned())),
        ("client_secret", client_secret.clone()),
        ("scope", Secret::new(scope.to_owned())),
    ]);
    let resp = http.send(&req).await?;
    if !resp.is_success() {
        return Err(ServiceError::from_response(
            ServiceKind::Token,
            resp.status,
            resp.reason,
            &resp.body,
        )
        .into());
    }
    let body = resp.json(&url)?.unwrap_or(Value::Null);
    parse_token_response(&body, now_unix()).ok_or_else(|| CliError::BadResponse {
        url: url.to_string(),
        detail: "token response has no access_token".to_owned(),
    })
}

/// Reads `{"access_token", "expires_in"}` (`expires_on` also accepted).
pub fn parse_token_response(body: &Value, now: i64) -> Option<CachedToken> {
    let token = body.get("access_token")?.as_str()?;
    let number = |v: &Value| {
        v.as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    };
    let expires_on = body
        .get("expires_on")
        .and_then(number)
        .or_else(|| body.get("expires_in").and_then(number).map(|s| now + s))
        .unwrap_or(now + 3600);
    Some(CachedToken {
        access_token: Secret::new(token.to_owned()),
        expires_on,
    })
}

/// Fetches the cloud metadata document; falls back to endpoints derived from the base URL when
/// the server has none (404).
pub async fn discover_cloud(http: &Http, endpoint: &str) -> CliResult<CloudEndpoints> {
    let mut url = join_path(endpoint, "metadata/endpoints")?;
    url.query_pairs_mut()
        .append_pair("api-version", api_version::METADATA);
    let resp = http.send(&Request::new(Method::GET, url.clone())).await?;
    if resp.status == 404 {
        return Ok(CloudEndpoints::derived(endpoint));
    }
    if !resp.is_success() {
        return Err(ServiceError::from_response(
            ServiceKind::Arm,
            resp.status,
            resp.reason,
            &resp.body,
        )
        .into());
    }
    let doc = resp.json(&url)?.unwrap_or(Value::Null);
    Ok(CloudEndpoints::from_metadata(endpoint, &doc))
}

/// A `WWW-Authenticate: Bearer ...` challenge, as Key Vault answers a request without a valid
/// token: `Bearer authorization="{login}{tenant}", resource="https://vault.DOMAIN:PORT"`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BearerChallenge {
    /// `authorization` (or `authorization_uri`): the authority that issues the tokens.
    pub authorization: Option<String>,
    /// `resource`: the token audience.
    pub resource: Option<String>,
    /// `scope`: an OAuth2 scope, which newer services send instead of `resource`.
    pub scope: Option<String>,
}

impl BearerChallenge {
    /// Parses a `WWW-Authenticate` value; `None` unless it is a Bearer challenge.
    pub fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let (scheme, params) = header
            .split_once(char::is_whitespace)
            .unwrap_or((header, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let mut challenge = BearerChallenge::default();
        for item in params.split(',') {
            let Some((key, value)) = item.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"').to_owned();
            match key.trim().to_ascii_lowercase().as_str() {
                "authorization" | "authorization_uri" => challenge.authorization = Some(value),
                "resource" => challenge.resource = Some(value),
                "scope" => challenge.scope = Some(value),
                _ => {}
            }
        }
        Some(challenge)
    }

    /// The OAuth2 scope to ask a token for: `scope`, else `resource` + `/.default`.
    pub fn token_scope(&self) -> Option<String> {
        self.scope.clone().filter(|s| !s.is_empty()).or_else(|| {
            self.resource
                .as_deref()
                .filter(|r| !r.is_empty())
                .map(scope_for_resource)
        })
    }
}

/// azure-keyvault's `verify_challenge_resource`: a challenge may only send a token to the host
/// of its own scope or a host under it (`kv1.vault.localhost:8443` under
/// `vault.localhost:8443`), so a server cannot ask for a token meant for another service.
pub fn challenge_fits(url: &Url, scope: &str) -> bool {
    let Ok(scope_url) = Url::parse(scope) else {
        return false;
    };
    let (Some(scope_host), Some(host)) = (scope_url.host_str(), url.host_str()) else {
        return false;
    };
    let scope_authority = format!(
        ".{}:{}",
        scope_host.to_ascii_lowercase(),
        scope_url.port_or_known_default().unwrap_or(0)
    );
    let authority = format!(
        ".{}:{}",
        host.to_ascii_lowercase(),
        url.port_or_known_default().unwrap_or(0)
    );
    authority.ends_with(&scope_authority)
}

/// `host:port` of a URL, the key under which a challenge's scope is remembered.
fn authority(url: &Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or_default().to_ascii_lowercase(),
        url.port_or_known_default().unwrap_or(0)
    )
}

/// The token scope a 401 answer asks for; `None` for other answers or a 401 without a Bearer
/// challenge, an error when the challenge does not fit the URL.
fn challenge_scope(resp: &Response, url: &Url) -> CliResult<Option<String>> {
    if resp.status != 401 {
        return Ok(None);
    }
    let Some(scope) = resp
        .header("www-authenticate")
        .as_deref()
        .and_then(BearerChallenge::parse)
        .and_then(|c| c.token_scope())
    else {
        return Ok(None);
    };
    if !challenge_fits(url, &scope) {
        return Err(CliError::BadResponse {
            url: url.to_string(),
            detail: format!(
                "the authentication challenge asks for a token for '{scope}', which does not \
                 belong to this host"
            ),
        });
    }
    Ok(Some(scope))
}

/// A JSON answer with its status.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Parsed body, `None` when empty.
    pub body: Option<Value>,
    /// The raw response (headers).
    pub response: Response,
}

/// A logged-in session.
#[derive(Debug)]
pub struct Session {
    http: Http,
    /// The stored profile.
    pub profile: Profile,
    path: PathBuf,
    dirty: bool,
    /// Token scopes learnt from 401 challenges, by `host:port` (see [`Session::send_challenged`]).
    challenge_scopes: BTreeMap<String, String>,
}

impl Session {
    /// Loads the profile at `path` and builds its HTTP client.
    pub fn open(path: &Path, debug: bool) -> CliResult<Self> {
        let profile = profile::load(path)?.ok_or(CliError::NotLoggedIn)?;
        let http = Http::new(profile.ca_cert_file.as_deref(), debug)?;
        Ok(Session {
            http,
            profile,
            path: path.to_owned(),
            dirty: false,
            challenge_scopes: BTreeMap::new(),
        })
    }

    /// A session over a profile that is not saved yet (login).
    pub fn new(http: Http, profile: Profile, path: &Path) -> Self {
        Session {
            http,
            profile,
            path: path.to_owned(),
            dirty: true,
            challenge_scopes: BTreeMap::new(),
        }
    }

    /// Writes the profile back if tokens or subscriptions changed.
    /// The directory of the deployment CA certificate when it is named `ca-cert.pem` (the
    /// layout qemu's and libnbd's TLS options expect), as in a deployment's `tls/` directory.
    pub fn ca_dir(&self) -> Option<std::path::PathBuf> {
        let file = self.profile.ca_cert_file.as_deref()?;
        (file.file_name()? == "ca-cert.pem")
            .then(|| file.parent().map(std::path::Path::to_path_buf))
            .flatten()
    }

    pub fn save(&mut self) -> CliResult<()> {
        if self.dirty {
            profile::save(&self.path, &self.profile)?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Marks the profile as changed.
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// The subscription id to use: `wanted` (id or name) or the default.
    pub fn subscription_id(&self, wanted: Option<&str>) -> CliResult<String> {
        Ok(self.profile.find_subscription(wanted)?.id.clone())
    }

    /// A token for `resource` (scope `{resource}/.default`), from the cache when still valid.
    pub async fn token(&mut self, resource: &str, force_new: bool) -> CliResult<CachedToken> {
        self.token_for_scope(&scope_for_resource(resource), force_new)
            .await
    }

    /// A token for an OAuth2 scope, from the cache when still valid.
    pub async fn token_for_scope(
        &mut self,
        scope: &str,
        force_new: bool,
    ) -> CliResult<CachedToken> {
        if !force_new
            && let Some(t) = self.profile.tokens.get(scope)
            && t.expires_on - now_unix() > TOKEN_RENEW_MARGIN_SECS
        {
            return Ok(t.clone());
        }
        let p = &self.profile;
        let token = request_token(
            &self.http,
            &p.cloud,
            &p.tenant_id,
            &p.client_id,
            &p.client_secret,
            scope,
        )
        .await?;
        self.profile.tokens.insert(scope.to_owned(), token.clone());
        self.dirty = true;
        Ok(token)
    }

    /// Sends an authenticated request; retries once with a new token on 401 (the server may
    /// have rotated its signing key since the token was cached).
    pub async fn send(
        &mut self,
        kind: ServiceKind,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> CliResult<Response> {
        let resource = match kind {
            ServiceKind::Graph => self.profile.cloud.graph_resource.clone(),
            _ => self.profile.cloud.arm_resource.clone(),
        };
        let mut req = Request::new(method, url);
        if let Some(b) = body {
            req.body = Body::Json(b.clone());
        }
        for attempt in 0..2 {
            let token = self.token(&resource, attempt > 0).await?;
            req.bearer = Some(token.access_token);
            let resp = self.http.send(&req).await?;
            if resp.status != 401 || attempt > 0 {
                return Ok(resp);
            }
        }
        unreachable!("the loop returns on its second pass")
    }

    /// Sends a request and turns error statuses into [`CliError::Service`].
    pub async fn call(
        &mut self,
        kind: ServiceKind,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> CliResult<Answer> {
        let resp = self.send(kind, method, url.clone(), body).await?;
        if !resp.is_success() {
            return Err(
                ServiceError::from_response(kind, resp.status, resp.reason, &resp.body).into(),
            );
        }
        Ok(Answer {
            status: resp.status,
            body: resp.json(&url)?,
            response: resp,
        })
    }

    /// Sends a request to a data plane that names its token audience in a 401 challenge (Key
    /// Vault), the way the Azure SDK's challenge policy does: the first request to a host goes
    /// without token and without body; the challenge's scope (checked with
    /// [`challenge_fits`]) gets a token from the login endpoint with the profile's credentials
    /// (cached per scope like every token); then the request is sent in full. A 401 to a
    /// request that carried a token renews the token once.
    pub async fn send_challenged(
        &mut self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> CliResult<Response> {
        let key = authority(&url);
        let mut req = Request::new(method, url.clone());
        if let Some(b) = body {
            req.body = Body::Json(b.clone());
        }
        let mut scope = match self.challenge_scopes.get(&key) {
            Some(s) => s.clone(),
            None => {
                let probe = Request::new(req.method.clone(), url.clone());
                let resp = self.http.send(&probe).await?;
                match challenge_scope(&resp, &url)? {
                    Some(s) => s,
                    // No challenge: the answer stands (an error, or a host that wants no token).
                    None if body.is_none() => return Ok(resp),
                    None => return self.http.send(&req).await,
                }
            }
        };
        for attempt in 0..2 {
            let token = self.token_for_scope(&scope, attempt > 0).await?;
            req.bearer = Some(token.access_token);
            let resp = self.http.send(&req).await?;
            let renewed = challenge_scope(&resp, &url)?;
            self.challenge_scopes.insert(key.clone(), scope.clone());
            match renewed {
                Some(s) if attempt == 0 => scope = s,
                _ => return Ok(resp),
            }
        }
        unreachable!("the loop returns on its second pass")
    }

    /// [`Session::send_challenged`], turning error statuses into [`CliError::Service`] (Key
    /// Vault errors have ARM's `{"error":{"code","message"}}` shape and azure-core words them
    /// the same way).
    pub async fn call_challenged(
        &mut self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> CliResult<Answer> {
        let resp = self.send_challenged(method, url.clone(), body).await?;
        if !resp.is_success() {
            return Err(ServiceError::from_response(
                ServiceKind::Arm,
                resp.status,
                resp.reason,
                &resp.body,
            )
            .into());
        }
        Ok(Answer {
            status: resp.status,
            body: resp.json(&url)?,
            response: resp,
        })
    }

    /// An ARM URL: `path` under the resource manager, with `api-version` and extra query.
    pub fn arm_url(&self, path: &str, api: &str, query: &[(&str, &str)]) -> CliResult<Url> {
        let mut url = join_path(&self.profile.cloud.resource_manager, path)?;
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
            q.append_pair("api-version", api);
        }
        Ok(url)
    }

    /// A Graph v1.0 URL.
    pub fn graph_url(&self, path: &str, query: &[(&str, &str)]) -> CliResult<Url> {
        let base = format!(
            "{}v1.0",
            profile::with_slash(&self.profile.cloud.graph_resource)
        );
        let mut url = join_path(&base, path)?;
        if !query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        Ok(url)
    }

    /// ARM request expecting a JSON body (or none).
    pub async fn arm(
        &mut self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> CliResult<Option<Value>> {
        Ok(self.call(ServiceKind::Arm, method, url, body).await?.body)
    }

    /// Graph request expecting a JSON body (or none).
    pub async fn graph(
        &mut self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> CliResult<Option<Value>> {
        Ok(self.call(ServiceKind::Graph, method, url, body).await?.body)
    }

    /// GETs every page of a list (`value` + `nextLink` for ARM, `@odata.nextLink` for Graph).
    /// With `first_page_only`, stops after one page and tells whether more were available.
    pub async fn list(
        &mut self,
        kind: ServiceKind,
        url: Url,
        first_page_only: bool,
    ) -> CliResult<(Vec<Value>, bool)> {
        let mut items = Vec::new();
        let mut next = Some(url);
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            let body = self
                .call(kind, Method::GET, url.clone(), None)
                .await?
                .body
                .unwrap_or(Value::Null);
            let Some(values) = body.get("value").and_then(Value::as_array) else {
                return Err(CliError::BadResponse {
                    url: url.to_string(),
                    detail: "list response has no 'value' array".to_owned(),
                });
            };
            items.extend(values.iter().cloned());
            let link = body
                .get("nextLink")
                .or_else(|| body.get("@odata.nextLink"))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty());
            if let Some(link) = link {
                if first_page_only {
                    return Ok((items, true));
                }
                if pages >= MAX_PAGES {
                    return Err(CliError::BadResponse {
                        url: url.to_string(),
                        detail: format!("more than {MAX_PAGES} pages"),
                    });
                }
                next = Some(parse_url(link)?);
            }
        }
        Ok((items, false))
    }

    /// Runs an ARM long-running operation to its end (unless `no_wait`) and returns its result.
    pub async fn arm_lro(
        &mut self,
        method: LroMethod,
        url: Url,
        body: Option<&Value>,
        no_wait: bool,
    ) -> CliResult<Option<Value>> {
        let http_method = match method {
            LroMethod::Put => Method::PUT,
            LroMethod::Patch => Method::PATCH,
            LroMethod::Post => Method::POST,
            LroMethod::Delete => Method::DELETE,
        };
        let first = self
            .call(ServiceKind::Arm, http_method, url.clone(), body)
            .await?;
        let headers = lro_headers(&first.response);
        let poll = match lro::start(
            method,
            first.status,
            &headers,
            first.body.as_ref(),
            url.as_str(),
        ) {
            Start::Done => return Ok(first.body),
            Start::Poll(_) if no_wait => return Ok(None),
            Start::Poll(p) => p,
        };
        let poll_url = match &poll {
            Poll::AsyncOperation(u) | Poll::Location(u) | Poll::Resource(u) => parse_url(u)?,
        };
        let deadline = Instant::now() + LRO_TIMEOUT;
        let mut delay = lro::poll_delay(headers.retry_after.as_deref());
        let last_body = loop {
            if Instant::now() > deadline {
                return Err(CliError::OperationTimedOut {
                    url: poll_url.to_string(),
                });
            }
            tokio::time::sleep(delay).await;
            let answer = self
                .call(ServiceKind::Arm, Method::GET, poll_url.clone(), None)
                .await?;
            delay = lro::poll_delay(answer.response.header("retry-after").as_deref());
            match lro::progress(&poll, answer.status, answer.body.as_ref()) {
                Progress::Running => continue,
                Progress::Succeeded => break answer.body,
                Progress::Failed(e) => return Err(e.into()),
                Progress::Canceled => return Err(CliError::OperationCanceled),
            }
        };
        match lro::finish(method, &poll, &headers) {
            Finish::Nothing => Ok(None),
            Finish::LastBody => Ok(last_body),
            Finish::GetResource => self.arm(Method::GET, url, None).await,
            Finish::GetLocation(loc) => self.arm(Method::GET, parse_url(&loc)?, None).await,
        }
    }
}

fn lro_headers(resp: &Response) -> LroHeaders {
    LroHeaders {
        async_operation: resp.header("azure-asyncoperation"),
        location: resp.header("location"),
        retry_after: resp.header("retry-after"),
    }
}

/// Quotes a string for an OData `$filter` literal.
pub fn odata_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scope_is_resource_plus_default_like_az() {
        assert_eq!(
            scope_for_resource("https://localhost:8443/"),
            "https://localhost:8443//.default"
        );
        assert_eq!(
            scope_for_resource("https://localhost:8443/graph/"),
            "https://localhost:8443/graph//.default"
        );
    }

    #[test]
    fn token_url_from_login_endpoint() {
        let cloud = CloudEndpoints::derived("https://localhost:8443");
        assert_eq!(
            token_url(&cloud, "t1").unwrap().as_str(),
            "https://localhost:8443/t1/oauth2/v2.0/token"
        );
    }

    #[test]
    fn paths_are_joined_and_encoded() {
        let u = join_path(
            "https://localhost:8443/",
            "/subscriptions/s/resourcegroups/my rg(1)",
        )
        .unwrap();
        assert_eq!(
            u.as_str(),
            "https://localhost:8443/subscriptions/s/resourcegroups/my%20rg(1)"
        );
        let g = join_path("https://localhost:8443/graph/v1.0", "servicePrincipals").unwrap();
        assert_eq!(
            g.as_str(),
            "https://localhost:8443/graph/v1.0/servicePrincipals"
        );
    }

    #[test]
    fn token_response_expiry() {
        let t = parse_token_response(
            &json!({"token_type":"Bearer","expires_in":3599,"access_token":"abc"}),
            1000,
        )
        .unwrap();
        assert_eq!(t.access_token.expose(), "abc");
        assert_eq!(t.expires_on, 4599);
        let t = parse_token_response(&json!({"access_token":"x","expires_in":"60"}), 0).unwrap();
        assert_eq!(t.expires_on, 60);
        assert!(parse_token_response(&json!({"error":"invalid_client"}), 0).is_none());
    }

    #[test]
    fn key_vault_challenges_parse() {
        let c = BearerChallenge::parse(
            r#"Bearer authorization="https://localhost:8443/t1", resource="https://vault.localhost:8443""#,
        )
        .unwrap();
        assert_eq!(
            c.authorization.as_deref(),
            Some("https://localhost:8443/t1")
        );
        assert_eq!(c.resource.as_deref(), Some("https://vault.localhost:8443"));
        assert_eq!(
            c.token_scope().as_deref(),
            Some("https://vault.localhost:8443/.default")
        );
        // Unquoted values, other spellings, a scope instead of a resource.
        let c = BearerChallenge::parse(
            "bearer authorization_uri=https://login/t,scope=https://vault.azure.net/.default",
        )
        .unwrap();
        assert_eq!(c.authorization.as_deref(), Some("https://login/t"));
        assert_eq!(
            c.token_scope().as_deref(),
            Some("https://vault.azure.net/.default")
        );
        assert_eq!(
            BearerChallenge::parse("Bearer").unwrap().token_scope(),
            None
        );
        assert!(BearerChallenge::parse(r#"Basic realm="x""#).is_none());
    }

    #[test]
    fn challenges_only_fit_their_own_hosts() {
        let url = |u: &str| Url::parse(u).unwrap();
        let scope = "https://vault.localhost:8443/.default";
        assert!(challenge_fits(
            &url("https://kv1.vault.localhost:8443/keys/k"),
            scope
        ));
        assert!(challenge_fits(
            &url("https://KV1.Vault.localhost:8443/"),
            scope
        ));
        assert!(challenge_fits(&url("https://vault.localhost:8443/"), scope));
        // Another port, another service, a look-alike suffix.
        assert!(!challenge_fits(
            &url("https://kv1.vault.localhost:9443/"),
            scope
        ));
        assert!(!challenge_fits(&url("https://localhost:8443/"), scope));
        assert!(!challenge_fits(
            &url("https://kv1.evilvault.localhost:8443/"),
            scope
        ));
        assert!(!challenge_fits(
            &url("https://kv1.vault.localhost/"),
            "https://vault.localhost:8443/.default"
        ));
        assert!(challenge_fits(
            &url("https://kv1.vault.azure.net/"),
            "https://vault.azure.net/.default"
        ));
        assert!(!challenge_fits(
            &url("https://kv1.vault.azure.net/"),
            "not a url"
        ));
    }

    #[test]
    fn odata_quotes_are_doubled() {
        assert_eq!(odata_quote("O'Brien"), "'O''Brien'");
    }

    mod against_a_scripted_server {
        use super::*;
        use crate::cli::test_support::{Reply, serve, session};

        fn paths(seen: &std::sync::Mutex<Vec<crate::cli::test_support::Seen>>) -> Vec<String> {
            seen.lock()
                .unwrap()
                .iter()
                .map(|(m, p, _)| format!("{m} {}", p.split('?').next().unwrap()))
                .collect()
        }

        #[tokio::test]
        async fn put_polls_async_operation_then_reads_the_resource() {
            let (base, seen) = serve(vec![
                Reply::json(
                    "PUT",
                    "/r",
                    201,
                    json!({"properties":{"provisioningState":"Creating"}}),
                )
                .header("Azure-AsyncOperation", "{base}op1")
                .header("Retry-After", "0"),
                Reply::json("GET", "/op1", 200, json!({"status":"InProgress"})),
                Reply::json("GET", "/op1", 200, json!({"status":"Succeeded"})),
                Reply::json("GET", "/r", 200, json!({"name":"done"})),
            ])
            .await;
            let dir = tempfile::tempdir().unwrap();
            let mut s = session(&base, dir.path());
            let url = s.arm_url("r", "2024-11-01", &[]).unwrap();
            let out = s
                .arm_lro(LroMethod::Put, url, Some(&json!({})), false)
                .await
                .unwrap();
            assert_eq!(out, Some(json!({"name":"done"})));
            assert_eq!(paths(&seen), ["PUT /r", "GET /op1", "GET /op1", "GET /r"]);
            let first = &seen.lock().unwrap()[0];
            assert!(first.1.contains("api-version=2024-11-01"));
            assert_eq!(first.2.as_deref(), Some("cached"));
        }

        #[tokio::test]
        async fn delete_polls_location_until_not_202() {
            let (base, seen) = serve(vec![
                Reply::json("DELETE", "/r", 202, Value::Null)
                    .header("Location", "{base}loc")
                    .header("Retry-After", "0"),
                Reply::json("GET", "/loc", 202, Value::Null).header("Retry-After", "0"),
                Reply::json("GET", "/loc", 200, Value::Null),
            ])
            .await;
            let dir = tempfile::tempdir().unwrap();
            let mut s = session(&base, dir.path());
            let url = s.arm_url("r", "v", &[]).unwrap();
            let out = s
                .arm_lro(LroMethod::Delete, url, None, false)
                .await
                .unwrap();
            assert_eq!(out, None);
            assert_eq!(paths(&seen), ["DELETE /r", "GET /loc", "GET /loc"]);
        }

        #[tokio::test]
        async fn no_wait_returns_after_the_first_answer() {
            let (base, seen) = serve(vec![
                Reply::json("DELETE", "/r", 202, Value::Null).header("Location", "{base}loc"),
            ])
            .await;
            let dir = tempfile::tempdir().unwrap();
            let mut s = session(&base, dir.path());
            let url = s.arm_url("r", "v", &[]).unwrap();
            assert_eq!(
                s.arm_lro(LroMethod::Delete, url, None, true).await.unwrap(),
                None
            );
            assert_eq!(paths(&seen), ["DELETE /r"]);
        }

        #[tokio::test]
        async fn failed_operation_is_an_error_with_its_code() {
            let (base, _) = serve(vec![
                Reply::json("PUT", "/r", 201, json!({}))
                    .header("Azure-AsyncOperation", "{base}op")
                    .header("Retry-After", "0"),
                Reply::json(
                    "GET",
                    "/op",
                    200,
                    json!({"status":"Failed","error":{"code":"Boom","message":"no"}}),
                ),
            ])
            .await;
            let dir = tempfile::tempdir().unwrap();
            let mut s = session(&base, dir.path());
            let url = s.arm_url("r", "v", &[]).unwrap();
            let err = s
                .arm_lro(LroMethod::Put, url, Some(&json!({})), false)
                .await
                .unwrap_err();
            let CliError::Service(e) = err else {
                panic!("expected a service error, got {err:?}")
            };
            assert_eq!(e.code.as_deref(), Some("Boom"));
        }

        #[tokio::test]
        async fn lists_follow_next_links() {
            let (base, seen) = serve(vec![
                Reply::json(
                    "GET",
                    "/things",
                    200,
                    json!({"value":[1,2],"nextLink":"{base}p2"}),
                ),
                Reply::json(
                    "GET",
                    "/p2",
                    200,
                    json!({"value":[3],"@odata.nextLink":"{base}p3"}),
                ),
                Reply::json("GET", "/p3", 200, json!({"value":[],"nextLink":null})),
            ])
            .await;
            let dir = tempfile::tempdir().unwrap();
            let mut s = session(&base, dir.path());
            let url = s.arm_url("things", "v", &[]).unwrap();
            let (items, more) = s.list(ServiceKind::Arm, url, false).await.unwrap();
            assert_eq!(items, vec![json!(1), json!(2), json!(3)]);
            assert!(!more);
            assert_eq!(paths(&seen), ["GET /things", "GET /p2", "GET /p3"]);
        }

        #[tokio::test]
        async fn first_page_only_tells_there_is_more() {
            let (base, seen) = serve(vec![Reply::json(
                "GET",
                "/things",
                200,
                json!({"value":[1],"@odata.nextLink":"{base}p2"}),
            )])
            .await;
            let dir = tempfile::tempdir().unwrap();
            let mut s = session(&base, dir.path());
            let url = s.arm_url("things", "v", &[]).unwrap();
            let (items, more) = s.list(ServiceKind::Arm, url, true).await.unwrap();
            assert_eq!(items, vec![json!(1)]);
            assert!(more);
            assert_eq!(paths(&seen), ["GET /things"]);
        }

        #[tokio::test]
        async fn a_list_without_value_is_a_bad_response() {
            let (base, _) = serve(vec![Reply::json(
                "GET",
                "/things",
                200,
                json!({"items":[]}),
            )])
            .await;
            let dir = tempfile::tempdir().unwrap();
            let mut s = session(&base, dir.path());
            let url = s.arm_url("things", "v", &[]).unwrap();
            assert!(matches!(
                s.list(ServiceKind::Arm, url, false).await,
                Err(CliError::BadResponse { .. })
            ));
        }

        #[tokio::test]
        async fn a_rejected_cached_token_is_renewed_once() {
            let (base, seen) = serve(vec![
                Reply::json(
                    "GET",
                    "/r",
                    401,
                    json!({"error":{"code":"InvalidAuthenticationToken"}}),
                ),
                Reply::json(
                    "POST",
                    "/t1/oauth2/v2.0/token",
                    200,
                    json!({"token_type":"Bearer","expires_in":3599,"access_token":"fresh"}),
                ),
                Reply::json("GET", "/r", 200, json!({"ok":true})),
            ])
            .await;
            let dir = tempfile::tempdir().unwrap();
            let mut s = session(&base, dir.path());
            let url = s.arm_url("r", "v", &[]).unwrap();
            let out = s.arm(Method::GET, url, None).await.unwrap();
            assert_eq!(out, Some(json!({"ok":true})));
            let log = seen.lock().unwrap().clone();
            assert_eq!(log[0].2.as_deref(), Some("cached"));
            assert_eq!(log[2].2.as_deref(), Some("fresh"));
            // The new token is cached and saved.
            s.save().unwrap();
            let saved = profile::load(&dir.path().join("profile.json"))
                .unwrap()
                .unwrap();
            let scope = scope_for_resource(&saved.cloud.arm_resource);
            assert_eq!(saved.tokens[&scope].access_token.expose(), "fresh");
        }

        /// A 401 answer with a challenge naming the scripted server itself as the resource.
        fn challenge_reply(method: &'static str, path: &str) -> Reply {
            Reply::json(
                method,
                path,
                401,
                json!({"error":{"code":"Unauthorized","message":"AKV10000: Request is missing a Bearer or PoP token."}}),
            )
            .header(
                "WWW-Authenticate",
                r#"Bearer authorization="{base}t1", resource="{base}vault""#,
            )
        }

        #[tokio::test]
        async fn data_plane_challenge_then_token_then_request() {
            let (base, seen) = serve(vec![
                challenge_reply("POST", "/keys/k/create"),
                Reply::json(
                    "POST",
                    "/t1/oauth2/v2.0/token",
                    200,
                    json!({"token_type":"Bearer","expires_in":3599,"access_token":"kv"}),
                ),
                Reply::json("POST", "/keys/k/create", 200, json!({"key":{"kid":"x"}})),
                Reply::json("GET", "/keys/k", 200, json!({"key":{"kid":"x"}})),
            ])
            .await;
            let dir = tempfile::tempdir().unwrap();
            let mut s = session(&base, dir.path());
            let url = join_path(&base, "keys/k/create").unwrap();
            let out = s
                .call_challenged(Method::POST, url, Some(&json!({"kty":"RSA"})))
                .await
                .unwrap();
            assert_eq!(out.body, Some(json!({"key":{"kid":"x"}})));
            // The scope is remembered: the next request goes with the token at once.
            let url = join_path(&base, "keys/k").unwrap();
            s.call_challenged(Method::GET, url, None).await.unwrap();
            let log = seen.lock().unwrap().clone();
            let bearers: Vec<Option<&str>> = log.iter().map(|r| r.2.as_deref()).collect();
            assert_eq!(bearers, [None, None, Some("kv"), Some("kv")]);
            // The token is cached under the challenge's scope.
            assert_eq!(
                s.profile.tokens[&format!("{base}vault/.default")]
                    .access_token
                    .expose(),
                "kv"
            );
        }

        #[tokio::test]
        async fn data_plane_rejected_token_is_renewed_once() {
            let (base, seen) = serve(vec![
                challenge_reply("GET", "/keys"),
                Reply::json(
                    "POST",
                    "/t1/oauth2/v2.0/token",
                    200,
                    json!({"token_type":"Bearer","expires_in":3599,"access_token":"one"}),
                ),
                challenge_reply("GET", "/keys"),
                Reply::json(
                    "POST",
                    "/t1/oauth2/v2.0/token",
                    200,
                    json!({"token_type":"Bearer","expires_in":3599,"access_token":"two"}),
                ),
                challenge_reply("GET", "/keys"),
            ])
            .await;
            let dir = tempfile::tempdir().unwrap();
            let mut s = session(&base, dir.path());
            let url = join_path(&base, "keys").unwrap();
            let err = s.call_challenged(Method::GET, url, None).await.unwrap_err();
            assert!(err.to_string().starts_with("(Unauthorized) AKV10000"));
            let bearers: Vec<Option<String>> =
                seen.lock().unwrap().iter().map(|r| r.2.clone()).collect();
            assert_eq!(
                bearers,
                [None, None, Some("one".into()), None, Some("two".into())]
            );
        }

        #[tokio::test]
        async fn data_plane_challenge_for_another_host_is_refused() {
            let (base, seen) = serve(vec![Reply::json("GET", "/keys", 401, Value::Null).header(
                "WWW-Authenticate",
                r#"Bearer authorization="{base}t1", resource="https://elsewhere.example""#,
            )])
            .await;
            let dir = tempfile::tempdir().unwrap();
            let mut s = session(&base, dir.path());
            let url = join_path(&base, "keys").unwrap();
            let err = s.call_challenged(Method::GET, url, None).await.unwrap_err();
            assert!(matches!(err, CliError::BadResponse { .. }), "{err}");
            assert_eq!(seen.lock().unwrap().len(), 1, "no token was asked for");
        }

        #[tokio::test]
        async fn data_plane_errors_without_challenge_stand() {
            let (base, _) = serve(vec![Reply::json(
                "GET",
                "/keys/k",
                404,
                json!({"error":{"code":"VaultNotFound","message":"no such vault"}}),
            )])
            .await;
            let dir = tempfile::tempdir().unwrap();
            let mut s = session(&base, dir.path());
            let url = join_path(&base, "keys/k").unwrap();
            let err = s.call_challenged(Method::GET, url, None).await.unwrap_err();
            assert_eq!(err.exit_code(), 3);
            assert!(err.to_string().starts_with("(VaultNotFound) no such vault"));
        }

        #[tokio::test]
        async fn error_answers_become_service_errors() {
            let (base, _) = serve(vec![Reply::json(
                "GET",
                "/r",
                404,
                json!({"error":{"code":"ResourceGroupNotFound","message":"gone"}}),
            )])
            .await;
            let dir = tempfile::tempdir().unwrap();
            let mut s = session(&base, dir.path());
            let url = s.arm_url("r", "v", &[]).unwrap();
            let err = s.arm(Method::GET, url, None).await.unwrap_err();
            assert_eq!(err.exit_code(), 3);
            assert!(err.to_string().starts_with("(ResourceGroupNotFound) gone"));
        }
    }
}
