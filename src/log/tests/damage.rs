//! A damaged record or row is reported, never a panic: `herald verify` names the record
//! whose checksum fails, and a start skips the damaged row with a warning and recovers the
//! rest.

use crate::log::record::{Record, Stored};
use crate::log::{inspect, keys, load, open_for_inspection, pages, Log, LogOptions};
use std::sync::atomic::AtomicBool;

#[test]
fn a_damaged_record_or_row_is_reported_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _) = Log::open(dir.path(), LogOptions::default()).unwrap();
        load::run(&log, 4, 300, 7, &AtomicBool::new(false), &|_| {}).unwrap();
        log.close();
    }
    assert!(inspect(dir.path()).unwrap().report.is_clean(), "clean before the damage");

    // Damage one event record and one webhook row on purpose.
    let damaged_seq = {
        let tree = open_for_inspection(dir.path()).unwrap();
        // A record inside a log page: flip a byte in its middle, not in the page's framing.
        let (key, page, slot) = tree
            .scan_prefix([keys::LOG])
            .filter_map(Result::ok)
            .find_map(|(k, page)| {
                let slots = pages::slots(keys::log_seq(&k)?, &page).ok()?;
                let slot = slots
                    .into_iter()
                    .find(|s| matches!(Record::decode(&page[s.start..s.end]), Ok(Record::EventIngested(_))))?;
                Some((k, page, slot))
            })
            .expect("an event record");
        let mut bad = page.to_vec();
        bad[(slot.start + slot.end) / 2] ^= 0x5a;
        tree.insert(&key, bad).unwrap();
        let (wkey, wval) = tree.scan_prefix([keys::WEBHOOK]).next().unwrap().unwrap();
        let mut bad = wval.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0x01;
        tree.insert(&wkey, bad).unwrap();
        tree.flush().unwrap();
        slot.seq
    };

    let found = inspect(dir.path()).unwrap();
    let said = found.report.to_string();
    assert!(!found.report.is_clean(), "{said}");
    assert!(said.contains(&format!("corrupt record {damaged_seq}")) && said.contains("checksum"), "{said}");

    // The log still opens, skips the damaged row with a warning, and takes writes.
    let (log, recovery) = Log::open(dir.path(), LogOptions::default()).unwrap();
    let warned = recovery.warnings.join("\n");
    assert!(warned.contains("skipped") && warned.contains("checksum"), "{warned}");
    load::run(&log, 1, 10, 8, &AtomicBool::new(false), &|_| {}).unwrap();
    log.close();
}
