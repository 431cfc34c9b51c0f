//! A Go `net/rpc` client with gob encoding, over one stream.
//!
//! A call writes a `Request{ServiceMethod, Seq}` header and the argument; the server answers
//! with a `Response{ServiceMethod, Seq, Error}` header and the result, in any order, so replies
//! are matched by `Seq`. One task reads replies for the stream's whole life and ends when the
//! last handle to the client is dropped.

use crate::lock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::gob::{Decoder, Encoder, FromGob, GobError, Message, Struct, ToGob, Value};
use crate::transport::BoxIo;

/// Why a `net/rpc` call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The plugin's method returned an error (or the server refused the call, as in
    /// `rpc: can't find method Plugin.Nope`).
    #[error("the plugin answered with an error: {0}")]
    Remote(String),

    /// The argument could not be encoded.
    #[error("cannot encode the argument")]
    Encode(#[source] GobError),

    /// The reply could not be decoded or converted to the type asked for; the stream stays
    /// usable.
    #[error("cannot decode the reply")]
    Decode(#[source] GobError),

    /// The stream broke or the plugin sent data that cannot be read; no call on it can finish.
    #[error("the connection to the plugin is broken: {0}")]
    Broken(String),
}

type Reply = Result<Value, CallError>;

#[derive(Default)]
struct Pending {
    calls: HashMap<u64, oneshot::Sender<Reply>>,
    broken: Option<String>,
}

struct Writer {
    io: WriteHalf<BoxIo>,
    encoder: Encoder,
    buffer: Vec<u8>,
}

/// A `net/rpc` client. Cheap to clone; concurrent calls share the stream.
#[derive(Clone)]
pub struct RpcClient {
    shared: Arc<Shared>,
}

struct Shared {
    writer: tokio::sync::Mutex<Writer>,
    pending: Arc<Mutex<Pending>>,
    seq: AtomicU64,
    reader: JoinHandle<()>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl RpcClient {
    /// Starts a client on `io` (a fresh stream: gob state starts empty in both directions).
    pub(crate) fn new(io: BoxIo) -> RpcClient {
        let (read, write) = tokio::io::split(io);
        let pending = Arc::new(Mutex::new(Pending::default()));
        let reader = tokio::spawn(read_replies(read, pending.clone()));
        RpcClient {
            shared: Arc::new(Shared {
                writer: tokio::sync::Mutex::new(Writer {
                    io: write,
                    encoder: Encoder::new(),
                    buffer: Vec::new(),
                }),
                pending,
                seq: AtomicU64::new(0),
                reader,
            }),
        }
    }

    /// Calls `method` (`"Plugin.Greet"`) with `args` and converts the result to `R`.
    ///
    /// A method that takes no argument in Go usually declares `interface{}`: pass `&()` (a nil
    /// interface). A call whose future is dropped is forgotten; its reply is discarded.
    pub async fn call<A, R>(&self, method: &str, args: &A) -> Result<R, CallError>
    where
        A: ToGob + ?Sized,
        R: FromGob,
    {
        let value = self.call_value(method, &args.to_gob()).await?;
        R::from_gob(value).map_err(CallError::Decode)
    }

    /// Calls `method` with a [`Value`] and returns the reply as one.
    pub async fn call_value(&self, method: &str, args: &Value) -> Result<Value, CallError> {
        let seq = self.shared.seq.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        {
            let mut pending = lock(&self.shared.pending);
            if let Some(reason) = &pending.broken {
                return Err(CallError::Broken(reason.clone()));
            }
            pending.calls.insert(seq, sender);
        }
        let forget = Forget {
            pending: &self.shared.pending,
            seq,
        };
        let header: Value = Struct::new("Request")
            .field("ServiceMethod", method)
            .field("Seq", seq)
            .into();
        {
            let mut writer = self.shared.writer.lock().await;
            let Writer {
                io,
                encoder,
                buffer,
            } = &mut *writer;
            buffer.clear();
            // Encode both before writing, so a bad argument leaves the stream untouched (and
            // the encoder forgets the types it would have defined).
            let checkpoint = encoder.checkpoint();
            let encoded = encoder
                .encode(&header, buffer)
                .and_then(|()| encoder.encode(args, buffer));
            if let Err(error) = encoded {
                encoder.rollback(checkpoint);
                return Err(CallError::Encode(error));
            }
            let written = async {
                io.write_all(buffer).await?;
                io.flush().await
            }
            .await;
            if buffer.capacity() > 1 << 20 {
                *buffer = Vec::new();
            }
            if let Err(error) = written {
                let reason = format!("writing the call failed: {error}");
                break_all(&self.shared.pending, &reason);
                return Err(CallError::Broken(reason));
            }
        }
        let reply = receiver.await;
        drop(forget);
        match reply {
            Ok(reply) => reply,
            Err(_) => Err(CallError::Broken(
                lock(&self.shared.pending)
                    .broken
                    .clone()
                    .unwrap_or_else(|| "the connection closed".to_owned()),
            )),
        }
    }

    /// Whether the stream has broken (every further call fails).
    pub fn is_broken(&self) -> bool {
        lock(&self.shared.pending).broken.is_some()
    }
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient")
            .field("broken", &self.is_broken())
            .finish_non_exhaustive()
    }
}

/// Removes a call's entry when its future ends early.
struct Forget<'a> {
    pending: &'a Mutex<Pending>,
    seq: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(self.pending).calls.remove(&self.seq);
    }
}

