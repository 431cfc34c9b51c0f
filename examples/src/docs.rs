//! The document filter interface (`plinth:docs/filter@0.1.0`): records, a variant, an enum,
//! options, bytes, a resource and a host import, through the pool's resource API.
//!
//! [`DocsPlugin`] builds a [`DocFilter`] from a component. A [`Session`] is a guest resource:
//! it lives in the instance that created it, and every call on it runs there
//! ([`plinth::wasm::Pool::call_on`]); once that instance is discarded, the session's calls
//! fail with [`plinth::Error::StaleResource`]. The host answers the filter's `host-api` imports
//! through the [`HostApi`] it gives the adapter.

use std::sync::Arc;

use async_trait::async_trait;
use plinth::wasm::wasmtime::component::{HasSelf, Linker};
use plinth::wasm::{HostState, Instance, Pool, Resource};
use plinth::{Plugin, Result};

mod bindings {
    wasmtime::component::bindgen!({
        path: ["../wit/host", "../wit/docs"],
        world: "plinth:docs/plugin@0.1.0",
        imports: { "plinth:docs/host-api": async | trappable },
        exports: { default: async },
        additional_derives: [PartialEq],
    });
}

plinth::wasm_bindings!(bindings::Plugin, bindings::PluginPre<HostState>);

pub use bindings::plinth::docs::types::{Document, FilterError, Finding, Severity, Stats, Verdict};

use bindings::plinth::docs::host_api;

/// What the host offers the filter while it checks.
#[async_trait]
pub trait HostApi: Send + Sync {
    /// Whether the host bans `word`.
    async fn is_banned(&self, word: &str) -> Result<bool>;
    /// Something the filter did, as it happens.
    async fn notify(&self, severity: Severity, message: &str) -> Result<()>;
}

/// A document filter served by a plugin.
#[async_trait]
pub trait DocFilter: Send + Sync {
    /// Checks one document on its own.
    async fn check(&self, doc: &Document) -> Result<Verdict>;
    /// How many words `text` has.
    async fn word_count(&self, text: &str) -> Result<u32>;
    /// `body` with line endings made `\n` and trailing spaces removed.
    async fn normalize(&self, body: &[u8]) -> Result<Vec<u8>>;
    /// The least severity that makes a finding a rejection, if any does.
    async fn rejects_at(&self) -> Result<Option<Severity>>;
    /// Opens a review session.
    async fn session(&self, name: &str, strict: bool) -> Result<Box<dyn Session>>;
}

/// A review session of a [`DocFilter`]; dropping it closes the session in the plugin.
#[async_trait]
pub trait Session: Send + Sync {
    /// Checks `doc` within this session.
    async fn check(&self, doc: &Document) -> Result<Verdict>;
    /// What this session has seen.
    async fn stats(&self) -> Result<Stats>;
    /// The session's name.
    async fn name(&self) -> Result<String>;
}

/// The adapter for `plinth:docs/filter@0.1.0`, answering the filter's imports with `host`.
#[derive(Clone)]
pub struct DocsPlugin {
    host: Arc<dyn HostApi>,
}

impl DocsPlugin {
    /// An adapter whose plugins call `host` for the `host-api` imports.
    pub fn new(host: Arc<dyn HostApi>) -> DocsPlugin {
        DocsPlugin { host }
    }
}

/// The host's [`HostApi`], in the instance's host state.
#[derive(Default)]
struct HostSlot(Option<Arc<dyn HostApi>>);

impl HostSlot {
    fn api(&self) -> plinth::wasm::wasmtime::Result<Arc<dyn HostApi>> {
        self.0.clone().ok_or_else(|| {
            plinth::wasm::wasmtime::Error::msg("host-api was called before the host set it")
        })
    }
}

impl host_api::Host for HostSlot {
    async fn is_banned(&mut self, word: String) -> plinth::wasm::wasmtime::Result<bool> {
        Ok(self.api()?.is_banned(&word).await?)
    }

    async fn notify(
        &mut self,
        severity: Severity,
        message: String,
    ) -> plinth::wasm::wasmtime::Result<()> {
        Ok(self.api()?.notify(severity, &message).await?)
    }
}

impl bindings::plinth::docs::types::Host for HostSlot {}

impl Plugin for DocsPlugin {
    type Interface = dyn DocFilter;

