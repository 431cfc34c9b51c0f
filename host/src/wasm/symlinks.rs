//! WASI's filesystem with the sandbox's rule for symbolic links: a guest may only create links
//! to relative targets without `..`.
//!
//! WASI resolves every path a guest gives inside the granted directory, whatever the links on
//! the way say, so links cannot take the guest out. They can take the host out: a program of
//! the host reading the directory later follows a link the ordinary way, and a link the guest
//! left to `../../etc/passwd` would lead it there. A target that only descends (`data/current`,
//! `./v2`) cannot leave the directory the link is in, wherever that is and whatever other links
//! on the way point to, since those obey the same rule; a target with `..` could, through a
//! directory link that resolves elsewhere than its name suggests, so such links are refused as
//! `not-permitted` even where they would stay inside. Absolute targets WASI refuses itself.
//!
//! Every other function of `wasi:filesystem/types` is WASI's own, forwarded unchanged.

use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::filesystem::{WasiFilesystemCtxView, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::filesystem::types::{
    self, Descriptor, DescriptorFlags, DescriptorStat, DescriptorType, DirectoryEntry,
    DirectoryEntryStream, ErrorCode, Filesize, HostDescriptor, HostDirectoryEntryStream,
    MetadataHashValue, NewTimestamp, OpenFlags, PathFlags,
};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, FsError, FsResult};

use crate::wasm::state::HostState;

/// Replaces WASI's `wasi:filesystem/types` in `linker` (which must already hold WASI's) with
/// the guarded one.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let added =
        types::add_to_linker::<HostState, Guarded>(linker, |state| GuardedFs(state.filesystem()));
    linker.allow_shadowing(false);
    added
}

struct Guarded;

impl HasData for Guarded {
    type Data<'a> = GuardedFs<'a>;
}

/// WASI's filesystem view of one instance, with the symlink rule.
struct GuardedFs<'a>(WasiFilesystemCtxView<'a>);

/// Whether a symbolic link to `target` can only lead down from the link's own directory.
fn descends(target: &str) -> bool {
    use std::path::{Component, Path};
    !target.is_empty()
        && !target.contains('\0')
        && Path::new(target)
            .components()
            .all(|part| matches!(part, Component::Normal(_) | Component::CurDir))
}

impl types::Host for GuardedFs<'_> {
    fn convert_error_code(&mut self, err: FsError) -> wasmtime::Result<ErrorCode> {
        types::Host::convert_error_code(&mut self.0, err)
    }

    fn filesystem_error_code(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        types::Host::filesystem_error_code(&mut self.0, err)
    }
}

/// Forwards `HostDescriptor` methods to WASI's implementation.
macro_rules! forward {
    ($(async fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        $(
            async fn $name(&mut self, $($arg: $ty),*) -> $ret {
                HostDescriptor::$name(&mut self.0, $($arg),*).await
            }
        )*
    };
    ($(fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        $(
            fn $name(&mut self, $($arg: $ty),*) -> $ret {
                HostDescriptor::$name(&mut self.0, $($arg),*)
            }
        )*
    };
}

type Fd = Resource<Descriptor>;

impl HostDescriptor for GuardedFs<'_> {
    async fn symlink_at(&mut self, fd: Fd, target: String, link: String) -> FsResult<()> {
        if !descends(&target) {
            return Err(ErrorCode::NotPermitted.into());
        }
        HostDescriptor::symlink_at(&mut self.0, fd, target, link).await
    }

    forward! {
        async fn advise(fd: Fd, offset: Filesize, len: Filesize, advice: types::Advice) -> FsResult<()>;
        async fn sync_data(fd: Fd) -> FsResult<()>;
        async fn get_flags(fd: Fd) -> FsResult<DescriptorFlags>;
        async fn get_type(fd: Fd) -> FsResult<DescriptorType>;
        async fn set_size(fd: Fd, size: Filesize) -> FsResult<()>;
        async fn set_times(fd: Fd, atim: NewTimestamp, mtim: NewTimestamp) -> FsResult<()>;
        async fn read(fd: Fd, len: Filesize, offset: Filesize) -> FsResult<(Vec<u8>, bool)>;
        async fn write(fd: Fd, buf: Vec<u8>, offset: Filesize) -> FsResult<Filesize>;
        async fn read_directory(fd: Fd) -> FsResult<Resource<DirectoryEntryStream>>;
        async fn sync(fd: Fd) -> FsResult<()>;
        async fn create_directory_at(fd: Fd, path: String) -> FsResult<()>;
        async fn stat(fd: Fd) -> FsResult<DescriptorStat>;
        async fn stat_at(fd: Fd, flags: PathFlags, path: String) -> FsResult<DescriptorStat>;
        async fn set_times_at(
            fd: Fd, flags: PathFlags, path: String, atim: NewTimestamp, mtim: NewTimestamp
        ) -> FsResult<()>;
        async fn link_at(
            fd: Fd, flags: PathFlags, old_path: String, new_fd: Fd, new_path: String
        ) -> FsResult<()>;
        async fn open_at(
            fd: Fd, flags: PathFlags, path: String, open: OpenFlags, descriptor: DescriptorFlags
        ) -> FsResult<Fd>;
        async fn readlink_at(fd: Fd, path: String) -> FsResult<String>;
        async fn remove_directory_at(fd: Fd, path: String) -> FsResult<()>;
        async fn rename_at(fd: Fd, old_path: String, new_fd: Fd, new_path: String) -> FsResult<()>;
        async fn unlink_file_at(fd: Fd, path: String) -> FsResult<()>;
        async fn is_same_object(a: Fd, b: Fd) -> wasmtime::Result<bool>;
        async fn metadata_hash(fd: Fd) -> FsResult<MetadataHashValue>;
        async fn metadata_hash_at(fd: Fd, flags: PathFlags, path: String) -> FsResult<MetadataHashValue>;
    }

    forward! {
        fn drop(fd: Fd) -> wasmtime::Result<()>;
        fn read_via_stream(fd: Fd, offset: Filesize) -> FsResult<Resource<DynInputStream>>;
        fn write_via_stream(fd: Fd, offset: Filesize) -> FsResult<Resource<DynOutputStream>>;
        fn append_via_stream(fd: Fd) -> FsResult<Resource<DynOutputStream>>;
    }
}

impl HostDirectoryEntryStream for GuardedFs<'_> {
    async fn read_directory_entry(
        &mut self,
        stream: Resource<DirectoryEntryStream>,
    ) -> FsResult<Option<DirectoryEntry>> {
        HostDirectoryEntryStream::read_directory_entry(&mut self.0, stream).await
    }

    fn drop(&mut self, stream: Resource<DirectoryEntryStream>) -> wasmtime::Result<()> {
        HostDirectoryEntryStream::drop(&mut self.0, stream)
    }
}

#[cfg(test)]
mod tests {
    use super::descends;

    #[test]
    fn only_descending_symlink_targets_are_allowed() {
        for allowed in ["file", "a/b/c", "./a", "a/./b", "a/"] {
            assert!(descends(allowed), "{allowed}");
        }
        for refused in [
            "",
            "/etc/passwd",
            "..",
            "../x",
            "a/../../x",
            "a/..",
            "a/b/../c",
            "x\0y",
        ] {
            assert!(!descends(refused), "{refused:?}");
        }
    }
}
