//! The client side of the API, as `xnos` uses it.

use std::{
    io,
    path::{Path, PathBuf},
};

use http_body_util::{BodyExt, Full};
use hyper::{
    Method, Request, Response,
    body::{Bytes, Incoming},
};
use hyper_util::rt::TokioIo;
use serde::{Serialize, de::DeserializeOwned};
use tokio::net::UnixStream;

use super::{ErrorBody, WatchEvent};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach xnosd at {socket}: {source} (is xnosd running? use --socket or XNOS_SOCKET to pick an instance)"
    )]
    Connect {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("talking to xnosd at {socket}: {message}")]
    Protocol { socket: PathBuf, message: String },
    #[error("{0}")]
    Refused(String),
}

/// A client of one daemon's API.
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    fn protocol(&self, message: impl ToString) -> ClientError {
        ClientError::Protocol {
            socket: self.socket.clone(),
            message: message.to_string(),
        }
    }

    /// Send a request; returns the response once its status is a success.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response<Incoming>, ClientError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.protocol(e))?;
        tokio::spawn(connection);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "xnosd")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, super::CLI_USER_AGENT)
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| self.protocol(e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.protocol(e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.protocol(e))?
            .to_bytes();
        let message = serde_json::from_slice::<ErrorBody>(&body)
            .map(|b| b.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        Err(ClientError::Refused(message))
    }

    async fn body(&self, response: Response<Incoming>) -> Result<Bytes, ClientError> {
        Ok(response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.protocol(e))?
            .to_bytes())
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let response = self.send(Method::GET, path, None).await?;
        let body = self.body(response).await?;
        serde_json::from_slice(&body)
            .map_err(|e| self.protocol(format!("bad JSON from daemon: {e}")))
    }

    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let response = self.send(Method::GET, path, None).await?;
        Ok(String::from_utf8_lossy(&self.body(response).await?).into_owned())
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| self.protocol(e))?;
        let response = self.send(Method::POST, path, Some(body)).await?;
        let body = self.body(response).await?;
        serde_json::from_slice(&body)
            .map_err(|e| self.protocol(format!("bad JSON from daemon: {e}")))
    }

    /// Follow a watch stream, calling `f` on each event until the daemon closes it; an
    /// error if it closed it because this watcher fell behind.
    pub async fn watch(
        &self,
        table: &str,
        mut f: impl FnMut(WatchEvent),
    ) -> Result<(), ClientError> {
        let response = self
            .send(Method::GET, &format!("/v1/watch/{table}"), None)
            .await?;
        let mut body = response.into_body();
        let mut pending = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| self.protocol(e))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let event = serde_json::from_slice(&line)
                    .map_err(|e| self.protocol(format!("bad watch event: {e}")))?;
                let fell_behind = match &event {
                    WatchEvent::FellBehind { error, .. } => Some(error.clone()),
                    _ => None,
                };
                f(event);
                if let Some(error) = fell_behind {
                    return Err(ClientError::Refused(error));
                }
            }
        }
        Ok(())
    }
}
