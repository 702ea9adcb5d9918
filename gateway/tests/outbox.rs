//! The outbox on its own: seqs, epochs, acks, the size limit, corruption recovery.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use threadline_gateway::outbox::{NewRecord, Outbox, OutboxOptions, read_file_stats};
use threadline_shared::event::{Quality, Reading, Record, RecordBody, ScanRejected, TagValue};

fn reading(i: u64) -> NewRecord {
    NewRecord {
        ts: threadline_shared::time::now(),
        body: RecordBody::Reading(Reading {
            device: "plc".into(),
            tag: "t".into(),
            value: Some(TagValue::UInt(i)),
            unit: None,
            quality: Quality::Good,
            error: None,
        }),
    }
}

fn event(i: u64) -> NewRecord {
    NewRecord {
        ts: threadline_shared::time::now(),
        body: RecordBody::ScanRejected(ScanRejected {
            station: Some("ST10".into()),
            scanner: "s".into(),
            raw: format!("E{i}"),
            reason: "test".into(),
        }),
    }
}

fn opts(dir: &tempfile::TempDir, max_bytes: u64) -> OutboxOptions {
    OutboxOptions {
        path: dir.path().join("outbox.db"),
        max_bytes,
    }
}

async fn all(outbox: &Outbox) -> Vec<Record> {
    outbox
        .read(0, None, usize::MAX / 2)
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            let rec: Record = serde_json::from_str(&r.payload).unwrap();
            assert_eq!(rec.seq, r.seq, "payload seq matches the row");
            rec
        })
        .collect()
}

#[tokio::test]
async fn seqs_are_consecutive_and_survive_reopen_and_full_ack() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(opts(&dir, u64::MAX)).await.unwrap();
    let epoch = outbox.epoch();
    let recs: Vec<NewRecord> = (1..=1200).map(reading).collect();
    let report = outbox.append(&recs).await.unwrap();
    assert_eq!(report.seqs, (1..=1200).collect::<Vec<u64>>());
    let r2 = outbox.append(&[event(1)]).await.unwrap();
    assert_eq!(r2.seqs, vec![1201]);
    let s = outbox.stats();
    assert_eq!((s.readings, s.events, s.last_seq), (1200, 1, 1201));
    // Ack everything, close, reopen: same epoch, seq continues after 1201 (never reused).
    assert_eq!(outbox.ack(&[[1, 1000], [1001, 1201]]).await.unwrap(), 1201);
    assert_eq!(outbox.stats().depth(), 0);
    assert_eq!(outbox.stats().bytes, 0);
    outbox.close().await.unwrap();
    let outbox = Outbox::open(opts(&dir, u64::MAX)).await.unwrap();
    assert_eq!(outbox.epoch(), epoch);
    assert_eq!(outbox.append(&[reading(9)]).await.unwrap().seqs, vec![1202]);
    // Acking unknown / already-acked seqs is harmless.
    assert_eq!(outbox.ack(&[[1, 5], [5000, 6000]]).await.unwrap(), 0);
    assert_eq!(outbox.stats().depth(), 1);
}

#[tokio::test]
async fn reads_are_ordered_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(opts(&dir, u64::MAX)).await.unwrap();
    let recs: Vec<NewRecord> = (1..=100).map(reading).collect();
    outbox.append(&recs).await.unwrap();
    outbox.ack(&[[10, 19]]).await.unwrap();
    let got = outbox.read(5, Some(30), 8).await.unwrap();
    let seqs: Vec<u64> = got.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![6, 7, 8, 9, 20, 21, 22, 23]);
    let got = outbox.read(25, Some(30), 100).await.unwrap();
    assert_eq!(got.len(), 5);
}

