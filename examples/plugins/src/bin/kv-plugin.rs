//! The kv interface served by a Rust program as a go-plugin plugin, loadable by Go hosts and by
//! Plinth's own host exactly like `tests/go/cmd/kv-plugin`.
//!
//! It serves application protocol versions 1 and 2 (version 2 prefixes every value it returns
//! with `v2:`, so a host can see which one was negotiated). A few keys do more than store, so
//! tests can watch the plumbing: putting under `stdout` or `stderr` prints the value there
//! (it reaches the host through go-plugin's stdio stream), and under `log:<level>` logs the
//! value at that level (it reaches the host's logger as an hclog line).

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Mutex;

use plinth_example_plugins::proto::kv_server::{Kv, KvServer};
use plinth_example_plugins::proto::{Empty, GetRequest, GetResponse, PutRequest};
use plinth_subprocess::serve::{ServeConfig, serve_blocking};
use tonic::service::Routes;
use tonic::{Request, Response, Status};

/// An in-memory store; `prefix` is prepended to every value returned.
#[derive(Default)]
struct MemKv {
    prefix: &'static str,
    values: Mutex<HashMap<String, Vec<u8>>>,
}

#[tonic::async_trait]
impl Kv for MemKv {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let key = request.into_inner().key;
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        match values.get(&key) {
            Some(value) => {
                let mut out = self.prefix.as_bytes().to_vec();
                out.extend_from_slice(value);
                Ok(Response::new(GetResponse { value: out }))
            }
            None => Err(Status::unknown(format!(
                "no value stored under key {key:?}"
            ))),
        }
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<Empty>, Status> {
        let PutRequest { key, value } = request.into_inner();
        let text = String::from_utf8_lossy(&value);
        match key.as_str() {
            "stdout" => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&value).and_then(|()| out.flush());
            }
            "stderr" => {
                let _ = std::io::stderr().write_all(&value);
            }
            "log:trace" => tracing::trace!(key = %key, "{text}"),
            "log:debug" => tracing::debug!(key = %key, "{text}"),
            "log:info" => tracing::info!(key = %key, "{text}"),
            "log:warn" => tracing::warn!(key = %key, "{text}"),
            "log:error" => tracing::error!(key = %key, "{text}"),
            _ => {}
        }
        self.values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, value);
        Ok(Response::new(Empty {}))
    }
}

fn kv(prefix: &'static str) -> Routes {
    let server = KvServer::new(MemKv {
        prefix,
        ..MemKv::default()
    })
    .max_decoding_message_size(plinth_subprocess::transport::MAX_MESSAGE_SIZE)
    .max_encoding_message_size(plinth_subprocess::transport::MAX_MESSAGE_SIZE);
    Routes::new(server)
}

fn main() -> ExitCode {
    let config = ServeConfig::new(plinth_example_plugins::handshake())
        .versioned(1, |_broker| kv(""))
        .versioned(2, |_broker| kv("v2:"));
    match serve_blocking(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kv-plugin: {error}");
            ExitCode::FAILURE
        }
    }
}
