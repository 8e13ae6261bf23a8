//! Long-running ARM operations, decided without I/O (the driver is `Session::arm_lro`).
//!
//! Like azure-core's ARM poller: after a 201/202 that carries `Azure-AsyncOperation`, poll that
//! URL until its `status` is terminal; else, after a 202 with `Location`, poll it until it stops
//! answering 202; else, after a PUT/PATCH whose body has a non-terminal
//! `properties.provisioningState`, poll the resource itself. When polling is over, PUT/PATCH
//! read the resource again, POST reads the `Location` result, DELETE returns nothing.

use std::time::Duration;

use serde_json::Value;

use super::error::{ServiceError, ServiceKind};

/// Longest wait between polls, whatever `Retry-After` says.
pub const MAX_POLL_DELAY: Duration = Duration::from_secs(5);
/// Wait between polls when the server gives no `Retry-After`.
pub const DEFAULT_POLL_DELAY: Duration = Duration::from_secs(1);
/// Shortest wait between polls.
pub const MIN_POLL_DELAY: Duration = Duration::from_millis(100);

/// HTTP method of the request that started the operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LroMethod {
    /// Create or replace.
    Put,
    /// Update.
    #[expect(dead_code, reason = "for `disk update` and the like, not written yet")]
    Patch,
    /// Action.
    Post,
    /// Delete.
    Delete,
}

/// The headers that steer polling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LroHeaders {
    /// `Azure-AsyncOperation`.
    pub async_operation: Option<String>,
    /// `Location`.
    pub location: Option<String>,
    /// `Retry-After`, raw.
    pub retry_after: Option<String>,
}

/// What to poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// An operation-status URL answering `{"status": ...}`.
    AsyncOperation(String),
    /// A URL answering 202 while the operation runs.
    Location(String),
    /// The resource itself, until its `provisioningState` is terminal.
    Resource(String),
}

/// What the first response means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// The operation is complete; the body (if any) is the result.
    Done,
    /// The operation runs; poll.
    Poll(Poll),
}

/// Decides from the first (successful) response whether to poll.
pub fn start(
    method: LroMethod,
    status: u16,
    headers: &LroHeaders,
    body: Option<&Value>,
    resource_url: &str,
) -> Start {
    if matches!(status, 201 | 202) {
        if let Some(url) = &headers.async_operation {
            return Start::Poll(Poll::AsyncOperation(url.clone()));
        }
        if let Some(url) = &headers.location
            && (status == 202 || method == LroMethod::Post)
        {
            return Start::Poll(Poll::Location(url.clone()));
        }
    }
    if matches!(method, LroMethod::Put | LroMethod::Patch)
        && matches!(status, 200 | 201)
        && let Some(state) = body.and_then(provisioning_state)
        && !is_terminal(state)
    {
        return Start::Poll(Poll::Resource(resource_url.to_owned()));
    }
    Start::Done
}

/// Where an operation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Not finished: poll again.
    Running,
    /// Finished; the final result may still need reading (see [`finish`]).
    Succeeded,
    /// Finished with an error.
    Failed(ServiceError),
    /// Cancelled.
    Canceled,
}

/// Reads one poll response (`status` is its HTTP status, 2xx here; errors are handled by the
/// caller).
pub fn progress(poll: &Poll, status: u16, body: Option<&Value>) -> Progress {
    match poll {
        Poll::Location(_) => {
            if status == 202 {
                Progress::Running
            } else {
                Progress::Succeeded
            }
        }
        Poll::AsyncOperation(_) => {
            let state = body.and_then(|b| b.get("status")).and_then(Value::as_str);
            state_progress(state, body, Progress::Running)
        }
        // A resource without a provisioning state has nothing to wait for.
        Poll::Resource(_) => {
            state_progress(body.and_then(provisioning_state), body, Progress::Succeeded)
        }
    }
}

fn state_progress(state: Option<&str>, body: Option<&Value>, missing: Progress) -> Progress {
    match state {
        Some(s) if s.eq_ignore_ascii_case("succeeded") => Progress::Succeeded,
        Some(s) if s.eq_ignore_ascii_case("failed") => Progress::Failed(
            ServiceError::from_error_object(ServiceKind::Arm, body.unwrap_or(&Value::Null)),
        ),
        Some(s) if s.eq_ignore_ascii_case("canceled") || s.eq_ignore_ascii_case("cancelled") => {
            Progress::Canceled
        }
        Some(_) => Progress::Running,
        None => missing,
    }
}

/// How to get the result once polling says `Succeeded`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// GET the resource URL.
    GetResource,
    /// GET the `Location` URL.
    GetLocation(String),
    /// The last poll's body is the result.
    LastBody,
    /// There is no result.
    Nothing,
}

/// Decides how to fetch the final result.
pub fn finish(method: LroMethod, poll: &Poll, headers: &LroHeaders) -> Finish {
    match method {
        LroMethod::Delete => Finish::Nothing,
        LroMethod::Put | LroMethod::Patch => match poll {
            Poll::Resource(_) => Finish::LastBody,
            _ => Finish::GetResource,
        },
        LroMethod::Post => match (poll, &headers.location) {
            (Poll::Location(_), _) => Finish::LastBody,
            (_, Some(loc)) => Finish::GetLocation(loc.clone()),
            _ => Finish::Nothing,
        },
    }
}

/// The wait before the next poll.
pub fn poll_delay(retry_after: Option<&str>) -> Duration {
    retry_after
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_POLL_DELAY)
        .clamp(MIN_POLL_DELAY, MAX_POLL_DELAY)
}

