//! go-plugin's broker: extra gRPC connections between host and plugin, named by a `u32` id
//! the application passes in its own messages (the counter's `add_server`).
//!
//! Both sides talk over one long-lived `/plugin.GRPCBroker/StartStream`, opened by the host
//! right after connecting and served by the plugin ([`crate::serve()`]); the same [`Broker`]
//! type is either side's end of it. [`Broker::accept_and_serve`] serves gRPC services on a new socket (with the
//! connection's TLS material) and announces it; [`Broker::dial`] waits up to five seconds for
//! the plugin to announce an id and connects to it. When the plugin supports it and the host
//! asked, the multiplexed mode runs every connection as a yamux stream of the main socket and
//! pairs them with knocks instead.

use crate::lock;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::transport::PluginChannel;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::service::Routes;

use crate::error::{Error, Result};
use crate::handshake::Address;
use crate::mux::Mux;
use crate::proto::plugin::ConnInfo;
use crate::proto::plugin::conn_info::Knock;
use crate::proto::plugin::grpc_broker_client::GrpcBrokerClient;
use crate::transport::{self, Dialer};

/// How long an announcement waits for a dial, and a dial for its announcement (as go-plugin).
pub const WINDOW: Duration = Duration::from_secs(5);

/// One side's end of the broker of one plugin connection (the host's, or a plugin's when it is
/// served by [`crate::serve()`]). Cheap to clone.
#[derive(Clone)]
pub struct Broker {
    shared: Arc<Shared>,
}

/// Where this side binds the sockets of the services it offers.
enum Sockets {
    /// The host: a private temporary directory.
    TempDir(tempfile::TempDir),
    /// A plugin: the same kind of socket as its main listener (`PLUGIN_UNIX_SOCKET_DIR`,
    /// group permissions).
    #[cfg(unix)]
    Plugin(crate::serve::listener::UnixPlace),
    /// Multiplexed: no sockets at all.
    None,
}

struct Shared {
    /// The peer's name in errors: the plugin's name on the host side, `host` on a plugin.
    plugin: Arc<str>,
    /// Whether this is a plugin's end (what it sends travels as `StartStream` responses).
    outgoing_is_response: bool,
    next_id: AtomicU32,
    servers: AtomicU64,
    outgoing: mpsc::UnboundedSender<ConnInfo>,
    mailbox: Mutex<HashMap<u32, (ConnInfo, Instant)>>,
    arrived: Notify,
    tls_client: Option<Arc<rustls::ClientConfig>>,
    tls_server: Option<Arc<rustls::ServerConfig>>,
    sockets: Sockets,
    closed: watch::Sender<bool>,
    mux: Option<Mux>,
}

impl Broker {
    /// Creates the broker and the future that runs its stream; the caller owns that future.
    pub(crate) fn start(
        plugin: Arc<str>,
        channel: PluginChannel,
        tls_client: Option<Arc<rustls::ClientConfig>>,
        tls_server: Option<Arc<rustls::ServerConfig>>,
        mux: Option<Mux>,
    ) -> Result<(Broker, impl Future<Output = ()> + Send + 'static)> {
        let sockets = if mux.is_some() {
            Sockets::None
        } else {
            Sockets::TempDir(
                tempfile::Builder::new()
                    .prefix("plinth-broker-")
                    .permissions(crate::connection::private_dir())
                    .tempdir()
                    .map_err(|source| Error::Io {
                        context: "cannot create the broker's socket directory".to_owned(),
                        source,
                    })?,
            )
        };
        let (broker, requests) = Broker::new(plugin, tls_client, tls_server, sockets, mux);
        let run = receive(Arc::downgrade(&broker.shared), channel, requests);
        Ok((broker, run))
    }

    /// A plugin's end: what it announces goes to the returned receiver, which the plugin's
    /// `StartStream` handler sends to the host; what the host sends is given to
    /// [`Broker::file`].
    #[cfg(unix)]
    pub(crate) fn serving(
        tls_client: Option<Arc<rustls::ClientConfig>>,
        tls_server: Option<Arc<rustls::ServerConfig>>,
        place: crate::serve::listener::UnixPlace,
    ) -> (Broker, mpsc::UnboundedReceiver<ConnInfo>) {
        Broker::new(
            "host".into(),
            tls_client,
            tls_server,
            Sockets::Plugin(place),
            None,
        )
    }

