//! `xnos wait-ready`: wait for the socket of a starting xnosd and its ready answer.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use xnos::{
    api::{Client, ClientError},
    ready::Readiness,
};

const POLL: Duration = Duration::from_millis(50);

pub async fn run(client: &Client, socket: &Path, timeout: f64) -> Result<(), ClientError> {
    let limit = Duration::try_from_secs_f64(timeout).map_err(|_| {
        ClientError::Refused(format!("--timeout {timeout}: not a duration in seconds"))
    })?;
    let deadline = Instant::now() + limit;
    loop {
        let waiting_for = if socket.exists() {
            match client.get::<Readiness>("/v1/ready").await {
                Ok(readiness) if readiness.ready => {
                    println!("xnosd at {} is ready", socket.display());
                    return Ok(());
                }
                Ok(readiness) => readiness.waiting_for(),
                Err(e) => format!("an answer ({e})"),
            }
        } else {
            format!("its API socket {} to appear", socket.display())
        };
        if Instant::now() >= deadline {
            return Err(ClientError::Refused(format!(
                "xnosd not ready after {timeout}s: still waiting for {waiting_for}"
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}