#[tokio::test]
async fn full_of_readings_drops_oldest_readings_and_keeps_events() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(opts(&dir, 20_000)).await.unwrap();
    // Events interleaved with readings, then far more readings than fit.
    let mut expected_events = Vec::new();
    for round in 0..20u64 {
        let mut batch: Vec<NewRecord> = (0..20).map(|i| reading(round * 100 + i)).collect();
        batch.push(event(round));
        expected_events.push(format!("E{round}"));
        outbox.append(&batch).await.unwrap();
    }
    let s = outbox.stats();
    assert!(s.dropped > 0, "readings were dropped: {s:?}");
    assert_eq!(s.refused, 0);
    assert!(s.bytes <= 20_000, "{s:?}");
    assert!(s.buffer_full);
    let stored = all(&outbox).await;
    let events: Vec<String> = stored
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::ScanRejected(e) => Some(e.raw.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(events, expected_events, "every event kept, in order");
    // The readings kept are the newest ones: dropped oldest-first.
    let readings: Vec<u64> = stored
        .iter()
        .filter(|r| r.body.is_reading())
        .map(|r| r.seq)
        .collect();
    let total_readings = 400u64;
    assert_eq!(readings.len() as u64, total_readings - s.dropped);
    let min_kept = *readings.first().unwrap();
    let all_seqs: Vec<u64> = stored.iter().map(|r| r.seq).collect();
    assert!(
        all_seqs.windows(2).all(|w| w[0] < w[1]),
        "ordered: {all_seqs:?}"
    );
    // Oldest-first: every reading from the oldest kept one on is still there (seq k was an
    // event iff k % 21 == 0: 20 readings then one event per round).
    let expected: Vec<u64> = (min_kept..=s.last_seq).filter(|k| k % 21 != 0).collect();
    assert_eq!(readings, expected);
    // Counters agree with a fresh count at reopen.
    let before = outbox.stats();
    outbox.close().await.unwrap();
    let outbox = Outbox::open(opts(&dir, 20_000)).await.unwrap();
    let after = outbox.stats();
    assert_eq!(
        (before.readings, before.events, before.bytes),
        (after.readings, after.events, after.bytes)
    );
}

#[tokio::test]
async fn full_of_events_refuses_readings_but_accepts_events() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(opts(&dir, 5_000)).await.unwrap();
    let events: Vec<NewRecord> = (0..200).map(event).collect();
    let r = outbox.append(&events).await.unwrap();
    assert_eq!(
        r.seqs.len(),
        200,
        "events are accepted even above the limit"
    );
    assert!(outbox.stats().buffer_full);
    let r = outbox
        .append(&[reading(1), event(1000), reading(2)])
        .await
        .unwrap();
    assert_eq!(r.refused, 2);
    assert_eq!(r.seqs, vec![201], "seqs stay consecutive");
    let s = outbox.stats();
    assert_eq!((s.events, s.readings, s.refused), (201, 0, 2));
    assert!(s.buffer_full);
    let stored = all(&outbox).await;
    assert_eq!(stored.last().unwrap().seq, 201);
    // After the aggregator acks, readings are accepted again and the alarm clears.
    outbox.ack(&[[1, 201]]).await.unwrap();
    assert!(!outbox.stats().buffer_full);
    let r = outbox.append(&[reading(3)]).await.unwrap();
    assert_eq!((r.seqs, r.refused), (vec![202], 0));
}

#[tokio::test]
async fn a_corrupt_outbox_is_moved_aside_and_a_new_epoch_starts() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(opts(&dir, u64::MAX)).await.unwrap();
    let old_epoch = outbox.epoch();
    outbox.append(&[reading(1)]).await.unwrap();
    outbox.close().await.unwrap();
    std::fs::write(
        dir.path().join("outbox.db"),
        b"this is not a database at all, sorry....",
    )
    .unwrap();
    let outbox = Outbox::open(opts(&dir, u64::MAX)).await.unwrap();
    assert_ne!(outbox.epoch(), old_epoch);
    assert_eq!(outbox.append(&[reading(1)]).await.unwrap().seqs, vec![1]);
    let moved: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("outbox.db.corrupt-"))
        .collect();
    assert_eq!(moved.len(), 1, "{moved:?}");
}

#[tokio::test]
async fn file_stats_work_while_the_writer_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(opts(&dir, u64::MAX)).await.unwrap();
    let recs: Vec<NewRecord> = (1..=10).map(reading).chain([event(1)]).collect();
    outbox.append(&recs).await.unwrap();
    outbox.ack(&[[1, 2]]).await.unwrap();
    let s = read_file_stats(&dir.path().join("outbox.db"))
        .await
        .unwrap();
    assert_eq!(s.epoch, outbox.epoch());
    assert_eq!((s.readings, s.events), (8, 1));
    assert_eq!(s.oldest_seq, Some(3));
    assert_eq!(s.next_seq, 12);
    assert_eq!(s.bytes, outbox.stats().bytes);
    // The writer still works afterwards.
    assert_eq!(outbox.append(&[reading(1)]).await.unwrap().seqs, vec![12]);
}
