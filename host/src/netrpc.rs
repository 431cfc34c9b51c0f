//! The netrpc half of an adapter: what [`Plugin::from_netrpc`](crate::Plugin::from_netrpc)
//! receives when the plugin is a legacy go-plugin executable speaking `net/rpc`.
//!
//! A [`NetRpcConn`] is the dispensed object's stream: [`NetRpcConn::call`] calls its methods by
//! name (`"Greet"` calls the Go server's `Plugin.Greet`), with arguments and results converted
//! through [`ToGob`] and [`FromGob`].

use plinth_subprocess::Connection;
use plinth_subprocess::netrpc::RpcClient;
use plinth_subprocess::netrpc::gob::{FromGob, ToGob};

use crate::error::{Error, Result};

/// A connection to one dispensed netrpc plugin, handed to
/// [`Plugin::from_netrpc`](crate::Plugin::from_netrpc). Cheap to clone; holding one keeps the
/// plugin running until it is killed.
#[derive(Clone, Debug)]
pub struct NetRpcConn {
    connection: Connection,
    client: RpcClient,
}

impl NetRpcConn {
    pub(crate) fn new(connection: Connection, client: RpcClient) -> NetRpcConn {
        NetRpcConn { connection, client }
    }

    /// Calls the plugin's method `method` (`"Greet"` for the Go server's `Plugin.Greet`).
    ///
    /// Pass `&()` when the Go method takes an unused `interface{}` argument (a nil interface).
    /// Fails with [`Error::Killed`] after a kill, the plugin's exit when it crashed mid-call,
    /// or the error the method returned.
    pub async fn call<A, R>(&self, method: &str, args: &A) -> Result<R>
    where
        A: ToGob + ?Sized,
        R: FromGob,
    {
        let method = format!("Plugin.{method}");
        match self.client.call(&method, args).await {
            Ok(reply) => Ok(reply),
            Err(error) => Err(match self.connection.netrpc_error(&method, error).await {
                plinth_subprocess::Error::Killed { plugin } => Error::Killed { plugin },
                other => Error::Subprocess(other),
            }),
        }
    }

    /// The raw `net/rpc` client (method names in full, `Plugin.Greet`).
    pub fn client(&self) -> &RpcClient {
        &self.client
    }

    /// The application protocol version negotiated with the plugin.
    pub fn version(&self) -> u32 {
        self.connection.negotiated_version()
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        self.connection.name()
    }
}
