//! Conformance checks of app administration (rename, secret rotation, deletion)
//! and of the callback outbox.

use super::{msg, NOW};
use crate::message::Target;
use crate::store::{
    AppendOutcome, CallbackKind, CallbackOutcome, CallbackResult, NewCallback, Store, StoreError,
    SweepPlan,
};

/// Renaming keeps the credentials; rotating changes only the secret; a deleted app
/// is gone, its accounts expire, its topics are dismissed, and the sweep deletes
/// its messages and accounts.
pub(super) async fn apps_are_renamed_rotated_and_deleted(store: &dyn Store) {
    let app = store.create_app("demo").await.unwrap();
    let renamed = store.rename_app(app.app_id, "shop").await.unwrap();
    assert_eq!(renamed.name, "shop");
    assert_eq!(renamed.app_secret, app.app_secret);
    let rotated = store.rotate_app_secret(app.app_id, NOW + 5).await.unwrap();
    assert_ne!(rotated.app_secret, app.app_secret);
    assert_eq!(rotated.previous_secret.as_ref(), Some(&app.app_secret));
    assert_eq!(rotated.previous_secret_until_ms, NOW + 5);
    assert_eq!(rotated.app_key, app.app_key);
    assert_eq!(store.app(app.app_id).await.unwrap(), Some(rotated.clone()));
    assert!(matches!(
        store.rotate_app_secret(999, NOW).await,
        Err(StoreError::NotFound(_))
    ));

    let bob = store
        .account(app.app_id, "bob", true, NOW)
        .await
        .unwrap()
        .unwrap();
    let amy = store
        .account(app.app_id, "amy", true, NOW)
        .await
        .unwrap()
        .unwrap();
    let topic = store
        .create_topic(app.app_id, bob.uuid, "t", vec![bob.uuid, amy.uuid], 10, 0)
        .await
        .unwrap();
    let mut m = msg(crate::sequence::floor_at(NOW) + 1, bob.uuid, amy.uuid, "p1");
    m.envelope.app_id = app.app_id;
    store.append(vec![m]).await.unwrap();

    store.delete_app(app.app_id, NOW).await.unwrap();
    assert_eq!(store.app(app.app_id).await.unwrap(), None);
    assert!(store.list_apps().await.unwrap().is_empty());
    assert!(matches!(
        store.delete_app(app.app_id, NOW).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(
        store
            .topic(topic.topic_id)
            .await
            .unwrap()
            .unwrap()
            .dismissed
    );
    assert_eq!(
        store.account(app.app_id, "bob", false, NOW).await.unwrap(),
        None
    );
    let report = store
        .sweep(SweepPlan {
            now_ms: NOW + 1,
            retention_ms: u64::MAX / 4,
            batch: 100,
        })
        .await
        .unwrap();
    assert_eq!(report.messages, 1);
    let mut gone = report.expired.clone();
    gone.sort_unstable();
    let mut want = vec![bob.uuid, amy.uuid];
    want.sort_unstable();
    assert_eq!(gone, want);
}

/// Callbacks are written as one batch per app with the messages actually stored
/// (a duplicate writes none), and come back with their messages.
pub(super) async fn callbacks_are_written_with_their_messages(store: &dyn Store) {
    let base = crate::sequence::floor_at(NOW);
    let a = msg(base + 1, 1, 2, "a");
    let b = msg(base + 2, 1, 2, "b");
    let mut t = msg(base + 3, 1, 0, "t");
    t.envelope.target = Target::Topic { topic_id: 77 };
    let cbs = vec![
        NewCallback {
            index: 0,
            kind: CallbackKind::Normal,
            to_accounts: vec![],
        },
        NewCallback {
            index: 2,
            kind: CallbackKind::OfflineTopic,
            to_accounts: vec!["u2".into(), "u3".into()],
        },
    ];
    let out = store
        .append_with_callbacks(vec![a.clone(), b, t], cbs.clone())
        .await
        .unwrap();
    assert!(out.iter().all(|o| *o == AppendOutcome::Stored));
    // A retry of `a` (a new sequence, same packet) is a duplicate: no new batch.
    let retry = msg(base + 9, 1, 2, "a");
    store
        .append_with_callbacks(vec![retry], vec![cbs[0].clone()])
        .await
        .unwrap();
    assert_eq!(store.callback_counts(None).await.unwrap(), (2, 0));
    assert_eq!(store.callback_batch_apps().await.unwrap(), vec![1]);
    let batches = store.callback_batches(1, 0, 100).await.unwrap();
    assert_eq!(batches.len(), 1);
    let batch = &batches[0];
    assert_eq!((batch.batch_id, batch.size), (base + 1, 2));
    let cb = &batch.callbacks;
    assert_eq!(cb.len(), 2);
    assert_eq!(
        (cb[0].seq, cb[0].kind, cb[0].batch),
        (base + 1, CallbackKind::Normal, Some(base + 1))
    );
    assert_eq!(cb[0].message.as_ref(), Some(&a));
    assert_eq!(cb[1].kind, CallbackKind::OfflineTopic);
    assert_eq!(cb[1].to_accounts, vec!["u2".to_owned(), "u3".to_owned()]);
    assert!(store
        .callback_batches(1, base + 2, 100)
        .await
        .unwrap()
        .is_empty());
    assert!(store.callback_batches(2, 0, 100).await.unwrap().is_empty());
    // No callback has failed: no row.
    assert_eq!(store.next_callback_app(0).await.unwrap(), None);
}

/// A failed attempt gives the callback its own row (retried when due, then
/// failed, listed and replayed) and takes it out of its batch; a finished batch
/// is gone.
pub(super) async fn callbacks_retry_fail_and_replay(store: &dyn Store) {
    let base = crate::sequence::floor_at(NOW);
    let msgs: Vec<_> = (1..=4)
        .map(|i| msg(base + i, 1, 2, &format!("p{i}")))
        .collect();
    let cbs = (0..4)
        .map(|index| NewCallback {
            index,
            kind: CallbackKind::Offline,
            to_accounts: vec![],
        })
        .collect();
    store.append_with_callbacks(msgs, cbs).await.unwrap();
    let batch = base + 1;
    let far = u64::MAX / 2;
    let result = |seq: u64, outcome: CallbackOutcome| CallbackResult {
        seq,
        app_id: 1,
        kind: CallbackKind::Offline,
        to_accounts: vec![],
        outcome,
    };
    let retry = CallbackOutcome::Retry {
        due_ms: far,
        error: "HTTP 500".into(),
    };
    store
        .record_callbacks(vec![result(base + 2, retry.clone())], vec![])
        .await
        .unwrap();
    // The batch no longer lists the callback that has a row.
    let listed = store.callback_batches(1, 0, 100).await.unwrap();
    let seqs: Vec<u64> = listed[0].callbacks.iter().map(|c| c.seq).collect();
    assert_eq!(
        (listed[0].size, seqs),
        (4, vec![base + 1, base + 3, base + 4])
    );
    let failed = CallbackOutcome::Failed {
        now_ms: NOW,
        error: "timed out".into(),
    };
    store
        .record_callbacks(
            vec![
                result(base + 1, CallbackOutcome::Delivered),
                result(base + 3, failed),
                result(base + 4, CallbackOutcome::Delivered),
            ],
            vec![batch],
        )
        .await
        .unwrap();
    assert!(store.callback_batches(1, 0, 100).await.unwrap().is_empty());
    assert_eq!(store.callback_counts(Some(1)).await.unwrap(), (1, 1));
    assert!(store
        .due_callbacks(1, far - 1, 10)
        .await
        .unwrap()
        .is_empty());
    let later = store.due_callbacks(1, far, 10).await.unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(
        (later[0].seq, later[0].attempts, later[0].batch),
        (base + 2, 1, None)
    );
    assert_eq!(store.next_callback_app(0).await.unwrap(), Some((1, far)));
    // A second failure of the same callback updates its row.
    store
        .record_callbacks(vec![result(base + 2, retry)], vec![])
        .await
        .unwrap();
    assert_eq!(
        store.due_callbacks(1, far, 10).await.unwrap()[0].attempts,
        2
    );

    let failed = store.failed_callbacks(1, 0, 10).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].seq, base + 3);
    assert_eq!(failed[0].last_error, "timed out");
    assert_eq!(failed[0].attempts, 1);
    assert!(store
        .failed_callbacks(1, base + 3, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .replay_callbacks(1, Some(vec![base + 2]), NOW)
            .await
            .unwrap(),
        0,
        "a pending callback is not replayed"
    );
    assert_eq!(store.replay_callbacks(1, None, NOW).await.unwrap(), 1);
    let due = store.due_callbacks(1, NOW, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].seq, due[0].attempts), (base + 3, 0));
    assert_eq!(store.callback_counts(None).await.unwrap(), (2, 0));
}
