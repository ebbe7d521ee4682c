//! Unit tests of the dispatcher's bookkeeping and yielding (`callbacks::dispatcher`).

use super::*;
use crate::store::CallbackKind;

fn batch(id: u64, seqs: &[u64]) -> CallbackBatch {
    let callbacks = seqs
        .iter()
        .map(|&seq| PendingCallback {
            seq,
            app_id: 1,
            kind: CallbackKind::Normal,
            to_accounts: vec![],
            attempts: 0,
            batch: Some(id),
            message: None,
        })
        .collect();
    CallbackBatch {
        batch_id: id,
        app_id: 1,
        size: seqs.len(),
        callbacks,
    }
}

/// Takes the next queued callback, as `start_due` does.
fn start(book: &mut Book) -> u64 {
    book.queued.get_mut(&1).unwrap().pop_front().unwrap().seq
}

#[test]
fn a_batch_is_finished_once_every_callback_has_an_outcome() {
    let mut book = Book::default();
    assert!(book.take(batch(10, &[10, 11]), 64));
    // The same batch again (the feed's copy after the store's): ignored.
    assert!(book.take(batch(10, &[10, 11]), 64));
    assert_eq!(book.queued[&1].len(), 2);
    let a = start(&mut book);
    book.count_down(1, a);
    assert!(book.finished.is_empty());
    let b = start(&mut book);
    book.count_down(1, b);
    assert_eq!(book.finished, vec![(1, 10)]);
    // Finished but not yet deleted: a read of it from the store is ignored.
    assert!(book.take(batch(10, &[10, 11]), 64));
    assert!(book.queued[&1].is_empty());
}

#[test]
fn a_batch_read_again_counts_its_callbacks_still_in_flight() {
    let mut book = Book::default();
    assert!(book.take(batch(20, &[20, 21, 22]), 64));
    let in_flight = start(&mut book);
    // A pause drops the queue (21 and 22); 20 is still in flight.
    book.drop_queue(1);
    assert_eq!(book.rescan.get(&1), Some(&20));
    // Read again: 20 counted (in flight for this batch), 21 and 22 queued.
    assert!(book.take(batch(20, &[20, 21, 22]), 64));
    assert_eq!(book.queued[&1].len(), 2);
    book.count_down(1, in_flight);
    for _ in 0..2 {
        let seq = start(&mut book);
        book.count_down(1, seq);
    }
    assert_eq!(book.finished, vec![(1, 20)]);
}

#[test]
fn callbacks_yield_a_busy_message_path_but_keep_a_share() {
    let config = CallbackConfig {
        retries: vec![],
        timeout: Duration::from_secs(1),
        concurrency_per_app: 8,
        max_response_bytes: 1024,
        refuse_private: false,
        priority: super::super::Priority::Nice(0),
        yield_batch: 128,
        yield_share_percent: 5,
    };
    // Calm: never.
    assert_eq!(yielding(11, &config, 10_999), None);
    // Busy: sent in the first 50 ms of each second, else wait for the next one.
    assert_eq!(yielding(400, &config, 10_020), None);
    assert_eq!(yielding(400, &config, 10_050), Some(11_000));
    assert_eq!(yielding(400, &config, 10_999), Some(11_000));
    // 0 turns yielding off; a share of 100 never waits.
    let off = CallbackConfig {
        yield_batch: 0,
        ..config.clone()
    };
    assert_eq!(yielding(400, &off, 10_500), None);
    let all = CallbackConfig {
        yield_share_percent: 100,
        ..config
    };
    assert_eq!(yielding(400, &all, 10_999), None);
}

#[test]
fn a_full_queue_leaves_the_batch_on_disk() {
    let mut book = Book::default();
    assert!(book.take(batch(30, &[30, 31]), 2));
    assert!(!book.take(batch(32, &[32]), 2));
    assert!(!book.batches.contains_key(&32));
    // Feed batches of an app with batches on disk are left to the store.
    book.rescan_from(1, 32);
    assert!(book.left_to_store(1, 33));
}
