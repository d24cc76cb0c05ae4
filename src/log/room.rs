//! Room on the data directory's file system: what the writer admits before anything reaches
//! sled, and the space it keeps in reserve for when the disk fills.
//!
//! sled 0.34 does not survive running out of space: a failed segment write poisons the
//! database (it refuses everything after, and what it applied in memory stays half-applied),
//! a failed write can leave a flush waiting forever, and a failed blob write leaks a writer
//! slot so that the next flush never returns. So Herald keeps sled from getting there: each
//! command is admitted against the free space measured before its group (less an estimate of
//! what the group before it and the commands before it will take), and a command that does
//! not fit is refused with nothing written — a definite answer, not a failed write.
//!
//! Invariants:
//! - Ingest is admitted only while at least `min_free_disk` + [`SAFETY`] bytes would stay
//!   free; everything else (attempt records, edits, compaction) while [`SAFETY`] would. The
//!   writer admits one command at a time, so concurrent batches cannot overshoot together.
//! - The reserve (`disk_reserve` bytes, allocated in `<data_dir>/reserved-space`) is room
//!   nothing else on the machine can take. When the rest of the disk is gone, work that is
//!   not ingest is admitted into it (the file is shrunk by what the command needs), so
//!   deliveries are still recorded and compaction still runs; the writer also gives it up
//!   to reopen the database after a storage fault (opening writes a snapshot). It grows
//!   back once there is room for it again.
//! - Estimates are deliberately high ([`estimate`]): sled writes each key's new version,
//!   rewrites whole nodes and grows its file a segment at a time.

use crate::storage::{Admission, NoRoom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Room kept free below every write, for what an estimate misses (a new 512 KiB segment,
/// node rewrites, a blob file).
pub const SAFETY: u64 = 8 << 20;

/// The reserve file's name in the data directory.
pub const RESERVE_FILE: &str = "reserved-space";

/// How often a shrunk reserve tries to grow back.
const REGROW_EVERY: Duration = Duration::from_secs(5);

/// Bytes a command of records encoding to `encoded` bytes may take on disk, at most.
pub fn estimate(encoded: usize) -> u64 {
    4 * encoded as u64 + 4096
}

/// The data directory's free space and its reserve.
#[derive(Debug)]
pub struct Room {
    dir: PathBuf,
    reserve_path: PathBuf,
    /// `disk_reserve`.
    reserve: u64,
    /// How big the reserve file is now.
    held: u64,
    /// `min_free_disk`.
    min_free: u64,
    next_regrow: Instant,
}

/// Free bytes on the file system holding `dir` (`None` if it cannot be read: then nothing is
/// refused for space — the write itself will say).
pub fn free_bytes(dir: &Path) -> Option<u64> {
    fs4::available_space(dir).ok()
}

impl Room {
    /// Takes stock of `dir` and sets up (or resizes) its reserve, as far as there is room.
    pub fn new(dir: &Path, reserve: u64, min_free: u64) -> Room {
        let reserve_path = dir.join(RESERVE_FILE);
        let held = std::fs::metadata(&reserve_path).map(|m| m.len()).unwrap_or(0);
        let mut room = Room { dir: dir.to_owned(), reserve_path, reserve, held, min_free, next_regrow: Instant::now() };
        if held > reserve {
            room.shrink_to(reserve);
        }
        room.regrow();
        room
    }

    /// Bytes the reserve holds now.
    #[cfg(test)]
    pub fn held(&self) -> u64 {
        self.held
    }

    /// Free space for the next group, less `pending` bytes already on their way to disk.
    pub fn budget(&mut self, pending: u64) -> SpaceBudget<'_> {
        if Instant::now() >= self.next_regrow {
            self.regrow();
        }
        let free = free_bytes(&self.dir);
        self.budget_at(free, pending)
    }

    /// [`Room::budget`] with the free space given (measured by the caller, or by a test).
    fn budget_at(&mut self, free: Option<u64>, pending: u64) -> SpaceBudget<'_> {
        SpaceBudget { free: free.map(|f| f.saturating_sub(pending)), used: 0, room: self }
    }

    /// Gives the whole reserve back to the file system (to reopen the database on a full
    /// disk). Returns whether there was any.
    pub fn release(&mut self) -> bool {
        let had = self.held > 0;
        self.shrink_to(0);
        had
    }

    fn shrink_to(&mut self, len: u64) {
        let done = std::fs::OpenOptions::new().write(true).open(&self.reserve_path).and_then(|f| f.set_len(len));
        match done {
            Ok(()) => self.held = len,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.held = 0,
            Err(e) => tracing::warn!(error = %e, "cannot shrink the reserved space"),
        }
        // It grows back only once the disk has room again, and not at once.
        self.next_regrow = Instant::now() + REGROW_EVERY;
    }

    /// Grows the reserve back to `disk_reserve` if the disk has room for it and for ingest
    /// besides.
    fn regrow(&mut self) {
        self.next_regrow = Instant::now() + REGROW_EVERY;
        if self.held >= self.reserve {
            return;
        }
        let Some(free) = free_bytes(&self.dir) else { return };
        let missing = self.reserve - self.held;
        if free < missing.saturating_add(self.min_free).saturating_add(2 * SAFETY) {
            return;
        }
        match allocate(&self.reserve_path, self.reserve) {
            Ok(()) => self.held = self.reserve,
            Err(e) => tracing::warn!(error = %e, bytes = self.reserve, "cannot allocate the reserved space"),
        }
    }
}

