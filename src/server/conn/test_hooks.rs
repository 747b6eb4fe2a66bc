//! Fault injection for the panic-isolation tests: in debug builds only, a
//! request at the offset named by `FLEXNBD_TEST_PANIC_READER` panics on the
//! reading thread and one at `FLEXNBD_TEST_PANIC_WORKER` panics where it is
//! executed. Release builds compile this to nothing. Also in debug builds
//! only: `FLEXNBD_TEST_SENDFILE=1` sends large READs with `sendfile` to
//! clients on this machine too, so tests (all on loopback) reach that path.

/// Where the panic is injected.
#[derive(Debug, Clone, Copy)]
pub(super) enum Site {
    /// While the reading thread validates the request.
    Reader,
    /// While the request is executed (on a worker or inline).
    Worker,
}

#[cfg(debug_assertions)]
pub(super) fn maybe_panic(site: Site, offset: u64) {
    use std::sync::OnceLock;
    static OFFSETS: OnceLock<(Option<u64>, Option<u64>)> = OnceLock::new();
    let (reader, worker) = *OFFSETS.get_or_init(|| {
        let read = |name| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        (
            read("FLEXNBD_TEST_PANIC_READER"),
            read("FLEXNBD_TEST_PANIC_WORKER"),
        )
    });
    let at = match site {
        Site::Reader => reader,
        Site::Worker => worker,
    };
    if at == Some(offset) {
        panic!("injected panic ({site:?}) for a request at offset {offset}");
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub(super) fn maybe_panic(_site: Site, _offset: u64) {}

/// Whether `FLEXNBD_TEST_SENDFILE=1` asks for `sendfile` to local clients too.
#[cfg(debug_assertions)]
pub(super) fn force_sendfile() -> bool {
    use std::sync::OnceLock;
    static FORCE: OnceLock<bool> = OnceLock::new();
    *FORCE.get_or_init(|| std::env::var("FLEXNBD_TEST_SENDFILE").is_ok_and(|v| v == "1"))
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub(super) fn force_sendfile() -> bool {
    false
}
