//! Backend-local state without thread-local storage.

/// A static owned by this backend process. A PostgreSQL backend runs a
/// single thread (pgrx refuses calls into Postgres from any other, and we
/// start none), so such state needs no synchronisation. Unlike
/// `thread_local!`, which in a shared library costs a `__tls_get_addr` call
/// per access, reading it is a plain load: this matters for state read by
/// the policy helpers on every row. Wrap the value in `Cell` or `RefCell`.
pub struct BackendLocal<T>(T);

// SAFETY: see above: only the backend's one thread ever touches these.
unsafe impl<T> Sync for BackendLocal<T> {}

impl<T> BackendLocal<T> {
    pub const fn new(value: T) -> Self {
        BackendLocal(value)
    }
}

impl<T> std::ops::Deref for BackendLocal<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}