    fn new(
        plugin: Arc<str>,
        tls_client: Option<Arc<rustls::ClientConfig>>,
        tls_server: Option<Arc<rustls::ServerConfig>>,
        sockets: Sockets,
        mux: Option<Mux>,
    ) -> (Broker, mpsc::UnboundedReceiver<ConnInfo>) {
        let (outgoing, requests) = mpsc::unbounded_channel();
        let outgoing_is_response = !matches!(sockets, Sockets::TempDir(_) | Sockets::None);
        let shared = Arc::new(Shared {
            plugin,
            outgoing_is_response,
            next_id: AtomicU32::new(0),
            servers: AtomicU64::new(0),
            outgoing,
            mailbox: Mutex::new(HashMap::new()),
            arrived: Notify::new(),
            tls_client,
            tls_server,
            sockets,
            closed: watch::Sender::new(false),
            mux,
        });
        (Broker { shared }, requests)
    }

    /// Files a message the peer sent on the broker stream: an announcement goes to the
    /// mailbox (kept [`WINDOW`]), a knock is answered.
    pub(crate) fn file(&self, info: ConnInfo) {
        file(&self.shared, info);
    }

    /// A fresh id for [`Broker::accept_and_serve`]: 1, 2, 3, ...
    pub fn next_id(&self) -> u32 {
        self.shared
            .next_id
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1)
    }

    /// Serves `routes` under broker id `id` and tells the plugin where. The services run until
    /// the returned [`BrokerServer`] is dropped or the plugin connection ends.
    pub async fn accept_and_serve(&self, id: u32, routes: Routes) -> Result<BrokerServer> {
        let (stop, stopped) = oneshot::channel::<()>();
        let mut closed = self.shared.closed.subscribe();
        let shutdown = async move {
            tokio::select! {
                _ = stopped => {}
                _ = closed.wait_for(|closed| *closed) => {}
            }
        };
        let router = tonic::transport::Server::builder().add_routes(routes);
        if let Some(mux) = &self.shared.mux {
            let incoming = mux.listen(id, self.shared.tls_server.clone());
            let task = tokio::spawn(async move {
                let _ = router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await;
            });
            return Ok(BrokerServer {
                stop: Some(stop),
                task,
                path: None,
                mux: Some((mux.clone(), id)),
            });
        }
        let (listener, path) = self.bind(id)?;
        let incoming = transport::incoming(listener, self.shared.tls_server.clone());
        let task = tokio::spawn(async move {
            let _ = router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await;
        });
        self.send(ConnInfo {
            service_id: id,
            network: "unix".to_owned(),
            address: path.display().to_string(),
            knock: None,
        })?;
        Ok(BrokerServer {
            stop: Some(stop),
            task,
            path: Some(path),
            mux: None,
        })
    }

    /// Connects to the service the plugin offers under `id`, waiting up to five seconds for
    /// the plugin to announce it.
    pub async fn dial(&self, id: u32) -> Result<PluginChannel> {
        let dialer = match &self.shared.mux {
            Some(mux) => self.knock(mux, id).await?,
            None => {
                let info = self.wait_for(id).await?;
                let address = Address::parse(&info.network, &info.address).map_err(|error| {
                    self.error(id, format!("the {} announced {error}", self.peer()))
                })?;
                transport::dialer(address, self.shared.tls_client.clone())
            }
        };
        transport::channel(dialer)
            .await
            .map_err(|reason| self.error(id, format!("cannot connect: {reason}")))
    }

    /// Multiplexed dial: knock, wait for the acknowledgement, then open a stream.
    async fn knock(&self, mux: &Mux, id: u32) -> Result<Dialer> {
        let _serial = mux.dial_lock().await;
        self.send(ConnInfo {
            service_id: id,
            network: String::new(),
            address: String::new(),
            knock: Some(Knock {
                knock: true,
                ack: false,
                error: String::new(),
            }),
        })?;
        let answer = self.wait_for(id).await?;
        match answer.knock {
            Some(Knock {
                knock: true,
                ack: true,
                error,
            }) if error.is_empty() => {}
            Some(Knock { error, .. }) if !error.is_empty() => {
                return Err(self.error(id, format!("the plugin refused the knock: {error}")));
            }
            _ => {
                return Err(self.error(
                    id,
                    "the plugin answered the knock with no acknowledgement".to_owned(),
                ));
            }
        }
        let stream = mux
            .open()
            .await
            .map_err(|error| self.error(id, format!("cannot open a stream: {error}")))?;
        Ok(transport::once(stream, self.shared.tls_client.clone()))
    }

    async fn wait_for(&self, id: u32) -> Result<ConnInfo> {
        let deadline = tokio::time::Instant::now() + WINDOW;
        loop {
            let arrived = self.shared.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(info) = self.take(id) {
                return Ok(info);
            }
            if *self.shared.closed.borrow() {
                return Err(self.error(id, "the broker stream is closed".to_owned()));
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Err(self.error(
                    id,
                    format!("the {} did not announce it within {WINDOW:?}", self.peer()),
                ));
            }
        }
    }

    fn take(&self, id: u32) -> Option<ConnInfo> {
        let mut mailbox = lock(&self.shared.mailbox);
        mailbox.remove(&id).map(|(info, _)| info)
    }

    fn send(&self, info: ConnInfo) -> Result<()> {
        let id = info.service_id;
        self.shared
            .outgoing
            .send(info)
            .map_err(|_| self.error(id, "the broker stream is closed".to_owned()))
    }

    #[cfg(unix)]
    fn bind(&self, id: u32) -> Result<(tokio::net::UnixListener, PathBuf)> {
        match &self.shared.sockets {
            Sockets::TempDir(dir) => {
                let serial = self.shared.servers.fetch_add(1, Ordering::Relaxed);
                let path = dir.path().join(format!("{id}-{serial}"));
                let listener =
                    tokio::net::UnixListener::bind(&path).map_err(|source| Error::Io {
                        context: format!("cannot listen on broker socket {}", path.display()),
                        source,
                    })?;
                Ok((listener, path))
            }
            Sockets::Plugin(place) => place.bind(),
            Sockets::None => Err(self.error(id, "no socket directory".to_owned())),
        }
    }

    fn peer(&self) -> &'static str {
        if self.shared.outgoing_is_response {
            "host"
        } else {
            "plugin"
        }
    }

    fn error(&self, id: u32, reason: String) -> Error {
        Error::Broker {
            plugin: self.shared.plugin.to_string(),
            id,
            reason,
        }
    }

    /// Stops every server and fails pending dials; called when the connection ends.
    pub(crate) fn close(&self) {
        self.shared.closed.send_replace(true);
        self.shared.arrived.notify_waiters();
    }
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("plugin", &self.shared.plugin)
            .field("multiplexed", &self.shared.mux.is_some())
            .finish_non_exhaustive()
    }
}

