//! The on-disk spool: batches that cannot go to the database now (a long
//! outage past the memory budget, a fatal stop, a shutdown deadline) wait
//! here and are replayed, oldest first, when writes work again.
//!
//! A spool directory holds append-only segment files
//! `segment-<20-digit number>.spool`, each a header line followed by entries:
//!
//! ```text
//! magic "PLS1" | payload length u32 LE | CRC-32 of payload u32 LE | payload
//! payload = instance i64 LE | seq i64 LE | part i32 LE | binary COPY stream
//! ```
//!
//! The batch key travels with its rows, so a replayed batch that had in fact
//! been committed (its COPY was in flight at the deadline) is recognised by
//! the ledger and not written twice. A torn or corrupt entry (power loss
//! while appending) ends the segment: the valid entries before it are
//! replayed, the rest is reported and skipped. A `lock` file held with
//! `flock` keeps two processes from sharing a spool, and a `table` file
//! binds the spool to the table its batches belong to. Rows that PostgreSQL
//! refused and that could not be stored in the rejected-rows table are
//! appended to `dead-letter.ndjson`.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::batch::EncodedBatch;
use crate::ledger::BatchKey;
use crate::report::human_bytes;
use crate::Error;

const SEGMENT_HEADER: &[u8] = b"PGLOGSINK SPOOL 1\n";
const ENTRY_MAGIC: &[u8; 4] = b"PLS1";
const ENTRY_HEADER: usize = 12;
const KEY_LEN: usize = 20;
/// A segment is closed and a new one started past this size (or an eighth
/// of the memory budget, if smaller: replay reads a whole segment back).
const SEGMENT_LIMIT: u64 = 64 * 1024 * 1024;
const MIN_SEGMENT_LIMIT: u64 = 256 * 1024;

/// How much disk a spool may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpoolLimits {
    /// Most bytes of segments on disk; appends stop past it.
    pub(crate) max_bytes: u64,
    /// Free space its filesystem must keep; appends stop below it.
    pub(crate) min_free_bytes: u64,
    /// A segment is closed past this size.
    pub(crate) segment_bytes: u64,
}

impl SpoolLimits {
    /// Limits for a sink whose queue may hold `max_queue_bytes` in memory.
    pub(crate) fn new(max_bytes: u64, min_free_bytes: u64, max_queue_bytes: usize) -> SpoolLimits {
        SpoolLimits {
            max_bytes,
            min_free_bytes,
            segment_bytes: (max_queue_bytes as u64 / 8).clamp(MIN_SEGMENT_LIMIT, SEGMENT_LIMIT),
        }
    }
}

pub(crate) struct Spool {
    dir: PathBuf,
    _lock: File,
    /// Segment numbers on disk, oldest first (including the active one).
    segments: BTreeSet<u64>,
    active: Option<Active>,
    limits: SpoolLimits,
    /// Bytes of the segments on disk.
    bytes: u64,
    /// The largest entry appended so far: the free-space reserve is kept
    /// with room for one more.
    largest_entry: u64,
}

struct Active {
    number: u64,
    /// Unbuffered: an entry that cannot be written (the disk is full) is
    /// known at once and cut off again, so what is counted as spooled is
    /// what is in the file.
    file: File,
    len: u64,
}

/// A segment read back for replay.
pub(crate) struct Segment {
    pub(crate) number: u64,
    pub(crate) path: PathBuf,
    pub(crate) batches: Vec<EncodedBatch>,
    /// Set when the segment ended in a torn or corrupt entry.
    pub(crate) corrupt: Option<Corruption>,
}

/// Where a segment stopped making sense.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Corruption {
    pub(crate) offset: u64,
    pub(crate) skipped_bytes: u64,
    pub(crate) reason: &'static str,
}

