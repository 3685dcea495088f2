//! The CLI's side of the admin API: one blocking HTTP call per command, authenticated with
//! the member's token. `store` streams the file up and `fetch` streams it down ([`Frames`]), so
//! neither holds a file in memory.

use std::io::Read;
use std::time::Duration;

use anyhow::{Context, anyhow};
use node::api::ErrorBody;
use node::config::LoadedConfig;
use node::frames::{self, FrameKind};
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
    /// Reads the member's config and token; every call must finish within `timeout`.
    pub(crate) fn from_config(path: &std::path::Path, timeout: Duration) -> anyhow::Result<Self> {
        Self::with_timeout(path, Some(timeout))
    }

    /// Reads the member's config and token, for calls that stream a file and so last as long as
    /// the file needs (only connecting is bounded).
    pub(crate) fn streaming(path: &std::path::Path) -> anyhow::Result<Self> {
        Self::with_timeout(path, None)
    }

    fn with_timeout(path: &std::path::Path, timeout: Option<Duration>) -> anyhow::Result<Self> {
        let loaded = LoadedConfig::load(path)?;
        let token = loaded.token()?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(timeout)
            .timeout_connect(Some(Duration::from_secs(10)))
            // `bench ledger` keeps about 16 answers waiting per participant, each on a
            // connection it takes back from the pool for its next batch.
            .max_idle_connections(64)
            .max_idle_connections_per_host(64)
            .build()
            .new_agent();
        Ok(Self {
            agent,
            base: format!("http://{}", loaded.config.admin),
            token,
            member: loaded.config.name,
        })
    }

    fn answered(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        response.map_err(|error| match error {
            ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
                anyhow!(
                    "cannot reach {}'s node at {} (is it running? `blocktorrent run` or `cluster up`)",
                    self.member,
                    self.base
                )
            }
            ureq::Error::Timeout(_) => anyhow!("{}'s node did not answer in time", self.member),
            other => anyhow!("talking to {}'s node: {other}", self.member),
        })
    }

    /// The error an unsuccessful answer carries.
    fn refusal(&self, status: ureq::http::StatusCode, body: &str) -> anyhow::Error {
        match serde_json::from_str::<ErrorBody>(body) {
            Ok(error) => anyhow!(error.error),
            Err(_) => anyhow!("{}'s node answered {status}", self.member),
        }
    }

    fn finish<T: DeserializeOwned>(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<T> {
        let mut response = self.answered(response)?;
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
        Err(self.refusal(status, &body))
    }

    /// Opens a framed answer.
    fn frames(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<Frames> {
        let mut response = self.answered(response)?;
        let status = response.status();
        if !status.is_success() {
            let body = response
                .body_mut()
                .with_config()
                .limit(1 << 20)
                .read_to_string()
                .unwrap_or_default();
            return Err(self.refusal(status, &body));
        }
        Ok(Frames {
            reader: Box::new(response.into_body().into_reader()),
            member: self.member.clone(),
        })
    }

    /// A POST to `path` carrying the admin token.
    fn post(&self, path: &str) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
        self.agent
            .post(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token))
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
        let response = self.post(path).send_json(body);
        self.finish(response)
    }

    /// Posts `len` bytes read from `body` and opens the framed answer.
    pub(crate) fn post_stream(
        &self,
        path: &str,
        body: &mut dyn Read,
        len: u64,
    ) -> anyhow::Result<Frames> {
        let response = self
            .post(path)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", len.to_string())
            .header("Accept", frames::CONTENT_TYPE)
            .send(ureq::SendBody::from_reader(body));
        self.frames(response)
    }

    /// Posts `body` as `application/octet-stream` and opens the framed answer (returned once
    /// its head has come).
    pub(crate) fn post_bytes_frames(&self, path: &str, body: &[u8]) -> anyhow::Result<Frames> {
        let response = self
            .post(path)
            .header("Content-Type", "application/octet-stream")
            .header("Accept", frames::CONTENT_TYPE)
            .send(body);
        self.frames(response)
    }

    /// Posts a JSON body and opens the framed answer.
    pub(crate) fn post_json_frames<B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<Frames> {
        let response = self
            .post(path)
            .header("Accept", frames::CONTENT_TYPE)
            .send_json(body);
        self.frames(response)
    }
}

/// A framed answer, read frame by frame.
pub(crate) struct Frames {
    reader: Box<dyn Read + Send>,
    member: String,
}

/// One frame of a framed answer.
pub(crate) enum Frame<R> {
    /// File bytes.
    Data(Vec<u8>),
    /// How far the node has come.
    Progress(node::Progress),
    /// The end: the receipt.
    Done(R),
}

impl Frames {
    /// Reads the end of a framed answer whose last frame came: an answer is done only at its
    /// end of stream, and only a connection read to its end goes back to the pool.
    pub(crate) fn finish(mut self) -> anyhow::Result<()> {
        match frames::read(&mut self.reader) {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err(anyhow!(
                "{}'s node sent a frame after its last",
                self.member
            )),
            Err(error) => Err(anyhow!("reading {}'s answer: {error}", self.member)),
        }
    }

    /// The next frame; an error frame, a malformed frame or an answer that stops before its
    /// receipt is an error.
    pub(crate) fn next<R: DeserializeOwned>(&mut self) -> anyhow::Result<Frame<R>> {
        let cut = || {
            anyhow!(
                "{}'s node stopped answering before it finished",
                self.member
            )
        };
        let (kind, payload) = frames::read(&mut self.reader)
            .map_err(|error| match error.kind() {
                std::io::ErrorKind::UnexpectedEof => cut(),
                _ => anyhow!("reading {}'s answer: {error}", self.member),
            })?
            .ok_or_else(cut)?;
        Ok(match kind {
            FrameKind::Data => Frame::Data(payload),
            FrameKind::Progress => Frame::Progress(
                serde_json::from_slice(&payload).context("a progress frame did not parse")?,
            ),
            FrameKind::Receipt => Frame::Done(
                serde_json::from_slice(&payload).context("the node's receipt did not parse")?,
            ),
            FrameKind::Error => {
                let error: ErrorBody =
                    serde_json::from_slice(&payload).context("the node's error did not parse")?;
                return Err(anyhow!(error.error));
            }
        })
    }
}
