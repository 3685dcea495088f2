//! The CLI's side of the admin API: one blocking HTTP call per command, authenticated with
//! the member's token.

use std::time::Duration;

use anyhow::{Context, anyhow};
use node::api::ErrorBody;
use node::config::LoadedConfig;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A client for one member's admin API.
pub(crate) struct Client {
    agent: ureq::Agent,
    base: String,
    token: String,
    member: String,
}

impl Client {
    /// Reads the member's config and token.
    pub(crate) fn from_config(path: &std::path::Path, timeout: Duration) -> anyhow::Result<Self> {
        let loaded = LoadedConfig::load(path)?;
        let token = loaded.token()?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .new_agent();
        Ok(Self {
            agent,
            base: format!("http://{}", loaded.config.admin),
            token,
            member: loaded.config.name,
        })
    }

    fn finish<T: DeserializeOwned>(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<T> {
        let mut response = response.map_err(|error| match error {
            ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
                anyhow!(
                    "cannot reach {}'s node at {} (is it running? `blocktorrent run` or `cluster up`)",
                    self.member,
                    self.base
                )
            }
            ureq::Error::Timeout(_) => anyhow!("{}'s node did not answer in time", self.member),
            other => anyhow!("talking to {}'s node: {other}", self.member),
        })?;
        let status = response.status();
        let body = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .context("reading the node's answer")?;
        if status.is_success() {
            return serde_json::from_str(&body).context("the node's answer did not parse");
        }
        match serde_json::from_str::<ErrorBody>(&body) {
            Ok(error) => Err(anyhow!(error.error)),
            Err(_) => Err(anyhow!("{}'s node answered {status}", self.member)),
        }
    }

    pub(crate) fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let response = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token))
            .call();
        self.finish(response)
    }

    pub(crate) fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let response = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token))
            .send_json(body);
        self.finish(response)
    }

    pub(crate) fn post_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &[u8],
    ) -> anyhow::Result<T> {
        let response = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token))
            .header("Content-Type", "application/octet-stream")
            .send(body);
        self.finish(response)
    }
}