    fn name(&self) -> &str {
        "docs"
    }

    fn wasm_exports(&self) -> &[&str] {
        &["plinth:docs/filter@0.1.0"]
    }

    fn link_wasm(&self, linker: &mut Linker<HostState>) -> Result<()> {
        let link_error = |e: plinth::wasm::wasmtime::Error| plinth::Error::Config {
            reason: format!("cannot add the host-api import: {e}"),
        };
        host_api::add_to_linker::<HostState, HasSelf<HostSlot>>(linker, |state| {
            state.extension::<HostSlot>()
        })
        .map_err(link_error)?;
        bindings::plinth::docs::types::add_to_linker::<HostState, HasSelf<HostSlot>>(
            linker,
            |state| state.extension::<HostSlot>(),
        )
        .map_err(link_error)
    }

    fn from_wasm(&self, instance: Instance) -> Result<Arc<dyn DocFilter>> {
        Ok(Arc::new(WasmDocs {
            pool: instance.pool()?,
            host: self.host.clone(),
        }))
    }
}

struct WasmDocs {
    pool: Pool<bindings::Plugin>,
    host: Arc<dyn HostApi>,
}

/// Gives the instance the host's API before a call.
fn give_host(store: &mut plinth::wasm::wasmtime::Store<HostState>, host: &Arc<dyn HostApi>) {
    let slot = store.data_mut().extension::<HostSlot>();
    if slot.0.is_none() {
        slot.0 = Some(host.clone());
    }
}

#[async_trait]
impl DocFilter for WasmDocs {
    async fn check(&self, doc: &Document) -> Result<Verdict> {
        let answer = self
            .pool
            .call(async |docs, store| {
                give_host(store, &self.host);
                docs.plinth_docs_filter().call_check(store, doc).await
            })
            .await?;
        answer.map_err(|e| self.pool.guest_error(format!("{e:?}")))
    }

    async fn word_count(&self, text: &str) -> Result<u32> {
        self.pool
            .call(async |docs, store| {
                give_host(store, &self.host);
                docs.plinth_docs_filter().call_word_count(store, text).await
            })
            .await
    }

    async fn normalize(&self, body: &[u8]) -> Result<Vec<u8>> {
        self.pool
            .call(async |docs, store| {
                give_host(store, &self.host);
                docs.plinth_docs_filter().call_normalize(store, body).await
            })
            .await
    }

    async fn rejects_at(&self) -> Result<Option<Severity>> {
        self.pool
            .call(async |docs, store| {
                give_host(store, &self.host);
                docs.plinth_docs_filter().call_rejects_at(store).await
            })
            .await
    }

    async fn session(&self, name: &str, strict: bool) -> Result<Box<dyn Session>> {
        let resource = self
            .pool
            .call_new("session", async |docs, store| {
                give_host(store, &self.host);
                docs.plinth_docs_filter()
                    .session()
                    .call_constructor(store, name, strict)
                    .await
            })
            .await?;
        Ok(Box::new(WasmSession {
            pool: self.pool.clone(),
            host: self.host.clone(),
            resource,
        }))
    }
}

struct WasmSession {
    pool: Pool<bindings::Plugin>,
    host: Arc<dyn HostApi>,
    resource: Resource<bindings::Plugin>,
}

#[async_trait]
impl Session for WasmSession {
    async fn check(&self, doc: &Document) -> Result<Verdict> {
        let answer = self
            .pool
            .call_on(&self.resource, async |docs, store, session| {
                give_host(store, &self.host);
                docs.plinth_docs_filter()
                    .session()
                    .call_check(store, session, doc)
                    .await
            })
            .await?;
        answer.map_err(|e| self.pool.guest_error(format!("{e:?}")))
    }

    async fn stats(&self) -> Result<Stats> {
        self.pool
            .call_on(&self.resource, async |docs, store, session| {
                give_host(store, &self.host);
                docs.plinth_docs_filter()
                    .session()
                    .call_stats(store, session)
                    .await
            })
            .await
    }

    async fn name(&self) -> Result<String> {
        self.pool
            .call_on(&self.resource, async |docs, store, session| {
                give_host(store, &self.host);
                docs.plinth_docs_filter()
                    .session()
                    .call_name(store, session)
                    .await
            })
            .await
    }
}
