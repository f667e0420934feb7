use super::*;

fn options(root: &Path, recursive: bool) -> WatchOptions {
    WatchOptions { root: root.to_path_buf(), recursive, include_entry: true }
}

fn names(events: &[FilesystemEvent]) -> Vec<(String, EventType)> {
    events.iter().map(|e| (e.name.clone(), EventType::try_from(e.r#type).unwrap())).collect()
}

#[test]
fn op_order_matches_envd() {
    let all = EventMask::CREATE | EventMask::MOVED_FROM | EventMask::ATTRIB | EventMask::MODIFY | EventMask::DELETE;
    let ops: Vec<_> = ops_of(all).collect();
    assert_eq!(ops, [EventType::Create, EventType::Rename, EventType::Chmod, EventType::Write, EventType::Remove]);
    assert_eq!(ops_of(EventMask::MOVED_TO).collect::<Vec<_>>(), [EventType::Create]);
    assert_eq!(ops_of(EventMask::CLOSE_WRITE).count(), 0);
}

#[tokio::test]
async fn sync_makes_a_completed_write_visible_immediately() {
    let dir = tempfile::tempdir().unwrap();
    let registry = WatchRegistry::default();
    let (id, watcher) = registry.create(options(dir.path(), false), Delivery::Polled).unwrap();
    std::fs::write(dir.path().join("a.txt"), b"hello").unwrap();
    registry.sync();
    // Peek at the queue without draining again: sync alone must have moved the events.
    let queued: Vec<_> = watcher.lock().queue.iter().map(|e| (display_name(&e.name), e.op)).collect();
    assert_eq!(queued, [("a.txt".to_owned(), EventType::Create), ("a.txt".to_owned(), EventType::Write)]);
    let events = watcher.take_events().unwrap();
    assert_eq!(events.len(), 2);
    let entry = events[1].entry.as_ref().expect("WRITE carries the entry");
    assert_eq!(entry.size, 5);
    assert!(watcher.take_events().unwrap().is_empty(), "events are handed out once");
    assert!(registry.remove(&id));
    assert!(!registry.remove(&id));
}

#[tokio::test]
async fn pump_and_sync_never_duplicate_or_reorder() {
    let dir = tempfile::tempdir().unwrap();
    let registry = WatchRegistry::default();
    let (_, watcher) = registry.create(options(dir.path(), false), Delivery::Polled).unwrap();
    let mut expected = Vec::new();
    for i in 0..200 {
        let name = format!("f{i:03}");
        std::fs::write(dir.path().join(&name), b"x").unwrap();
        expected.push((name.clone(), EventType::Create));
        expected.push((name, EventType::Write));
        if i % 7 == 0 {
            registry.sync();
        }
        if i % 13 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        let batch =
            tokio::time::timeout(std::time::Duration::from_secs(5), watcher.next_events()).await.unwrap().unwrap();
        seen.extend(names(&batch));
    }
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn recursive_watch_follows_new_directories() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("old")).unwrap();
    let registry = WatchRegistry::default();
    let (_, watcher) = registry.create(options(dir.path(), true), Delivery::Polled).unwrap();
    std::fs::write(dir.path().join("old/a"), b"1").unwrap();
    // A new directory with content created before the watcher could see it.
    std::fs::create_dir_all(dir.path().join("new/deep")).unwrap();
    std::fs::write(dir.path().join("new/deep/b"), b"2").unwrap();
    registry.sync();
    std::fs::write(dir.path().join("new/deep/c"), b"3").unwrap();
    let got = names(&watcher.take_events().unwrap());
    for want in [
        ("old/a".to_owned(), EventType::Create),
        ("old/a".to_owned(), EventType::Write),
        ("new".to_owned(), EventType::Create),
        ("new/deep".to_owned(), EventType::Create),
        ("new/deep/b".to_owned(), EventType::Create),
        ("new/deep/c".to_owned(), EventType::Create),
        ("new/deep/c".to_owned(), EventType::Write),
    ] {
        assert!(got.contains(&want), "missing {want:?} in {got:?}");
    }
}

#[tokio::test]
async fn directories_moved_inside_the_tree_stay_watched_under_their_new_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("a/sub")).unwrap();
    std::fs::write(dir.path().join("a/sub/old"), b"").unwrap();
    let registry = WatchRegistry::default();
    let (_, watcher) = registry.create(options(dir.path(), true), Delivery::Polled).unwrap();
    std::fs::rename(dir.path().join("a"), dir.path().join("b")).unwrap();
    registry.sync();
    std::fs::write(dir.path().join("b/sub/new"), b"1").unwrap();
    let got = names(&watcher.take_events().unwrap());
    assert_eq!(
        got,
        [
            ("a".to_owned(), EventType::Rename),
            ("b".to_owned(), EventType::Create),
            ("b/sub/new".to_owned(), EventType::Create),
            ("b/sub/new".to_owned(), EventType::Write),
        ]
    );
}

#[tokio::test]
async fn a_child_made_between_watching_and_listing_a_new_directory_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let registry = WatchRegistry::default();
    let (_, watcher) = registry.create(options(dir.path(), true), Delivery::Polled).unwrap();
    {
        // Holding the state stops the pump, so the race is laid out by hand: the kernel queues
        // CREATE made, the new directory's watch exists before `deeper` is made (so the kernel reports
        // it too), and the listing that follows finds `deeper` as well.
        let mut state = watcher.lock();
        std::fs::create_dir(dir.path().join("made")).unwrap();
        let wd = state.inotify.watches().add(dir.path().join("made"), watch_mask() | WatchMask::ONLYDIR).unwrap();
        state.dirs.insert(wd.get_watch_descriptor_id(), (wd, PathBuf::from("made")));
        std::fs::create_dir(dir.path().join("made/deeper")).unwrap();
    }
    registry.sync();
    std::fs::write(dir.path().join("made/deeper/y"), b"1").unwrap();
    let got = names(&watcher.take_events().unwrap());
    assert_eq!(
        got,
        [
            ("made".to_owned(), EventType::Create),
            ("made/deeper".to_owned(), EventType::Create),
            ("made/deeper/y".to_owned(), EventType::Create),
            ("made/deeper/y".to_owned(), EventType::Write),
        ]
    );
    // Once the queue has been read through, a later CREATE of the same name is real again.
    std::fs::remove_file(dir.path().join("made/deeper/y")).unwrap();
    std::fs::write(dir.path().join("made/deeper/y"), b"2").unwrap();
    let got = names(&watcher.take_events().unwrap());
    assert_eq!(got.iter().filter(|e| e.1 == EventType::Create).count(), 1, "{got:?}");
}

#[tokio::test]
async fn buffer_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let registry = WatchRegistry::default();
    let (_, watcher) = registry.create(options(dir.path(), false), Delivery::Polled).unwrap();
    {
        let mut state = watcher.lock();
        let opts = options(dir.path(), false);
        for i in 0..MAX_BUFFERED_EVENTS + 5 {
            state.push(&opts, QueuedEvent { name: PathBuf::from(format!("{i}")), op: EventType::Write });
        }
        assert_eq!(state.queue.len(), MAX_BUFFERED_EVENTS);
        assert_eq!(state.queue.front().unwrap().name, PathBuf::from("5"));
    }
}
