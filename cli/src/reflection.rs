//! A small gRPC server reflection client: which services a plugin serves, and the protobuf
//! descriptors of one of them, so `plinth call` can build its messages at run time.
//!
//! go-plugin plugins register reflection under both `grpc.reflection.v1` and the older
//! `grpc.reflection.v1alpha`; the messages are the same on the wire, so one set of generated
//! types is sent to whichever path answers (v1 first). The raw unary call itself lives in
//! `grpc_call`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use prost::Message;
use prost_reflect::DescriptorPool;
use tonic::codegen::{Body, Bytes, StdError};

use crate::failure::{CALL_FAILED, Failure, Phase};

/// The generated reflection client and messages (`proto/reflection.proto`, checked in;
/// `cargo xtask protos` regenerates them).
#[allow(clippy::all, clippy::pedantic)]
mod proto {
    include!("proto/grpc.reflection.v1.rs");
}

use proto::server_reflection_request::MessageRequest;
use proto::server_reflection_response::MessageResponse;
use proto::{ServerReflectionRequest, ServerReflectionResponse};

/// Anything a tonic client can call through: the plugin's channel, whatever its concrete type.
pub trait Transport:
    tonic::client::GrpcService<
        tonic::body::Body,
        Error: Into<StdError>,
        ResponseBody: Body<Data = Bytes, Error: Into<StdError> + Send> + Send + 'static,
        Future: Send,
    > + Clone
    + Send
    + 'static
{
}

impl<T> Transport for T where
    T: tonic::client::GrpcService<
            tonic::body::Body,
            Error: Into<StdError>,
            ResponseBody: Body<Data = Bytes, Error: Into<StdError> + Send> + Send + 'static,
            Future: Send,
        > + Clone
        + Send
        + 'static
{
}

const PATHS: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// A reflection client on one plugin; remembers which reflection version answered.
pub struct Reflection<T> {
    channel: T,
    path: Option<&'static str>,
    timeout: Duration,
}

impl<T: Transport> Reflection<T> {
    /// A client on `channel` whose every question (listing the services, or the descriptors
    /// of one) must be answered within `timeout`; nothing is sent yet.
    pub fn new(channel: T, timeout: Duration) -> Reflection<T> {
        Reflection {
            channel,
            path: None,
            timeout,
        }
    }

