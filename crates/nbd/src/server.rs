//! The tokio side: listening, the handshake over plain TCP or STARTTLS, and the transmission
//! phase.
//!
//! Transmission runs two kinds of work per connection:
//!
//! - the connection task reads request headers (and write payloads), checks them with
//!   [`crate::command::check_request`] and queues each accepted request for the connection's
//!   workers, after taking one of a bounded number of request slots and, for reads and
//!   writes, a share of a bounded byte budget. Workers run on tokio's blocking pool, at most
//!   [`MAX_WORKERS`] per connection, started when requests wait and none is free; a worker
//!   takes queued requests without a wake-up each: up to eight at a time while the device is
//!   fast (a moving average of its time per operation), one at a time otherwise, so slow
//!   requests run in parallel. A request that is alone in flight (the client waits for it,
//!   as at queue depth 1), small and fast runs on the connection task itself, which writes
//!   its reply: a hand-off would cost more than the work;
//! - a worker calls the [`BlockDevice`](crate::BlockDevice), encodes the whole
//!   reply (header and data) into one buffer and queues it. Replies go out in completion
//!   order (they carry the client's cookie, so order does not matter) through flat combining:
//!   the thread that finds the writer free writes every queued reply in one vectored write,
//!   the others just leave theirs in the queue. No thread waits for another's write and no
//!   separate writer task needs waking.
//!
//! When the export is revoked or the server shuts down, reading stops at once, work that has
//! not reached the device yet is answered with `ESHUTDOWN`, no data leaves any more, and the
//! connection is closed once in-flight work is answered or a short grace period ends.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::command::{self, Op, TransmissionParams};
use crate::handshake::{Negotiated, Negotiation, Next, TlsPolicy};
use crate::proto::{self, Cookie, Errno, ProtoError, opt};
use crate::{BlockDevice, ExportCatalog};

/// Default time a client gets from connecting to entering the transmission phase.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of requests one connection may have in flight.
pub const DEFAULT_MAX_REQUESTS_IN_FLIGHT: usize = 64;
/// Default number of read and write payload bytes one connection may have in flight.
pub const DEFAULT_MAX_BYTES_IN_FLIGHT: usize = 64 * 1024 * 1024;
/// Default time in-flight requests get to be answered after revocation or shutdown.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_millis(200);
/// Default number of connections served at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Size of the buffered reader in front of the request stream.
const READ_BUFFER: usize = 256 * 1024;
/// Most replies sent in one vectored write.
const MAX_BATCH: usize = 64;
/// Buffers kept for reuse per connection, and the most bytes they may hold together.
const POOL_BUFFERS: usize = 64;
const POOL_BYTES: usize = 16 * 1024 * 1024;
/// Most requests a worker takes at a time (and the connection task gathers before queuing
/// them) while device operations are fast.
const MAX_JOBS_PER_BATCH: usize = 8;
/// Blocking-pool workers one connection runs at once. More threads than cores only queue for
/// the CPU and for the backing file's lock; a fixed few that take queued requests without a
/// wake-up each, as nbdkit's and qemu-nbd's thread pools do, serve a deep queue best.
const MAX_WORKERS: usize = 4;
/// Below this average device time per operation, batching beats running each operation on a
/// thread of its own (waking a thread costs about as much).
const FAST_OPERATION: Duration = Duration::from_micros(30);
/// Largest read or write carried out on the connection task (see [`inline_job`]).
const MAX_INLINE_LEN: u32 = 128 * 1024;
/// Back-off after a failed `accept` (out of file descriptors and the like).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `Some`: FORCEDTLS mode, every option but `NBD_OPT_STARTTLS` and `NBD_OPT_ABORT` is
    /// refused until TLS is up. `None`: no TLS at all (for benchmarks only). The rustls
    /// configuration should not announce ALPN protocols; NBD clients send none.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Time from accepting a connection to the end of option haggling (TLS handshake
    /// included); slower clients are disconnected.
    pub handshake_timeout: Duration,
    /// Requests one connection may have in flight; further requests wait to be read.
    pub max_requests_in_flight: usize,
    /// Read and write payload bytes one connection may have in flight; never less than the
    /// maximum block size.
    pub max_bytes_in_flight: usize,
    /// After revocation or shutdown, how long in-flight requests get to be answered before
    /// the connection is closed regardless.
    pub stop_grace: Duration,
    /// Connections [`serve`] serves at once (each has a thread); further clients wait to be
    /// accepted.
    pub max_connections: usize,
}