/// Runs the broker stream: sends the host's announcements and files the plugin's.
async fn receive(
    shared: std::sync::Weak<Shared>,
    channel: PluginChannel,
    requests: mpsc::UnboundedReceiver<ConnInfo>,
) {
    let mut client = GrpcBrokerClient::new(channel);
    let responses = client
        .start_stream(UnboundedReceiverStream::new(requests))
        .await;
    let mut responses = match responses {
        Ok(response) => response.into_inner(),
        Err(status) => {
            tracing::debug!(%status, "the plugin's broker stream could not be opened");
            return;
        }
    };
    while let Ok(Some(info)) = responses.message().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        file(&shared, info);
    }
}

fn file(shared: &Shared, info: ConnInfo) {
    let knock_request = info
        .knock
        .as_ref()
        .is_some_and(|knock| knock.knock && !knock.ack);
    if knock_request {
        if let Some(mux) = &shared.mux {
            let answer = mux.knocked(info.service_id);
            let _ = shared.outgoing.send(ConnInfo {
                service_id: info.service_id,
                network: String::new(),
                address: String::new(),
                knock: Some(Knock {
                    knock: true,
                    ack: true,
                    error: answer.err().unwrap_or_default(),
                }),
            });
        }
        return;
    }
    let mut mailbox = lock(&shared.mailbox);
    mailbox.retain(|_, (_, arrived)| arrived.elapsed() < WINDOW);
    mailbox
        .entry(info.service_id)
        .or_insert((info, Instant::now()));
    drop(mailbox);
    shared.arrived.notify_waiters();
}

/// Services served through the broker; dropping it stops them.
#[must_use = "dropping a BrokerServer stops its services"]
pub struct BrokerServer {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    path: Option<PathBuf>,
    mux: Option<(Mux, u32)>,
}

impl Drop for BrokerServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
        if let Some((mux, id)) = &self.mux {
            mux.unlisten(*id);
        }
    }
}

impl std::fmt::Debug for BrokerServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerServer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}