/// `properties.provisioningState`, if present.
pub fn provisioning_state(body: &Value) -> Option<&str> {
    body.get("properties")
        .and_then(|p| p.get("provisioningState"))
        .and_then(Value::as_str)
}

fn is_terminal(state: &str) -> bool {
    ["succeeded", "failed", "canceled", "cancelled"]
        .iter()
        .any(|t| state.eq_ignore_ascii_case(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RES: &str = "https://h/subscriptions/s/resourcegroups/rg";

    fn headers(async_op: Option<&str>, location: Option<&str>) -> LroHeaders {
        LroHeaders {
            async_operation: async_op.map(str::to_owned),
            location: location.map(str::to_owned),
            retry_after: None,
        }
    }

    #[test]
    fn async_operation_header_wins() {
        let h = headers(Some("https://h/op"), Some("https://h/loc"));
        assert_eq!(
            start(LroMethod::Put, 201, &h, None, RES),
            Start::Poll(Poll::AsyncOperation("https://h/op".into()))
        );
        assert_eq!(
            finish(LroMethod::Put, &Poll::AsyncOperation("x".into()), &h),
            Finish::GetResource
        );
        assert_eq!(
            finish(LroMethod::Post, &Poll::AsyncOperation("x".into()), &h),
            Finish::GetLocation("https://h/loc".into())
        );
    }

    #[test]
    fn delete_202_polls_location_and_returns_nothing() {
        let h = headers(None, Some("https://h/loc"));
        let s = start(LroMethod::Delete, 202, &h, None, RES);
        let Start::Poll(poll) = s else {
            panic!("expected polling")
        };
        assert_eq!(poll, Poll::Location("https://h/loc".into()));
        assert_eq!(progress(&poll, 202, None), Progress::Running);
        assert_eq!(progress(&poll, 200, None), Progress::Succeeded);
        assert_eq!(progress(&poll, 204, None), Progress::Succeeded);
        assert_eq!(finish(LroMethod::Delete, &poll, &h), Finish::Nothing);
    }

    #[test]
    fn synchronous_answers_are_done() {
        let h = LroHeaders::default();
        assert_eq!(start(LroMethod::Delete, 200, &h, None, RES), Start::Done);
        assert_eq!(start(LroMethod::Delete, 204, &h, None, RES), Start::Done);
        let body = json!({"properties":{"provisioningState":"Succeeded"}});
        assert_eq!(
            start(LroMethod::Put, 201, &h, Some(&body), RES),
            Start::Done
        );
        // 201 with a Location but for PUT: Location is not a poll URL there.
        let h2 = headers(None, Some("https://h/loc"));
        assert_eq!(
            start(LroMethod::Put, 201, &h2, Some(&body), RES),
            Start::Done
        );
    }

    #[test]
    fn put_with_running_provisioning_state_polls_the_resource() {
        let body = json!({"properties":{"provisioningState":"Creating"}});
        let s = start(
            LroMethod::Put,
            201,
            &LroHeaders::default(),
            Some(&body),
            RES,
        );
        assert_eq!(s, Start::Poll(Poll::Resource(RES.into())));
        let poll = Poll::Resource(RES.into());
        assert_eq!(progress(&poll, 200, Some(&body)), Progress::Running);
        let done = json!({"properties":{"provisioningState":"Succeeded"}});
        assert_eq!(progress(&poll, 200, Some(&done)), Progress::Succeeded);
        assert_eq!(
            finish(LroMethod::Put, &poll, &LroHeaders::default()),
            Finish::LastBody
        );
    }

    #[test]
    fn async_operation_states() {
        let poll = Poll::AsyncOperation("u".into());
        assert_eq!(
            progress(&poll, 200, Some(&json!({"status":"InProgress"}))),
            Progress::Running
        );
        assert_eq!(
            progress(&poll, 200, Some(&json!({"status":"Succeeded"}))),
            Progress::Succeeded
        );
        assert_eq!(
            progress(&poll, 200, Some(&json!({"status":"Canceled"}))),
            Progress::Canceled
        );
        let failed = json!({"status":"Failed","error":{"code":"Boom","message":"it broke"}});
        let Progress::Failed(e) = progress(&poll, 200, Some(&failed)) else {
            panic!("expected failure")
        };
        assert_eq!(e.code.as_deref(), Some("Boom"));
        assert_eq!(e.message, "it broke");
        // A status body without status keeps polling rather than guessing.
        assert_eq!(progress(&poll, 200, None), Progress::Running);
        assert_eq!(progress(&poll, 200, Some(&json!({}))), Progress::Running);
        let res = Poll::Resource("u".into());
        assert_eq!(
            progress(&res, 200, Some(&json!({"name":"x"}))),
            Progress::Succeeded
        );
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        assert_eq!(poll_delay(None), DEFAULT_POLL_DELAY);
        assert_eq!(poll_delay(Some("2")), Duration::from_secs(2));
        assert_eq!(poll_delay(Some("0")), MIN_POLL_DELAY);
        assert_eq!(poll_delay(Some("3600")), MAX_POLL_DELAY);
        assert_eq!(poll_delay(Some("soon")), DEFAULT_POLL_DELAY);
    }

    #[test]
    fn post_with_location_reads_last_body() {
        let h = headers(None, Some("https://h/loc"));
        let s = start(LroMethod::Post, 202, &h, None, RES);
        let Start::Poll(poll) = s else {
            panic!("expected polling")
        };
        assert_eq!(finish(LroMethod::Post, &poll, &h), Finish::LastBody);
    }
}
