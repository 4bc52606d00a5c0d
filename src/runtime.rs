//! The tokio runtime every command runs its async parts on (HTTP servers, the cluster
//! bus, the PostgreSQL change log, the log scanner's followers).

/// A multi-threaded runtime with timers and I/O.
///
/// # Errors
/// If the runtime cannot be built (no threads).
pub fn build() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("catchd-rt")
        .build()
}
