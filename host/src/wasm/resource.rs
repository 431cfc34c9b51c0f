//! Guest resources held by the host: handles pinned to the instance that created them.
//!
//! A WIT resource exported by a component lives in one instance's memory, and its handle is an
//! index into that instance's store; the same index in another instance of the pool names
//! another resource or none at all. So a [`Resource`] remembers its instance, and every call
//! that passes it runs there ([`Pool::call_on`], [`Pool::call_with`]), waiting for the instance
//! while another call holds it. When that instance is discarded (a trap, a deadline, the
//! memory limit) or the plugin is killed, the resource is gone: calls with it fail with
//! [`Error::StaleResource`], never reaching another instance. Dropping a [`Resource`] runs the
//! guest's destructor in its instance, in the background, before the instance serves its next
//! call.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use wasmtime::Store;
use wasmtime::component::ResourceAny;

use crate::error::{Error, Result};
use crate::wasm::pool::{Bindings, Pool, SlotState};
use crate::wasm::state::HostState;

/// A guest resource the host holds, bound to the instance of `Pool<B>` that created it.
///
/// Made inside a call with [`Resources::adopt`] (or by [`Pool::call_new`]) from the handle a
/// generated `call_*` method returned. Not `Clone`: it owns the guest resource, which is
/// dropped in the guest when this is dropped. Share it behind an `Arc`.
pub struct Resource<B: Bindings> {
    pool: Pool<B>,
    slot: Arc<SlotState>,
    handle: ResourceAny,
    name: &'static str,
    /// Cleared by [`Resource::into_guest`]: the guest owns it then.
    owned: bool,
}

impl<B: Bindings> std::fmt::Debug for Resource<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resource")
            .field("plugin", &self.pool.plugin_name())
            .field("resource", &self.name)
            .field("alive", &self.slot.alive())
            .finish_non_exhaustive()
    }
}

impl<B: Bindings> Resource<B> {
    /// The resource's name, as the adapter gave it (`"session"`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether the instance holding the resource still exists (a kill or a failed call ends
    /// it).
    pub fn is_alive(&self) -> bool {
        self.slot.alive() && !self.pool.inner_is_killed()
    }

    /// The guest's handle, for a generated `call_*` method inside [`Pool::call_on`] or
    /// [`Pool::call_with`] given this resource. It means nothing in any other instance.
    pub fn handle(&self) -> ResourceAny {
        self.handle
    }

    /// Hands the resource itself to the guest (for a function taking `own<...>`): the host
    /// no longer drops it. Use the returned handle in a call given this resource.
    pub fn into_guest(mut self) -> ResourceAny {
        self.owned = false;
        self.slot.resources.fetch_sub(1, Ordering::AcqRel);
        self.handle
    }
}

impl<B: Bindings> Drop for Resource<B> {
    fn drop(&mut self) {
        if !self.owned || !self.is_alive() {
            return;
        }
        self.slot.queue_drop(self.handle);
        // Run the destructor soon, not only when the instance next serves a call. Without a
        // runtime it waits for that call.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = self.pool.clone();
        let slot = self.slot.clone();
        let name = self.name;
        runtime.spawn(async move {
            let Ok(lease) = pool.lease_on(&slot, name).await else {
                return;
            };
            if let Err(error) = pool.run(lease, async |_, _| Ok(())).await {
                tracing::warn!(plugin = pool.plugin_name(), resource = name, %error,
                    "dropping a guest resource failed; its instance was discarded");
            }
        });
    }
}

/// What a call made with [`Pool::call_with`] can do with resources: adopt the handles the
/// guest returns as [`Resource`]s of the call's instance.
pub struct Resources<'a, B: Bindings> {
    pool: &'a Pool<B>,
    slot: Arc<SlotState>,
}

impl<B: Bindings> Resources<'_, B> {
    /// Takes ownership of `handle`, a resource the guest just returned from this call, as a
    /// [`Resource`] named `name` bound to this call's instance.
    pub fn adopt(&self, name: &'static str, handle: ResourceAny) -> Resource<B> {
        self.slot.resources.fetch_add(1, Ordering::AcqRel);
        Resource {
            pool: self.pool.clone(),
            slot: self.slot.clone(),
            handle,
            name,
            owned: true,
        }
    }
}

impl<B: Bindings> Pool<B> {
    /// Runs `call` on the instance that holds every resource in `resources` (on any instance
    /// when it is empty), so that their handles mean what they say; `call` can
    /// [`adopt`](Resources::adopt) the resources the guest returns.
    ///
    /// Fails with [`Error::StaleResource`] when the resources' instance is gone,
    /// [`Error::ForeignResource`] when they live in different instances or another pool, and
    /// otherwise as [`Pool::call`] does (a failure discards the instance and with it the
    /// resources it holds).
    pub async fn call_with<R, F>(&self, resources: &[&Resource<B>], call: F) -> Result<R>
    where
        F: AsyncFnOnce(&B, &mut Store<HostState>, &Resources<'_, B>) -> wasmtime::Result<R>,
    {
        let lease = match resources.split_first() {
            None => self.lease().await?,
            Some((first, rest)) => {
                for resource in resources {
                    if !Arc::ptr_eq(&resource.pool.inner, &self.inner) {
                        return Err(self.foreign(resource.name));
                    }
                }
                if let Some(other) = rest.iter().find(|r| !Arc::ptr_eq(&r.slot, &first.slot)) {
                    return Err(self.foreign(other.name));
                }
                self.lease_on(&first.slot, first.name).await?
            }
        };
        let mut lease = lease;
        let scope = Resources {
            pool: self,
            slot: lease.slot().state.clone(),
        };
        self.run(lease, async |bindings, store| {
            call(bindings, store, &scope).await
        })
        .await
    }

    /// Runs `call` with `resource`'s guest handle on the instance that holds it (a method of
    /// the resource). Fails as [`Pool::call_with`] does.
    ///
    /// ```ignore
    /// let stats = pool
    ///     .call_on(&session, async |docs, store, handle| {
    ///         docs.plinth_docs_filter().session().call_stats(store, handle).await
    ///     })
    ///     .await?;
    /// ```
    pub async fn call_on<R, F>(&self, resource: &Resource<B>, call: F) -> Result<R>
    where
        F: AsyncFnOnce(&B, &mut Store<HostState>, ResourceAny) -> wasmtime::Result<R>,
    {
        let handle = resource.handle;
        self.call_with(&[resource], async |bindings, store, _| {
            call(bindings, store, handle).await
        })
        .await
    }

    /// Runs `call`, which returns a new guest resource (a constructor), on any instance, and
    /// returns the resource bound to that instance under `name`.
    pub async fn call_new<F>(&self, name: &'static str, call: F) -> Result<Resource<B>>
    where
        F: AsyncFnOnce(&B, &mut Store<HostState>) -> wasmtime::Result<ResourceAny>,
    {
        self.call_with(&[], async |bindings, store, resources| {
            Ok(resources.adopt(name, call(bindings, store).await?))
        })
        .await
    }

    fn foreign(&self, resource: &str) -> Error {
        Error::ForeignResource {
            plugin: self.plugin_name().to_owned(),
            resource: resource.to_owned(),
        }
    }
}
