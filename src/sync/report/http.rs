//! Reports to a control plane: `POST {url}/v1/nodes/{id}/status` with the
//! whole report as JSON, the bearer token of the sync requests, and a
//! timeout. `2xx` is written; `401`/`403` refused; anything else failed
//! (the reporter backs off and retries; sync is never held up). A node
//! that stops gracefully sends `DELETE {url}/v1/nodes/{id}?started_at=…`
//! as its last act: the control plane forgets it (unless a report of the
//! same id with another `started_at` arrived meanwhile).
//!
//! A node id is 1-128 of `A-Z a-z 0-9 . _ : -`, every one of them allowed
//! in a path segment (RFC 3986 `pchar`), so it is sent as it is.

use std::time::Duration;

use http::header::AUTHORIZATION;

use super::{NodeReport, ReportError};
use crate::config::secret::Secret;

pub struct HttpSink {
    http: reqwest::Client,
    /// `{base}/v1/nodes/{id}`.
    node: String,
    token: Option<Secret>,
    timeout: Duration,
}

impl std::fmt::Debug for HttpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSink")
            .field("node", &self.node)
            .finish()
    }
}

impl HttpSink {
    /// Reports of node `node` to the control plane at `base`.
    pub fn new(
        base: &str,
        node: &str,
        token: Option<Secret>,
        timeout: Duration,
    ) -> Result<HttpSink, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .build()?;
        let node = percent_encoding::utf8_percent_encode(node, crate::sync::http::PATH_SEGMENT);
        Ok(HttpSink {
            http,
            node: format!("{}/v1/nodes/{node}", base.trim_end_matches('/')),
            token,
            timeout,
        })
    }

    fn status_url(&self) -> String {
        format!("{}/status", self.node)
    }

    pub fn target(&self) -> String {
        format!("POST {}", self.status_url())
    }

    /// What [`HttpSink::leave`] asks, for its log line.
    pub fn leave_target(&self) -> String {
        format!("DELETE {}", self.node)
    }

    pub async fn write(&mut self, report: &NodeReport) -> Result<(), ReportError> {
        let body = serde_json::to_vec(report).map_err(|e| ReportError::Failed(e.to_string()))?;
        let req = self
            .http
            .post(self.status_url())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body);
        match self.send(req).await? {
            200..=299 => Ok(()),
            s @ (401 | 403) => Err(ReportError::Refused(format!("status {s}"))),
            s => Err(ReportError::Failed(format!("status {s}"))),
        }
    }
}

impl HttpSink {
    /// Sends `req` with the timeout and the bearer token: its status.
    async fn send(&self, mut req: reqwest::RequestBuilder) -> Result<u16, ReportError> {
        req = req.timeout(self.timeout);
        if let Some(token) = &self.token {
            req = req.header(AUTHORIZATION, format!("Bearer {}", token.expose()));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ReportError::Failed(e.to_string()))?;
        Ok(resp.status().as_u16())
    }

    /// Leaves the fleet: `DELETE {base}/v1/nodes/{id}?started_at=…`.
    /// A `404` (the control plane did not know the node) is left too;
    /// `405`/`501` say the control plane does not forget nodes (the node
    /// then shows as lost until its report ages out).
    pub async fn leave(&mut self, started_at: &str) -> Result<bool, ReportError> {
        let req = self
            .http
            .delete(&self.node)
            .query(&[("started_at", started_at)]);
        match self.send(req).await? {
            200..=299 | 404 => Ok(true),
            409 => Ok(false),
            s @ (401 | 403 | 405 | 501) => Err(ReportError::Refused(format!("status {s}"))),
            s => Err(ReportError::Failed(format!("status {s}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_go_into_the_path_as_they_are() {
        let sink = HttpSink::new(
            "http://cp/",
            "gw-http-1.eu:8080_a",
            None,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            sink.status_url(),
            "http://cp/v1/nodes/gw-http-1.eu:8080_a/status"
        );
        // What a valid id never holds is still encoded.
        let odd = HttpSink::new("http://cp", "a/b c", None, Duration::from_secs(1)).unwrap();
        assert_eq!(odd.status_url(), "http://cp/v1/nodes/a%2Fb%20c/status");
    }
}
