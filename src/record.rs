//! One log record: what a producer hands to [`Logger`](crate::Logger), and
//! what becomes one row of the Log table.
//!
//! This is the producer side: no database types appear here.

use std::borrow::Cow;
use std::cell::Cell;
use std::time::SystemTime;

use crate::fields::{Fields, SharedFields};
use crate::level::Level;
// The ledger (src/ledger.rs) still imports the conversion from here.
pub(crate) use crate::micros::unix_micros;

/// A log record on its way to the Log table.
///
/// Build one with [`Record::new`] and the chained setters, then hand it to
/// [`Logger::send`](crate::Logger::send). The timestamp is taken when the
/// record is built, unless [`Record::at`] sets another; the producing thread
/// is stamped when it is sent.
///
/// ```
/// use pglogsink::{Level, Record};
///
/// let record = Record::new(Level::Info, "order shipped")
///     .target("shop::orders")
///     .field("order_id", 1042)
///     .field("express", true);
/// assert_eq!(record.message(), "order shipped");
/// ```
#[derive(Debug, Clone)]
pub struct Record {
    pub(crate) timestamp: SystemTime,
    pub(crate) thread_id: i64,
    pub(crate) level: Level,
    pub(crate) target: Option<Cow<'static, str>>,
    pub(crate) message: Cow<'static, str>,
    pub(crate) fields: Fields,
    /// Fields shared with other records, written before its own.
    pub(crate) shared: Option<SharedFields>,
    /// The bytes it was counted at when it entered the sink's queue (it
    /// fits in the padding after `level`: the record is no larger).
    pub(crate) queued_bytes: u32,
}

impl Record {
    /// A record with a level and a message, no target and no fields, timed
    /// now.
    pub fn new(level: Level, message: impl Into<Cow<'static, str>>) -> Record {
        Record {
            timestamp: SystemTime::now(),
            thread_id: 0,
            level,
            target: None,
            message: message.into(),
            fields: Fields::new(),
            shared: None,
            queued_bytes: 0,
        }
    }

    /// When the event happened, for a record relayed from elsewhere (another
    /// service, a file), instead of when the record was built.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use pglogsink::{Level, Record};
    ///
    /// let then = SystemTime::now() - Duration::from_secs(60);
    /// let record = Record::new(Level::Info, "relayed").at(then);
    /// assert_eq!(record.timestamp(), then);
    /// ```
    pub fn at(mut self, timestamp: SystemTime) -> Record {
        self.timestamp = timestamp;
        self
    }

    /// Set the target (the component that logs, such as a module path).
    /// Without one, the logger's target is used.
    pub fn target(mut self, target: impl Into<Cow<'static, str>>) -> Record {
        self.target = Some(target.into());
        self
    }

    /// Add a structured field.
    pub fn field(
        mut self,
        key: impl Into<Cow<'static, str>>,
        value: impl Into<serde_json::Value>,
    ) -> Record {
        self.fields.push(key, value);
        self
    }

    /// Replace all fields at once.
    pub fn fields(mut self, fields: Fields) -> Record {
        self.fields = fields;
        self
    }

    /// Carry fields shared with other records (see [`SharedFields`]); its
    /// own fields come after them in the row, so a key of its own wins.
    pub fn shared_fields(mut self, shared: SharedFields) -> Record {
        self.shared = (!shared.is_empty()).then_some(shared);
        self
    }

    /// The fields it shares with other records, if any.
    pub fn shared(&self) -> Option<&SharedFields> {
        self.shared.as_ref()
    }

    /// True when the row will have fields (its own or shared ones).
    pub(crate) fn has_fields(&self) -> bool {
        !self.fields.is_empty() || self.shared.is_some()
    }

    /// The level.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Its own fields, in the order they were added (not the shared ones).
    pub fn field_list(&self) -> &[(Cow<'static, str>, serde_json::Value)] {
        &self.fields
    }

    /// When the record was built by [`Record::new`], or the time given to
    /// [`Record::at`]: the `timestamp` column of its row.
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use pglogsink::{Level, Record};
    ///
    /// let before = SystemTime::now();
    /// let record = Record::new(Level::Info, "built");
    /// assert!(record.timestamp() >= before && record.timestamp() <= SystemTime::now());
    /// ```
    pub fn timestamp(&self) -> SystemTime {
        self.timestamp
    }

    /// Stamp the producing thread: done by the logger when the record is
    /// sent. (The time was taken when the record was built: for `log()`,
    /// the same moment.)
    #[inline]
    pub(crate) fn stamp(&mut self) {
        self.thread_id = current_thread_id();
    }
}

thread_local! {
    static THREAD_ID: Cell<i64> = const { Cell::new(0) };
}

/// The OS thread id of the caller (what `top -H` and debuggers show), cached
/// per thread so that `log()` makes no system call after the first.
#[inline]
pub(crate) fn current_thread_id() -> i64 {
    THREAD_ID.with(|cell| {
        let cached = cell.get();
        if cached != 0 {
            return cached;
        }
        let id = os_thread_id();
        cell.set(id);
        id
    })
}

#[cfg(target_os = "linux")]
fn os_thread_id() -> i64 {
    // SAFETY: gettid has no preconditions and cannot fail.
    i64::from(unsafe { libc::gettid() })
}

#[cfg(not(target_os = "linux"))]
fn os_thread_id() -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static NEXT: AtomicI64 = AtomicI64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_case_insensitively_and_order_by_severity() {
        assert_eq!("WARN".parse::<Level>(), Ok(Level::Warn));
        assert_eq!("warning".parse::<Level>(), Ok(Level::Warn));
        assert_eq!("Error".parse::<Level>(), Ok(Level::Error));
        assert!("loud".parse::<Level>().is_err());
        assert!(Level::Trace < Level::Debug && Level::Warn < Level::Error);
        for level in Level::ALL {
            assert_eq!(level.as_str().parse::<Level>(), Ok(level));
        }
    }

    /// 112 bytes on 64-bit targets: the shared fields added 8 (a pointer)
    /// and the queued size fits in the padding after `level`.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_record_is_112_bytes() {
        assert_eq!(std::mem::size_of::<Record>(), 112);
    }

    #[test]
    fn stamping_sets_a_stable_thread_id_and_keeps_the_time() {
        let then = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let mut a = Record::new(Level::Info, "a").at(then);
        let mut b = Record::new(Level::Info, "b");
        let built = b.timestamp;
        a.stamp();
        b.stamp();
        assert_eq!(a.timestamp, then);
        assert_eq!(b.timestamp, built);
        assert!(a.thread_id > 0);
        assert_eq!(a.thread_id, b.thread_id);
        let other = std::thread::spawn(current_thread_id).join().unwrap();
        assert_ne!(other, a.thread_id);
    }
}