impl ServerConfig {
    /// TLS-only (FORCEDTLS) serving with `tls`, the other settings at their defaults.
    pub fn tls(tls: Arc<rustls::ServerConfig>) -> Self {
        Self {
            tls: Some(tls),
            ..Self::plain()
        }
    }

    /// Serving without TLS (benchmarks only), the other settings at their defaults.
    pub fn plain() -> Self {
        Self {
            tls: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_requests_in_flight: DEFAULT_MAX_REQUESTS_IN_FLIGHT,
            max_bytes_in_flight: DEFAULT_MAX_BYTES_IN_FLIGHT,
            stop_grace: DEFAULT_STOP_GRACE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Why a connection ended abnormally. Connections that end by the protocol's rules
/// (`NBD_OPT_ABORT`, `NBD_CMD_DISC`, revocation, shutdown, the client closing during
/// transmission) end with `Ok`.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// Reading from or writing to the client failed (including the client closing during
    /// negotiation).
    #[error("connection I/O failed: {0}")]
    Io(#[from] io::Error),
    /// The client broke the protocol; the connection was dropped.
    #[error("protocol violation: {0}")]
    Protocol(#[from] ProtoError),
    /// The TLS handshake after `NBD_OPT_STARTTLS` failed.
    #[error("TLS handshake failed: {0}")]
    TlsHandshake(#[source] io::Error),
    /// Negotiation did not finish in time.
    #[error("negotiation did not finish within {0:?}")]
    HandshakeTimeout(Duration),
    /// Looking up an export on the blocking pool failed (the catalog panicked).
    #[error("export lookup failed: {0}")]
    Lookup(#[source] tokio::task::JoinError),
}

/// Accepts connections on `listener` and serves each until `shutdown` is cancelled; then
/// stops accepting, closes every connection (in-flight requests get a short grace period)
/// and returns once all are closed.
///
/// Each connection runs on a thread of its own with a single-threaded runtime, as in
/// nbdkit and qemu-nbd: a request the connection carries out itself (see [`inline_job`])
/// holds up only that connection, never the caller's runtime or another connection.
pub async fn serve(
    listener: TcpListener,
    config: ServerConfig,
    catalog: Arc<dyn ExportCatalog>,
    shutdown: CancellationToken,
) {
    let mut connections = JoinSet::new();
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done {
                    tracing::warn!(error = %e, "NBD connection task failed");
                }
                continue;
            }
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let connection = (config.clone(), Arc::clone(&catalog), shutdown.clone());
                    match spawn_connection(stream, connection) {
                        Ok(done) => {
                            connections.spawn(async move {
                                // Resolves (with an error) when the thread ends.
                                let _ = done.await;
                                drop(slot);
                                tracing::debug!(%peer, "NBD connection thread ended");
                            });
                        }
                        Err(e) => tracing::warn!(%peer, error = %e, "cannot serve an NBD connection"),
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "NBD accept failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                }
            },
        }
    }
    drop(listener);
    while let Some(done) = connections.join_next().await {
        if let Err(e) = done {
            tracing::warn!(error = %e, "NBD connection task failed");
        }
    }
}

/// Serves `stream` on a new thread with its own runtime; the receiver resolves when the
/// connection is closed.
fn spawn_connection(
    stream: TcpStream,
    (config, catalog, shutdown): (ServerConfig, Arc<dyn ExportCatalog>, CancellationToken),
) -> io::Result<tokio::sync::oneshot::Receiver<()>> {
    let stream = stream.into_std()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (done, closed) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("nbd-connection".into())
        .spawn(move || {
            let result = runtime.block_on(async move {
                serve_connection(TcpStream::from_std(stream)?, config, catalog, shutdown).await
            });
            match result {
                Ok(()) => tracing::debug!("NBD connection closed"),
                Err(e) => tracing::debug!(error = %e, "NBD connection ended"),
            }
            let _ = done.send(());
            // Device work stuck on a blocking thread cannot hold up the server's shutdown.
            runtime.shutdown_background();
        })?;
    Ok(closed)
}

/// Serves one accepted connection: handshake (with STARTTLS when `config.tls` is set), then
/// transmission until the client disconnects, the export is revoked or `shutdown` is
/// cancelled.
pub async fn serve_connection(
    stream: TcpStream,
    config: ServerConfig,
    catalog: Arc<dyn ExportCatalog>,
    shutdown: CancellationToken,
) -> Result<(), ConnectionError> {
    // Replies are written whole; delaying small ones only adds latency.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let limit = config.handshake_timeout;
    let handshake = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        r = tokio::time::timeout(limit, handshake(stream, &config, &catalog)) => {
            r.map_err(|_| ConnectionError::HandshakeTimeout(limit))??
        }
    };
    match handshake {
        Handshake::Closed => Ok(()),
        Handshake::Plain(stream, negotiated) => {
            let (reader, writer) = stream.into_split();
            transmit(reader, writer, *negotiated, &config, shutdown).await
        }
        Handshake::Tls(stream, negotiated) => {
            let (reader, writer) = tokio::io::split(*stream);
            transmit(reader, writer, *negotiated, &config, shutdown).await
        }
    }
}

enum Handshake {
    Closed,
    Plain(TcpStream, Box<Negotiated>),
    Tls(Box<TlsStream<TcpStream>>, Box<Negotiated>),
}

async fn handshake(
    mut stream: TcpStream,
    config: &ServerConfig,
    catalog: &Arc<dyn ExportCatalog>,
) -> Result<Handshake, ConnectionError> {
    stream.write_all(&proto::greeting()).await?;
    let mut flags = [0u8; 4];
    stream.read_exact(&mut flags).await?;
    let client = proto::parse_client_flags(flags)?;
    let policy = if config.tls.is_some() {
        TlsPolicy::Required
    } else {
        TlsPolicy::Plain
    };
    let mut negotiation = Negotiation::new(policy, client);
    // Options are read straight from the socket, unbuffered, so that nothing the client sends
    // after its STARTTLS is consumed before the TLS handshake.
    match haggle(&mut stream, &mut negotiation, catalog).await? {
        Next::Transmit(negotiated) => return Ok(Handshake::Plain(stream, negotiated)),
        Next::StartTls => {}
        Next::Close | Next::Continue => return Ok(Handshake::Closed),
    }
    let Some(tls) = &config.tls else {
        return Ok(Handshake::Closed);
    };
    let mut stream = TlsAcceptor::from(Arc::clone(tls))
        .accept(stream)
        .await
        .map_err(ConnectionError::TlsHandshake)?;
    negotiation.tls_started();
    match haggle(&mut stream, &mut negotiation, catalog).await? {
        Next::Transmit(negotiated) => Ok(Handshake::Tls(Box::new(stream), negotiated)),
        Next::Close | Next::Continue | Next::StartTls => {
            let _ = stream.shutdown().await;
            Ok(Handshake::Closed)
        }
    }
}

/// Reads and answers options until one ends the haggling.
async fn haggle<S>(
    stream: &mut S,
    negotiation: &mut Negotiation,
    catalog: &Arc<dyn ExportCatalog>,
) -> Result<Next, ConnectionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut data = Vec::new();
    let mut out = Vec::new();
    loop {
        let mut header = [0u8; proto::OPTION_HEADER_LEN];
        stream.read_exact(&mut header).await?;
        let header = proto::parse_option_header(&header)?;
        // Bounded by `MAX_OPTION_DATA`.
        data.clear();
        data.resize(header.len as usize, 0);
        stream.read_exact(&mut data).await?;
        out.clear();
        let code = header.option;
        let next = if matches!(code, opt::GO | opt::INFO | opt::EXPORT_NAME) {
            // The catalog may block (it is backed by storage): ask it on the blocking pool.
            let catalog = Arc::clone(catalog);
            let mut n = negotiation.clone();
            let (d, mut o) = (std::mem::take(&mut data), std::mem::take(&mut out));
            let (n, d, o, next) = tokio::task::spawn_blocking(move || {
                let next = n.option(code, &d, &*catalog, &mut o);
                (n, d, o, next)
            })
            .await
            .map_err(ConnectionError::Lookup)?;
            (*negotiation, data, out) = (n, d, o);
            next
        } else {
            negotiation.option(code, &data, &**catalog, &mut out)
        };
        stream.write_all(&out).await?;
        stream.flush().await?;
        if !matches!(next, Next::Continue) {
            return Ok(next);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Transmission

type BoxedWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// The write half of the connection and the batch being written, owned by whichever thread
/// holds the lock.
struct WriterState {
    writer: Option<BoxedWriter>,
    batch: Vec<Outgoing>,
}

/// State shared by the reader and the blocking-pool work of one connection.
struct Shared {
    device: Arc<dyn BlockDevice>,
    structured: bool,
    revoked: CancellationToken,
    shutdown: CancellationToken,
    pool: BufferPool,
    runtime: tokio::runtime::Handle,
    /// Replies waiting to be written.
    queue: Mutex<Vec<Outgoing>>,
    writer: tokio::sync::Mutex<WriterState>,
    /// The connection is closing: replies not yet written are dropped.
    give_up: CancellationToken,
    /// Writing failed: the connection is dead.
    dead: CancellationToken,
    write_error: Mutex<Option<io::Error>>,
    /// Moving average of the device time per operation, in nanoseconds.
    op_nanos: AtomicU64,
    /// Requests waiting for a worker, in arrival order.
    pending: Mutex<VecDeque<Job>>,
    /// Workers running on the blocking pool, at most [`MAX_WORKERS`].
    workers: AtomicUsize,
}

impl Shared {
    /// How many already-received requests a worker takes at a time.
    fn jobs_per_batch(&self) -> usize {
        if self.op_nanos.load(Ordering::Relaxed) < FAST_OPERATION.as_nanos() as u64 {
            MAX_JOBS_PER_BATCH
        } else {
            1
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, VecDeque<Job>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one more worker, unless [`MAX_WORKERS`] are running.
    fn add_worker(&self) -> bool {
        self.workers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_WORKERS).then_some(n + 1)
            })
            .is_ok()
    }

    fn record_op_time(&self, took: Duration) {
        let sample = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let old = self.op_nanos.load(Ordering::Relaxed);
        let new = old - old / 8 + sample / 8;
        self.op_nanos.store(new, Ordering::Relaxed);
    }

    /// Whether access ended: no device work starts and no data leaves any more.
    fn stopping(&self) -> bool {
        self.revoked.is_cancelled() || self.shutdown.is_cancelled()
    }

    /// Replaces `buf` with an error reply.
    fn error_reply(&self, buf: &mut Vec<u8>, cookie: Cookie, errno: Errno, message: &str) {
        buf.clear();
        if self.structured {
            proto::put_structured_error(buf, cookie, errno, message);
        } else {
            proto::put_simple_reply(buf, Some(errno), cookie);
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Vec<Outgoing>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes every queued reply, unless another thread is writing already: that thread
    /// picks them up. Called on the blocking pool.
    fn write_pending(&self) {
        while let Ok(mut state) = self.writer.try_lock() {
            self.runtime.block_on(self.write_queued(&mut state));
            drop(state);
            // A reply queued while the lock was being released is not left behind.
            if self.queue().is_empty() {
                return;
            }
        }
    }

    async fn write_queued(&self, state: &mut WriterState) {
        let WriterState { writer, batch } = state;
        loop {
            {
                let mut queue = self.queue();
                if queue.is_empty() {
                    return;
                }
                std::mem::swap(&mut *queue, batch);
            }
            if self.stopping() {
                for o in batch.iter_mut().filter(|o| o.carries_data) {
                    self.error_reply(
                        &mut o.buf,
                        o.cookie,
                        Errno::Shutdown,
                        "the export is no longer available",
                    );
                    o.carries_data = false;
                }
            }
            if let Some(w) = writer.as_mut()
                && !self.give_up.is_cancelled()
            {
                let result = tokio::select! {
                    biased;
                    _ = self.give_up.cancelled() => Ok(()),
                    r = write_batch(w, batch) => r,
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, "writing replies failed");
                    *writer = None;
                    self.write_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(e);
                    self.dead.cancel();
                }
            }
            // Buffers go back to the pool; slots and byte budget are released.
            for o in batch.drain(..) {
                self.pool.give(o.buf);
            }
        }
    }
}

/// Payload and reply buffers for reuse within one connection (so a buffer never carries
/// another export's bytes), at most [`POOL_BUFFERS`] holding at most [`POOL_BYTES`].
struct BufferPool {
    free: Mutex<PoolState>,
}

struct PoolState {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

impl BufferPool {
    fn new() -> Self {
        Self {
            free: Mutex::new(PoolState {
                buffers: Vec::with_capacity(POOL_BUFFERS),
                bytes: 0,
            }),
        }
    }

    /// A buffer of exactly `len` bytes. Only bytes beyond a reused buffer's length are
    /// zero-filled: read replies come back at full length, so the steady state fills none.
    fn take(&self, len: usize) -> Vec<u8> {
        let mut b = self.reuse(len).unwrap_or_default();
        // Shrinking keeps stale bytes of this connection, which the caller overwrites.
        b.truncate(len);
        b.resize(len, 0);
        b
    }

    /// An empty buffer with room for `len` bytes, for a payload read into spare capacity.
    fn take_empty(&self, len: usize) -> Vec<u8> {
        let mut b = self.reuse(len).unwrap_or_default();
        b.clear();
        b.reserve_exact(len);
        b
    }

    /// A buffer of at least `len` bytes' capacity, if one is free, with its contents.
    fn reuse(&self, len: usize) -> Option<Vec<u8>> {
        self.free.lock().ok().and_then(|mut free| {
            // The smallest buffer that fits, so that small replies leave large buffers be;
            // of those the one given back last, which is likeliest still in the CPU's cache.
            let (i, _) = free
                .buffers
                .iter()
                .enumerate()
                .rev()
                .filter(|(_, b)| b.capacity() >= len)
                .min_by_key(|(_, b)| b.capacity())?;
            let b = free.buffers.remove(i);
            free.bytes -= b.capacity();
            Some(b)
        })
    }

    fn give(&self, buf: Vec<u8>) {
        if let Ok(mut free) = self.free.lock()
            && free.buffers.len() < POOL_BUFFERS
            && free.bytes + buf.capacity() <= POOL_BYTES
        {
            free.bytes += buf.capacity();
            free.buffers.push(buf);
        }
    }
}

/// A reply ready to be written, holding the request's slot and byte budget until it is.
struct Outgoing {
    buf: Vec<u8>,
    cookie: Cookie,
    carries_data: bool,
    _slot: OwnedSemaphorePermit,
    _bytes: Option<OwnedSemaphorePermit>,
}

/// How the request reader stopped.
enum End {
    /// `NBD_CMD_DISC`: answer everything outstanding, then close.
    Disconnect,
    /// Revocation or shutdown.
    Stopped,
    /// The client closed its side, reading failed, or the client must be cut off after a
    /// last error reply.
    ClientGone,
    /// The client broke the protocol, or writing failed: close now.
    Abort,
}

struct Limits {
    slots: Arc<Semaphore>,
    slot_count: u32,
    bytes: Arc<Semaphore>,
}

async fn transmit<R, W>(
    reader: R,
    writer: W,
    negotiated: Negotiated,
    config: &ServerConfig,
    shutdown: CancellationToken,
) -> Result<(), ConnectionError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let params = negotiated.params;
    tracing::debug!(
        size = params.size,
        read_only = params.read_only,
        structured = params.structured,
        flags = negotiated.flags,
        "NBD transmission phase"
    );
    let shared = Arc::new(Shared {
        device: negotiated.export.device,
        structured: params.structured,
        revoked: negotiated.export.revoked,
        shutdown,
        pool: BufferPool::new(),
        runtime: tokio::runtime::Handle::current(),
        queue: Mutex::new(Vec::new()),
        writer: tokio::sync::Mutex::new(WriterState {
            writer: Some(Box::new(writer)),
            batch: Vec::new(),
        }),
        give_up: CancellationToken::new(),
        dead: CancellationToken::new(),
        write_error: Mutex::new(None),
        // Until measured, the device is taken to be slow: one operation per batch.
        op_nanos: AtomicU64::new(FAST_OPERATION.as_nanos() as u64 * 4),
        pending: Mutex::new(VecDeque::new()),
        workers: AtomicUsize::new(0),
    });
    let slot_count = u32::try_from(config.max_requests_in_flight.clamp(1, 1 << 16)).unwrap_or(1);
    let limits = Limits {
        slots: Arc::new(Semaphore::new(slot_count as usize)),
        slot_count,
        bytes: Arc::new(Semaphore::new(
            config
                .max_bytes_in_flight
                .max(proto::MAX_BLOCK_SIZE as usize),
        )),
    };
    let mut reader = BufReader::with_capacity(READ_BUFFER, reader);
    let end = read_requests(&mut reader, &shared, &params, &limits).await;
    drop(reader);

    // Every reply holds a slot until it is written: holding all slots means all are out.
    let answered = limits.slots.acquire_many(limits.slot_count);
    tokio::pin!(answered);
    let grace = config.stop_grace;
    match end {
        End::Disconnect => {
            tokio::select! {
                _ = &mut answered => {}
                _ = stop_signal(&shared) => {
                    let _ = tokio::time::timeout(grace, &mut answered).await;
                }
            }
        }
        End::Stopped | End::ClientGone => {
            let _ = tokio::time::timeout(grace, &mut answered).await;
        }
        End::Abort => {}
    }
    shared.give_up.cancel();
    let writer = shared.writer.lock().await.writer.take();
    if let Some(mut writer) = writer {
        // TLS close_notify and TCP FIN; a client that stopped reading cannot hold this up.
        let _ = tokio::time::timeout(grace, writer.shutdown()).await;
    }
    let error = shared
        .write_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    match error {
        Some(e) => Err(ConnectionError::Io(e)),
        None => Ok(()),
    }
}

/// Resolves when the connection must stop reading: revocation, shutdown or a dead writer.
async fn stop_signal(shared: &Shared) {
    tokio::select! {
        _ = shared.revoked.cancelled() => tracing::debug!("export revoked; closing connection"),
        _ = shared.shutdown.cancelled() => tracing::debug!("server shutting down; closing connection"),
        _ = shared.dead.cancelled() => {}
    }
}

async fn read_requests<R>(
    reader: &mut BufReader<R>,
    shared: &Arc<Shared>,
    params: &TransmissionParams,
    limits: &Limits,
) -> End
where
    R: AsyncRead + Unpin,
{
    let stop = stop_signal(shared);
    tokio::pin!(stop);
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_JOBS_PER_BATCH);
    let end = loop {
        // Requests already received go out before waiting for more.
        if reader.buffer().len() < proto::REQUEST_HEADER_LEN
            || jobs.len() >= shared.jobs_per_batch()
        {
            if let Some(job) = inline_job(shared, limits, &mut jobs) {
                if let Err(end) = wait(run_inline(shared, job), stop.as_mut()).await {
                    break end;
                }
            } else {
                dispatch(shared, &mut jobs);
            }
        }
        if let Err(end) =
            read_request(reader, shared, params, limits, stop.as_mut(), &mut jobs).await
        {
            break end;
        }
    };
    if !matches!(end, End::Abort) {
        // Answered (with ESHUTDOWN if access ended) rather than dropped unanswered.
        dispatch(shared, &mut jobs);
    }
    end
}

/// Waits for `fut` unless `stop` completes first. Pending jobs are dispatched before any
/// wait that may not finish at once, since they hold slots and budget the wait may need.
async fn wait<T>(
    fut: impl std::future::Future<Output = T>,
    mut stop: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Result<T, End> {
    tokio::select! {
        biased;
        _ = stop.as_mut() => Err(End::Stopped),
        v = fut => Ok(v),
    }
}

/// Reads one request and adds it to `jobs` (a refused request becomes an error reply job).
/// `Err` when the connection must stop reading; every path that sees `stop` complete returns
/// `Err`, so it is never polled again.
async fn read_request<R>(
    reader: &mut BufReader<R>,
    shared: &Arc<Shared>,
    params: &TransmissionParams,
    limits: &Limits,
    mut stop: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    jobs: &mut Vec<Job>,
) -> Result<(), End>
where
    R: AsyncRead + Unpin,
{
    let mut header = [0u8; proto::REQUEST_HEADER_LEN];
    if let Err(e) = wait(reader.read_exact(&mut header), stop.as_mut()).await? {
        if e.kind() != io::ErrorKind::UnexpectedEof {
            tracing::debug!(error = %e, "reading a request failed");
        }
        return Err(End::ClientGone);
    }
    let req = proto::parse_request_header(&header).map_err(|e| {
        tracing::warn!(error = %e, "protocol violation; dropping the connection");
        End::Abort
    })?;
    let slot = match Arc::clone(&limits.slots).try_acquire_owned() {
        Ok(p) => p,
        Err(_) => {
            dispatch(shared, jobs);
            wait(Arc::clone(&limits.slots).acquire_owned(), stop.as_mut())
                .await?
                .map_err(|_| End::Abort)?
        }
    };
    let op = match command::check_request(&req, params) {
        Ok(op) => op,
        Err(rejection) => {
            tracing::debug!(
                kind = req.kind,
                offset = req.offset,
                length = req.length,
                reason = rejection.message,
                "request refused"
            );
            let payload = req.payload_len();
            let acceptable = command::write_payload_is_acceptable(payload);
            if acceptable && payload > 0 {
                dispatch(shared, jobs);
                let mut skip = (&mut *reader).take(u64::from(payload));
                let mut sink = tokio::io::sink();
                match wait(tokio::io::copy(&mut skip, &mut sink), stop.as_mut()).await? {
                    Ok(n) if n == u64::from(payload) => {}
                    _ => return Err(End::ClientGone),
                }
            }
            jobs.push(Job {
                cookie: req.cookie,
                work: Work::Refuse(rejection),
                buf: Vec::new(),
                slot,
                bytes: None,
            });
            if !acceptable {
                tracing::warn!(
                    length = payload,
                    "write payload beyond the maximum block size; dropping the connection"
                );
                // The error reply goes out within the grace period, then the connection closes.
                return Err(End::ClientGone);
            }
            return Ok(());
        }
    };
    let (buf, bytes) = match op {
        Op::Disconnect => return Err(End::Disconnect),
        Op::Read { len, .. } | Op::Write { len, .. } => {
            let bytes = match Arc::clone(&limits.bytes).try_acquire_many_owned(len) {
                Ok(p) => p,
                Err(_) => {
                    dispatch(shared, jobs);
                    wait(
                        Arc::clone(&limits.bytes).acquire_many_owned(len),
                        stop.as_mut(),
                    )
                    .await?
                    .map_err(|_| End::Abort)?
                }
            };
            let mut buf = Vec::new();
            if let Op::Write { .. } = op {
                let len = len as usize;
                if reader.buffer().len() < len {
                    dispatch(shared, jobs);
                }
                // What the reader holds already, then the rest straight from the stream into
                // spare capacity: a payload is copied once and never zero-filled first.
                buf = shared.pool.take_empty(len);
                let buffered = reader.buffer().len().min(len);
                buf.extend_from_slice(&reader.buffer()[..buffered]);
                reader.consume(buffered);
                while buf.len() < len {
                    let rest = (len - buf.len()) as u64;
                    let mut payload = reader.get_mut().take(rest);
                    match wait(payload.read_buf(&mut buf), stop.as_mut()).await? {
                        Ok(n) if n > 0 => {}
                        _ => return Err(End::ClientGone),
                    }
                }
            }
            (buf, Some(bytes))
        }
        _ => (Vec::new(), None),
    };
    jobs.push(Job {
        cookie: req.cookie,
        work: Work::Run(op),
        buf,
        slot,
        bytes,
    });
    Ok(())
}

/// What a job does.
enum Work {
    /// Carry out an accepted request.
    Run(Op),
    /// Answer a refused request with its error.
    Refuse(command::Rejection),
}

/// A request waiting for the blocking pool.
struct Job {
    cookie: Cookie,
    work: Work,
    /// The payload of a write.
    buf: Vec<u8>,
    slot: OwnedSemaphorePermit,
    bytes: Option<OwnedSemaphorePermit>,
}

/// The one job to carry out on the connection task itself, if that is cheaper than a
/// hand-off: it is the only request in flight (the client waits for its answer, as at queue
/// depth 1), a small read or write, and device operations are fast, so the task is not held up
/// for long. Waking a blocking-pool thread would cost more than the work.
fn inline_job(shared: &Shared, limits: &Limits, jobs: &mut Vec<Job>) -> Option<Job> {
    let [job] = jobs.as_slice() else {
        return None;
    };
    let small = match &job.work {
        Work::Run(Op::Read { len, .. } | Op::Write { len, .. }) => *len <= MAX_INLINE_LEN,
        Work::Run(_) => false,
        Work::Refuse(_) => true,
    };
    let alone = limits.slots.available_permits() + 1 == limits.slot_count as usize;
    if small && alone && shared.jobs_per_batch() > 1 {
        jobs.pop()
    } else {
        None
    }
}

/// Carries out `job` on the connection task and writes its reply from there.
async fn run_inline(shared: &Shared, job: Job) {
    let reply = run(shared, job);
    shared.queue().push(reply);
    loop {
        let mut state = shared.writer.lock().await;
        shared.write_queued(&mut state).await;
        drop(state);
        // As in `write_pending`: a reply queued while the lock was being released.
        if shared.queue().is_empty() {
            return;
        }
    }
}

/// Queues `jobs` for the connection's workers, starting one more on the blocking pool unless
/// [`MAX_WORKERS`] are running already (they take the jobs then, without a wake-up).
fn dispatch(shared: &Arc<Shared>, jobs: &mut Vec<Job>) {
    if jobs.is_empty() {
        return;
    }
    shared.pending().extend(jobs.drain(..));
    if shared.add_worker() {
        let shared = Arc::clone(shared);
        tokio::task::spawn_blocking(move || work(&shared));
    }
}

/// A worker: takes queued jobs in arrival order, a batch at a time (a batch is only longer
/// than one while device operations are fast), carries them out and writes their replies
/// together, until none is left.
fn work(shared: &Shared) {
    loop {
        let batch: Vec<Job> = {
            let mut pending = shared.pending();
            let n = shared.jobs_per_batch().min(pending.len());
            pending.drain(..n).collect()
        };
        if batch.is_empty() {
            shared.workers.fetch_sub(1, Ordering::SeqCst);
            // A job queued between the look and the decrement found every worker busy and
            // started none: it is this worker's, unless another has started meanwhile.
            if shared.pending().is_empty() || !shared.add_worker() {
                return;
            }
            continue;
        }
        for job in batch {
            let reply = run(shared, job);
            shared.queue().push(reply);
        }
        shared.write_pending();
    }
}

/// Carries out one job: its reply, holding the job's slot and byte budget.
fn run(shared: &Shared, job: Job) -> Outgoing {
    let (buf, carries_data) = match job.work {
        Work::Run(op) => {
            let started = Instant::now();
            let reply = execute(shared, job.cookie, op, job.buf);
            shared.record_op_time(started.elapsed());
            reply
        }
        Work::Refuse(rejection) => {
            let mut buf = job.buf;
            shared.error_reply(&mut buf, job.cookie, rejection.errno, rejection.message);
            (buf, false)
        }
    };
    Outgoing {
        buf,
        cookie: job.cookie,
        carries_data,
        _slot: job.slot,
        _bytes: job.bytes,
    }
}

/// Carries out `op` on the device and returns the encoded reply and whether it carries
/// export data. `buf` holds the payload of a write; other operations get an empty one.
fn execute(shared: &Shared, cookie: Cookie, op: Op, mut buf: Vec<u8>) -> (Vec<u8>, bool) {
    if shared.stopping() {
        shared.error_reply(
            &mut buf,
            cookie,
            Errno::Shutdown,
            "the export is no longer available",
        );
        return (buf, false);
    }
    let device = &*shared.device;
    let result = match op {
        Op::Read { offset, len } => return read(shared, cookie, offset, len),
        Op::Write { offset, len, fua } => {
            if len == 0 {
                Ok(())
            } else {
                device.write(offset, &mut buf, fua)
            }
        }
        Op::Flush => device.flush(),
        Op::Trim { offset, len, fua } => {
            if len == 0 {
                Ok(())
            } else {
                device
                    .trim(offset, u64::from(len))
                    .and_then(|()| if fua { device.flush() } else { Ok(()) })
            }
        }
        Op::WriteZeroes {
            offset,
            len,
            no_hole,
            fua,
        } => {
            if len == 0 {
                Ok(())
            } else {
                device.write_zeroes(offset, u64::from(len), no_hole, fua)
            }
        }
        Op::BlockStatus {
            offset,
            len,
            req_one,
            context_id,
        } => match device.block_status(offset, u64::from(len)) {
            Ok(extents) => {
                let mut descriptors = Vec::new();
                command::block_status_descriptors(offset, len, &extents, req_one, &mut descriptors);
                buf.clear();
                proto::put_block_status(&mut buf, cookie, context_id, &descriptors);
                return (buf, false);
            }
            Err(e) => Err(e),
        },
        Op::Cache | Op::Disconnect => Ok(()),
    };
    match result {
        Ok(()) => {
            buf.clear();
            // A simple reply is allowed for every command but a read, even with structured
            // replies, and is the shortest.
            proto::put_simple_reply(&mut buf, None, cookie);
        }
        Err(e) => {
            let errno = Errno::from_io_error(&e);
            tracing::warn!(error = %e, ?errno, "device operation failed");
            shared.error_reply(&mut buf, cookie, errno, &e.to_string());
        }
    }
    (buf, false)
}

fn read(shared: &Shared, cookie: Cookie, offset: u64, len: u32) -> (Vec<u8>, bool) {
    if len == 0 {
        let mut buf = shared.pool.take(0);
        if shared.structured {
            proto::put_structured_done(&mut buf, cookie);
        } else {
            proto::put_simple_reply(&mut buf, None, cookie);
        }
        return (buf, false);
    }
    let header_len = if shared.structured {
        proto::OFFSET_DATA_HEADER_LEN
    } else {
        proto::SIMPLE_REPLY_LEN
    };
    let mut buf = shared.pool.take(header_len + len as usize);
    let (head, data) = buf.split_at_mut(header_len);
    if let Err(e) = shared.device.read(offset, data) {
        let errno = Errno::from_io_error(&e);
        tracing::warn!(error = %e, ?errno, offset, len, "device read failed");
        shared.error_reply(&mut buf, cookie, errno, &e.to_string());
        return (buf, false);
    }
    if shared.structured {
        match proto::offset_data_header(cookie, offset, len) {
            Some(h) => head.copy_from_slice(&h),
            None => {
                shared.error_reply(&mut buf, cookie, Errno::Inval, "read too large");
                return (buf, false);
            }
        }
    } else {
        head.copy_from_slice(&proto::simple_reply(None, cookie));
    }
    (buf, true)
}

/// Writes every reply of `batch`, up to [`MAX_BATCH`] per vectored write.
async fn write_batch<W>(writer: &mut W, batch: &[Outgoing]) -> io::Result<()>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    for chunk in batch.chunks(MAX_BATCH) {
        let mut slices = [IoSlice::new(&[]); MAX_BATCH];
        for (slice, o) in slices.iter_mut().zip(chunk) {
            *slice = IoSlice::new(&o.buf);
        }
        let mut bufs = &mut slices[..chunk.len()];
        while !bufs.is_empty() {
            let written = writer.write_vectored(bufs).await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut bufs, written);
        }
    }
    writer.flush().await
}
