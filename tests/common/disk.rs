//! A small file system of the test's own: a tmpfs of a given size mounted on a temporary
//! directory (root only), filled to the last byte and freed again on demand, unmounted on
//! drop. Where it cannot be mounted the test is skipped with a message — except under CI
//! (`CI=true`), where a skip is a failure.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct SmallDisk {
    dir: tempfile::TempDir,
    filler: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `mib` MiB, or says why not (and panics under CI).
    pub fn mount(test: &str, mib: u64) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().expect("temp dir");
        let ok = unsafe { libc::geteuid() } == 0
            && Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0755"), "tmpfs"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
        if !ok {
            let why = format!("{test}: skipped: cannot mount a {mib} MiB tmpfs (needs root and mount)");
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{why} — under CI this test must run");
            }
            eprintln!("{why}");
            return None;
        }
        let filler = dir.path().join("filler");
        Some(SmallDisk { dir, filler })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Free bytes on the file system.
    pub fn free(&self) -> u64 {
        let c = std::ffi::CString::new(self.path().as_os_str().as_encoded_bytes()).unwrap();
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
        st.f_bavail as u64 * st.f_frsize as u64
    }

    /// Fills the file system until not one more byte fits (bounded by its size).
    pub fn fill(&self) {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.filler).expect("filler");
        for chunk in [1 << 20, 4096, 1] {
            let block = vec![0u8; chunk];
            // A 64 MiB disk takes at most 64 Mi writes of one byte; the loop ends at ENOSPC.
            while f.write_all(&block).is_ok() {}
        }
        let _ = f.sync_all();
    }

    /// Leaves `bytes` free: fills, then gives that much back.
    pub fn leave_free(&self, bytes: u64) {
        self.fill();
        let len = std::fs::metadata(&self.filler).map(|m| m.len()).unwrap_or(0);
        let f = std::fs::OpenOptions::new().write(true).open(&self.filler).expect("filler");
        f.set_len(len.saturating_sub(bytes)).expect("shrink filler");
    }

    /// Removes the filler.
    pub fn release(&self) {
        let _ = std::fs::remove_file(&self.filler);
    }

    /// Makes the file system `mib` MiB (what an operator does when a volume fills).
    pub fn resize(&self, mib: u64) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "remount the tmpfs at {mib} MiB");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}
