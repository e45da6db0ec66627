//! Opening the files TLS reads (certificates, keys, ticket keys) without blocking.

/// Opens `path` to read it without waiting for anyone: a FIFO with no writer would block
/// `open(2)` until one came (forever, for the server's start or a reload, and every reload
/// after it, which waits for that one). The caller refuses whatever is not a regular file,
/// where the flag changes nothing.
pub(crate) fn open_unblocked(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}
