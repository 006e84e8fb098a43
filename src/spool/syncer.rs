//! The sync thread: fdatasync off the writer's path.
//!
//! An fdatasync under a flood flushes megabytes and takes milliseconds to
//! tens of milliseconds. Done on the writer thread it stopped all writing
//! for that long, so appends (which the writer drains) backed up behind
//! every sync and the spool reached a fraction of the disk's speed. Here the
//! writer only *asks*: it hands over the file and the logical end of what it
//! has written, and goes on writing while this thread syncs. Requests that
//! arrive during a sync are merged into the next one, so one fdatasync
//! serves every durability waiter of its moment (group commit) and a flood
//! costs at most one sync in flight plus one queued.
//!
//! It also unlinks the segments every sink is done with: with `discard`
//! mounts an unlink of a 64 MiB segment waits for the device to trim it,
//! long enough to stall appends if the writer did it.
//!
//! A failed fdatasync is not retried (see "Durability and visibility" in
//! the module doc): it marks the spool failed, and every sync after it
//! reports nothing.
//!
//! What a sync reports durable is only what was written *before* the request
//! (`target`), and the file it syncs is the one that data is in, or a later
//! one: the writer fdatasyncs a closed segment itself before it starts the
//! next (see `Writer::roll`), so syncing the newer file covers the target.

use std::fs::File;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::state::Shared;
use super::{segment, Offset};

/// What the writer asks of the sync thread.
#[derive(Default)]
struct Request {
    /// The segment being written, once the writer has asked for a sync.
    file: Option<Arc<File>>,
    /// Make everything up to here durable (already written to `file`, or
    /// to segments synced before it was created).
    target: Offset,
    /// `target` has not been synced yet.
    wanted: bool,
    /// Segments (by base) to unlink.
    deletions: Vec<Offset>,
    /// Unlinking is under way.
    deleting: bool,
    /// An fdatasync is under way.
    syncing: bool,
    /// Finish the wanted sync and deletions, then stop.
    shutdown: bool,
}

/// The writer's handle on the sync thread.
pub struct Syncer {
    queue: Arc<Queue>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Queue {
    request: Mutex<Request>,
    wake: Condvar,
    /// Signalled when the deletions handed over are done.
    deleted: Condvar,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Request> {
        self.request.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Syncer {
    pub fn start(shared: Arc<Shared>) -> std::io::Result<Syncer> {
        let queue = Arc::new(Queue {
            request: Mutex::new(Request::default()),
            wake: Condvar::new(),
            deleted: Condvar::new(),
        });
        let q = queue.clone();
        let thread = std::thread::Builder::new()
            .name("weir-spool-sync".into())
            .spawn(move || run(&q, &shared))?;
        Ok(Syncer {
            queue,
            thread: Some(thread),
        })
    }

    /// Asks for everything up to `target`, written to `file`, to be made
    /// durable; returns at once.
    pub fn request(&self, file: &Arc<File>, target: Offset) {
        let mut r = self.queue.lock();
        r.file = Some(file.clone());
        r.target = r.target.max(target);
        r.wanted = true;
        drop(r);
        self.queue.wake.notify_one();
    }

    /// Points later syncs at a new segment (the previous one is already
    /// synced by the writer).
    pub fn switch_file(&self, file: &Arc<File>) {
        let mut r = self.queue.lock();
        if r.file.is_some() {
            r.file = Some(file.clone());
        }
    }

    /// Neither syncing nor asked to: a sync on another thread cannot
    /// overlap (only the writer asks).
    pub fn idle(&self) -> bool {
        let r = self.queue.lock();
        !r.wanted && !r.syncing
    }

    /// Hands over segments to unlink (then the directory is fsynced).
    pub fn delete(&self, bases: Vec<Offset>) {
        if bases.is_empty() {
            return;
        }
        self.queue.lock().deletions.extend(bases);
        self.queue.wake.notify_one();
    }

    /// Whether deletions handed over are not done yet.
    pub fn deleting(&self) -> bool {
        let r = self.queue.lock();
        r.deleting || !r.deletions.is_empty()
    }

    /// Returns once every deletion handed over so far is done.
    pub fn wait_deletions(&self) {
        let mut r = self.queue.lock();
        while r.deleting || !r.deletions.is_empty() {
            r = self
                .queue
                .deleted
                .wait(r)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Finishes the sync asked for, if any, and stops the thread.
    pub fn stop(&mut self) {
        self.queue.lock().shutdown = true;
        self.queue.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(queue: &Queue, shared: &Shared) {
    let mut r = queue.lock();
    loop {
        if !r.wanted && !r.deletions.is_empty() {
            let bases = std::mem::take(&mut r.deletions);
            r.deleting = true;
            drop(r);
            delete(shared, &bases);
            r = queue.lock();
            r.deleting = false;
            queue.deleted.notify_all();
            continue;
        }
        if !r.wanted {
            if r.shutdown {
                return;
            }
            r = queue.wake.wait(r).unwrap_or_else(|e| e.into_inner());
            continue;
        }
        let (file, target) = (r.file.clone().expect("a file with the request"), r.target);
        r.wanted = false;
        r.syncing = true;
        drop(r);
        // A failure marks the spool failed; there is nothing to retry.
        sync(shared, &file, target);
        r = queue.lock();
        r.syncing = false;
    }
}

/// Unlinks segments, then fsyncs the directory so the unlinks last.
pub fn delete(shared: &Shared, bases: &[Offset]) {
    for &base in bases {
        match std::fs::remove_file(segment::path(&shared.dir, base)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::error!(error = %e, "cannot delete a spool segment"),
        }
    }
    if let Err(e) = segment::sync_dir(&shared.dir) {
        tracing::error!(error = %e, "cannot fsync the spool directory");
    }
    shared.space.notify_waiters();
}

/// One fdatasync; on success everything up to `target` becomes durable and
/// visible to readers and waiters. Once one failed, none is attempted: the
/// spool is failed for good.
pub fn sync(shared: &Shared, file: &File, target: Offset) -> bool {
    if shared.failure().is_some() {
        return false;
    }
    match file.sync_data() {
        Ok(()) => {
            shared.metrics.fsyncs.inc();
            publish_durable(shared, target);
            true
        }
        Err(e) => {
            fail(shared, &e);
            false
        }
    }
}

/// Marks the spool failed after a failed fdatasync of its data and wakes
/// every waiter, which then gets [`super::SpoolError::SyncFailed`].
pub fn fail(shared: &Shared, e: &std::io::Error) {
    let first = shared.failed.send_if_modified(|f| {
        let first = f.is_none();
        f.get_or_insert(e.kind());
        first
    });
    if first {
        tracing::error!(error = %e, "spool fdatasync failed: data written since the last successful sync may not be on disk; the spool reports nothing more durable and weir stops");
    }
    shared.wake.notify_all();
    shared.space.notify_waiters();
}

/// Makes everything up to `upto` visible as durable.
pub fn publish_durable(shared: &Shared, upto: Offset) {
    let mut st = shared.lock();
    st.durable = st.durable.max(upto);
    drop(st);
    // The writer may be holding back until the unsynced window shrinks.
    shared.wake.notify_one();
    shared.durable.send_if_modified(|d| {
        let changed = *d < upto;
        *d = (*d).max(upto);
        changed
    });
}
