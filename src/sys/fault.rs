//! Fault injection for the panic-isolation tests. In debug builds a test
//! sets `FLEXNBD_TEST_PANIC_<POINT>` (e.g. `FLEXNBD_TEST_PANIC_MIRROR=1`,
//! `FLEXNBD_TEST_PANIC_CONTROL=status`) and the code at that point panics
//! when its value matches. Release builds compile this to nothing.

/// Panics at `point` when `FLEXNBD_TEST_PANIC_<point>` equals `value`
/// (debug builds only).
#[cfg(debug_assertions)]
pub fn panic_point(point: &str, value: &str) {
    if std::env::var(format!("FLEXNBD_TEST_PANIC_{point}")).is_ok_and(|v| v == value) {
        panic!("injected panic at {point} ({value})");
    }
}

/// Panics at `point` when `FLEXNBD_TEST_PANIC_<point>` equals `value`
/// (debug builds only).
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn panic_point(_point: &str, _value: &str) {}
