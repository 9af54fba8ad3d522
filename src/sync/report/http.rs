//! Reports to a control plane: `POST {url}/v1/nodes/{id}/status` with the
//! whole report as JSON, the bearer token of the sync requests, and a
//! timeout. `2xx` is written; `401`/`403` refused; anything else failed
//! (the reporter backs off and retries; sync is never held up).

use std::time::Duration;

use http::header::AUTHORIZATION;

use super::{NodeReport, ReportError};
use crate::config::secret::Secret;

pub struct HttpSink {
    http: reqwest::Client,
    url: String,
    token: Option<Secret>,
    timeout: Duration,
}

impl std::fmt::Debug for HttpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSink").field("url", &self.url).finish()
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
        let node = percent_encoding::utf8_percent_encode(node, percent_encoding::NON_ALPHANUMERIC);
        Ok(HttpSink {
            http,
            url: format!("{}/v1/nodes/{node}/status", base.trim_end_matches('/')),
            token,
            timeout,
        })
    }

    pub fn target(&self) -> String {
        format!("POST {}", self.url)
    }

    pub async fn write(&mut self, report: &NodeReport) -> Result<(), ReportError> {
        let body = serde_json::to_vec(report).map_err(|e| ReportError::Failed(e.to_string()))?;
        let mut req = self
            .http
            .post(&self.url)
            .timeout(self.timeout)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(token) = &self.token {
            req = req.header(AUTHORIZATION, format!("Bearer {}", token.expose()));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ReportError::Failed(e.to_string()))?;
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            s @ (401 | 403) => Err(ReportError::Refused(format!("status {s}"))),
            s => Err(ReportError::Failed(format!("status {s}"))),
        }
    }
}