    /// Which reflection service answered (`grpc.reflection.v1`), once one has.
    pub fn version(&self) -> Option<&'static str> {
        self.path
            .and_then(|path| path.trim_start_matches('/').split_once(".ServerReflection"))
            .map(|(package, _)| package)
    }

    /// The full names of every service the plugin serves, sorted.
    pub async fn list_services(&mut self) -> Result<Vec<String>, Failure> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.list_services_now())
            .await
            .unwrap_or_else(|_| Err(no_answer("listing its services", timeout)))
    }

    async fn list_services_now(&mut self) -> Result<Vec<String>, Failure> {
        let response = self
            .ask(MessageRequest::ListServices(String::new()))
            .await?;
        match response {
            MessageResponse::ListServicesResponse(list) => {
                let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
                names.sort();
                Ok(names)
            }
            other => Err(unexpected(&other)),
        }
    }

    /// The descriptors of the file defining `symbol` (a service's full name) and of every file
    /// it imports, as one pool.
    pub async fn pool_for(&mut self, symbol: &str) -> Result<DescriptorPool, Failure> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.pool_for_now(symbol))
            .await
            .unwrap_or_else(|_| {
                Err(no_answer(
                    &format!("sending the descriptors of {symbol}"),
                    timeout,
                ))
            })
    }

    async fn pool_for_now(&mut self, symbol: &str) -> Result<DescriptorPool, Failure> {
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let first = self
            .ask(MessageRequest::FileContainingSymbol(symbol.to_owned()))
            .await?;
        self.collect(first, &mut files)?;
        // A server sends the imports it has not sent on the stream before; ask for any that
        // are still missing by name.
        let mut asked = BTreeSet::new();
        while let Some(missing) = missing_import(&files) {
            if !asked.insert(missing.clone()) {
                return Err(Failure::new(
                    CALL_FAILED,
                    format!("the plugin's reflection service does not send {missing}"),
                ));
            }
            let response = self.ask(MessageRequest::FileByFilename(missing)).await?;
            self.collect(response, &mut files)?;
        }
        let mut set = Vec::new();
        for bytes in files.values() {
            // FileDescriptorSet { repeated FileDescriptorProto file = 1; }
            prost::encoding::bytes::encode(1, bytes, &mut set);
        }
        let mut pool = DescriptorPool::new();
        pool.decode_file_descriptor_set(set.as_slice())
            .map_err(|e| {
                Failure::new(
                    CALL_FAILED,
                    format!("the plugin's descriptors for {symbol} do not load: {e}"),
                )
            })?;
        Ok(pool)
    }

    fn collect(
        &self,
        response: MessageResponse,
        files: &mut BTreeMap<String, Vec<u8>>,
    ) -> Result<(), Failure> {
        let MessageResponse::FileDescriptorResponse(found) = response else {
            return Err(unexpected(&response));
        };
        for bytes in found.file_descriptor_proto {
            let header = FileHeader::decode(bytes.as_slice()).map_err(|e| {
                Failure::new(
                    CALL_FAILED,
                    format!("the plugin sent a malformed file descriptor: {e}"),
                )
            })?;
            files.insert(header.name, bytes);
        }
        Ok(())
    }

    /// One request on its own stream; tries v1, then v1alpha, and keeps the one that answers.
    async fn ask(&mut self, request: MessageRequest) -> Result<MessageResponse, Failure> {
        let candidates: Vec<&'static str> = match self.path {
            Some(path) => vec![path],
            None => PATHS.to_vec(),
        };
        let mut last = None;
        for path in candidates {
            match self.ask_on(path, request.clone()).await {
                Ok(response) => {
                    self.path = Some(path);
                    return match response {
                        MessageResponse::ErrorResponse(error) => Err(Failure::new(
                            CALL_FAILED,
                            format!(
                                "the plugin's reflection service answered {}: {}",
                                tonic::Code::from(error.error_code),
                                error.error_message
                            ),
                        )),
                        other => Ok(other),
                    };
                }
                Err(status) if status.code() == tonic::Code::Unimplemented => last = Some(status),
                Err(status) => {
                    return Err(Failure::new(
                        CALL_FAILED,
                        format!(
                            "server reflection failed: {}: {}",
                            status.code(),
                            status.message()
                        ),
                    ));
                }
            }
        }
        let detail = last.map(|s| s.message().to_owned()).unwrap_or_default();
        Err(Failure::new(
            CALL_FAILED,
            format!("the plugin does not serve gRPC server reflection ({detail})"),
        )
        .hint("go-plugin plugins serve it with plugin.DefaultGRPCServer; others must register it"))
    }

    async fn ask_on(
        &mut self,
        path: &'static str,
        request: MessageRequest,
    ) -> Result<MessageResponse, tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready().await.map_err(|e| {
            tonic::Status::unavailable(format!("the plugin is not ready: {}", e.into()))
        })?;
        let message = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        };
        let requests = futures::stream::iter([message]);
        let codec =
            tonic_prost::ProstCodec::<ServerReflectionRequest, ServerReflectionResponse>::default();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
        let mut responses = grpc
            .streaming(tonic::Request::new(requests), path, codec)
            .await?
            .into_inner();
        let response = responses.message().await?.ok_or_else(|| {
            tonic::Status::unknown("the reflection stream closed without an answer")
        })?;
        response
            .message_response
            .ok_or_else(|| tonic::Status::unknown("the reflection answer is empty"))
    }
}

/// The two fields of a `google.protobuf.FileDescriptorProto` needed to resolve imports.
#[derive(Clone, PartialEq, Message)]
struct FileHeader {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, repeated, tag = "3")]
    dependency: Vec<String>,
}

fn missing_import(files: &BTreeMap<String, Vec<u8>>) -> Option<String> {
    files.values().find_map(|bytes| {
        let header = FileHeader::decode(bytes.as_slice()).ok()?;
        header
            .dependency
            .into_iter()
            .find(|import| !files.contains_key(import))
    })
}

/// The reflection service did not finish `doing` within `timeout`.
fn no_answer(doing: &str, timeout: Duration) -> Failure {
    Failure::timed_out(
        Phase::Reflection,
        timeout,
        format!("the plugin's gRPC server reflection did not finish {doing}; it was shut down"),
    )
    .hint("raise --reflection-timeout SECONDS, or check that the plugin serves gRPC (go-plugin's plugin.DefaultGRPCServer)")
}

fn unexpected(response: &MessageResponse) -> Failure {
    Failure::new(
        CALL_FAILED,
        format!("the plugin's reflection service answered something else: {response:?}"),
    )
}
