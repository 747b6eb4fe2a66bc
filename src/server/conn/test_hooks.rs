//! Fault injection for the panic-isolation tests: in debug builds only, a
//! request at the offset named by `FLEXNBD_TEST_PANIC_READER` panics on the
//! reading thread and one at `FLEXNBD_TEST_PANIC_WORKER` panics where it is
//! executed. Release builds compile this to nothing.

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
