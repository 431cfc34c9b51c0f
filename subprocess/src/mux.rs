//! The multiplexed broker's transport: one socket to the plugin carrying a yamux session, with
//! the main gRPC connection and every brokered one as separate yamux streams.
//!
//! The host is the yamux client. Streams the host opens are dialed connections (the main one,
//! or a brokered dial after an acknowledged knock); streams the plugin opens belong to the id
//! the plugin last knocked for, so knocks and streams are strictly paired, one at a time. TLS,
//! when on, runs inside each stream.

use crate::lock;
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_yamux::{Config, Control, Session};

use crate::transport::{BoxIo, Dialer, Incoming, tls_connect};

/// The host's end of a multiplexed connection. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Mux {
    shared: Arc<Shared>,
}

struct Shared {
    control: Control,
    dials: tokio::sync::Mutex<()>,
    listeners: Mutex<HashMap<u32, mpsc::UnboundedSender<BoxIo>>>,
    armed: Mutex<Option<u32>>,
}

impl Mux {
    /// Starts a yamux client session over `io`; the returned future drives it and must be
    /// polled (spawned) for the session to work.
    pub(crate) fn start(io: BoxIo) -> (Mux, impl Future<Output = ()> + Send + 'static) {
        let mut session = Session::new_client(io, Config::default());
        let mux = Mux {
            shared: Arc::new(Shared {
                control: session.control(),
                dials: tokio::sync::Mutex::new(()),
                listeners: Mutex::new(HashMap::new()),
                armed: Mutex::new(None),
            }),
        };
        let weak = Arc::downgrade(&mux.shared);
        let drive = async move {
            while let Some(Ok(stream)) = session.next().await {
                let Some(shared) = weak.upgrade() else {
                    return;
                };
                let armed = lock(&shared.armed).take();
                let listener = armed.and_then(|id| lock(&shared.listeners).get(&id).cloned());
                match listener {
                    Some(listener) => {
                        let _ = listener.send(Box::new(stream));
                    }
                    None => {
                        tracing::debug!("dropped a yamux stream the plugin opened without a knock")
                    }
                }
            }
        };
        (mux, drive)
    }

    /// Opens a new stream to the plugin.
    pub(crate) async fn open(&self) -> io::Result<BoxIo> {
        let mut control = self.shared.control.clone();
        let stream = control
            .open_stream()
            .await
            .map_err(|error| io::Error::new(io::ErrorKind::ConnectionAborted, error.to_string()))?;
        Ok(Box::new(stream))
    }

    /// A dialer for the plugin's main gRPC server: a new stream, opened while no knock is
    /// pending (the plugin gives a stream that follows no knock to its main server), under
    /// TLS when `tls` is given.
    pub(crate) fn dialer(&self, tls: Option<Arc<rustls::ClientConfig>>) -> Dialer {
        let mux = self.clone();
        Arc::new(move || {
            let mux = mux.clone();
            let tls = tls.clone();
            Box::pin(async move {
                let io = {
                    let _serial = mux.dial_lock().await;
                    mux.open().await?
                };
                match tls {
                    Some(config) => tls_connect(io, config).await,
                    None => Ok(io),
                }
            })
        })
    }

    /// Serialises dials: a knock and its stream must not interleave with another's.
    pub(crate) async fn dial_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.shared.dials.lock().await
    }

    /// Accepts the streams the plugin opens for `id`, TLS-wrapped when `tls` is given.
    pub(crate) fn listen(
        &self,
        id: u32,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> impl futures::Stream<Item = io::Result<Incoming>> + Send + 'static {
        let (sender, receiver) = mpsc::unbounded_channel::<BoxIo>();
        lock(&self.shared.listeners).insert(id, sender);
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        futures::stream::unfold(
            (receiver, acceptor),
            |(mut receiver, acceptor)| async move {
                loop {
                    let io = receiver.recv().await?;
                    let io: BoxIo = match &acceptor {
                        None => io,
                        Some(acceptor) => match acceptor.accept(io).await {
                            Ok(tls) => Box::new(tls),
                            Err(error) => {
                                tracing::warn!(%error, "refused a brokered stream: TLS handshake failed");
                                continue;
                            }
                        },
                    };
                    return Some((Ok(Incoming(io)), (receiver, acceptor)));
                }
            },
        )
    }

    /// Stops accepting for `id`.
    pub(crate) fn unlisten(&self, id: u32) {
        lock(&self.shared.listeners).remove(&id);
    }

    /// The plugin knocked for `id`: the next stream it opens is for that id. Fails (the
    /// answer's error text) when nothing listens on `id`.
    pub(crate) fn knocked(&self, id: u32) -> Result<(), String> {
        if !lock(&self.shared.listeners).contains_key(&id) {
            return Err(format!("no listener for id {id}"));
        }
        *lock(&self.shared.armed) = Some(id);
        Ok(())
    }
}
