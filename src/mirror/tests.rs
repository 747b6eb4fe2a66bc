//! Unit tests of the mirror's own state.

use super::*;
use crate::client::Target;
use std::path::PathBuf;

/// What an incremental migration has not compared yet counts as left to
/// send (the progress bar stood at 100% while comparing).
#[test]
fn bytes_not_yet_compared_count_as_left() {
    const SIZE: u64 = 64 << 20;
    let request = MirrorRequest {
        target: Target::Unix(PathBuf::from("/nonexistent")),
        export_name: String::new(),
        action: MirrorAction::Exit,
        bind: None,
        max_bps: None,
        verify: false,
        incremental: Incremental::Auto,
        tls: None,
    };
    let mirror = Mirror::new(request, None).unwrap();
    let tracker = Arc::new(Tracker::new(SIZE));
    *lock(&mirror.tracker) = Some(tracker.clone());
    assert_eq!(
        mirror.progress(SIZE).bytes_left,
        0,
        "nothing dirty, nothing to compare"
    );
    mirror.uncompared.store(SIZE - (16 << 20), Ordering::SeqCst);
    tracker.map.mark(0, 1 << 20);
    assert_eq!(mirror.progress(SIZE).bytes_left, SIZE - (15 << 20));
}