fn break_all(pending: &Mutex<Pending>, reason: &str) {
    let mut pending = lock(pending);
    if pending.broken.is_none() {
        pending.broken = Some(reason.to_owned());
    }
    for (_, call) in pending.calls.drain() {
        let _ = call.send(Err(CallError::Broken(reason.to_owned())));
    }
}

async fn read_replies(mut io: ReadHalf<BoxIo>, pending: Arc<Mutex<Pending>>) {
    let mut decoder = Decoder::new();
    let reason = loop {
        match next_reply(&mut io, &mut decoder).await {
            Ok((seq, reply)) => {
                let call = lock(&pending).calls.remove(&seq);
                match call {
                    Some(call) => {
                        let _ = call.send(reply);
                    }
                    None => tracing::trace!(seq, "reply to a call nobody waits for"),
                }
            }
            Err(reason) => break reason,
        }
    };
    tracing::debug!(%reason, "net/rpc stream ended");
    break_all(&pending, &reason);
}

/// Reads one reply: its header and its body. An error is fatal for the stream.
async fn next_reply(
    io: &mut (impl AsyncRead + Unpin),
    decoder: &mut Decoder,
) -> Result<(u64, Reply), String> {
    let header = next_value(io, decoder)
        .await?
        .map_err(|error| format!("unreadable reply header: {error}"))?;
    let mut header =
        Struct::from_gob(header).map_err(|error| format!("unreadable reply header: {error}"))?;
    let seq: u64 = header
        .take("Seq")
        .map_err(|error| format!("unreadable reply header: {error}"))?;
    let error: String = header
        .take("Error")
        .map_err(|error| format!("unreadable reply header: {error}"))?;
    // The body is read whole even when it does not decode, so the stream stays in step.
    let body = next_value(io, decoder).await?;
    let reply = if !error.is_empty() {
        Err(CallError::Remote(error))
    } else {
        body.map_err(CallError::Decode)
    };
    Ok((seq, reply))
}

/// Reads messages up to the next value. The outer error ends the stream (I/O, framing, a bad
/// type definition); the inner one is a value that did not decode.
async fn next_value(
    io: &mut (impl AsyncRead + Unpin),
    decoder: &mut Decoder,
) -> Result<Result<Value, GobError>, String> {
    loop {
        let message = read_message(io).await?;
        match decoder.decode(&message) {
            Ok(Message::Value(value)) => return Ok(Ok(value)),
            Ok(Message::Type(_)) => continue,
            Err(error @ GobError::BadTypeDefinition { .. }) => {
                return Err(format!("the plugin sent {error}"));
            }
            Err(error) => return Ok(Err(error)),
        }
    }
}

/// Reads one length-prefixed message.
async fn read_message(io: &mut (impl AsyncRead + Unpin)) -> Result<Vec<u8>, String> {
    let mut prefix = [0u8; 9];
    let first = match io.read_u8().await {
        Ok(byte) => byte,
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err("the plugin closed the stream".to_owned());
        }
        Err(error) => return Err(format!("reading from the plugin failed: {error}")),
    };
    prefix[0] = first;
    let mut have = 1;
    if first >= 0x80 {
        let count = (!first).wrapping_add(1) as usize;
        if count > 8 {
            return Err(format!("bad message length prefix byte {first:#04x}"));
        }
        io.read_exact(&mut prefix[1..=count])
            .await
            .map_err(|error| format!("the stream ended inside a message length: {error}"))?;
        have += count;
    }
    let (_, length) = Decoder::frame(&prefix[..have])
        .map_err(|error| error.to_string())?
        .ok_or_else(|| "incomplete message length".to_owned())?;
    let mut message = vec![0u8; length];
    io.read_exact(&mut message)
        .await
        .map_err(|error| format!("the stream ended inside a message of {length} bytes: {error}"))?;
    Ok(message)
}