/// Makes `path` a file of `len` bytes whose blocks are allocated (not a sparse file: its
/// room must be really taken from the file system).
fn allocate(path: &Path, len: u64) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
    let len = libc::off_t::try_from(len).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: a plain syscall on a descriptor we own; it touches no memory of ours.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    file.sync_all()
}

/// The free space one group may use, command by command.
pub struct SpaceBudget<'a> {
    room: &'a mut Room,
    /// Measured before the group, less what was already on its way.
    free: Option<u64>,
    /// Estimated bytes of the commands admitted so far.
    used: u64,
}

impl SpaceBudget<'_> {
    /// Admits a command of `bytes` (an [`estimate`]) or says why not.
    pub fn admit(&mut self, class: Admission, bytes: u64) -> Result<(), NoRoom> {
        let Some(free) = self.free else { return Ok(()) };
        let floor = match class {
            Admission::Ingest => self.room.min_free.saturating_add(SAFETY),
            Admission::Work => SAFETY,
        };
        let left = free.saturating_sub(self.used);
        let needed = bytes.saturating_add(floor);
        if left >= needed {
            self.used += bytes;
            return Ok(());
        }
        if class == Admission::Work && self.room.held > 0 {
            // Work goes on in the reserve: shrink it by what this command lacks (a little
            // more, so that the next few do not each shrink it again).
            let before = self.room.held;
            self.room.shrink_to(before.saturating_sub((needed - left).saturating_add(SAFETY / 8)));
            let free = free.saturating_add(before - self.room.held);
            self.free = Some(free);
            let left = free.saturating_sub(self.used);
            if left >= needed {
                self.used += bytes;
                return Ok(());
            }
            return Err(NoRoom { free: left, needed });
        }
        Err(NoRoom { free: left, needed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(reserve: u64, min_free: u64) -> (tempfile::TempDir, Room) {
        let dir = tempfile::tempdir().unwrap();
        let room = Room::new(dir.path(), reserve, min_free);
        (dir, room)
    }

    #[test]
    fn ingest_stops_at_min_free_work_goes_on_and_the_reserve_is_real() {
        const RESERVE: u64 = 32 << 20;
        let (dir, mut room) = room(RESERVE, 0);
        assert_eq!(room.held(), RESERVE, "the reserve is allocated");
        let meta = std::fs::metadata(dir.path().join(RESERVE_FILE)).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 >= RESERVE, "allocated, not sparse");

        // Free space as if measured.
        let mut b = room.budget_at(Some(SAFETY + 10_000), 0);
        assert!(b.admit(Admission::Ingest, 6_000).is_ok());
        let refused = b.admit(Admission::Ingest, 6_000).unwrap_err();
        assert_eq!(refused, NoRoom { free: SAFETY + 4_000, needed: SAFETY + 6_000 });
        // Work fits into the reserve, which shrinks by about what it needed.
        assert!(b.admit(Admission::Work, 6_000).is_ok());
        assert!(room.held() < RESERVE && room.held() > RESERVE - SAFETY / 4, "{}", room.held());
        assert_eq!(std::fs::metadata(dir.path().join(RESERVE_FILE)).unwrap().len(), room.held());
        // A reserve used up refuses work too.
        let mut b = room.budget_at(Some(0), 0);
        assert!(b.admit(Admission::Work, RESERVE).is_err());
        assert_eq!(room.held(), 0);
    }

    #[test]
    fn ingest_keeps_min_free_disk_across_commands_of_one_group() {
        let (_dir, mut room) = room(0, 1_000_000);
        let mut b = room.budget_at(Some(1_000_000 + SAFETY + 50_000), 0);
        let admitted = (0..100).filter(|_| b.admit(Admission::Ingest, 10_000).is_ok()).count();
        assert_eq!(admitted, 5, "five commands of 10 kB fit above the floor, not one more");
        // What the previous group still has on its way counts against this one.
        let mut b = room.budget_at(Some(1_000_000 + SAFETY + 50_000), 35_000);
        assert!(b.admit(Admission::Ingest, 10_000).is_ok());
        assert!(b.admit(Admission::Ingest, 10_000).is_err());
    }
}