impl Spool {
    /// Open (creating it if needed) and lock the spool directory of `table`.
    pub(crate) fn open(dir: &Path, table: &str, limits: SpoolLimits) -> Result<Spool, Error> {
        fs::create_dir_all(dir)
            .map_err(|e| Error::io("cannot create the spool directory", dir, e))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io("cannot open", &lock_path, e))?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(Error::config(
                "spool directory",
                format!(
                    "{} is in use by another pglogsink process; give each process a spool of its own",
                    dir.display()
                ),
            ));
        }
        bind_to_table(dir, table)?;
        let mut segments = BTreeSet::new();
        let mut bytes = 0;
        let entries = fs::read_dir(dir).map_err(|e| Error::io("cannot read", dir, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            if let Some(n) = segment_number(&name.to_string_lossy()) {
                segments.insert(n);
                bytes += entry.metadata().map_or(0, |m| m.len());
            }
        }
        Ok(Spool {
            dir: dir.to_owned(),
            _lock: lock,
            segments,
            active: None,
            limits,
            bytes,
            largest_entry: 0,
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// True when no batch waits for replay.
    pub(crate) fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Bytes of the segments on disk.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether another batch may be appended: `Err` says why not (the size
    /// cap, or the free-space reserve of the filesystem). A batch appended
    /// with room left may take the spool past its cap by that one batch.
    pub(crate) fn room(&self) -> Result<(), String> {
        if self.bytes >= self.limits.max_bytes {
            return Err(format!(
                "the spool holds {}, its size cap",
                human_bytes(self.bytes)
            ));
        }
        match free_space(&self.dir) {
            Ok(free) if free < self.limits.min_free_bytes + self.largest_entry => Err(format!(
                "the spool's filesystem has {} free, below its reserve of {}",
                human_bytes(free),
                human_bytes(self.limits.min_free_bytes)
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(format!(
                "cannot tell the free space of {}: {e}",
                self.dir.display()
            )),
        }
    }

    /// Append a batch (durable once [`flush`](Self::flush)ed). On an error
    /// nothing of the batch stays in the segment.
    pub(crate) fn append(&mut self, batch: &EncodedBatch) -> io::Result<()> {
        let full = self
            .active
            .as_ref()
            .is_some_and(|a| a.len >= self.limits.segment_bytes);
        if full {
            self.close_active()?;
        }
        if self.active.is_none() {
            self.open_segment()?;
        }
        let active = self.active.as_mut().expect("opened above");
        let mut head = [0u8; ENTRY_HEADER + KEY_LEN];
        let payload_len = u32::try_from(KEY_LEN + batch.data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "batch over 4 GiB"))?;
        head[..4].copy_from_slice(ENTRY_MAGIC);
        head[4..8].copy_from_slice(&payload_len.to_le_bytes());
        head[12..20].copy_from_slice(&batch.key.instance.to_le_bytes());
        head[20..28].copy_from_slice(&batch.key.seq.to_le_bytes());
        head[28..32].copy_from_slice(&batch.key.part.to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head[ENTRY_HEADER..]);
        crc.update(&batch.data);
        head[8..12].copy_from_slice(&crc.finalize().to_le_bytes());
        let written = active
            .file
            .write_all(&head)
            .and_then(|()| active.file.write_all(&batch.data));
        if let Err(e) = written {
            // Cut the torn entry off (which also gives its space back) and
            // start the next append in a new segment.
            let _ = active.file.set_len(active.len);
            self.active = None;
            return Err(e);
        }
        let entry = (head.len() + batch.data.len()) as u64;
        active.len += entry;
        self.bytes += entry;
        self.largest_entry = self.largest_entry.max(entry);
        Ok(())
    }

    fn open_segment(&mut self) -> io::Result<()> {
        let number = self.segments.last().map_or(1, |n| n + 1);
        let path = self.segment_path(number);
        let mut file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)?;
        if let Err(e) = file.write_all(SEGMENT_HEADER) {
            drop(file);
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        self.bytes += SEGMENT_HEADER.len() as u64;
        self.segments.insert(number);
        self.active = Some(Active {
            number,
            file,
            len: SEGMENT_HEADER.len() as u64,
        });
        Ok(())
    }

    /// Make the appended entries durable.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        if let Some(active) = &mut self.active {
            active.file.sync_data()?;
        }
        Ok(())
    }

    fn close_active(&mut self) -> io::Result<()> {
        self.flush()?;
        self.active = None;
        Ok(())
    }

    /// Read the oldest segment for replay (closing it first if it is the one
    /// being appended to). `Ok(None)` when the spool is empty.
    pub(crate) fn oldest(&mut self) -> io::Result<Option<Segment>> {
        let Some(&number) = self.segments.first() else {
            return Ok(None);
        };
        if self.active.as_ref().is_some_and(|a| a.number == number) {
            self.close_active()?;
        }
        let path = self.segment_path(number);
        let data = fs::read(&path)?;
        let (batches, corrupt) = parse_segment(Bytes::from(data));
        Ok(Some(Segment {
            number,
            path,
            batches,
            corrupt,
        }))
    }

    /// Remove a segment whose batches are all written.
    pub(crate) fn remove(&mut self, segment: &Segment) -> io::Result<()> {
        let len = fs::metadata(&segment.path).map_or(0, |m| m.len());
        match fs::remove_file(&segment.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.segments.remove(&segment.number);
        self.bytes = self.bytes.saturating_sub(len);
        Ok(())
    }

    fn segment_path(&self, number: u64) -> PathBuf {
        self.dir.join(format!("segment-{number:020}.spool"))
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Bytes available to us on the filesystem holding `dir`.
fn free_space(dir: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs writes into the zeroed struct we pass and reads the
    // NUL-terminated path; both outlive the call.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// A spool holds batches of one table: replaying them into another would
/// put rows in the wrong place.
fn bind_to_table(dir: &Path, table: &str) -> Result<(), Error> {
    let path = dir.join("table");
    match fs::read_to_string(&path) {
        Ok(bound) if bound.trim() == table => Ok(()),
        Ok(bound) => Err(Error::config(
            "spool directory",
            format!(
                "{} holds records for table {}, not {table}; give each table a spool of its own",
                dir.display(),
                bound.trim()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::write(&path, format!("{table}\n")).map_err(|e| Error::io("cannot write", &path, e))
        }
        Err(e) => Err(Error::io("cannot read", &path, e)),
    }
}

fn segment_number(name: &str) -> Option<u64> {
    name.strip_prefix("segment-")?
        .strip_suffix(".spool")?
        .parse()
        .ok()
}

/// The valid entries of a segment, and where it stopped being valid.
fn parse_segment(data: Bytes) -> (Vec<EncodedBatch>, Option<Corruption>) {
    let corrupt = |offset: usize, reason| Corruption {
        offset: offset as u64,
        skipped_bytes: (data.len() - offset) as u64,
        reason,
    };
    if !data.starts_with(SEGMENT_HEADER) {
        return (Vec::new(), Some(corrupt(0, "missing segment header")));
    }
    let mut batches = Vec::new();
    let mut at = SEGMENT_HEADER.len();
    while at < data.len() {
        let Some(header) = data.get(at..at + ENTRY_HEADER) else {
            return (batches, Some(corrupt(at, "torn entry header")));
        };
        if &header[..4] != ENTRY_MAGIC {
            return (batches, Some(corrupt(at, "bad entry magic")));
        }
        let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        let start = at + ENTRY_HEADER;
        let Some(payload) = data.get(start..start + len) else {
            return (batches, Some(corrupt(at, "torn entry")));
        };
        if len < KEY_LEN || crc32fast::hash(payload) != crc {
            return (batches, Some(corrupt(at, "checksum mismatch")));
        }
        let key = BatchKey {
            instance: i64::from_le_bytes(payload[..8].try_into().expect("8 bytes")),
            seq: i64::from_le_bytes(payload[8..16].try_into().expect("8 bytes")),
            part: i32::from_le_bytes(payload[16..20].try_into().expect("4 bytes")),
        };
        let rows = data.slice(start + KEY_LEN..start + len);
        match EncodedBatch::from_copy_stream(key, rows) {
            Ok(batch) => batches.push(batch),
            Err(_) => return (batches, Some(corrupt(at, "entry is not a COPY stream"))),
        }
        at = start + len;
    }
    (batches, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::copy_format::{row_to_json, CopyEncoder};
    use crate::ledger::KeySource;
    use crate::level::Level;
    use crate::record::Record;

    const LIMITS: SpoolLimits = SpoolLimits {
        max_bytes: u64::MAX,
        min_free_bytes: 0,
        segment_bytes: SEGMENT_LIMIT,
    };

    #[test]
    fn the_size_cap_and_the_free_space_reserve_stop_appends() {
        let dir = temp_dir("room");
        let mut keys = KeySource::new(3);
        let one = batch(&mut keys, &["a"; 100]);
        let cap = SpoolLimits {
            max_bytes: 3 * one.data.len() as u64,
            segment_bytes: 2 * one.data.len() as u64,
            ..LIMITS
        };
        let mut spool = Spool::open(&dir, "log", cap).unwrap();
        let mut appended = 0;
        while spool.room().is_ok() {
            spool.append(&one).unwrap();
            appended += 1;
        }
        assert_eq!(appended, 3, "room until the cap is reached, not past it");
        let why = spool.room().unwrap_err();
        assert!(why.contains("size cap"), "{why}");
        spool.flush().unwrap();
        let on_disk_after_flush: u64 = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| segment_number(&e.file_name().to_string_lossy()).is_some())
            .map(|e| e.metadata().unwrap().len())
            .sum();
        assert_eq!(spool.bytes(), on_disk_after_flush, "bytes match the files");
        let oldest = spool.oldest().unwrap().unwrap();
        spool.remove(&oldest).unwrap();
        assert!(spool.room().is_ok(), "replay makes room again");
        drop(spool);
        let reopened = Spool::open(&dir, "log", cap).unwrap();
        assert_eq!(reopened.bytes(), on_disk_after_flush - oldest_len(&oldest));
        drop(reopened);

        let reserve = SpoolLimits {
            min_free_bytes: u64::MAX,
            ..LIMITS
        };
        let why = Spool::open(&dir, "log", reserve)
            .unwrap()
            .room()
            .unwrap_err();
        assert!(why.contains("below its reserve"), "{why}");
    }

    fn oldest_len(segment: &Segment) -> u64 {
        let entries: usize = segment
            .batches
            .iter()
            .map(|b| ENTRY_HEADER + KEY_LEN + b.data.len())
            .sum();
        (SEGMENT_HEADER.len() + entries) as u64
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "pglogsink-spool-test-{name}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn batch(keys: &mut KeySource, messages: &[&str]) -> EncodedBatch {
        let records: Vec<Record> = messages
            .iter()
            .map(|m| Record::new(Level::Info, m.to_string()))
            .collect();
        let (data, offsets, _) = CopyEncoder::new(1 << 20).encode(&records);
        EncodedBatch::new(keys.next(), data, offsets)
    }

    #[test]
    fn batches_come_back_in_order_with_their_keys() {
        let dir = temp_dir("order");
        let mut keys = KeySource::new(9);
        let first = batch(&mut keys, &["a", "b"]);
        let second = batch(&mut keys, &["c"]);
        {
            let mut spool = Spool::open(&dir, "log", LIMITS).unwrap();
            assert!(spool.is_empty());
            spool.append(&first).unwrap();
            spool.append(&second).unwrap();
            spool.flush().unwrap();
        }
        let mut spool = Spool::open(&dir, "log", LIMITS).unwrap();
        assert!(!spool.is_empty());
        let segment = spool.oldest().unwrap().unwrap();
        assert_eq!(segment.corrupt, None);
        assert_eq!(segment.batches.len(), 2);
        assert_eq!(segment.batches[0].key, first.key);
        assert_eq!(segment.batches[1].key, second.key);
        assert_eq!(row_to_json(segment.batches[0].row(1))["message"], "b");
        spool.remove(&segment).unwrap();
        assert!(spool.is_empty());
        assert!(spool.oldest().unwrap().is_none());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_or_corrupt_tail_keeps_the_valid_entries() {
        let dir = temp_dir("torn");
        let mut keys = KeySource::new(1);
        {
            let mut spool = Spool::open(&dir, "log", LIMITS).unwrap();
            for i in 0..3 {
                spool
                    .append(&batch(&mut keys, &[&format!("m{i}")]))
                    .unwrap();
            }
        }
        let path = dir.join("segment-00000000000000000001.spool");
        let full = fs::read(&path).unwrap();
        // Power loss in the middle of the last entry.
        fs::write(&path, &full[..full.len() - 7]).unwrap();
        let mut spool = Spool::open(&dir, "log", LIMITS).unwrap();
        let segment = spool.oldest().unwrap().unwrap();
        assert_eq!(segment.batches.len(), 2);
        let c = segment.corrupt.clone().unwrap();
        assert_eq!(c.reason, "torn entry");
        drop(spool);
        // A flipped bit in the second entry.
        let mut flipped = full.clone();
        let second =
            SEGMENT_HEADER.len() + (full.len() - SEGMENT_HEADER.len()) / 3 + ENTRY_HEADER + 30;
        flipped[second] ^= 0x40;
        fs::write(&path, &flipped).unwrap();
        let mut spool = Spool::open(&dir, "log", LIMITS).unwrap();
        let segment = spool.oldest().unwrap().unwrap();
        assert_eq!(segment.batches.len(), 1);
        assert_eq!(segment.corrupt.unwrap().reason, "checksum mismatch");
        // Garbage from the start.
        fs::write(&path, b"\0\0\0garbage").unwrap();
        let segment = spool.oldest().unwrap().unwrap();
        assert!(segment.batches.is_empty() && segment.corrupt.is_some());
        drop(spool);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_spool_is_used_by_one_process_at_a_time() {
        let dir = temp_dir("lock");
        let spool = Spool::open(&dir, "log", LIMITS).unwrap();
        let err = Spool::open(&dir, "log", LIMITS)
            .err()
            .expect("second open must fail")
            .to_string();
        assert!(err.contains("in use"), "{err}");
        drop(spool);
        let err = Spool::open(&dir, "other", LIMITS)
            .err()
            .expect("another table's spool")
            .to_string();
        assert!(
            err.contains("holds records for table log, not other"),
            "{err}"
        );
        Spool::open(&dir, "log", LIMITS).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn appending_after_reading_the_active_segment_starts_a_new_one() {
        let dir = temp_dir("rotate");
        let mut keys = KeySource::new(1);
        let mut spool = Spool::open(&dir, "log", LIMITS).unwrap();
        spool.append(&batch(&mut keys, &["a"])).unwrap();
        let segment = spool.oldest().unwrap().unwrap();
        spool.append(&batch(&mut keys, &["b"])).unwrap();
        spool.remove(&segment).unwrap();
        assert!(!spool.is_empty());
        let next = spool.oldest().unwrap().unwrap();
        assert_eq!(row_to_json(next.batches[0].row(0))["message"], "b");
        drop(spool);
        fs::remove_dir_all(&dir).unwrap();
    }
}
