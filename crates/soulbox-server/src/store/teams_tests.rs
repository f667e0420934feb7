//! Teams, keys and limits on both backends (`<test>::sqlite`, `<test>::postgres`).

use std::borrow::Cow;

use soulbox_protocol::api::SandboxState;

use super::test_db::store_test;
use super::*;

fn sandbox(id: &str, team_id: &str, cpu: i32, memory_mb: i32) -> SandboxRecord {
    SandboxRecord {
        cpu_count: cpu,
        memory_mb,
        address: Some("10.0.0.2".into()),
        team_id: team_id.into(),
        ..SandboxRecord::running(id)
    }
}

fn refused(result: Result<(), StoreError>) -> LimitKind {
    match result {
        Err(StoreError::LimitExceeded(e)) => e.kind,
        other => panic!("expected a limit refusal, got {other:?}"),
    }
}

const MINUTE: i64 = 60_000;

store_test!(keys_belong_to_teams_with_roles, |db| {
    let store = db.open().await;
    let (admin, admin_key) = store.create_api_key_in("ops", DEFAULT_TEAM_NAME, Role::Admin).await.unwrap();
    let (b1, b1_key) = store.create_api_key_in("b-ci", "team-b", Role::Member).await.unwrap();
    let (b2, _) = store.create_api_key_in("b-dev", "team-b", Role::Member).await.unwrap();
    assert_eq!((admin.team_id.as_str(), admin.role), (DEFAULT_TEAM_ID, Role::Admin));
    assert_eq!(b1.team_id, b2.team_id, "the second key joins the team the first created");
    assert_ne!(b1.team_id, DEFAULT_TEAM_ID);
    assert_eq!(b1.team_name, "team-b");

    let a = store.authenticate_api_key(&admin_key.secret).await.unwrap().unwrap();
    assert!(a.is_admin() && a.team_id == DEFAULT_TEAM_ID);
    let b = store.authenticate_api_key(&b1_key.secret).await.unwrap().unwrap();
    assert!(!b.is_admin() && b.team_id == b1.team_id && b.team_name == "team-b");

    // Listed by creation time; keys made within the same millisecond (as here) fall back to their random ids, so
    // the comparison is by name.
    let mut listed: Vec<(String, String, Role)> =
        store.list_api_keys().await.unwrap().into_iter().map(|k| (k.name, k.team_name, k.role)).collect();
    listed.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        listed,
        [
            ("b-ci".to_string(), "team-b".to_string(), Role::Member),
            ("b-dev".to_string(), "team-b".to_string(), Role::Member),
            ("ops".to_string(), "default".to_string(), Role::Admin),
        ]
    );
    let teams: Vec<String> = store.list_teams().await.unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(teams, ["default", "team-b"]);
    assert_eq!(store.ensure_team("team-b").await.unwrap().id, b1.team_id, "ensure_team is idempotent");
    assert!(matches!(store.create_api_key_in("x", "bad name", Role::Member).await, Err(StoreError::Invalid(_))));
    assert!(matches!(store.team_by_name("nope").await, Err(StoreError::NotFound(_))));
});

store_test!(existing_databases_migrate_into_the_default_team_with_the_oldest_active_key_as_admin, |db| {
    // The schema before teams, with data in it.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(db.url()).await.unwrap();
    let mut before = sqlx::migrate!("./migrations");
    before.migrations = Cow::Owned(before.migrations.iter().filter(|m| m.version < 7).cloned().collect());
    before.run(&pool).await.unwrap();
    for (id, created, revoked) in [("key_revoked", 1_i64, Some(5_i64)), ("key_oldest", 2, None), ("key_newer", 3, None)]
    {
        sqlx::query("INSERT INTO api_keys (id, name, key_hash, key_prefix, created_at, revoked_at) VALUES ($1, $2, $3, 'e2b_00', $4, $5)")
            .bind(id)
            .bind(id)
            .bind(format!("hash-{id}"))
            .bind(created)
            .bind(revoked)
            .execute(&pool)
            .await
            .unwrap();
    }
    sqlx::query("INSERT INTO templates (id, public, cpu_count, memory_mb, created_at, updated_at) VALUES ('old-tpl', 0, 1, 512, 1, 1)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let store = db.open().await;
    let keys: Vec<(String, String, Role)> =
        store.list_api_keys().await.unwrap().into_iter().map(|k| (k.id, k.team_id, k.role)).collect();
    let team = DEFAULT_TEAM_ID.to_string();
    assert_eq!(
        keys,
        [
            ("key_revoked".to_string(), team.clone(), Role::Member),
            ("key_oldest".to_string(), team.clone(), Role::Admin),
            ("key_newer".to_string(), team.clone(), Role::Member)
        ]
    );
    assert_eq!(store.get_template_record("old-tpl").await.unwrap().unwrap().team_id, DEFAULT_TEAM_ID);
    assert_eq!(store.get_team(DEFAULT_TEAM_ID).await.unwrap().name, DEFAULT_TEAM_NAME);
});

store_test!(team_admission_counts_sandboxes_vcpus_memory_and_holds, |db| {
    let store = db.open().await;
    let a = store.ensure_team("a").await.unwrap().id;
    let b = store.ensure_team("b").await.unwrap().id;
    let defaults = TeamLimits { max_sandboxes: 3, max_vcpus: 6, max_memory_mb: 2048, max_builds: 1 };

    store.hold_team_capacity("h1", &a, 2, 512, MINUTE, &defaults).await.unwrap();
    // The hold turns into the record in one transaction: the team's usage does not change.
    store
        .insert_sandbox_for_holds(&sandbox("s1", &a, 2, 512), Holds { placement: None, team: Some("h1") })
        .await
        .unwrap();
    assert_eq!(store.team_usage(&a).await.unwrap(), TeamUsage { sandboxes: 1, vcpus: 2, memory_mb: 512 });
    store.hold_team_capacity("h2", &a, 2, 512, MINUTE, &defaults).await.unwrap();
    assert_eq!(refused(store.hold_team_capacity("h3", &a, 4, 512, MINUTE, &defaults).await), LimitKind::Vcpus);
    assert_eq!(refused(store.hold_team_capacity("h3", &a, 1, 1500, MINUTE, &defaults).await), LimitKind::MemoryMb);
    store.hold_team_capacity("h3", &a, 1, 512, MINUTE, &defaults).await.unwrap();
    let full = store.hold_team_capacity("h4", &a, 1, 128, MINUTE, &defaults).await;
    match &full {
        Err(StoreError::LimitExceeded(e)) => {
            assert_eq!((e.kind, e.limit, e.in_use), (LimitKind::Sandboxes, 3, 3));
            let message = e.to_string();
            assert!(message.contains("team 'a'") && message.contains("teams.max_sandboxes"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Another team has its own room.
    store.hold_team_capacity("hb", &b, 2, 512, MINUTE, &defaults).await.unwrap();

    // A released hold, a sandbox paused to disk and an expired hold free their room; a memory-paused one does not.
    store.release_team_hold("h3").await.unwrap();
    store.hold_team_capacity("h4", &a, 1, 128, MINUTE, &defaults).await.unwrap();
    store.release_team_hold("h4").await.unwrap();
    store.release_team_hold("h2").await.unwrap();
    store
        .insert_sandbox(&SandboxRecord {
            state: SandboxState::Paused,
            address: Some("10.0.0.3".into()),
            ..sandbox("frozen", &a, 2, 512)
        })
        .await
        .unwrap();
    store
        .insert_sandbox(&SandboxRecord { state: SandboxState::Paused, address: None, ..sandbox("on-disk", &a, 2, 512) })
        .await
        .unwrap();
    store.hold_team_capacity("dead", &a, 1, 128, -1, &defaults).await.unwrap();
    assert_eq!(store.team_usage(&a).await.unwrap(), TeamUsage { sandboxes: 2, vcpus: 4, memory_mb: 1024 });

    // Overrides beat the defaults; `Default` goes back to them.
    let limited = LimitChanges { max_sandboxes: LimitChange::Set(2), ..Default::default() };
    assert_eq!(store.set_team_limits("a", limited).await.unwrap().overrides.max_sandboxes, Some(2));
    assert_eq!(refused(store.hold_team_capacity("h5", &a, 1, 128, MINUTE, &defaults).await), LimitKind::Sandboxes);
    let back =
        LimitChanges { max_sandboxes: LimitChange::Default, max_vcpus: LimitChange::Set(100), ..Default::default() };
    let team = store.set_team_limits("a", back).await.unwrap();
    assert_eq!((team.overrides.max_sandboxes, team.overrides.max_vcpus), (None, Some(100)));
    assert_eq!(store.team_by_name("a").await.unwrap().overrides, team.overrides);
    store.hold_team_capacity("h5", &a, 1, 128, MINUTE, &defaults).await.unwrap();
    assert!(matches!(store.set_team_limits("nope", back).await, Err(StoreError::NotFound(_))));

    // A resume's hold is dropped with its transition.
    store
        .insert_sandbox(&SandboxRecord { state: SandboxState::Paused, address: None, ..sandbox("r", &b, 1, 128) })
        .await
        .unwrap();
    store.hold_team_capacity("hr", &b, 1, 128, MINUTE, &defaults).await.unwrap();
    let holds = Holds { placement: None, team: Some("hr") };
    assert!(
        store
            .transition_sandbox_for_holds("r", SandboxState::Paused, SandboxState::Running, Some("10.0.0.4"), 9, holds)
            .await
            .unwrap()
    );
    assert_eq!(store.team_usage(&b).await.unwrap(), TeamUsage { sandboxes: 2, vcpus: 3, memory_mb: 640 });
});

store_test!(concurrent_creates_at_the_limit_admit_exactly_the_room_left, |db| {
    let store = db.open().await;
    let team = store.ensure_team("racers").await.unwrap().id;
    let defaults = TeamLimits { max_sandboxes: 5, ..TeamLimits::default() };
    for i in 0..4 {
        store.insert_sandbox(&sandbox(&format!("old{i}"), &team, 1, 128)).await.unwrap();
    }
    // Two creates for the last place, at the same moment (separate connections on PostgreSQL).
    let race = |n: usize| {
        let attempts = (0..n).map(|i| {
            let (store, team) = (store.clone(), team.clone());
            tokio::spawn(async move {
                store.hold_team_capacity(&format!("race{n}-{i}"), &team, 1, 128, MINUTE, &defaults).await
            })
        });
        futures::future::join_all(attempts)
    };
    let results = race(2).await;
    let admitted = results.iter().filter(|r| matches!(r, Ok(Ok(())))).count();
    let limited = results.iter().filter(|r| matches!(r, Ok(Err(StoreError::LimitExceeded(_))))).count();
    assert_eq!((admitted, limited), (1, 1), "{results:?}");

    // Sixteen at once for four places.
    store
        .set_team_limits("racers", LimitChanges { max_sandboxes: LimitChange::Set(9), ..Default::default() })
        .await
        .unwrap();
    let results = race(16).await;
    assert_eq!(results.iter().filter(|r| matches!(r, Ok(Ok(())))).count(), 4, "{results:?}");
    assert_eq!(store.team_usage(&team).await.unwrap().sandboxes, 9);
});

store_test!(build_concurrency_is_limited_per_team_and_names_are_unique_across_teams, |db| {
    let store = db.open().await;
    let a = store.ensure_team("a").await.unwrap().id;
    let b = store.ensure_team("b").await.unwrap().id;
    let defaults = TeamLimits { max_builds: 1, ..TeamLimits::default() };
    let tags = ["default".to_string()];
    store.create_template_build(&a, "app", "b1", 1, 512, &tags).await.unwrap();
    store.create_template_build(&a, "app", "b2", 1, 512, &tags).await.unwrap();
    store.create_template_build(&a, "other", "b3", 1, 512, &tags).await.unwrap();
    store.create_template_build(&b, "bees", "b4", 1, 512, &tags).await.unwrap();
    assert!(store.start_build("b1", "{}", &defaults).await.unwrap());
    match store.start_build("b3", "{}", &defaults).await {
        Err(StoreError::LimitExceeded(e)) => {
            assert_eq!((e.kind, e.limit, e.in_use), (LimitKind::Builds, 1, 1))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store.get_build("b3").await.unwrap().unwrap().status,
        "waiting",
        "a refused start leaves the build waiting"
    );
    assert!(store.start_build("b4", "{}", &defaults).await.unwrap(), "team b has its own build slot");
    store.finish_build("b1", "ready", None, None).await.unwrap();
    assert!(store.start_build("b3", "{}", &defaults).await.unwrap());
    assert!(!store.start_build("nope", "{}", &defaults).await.unwrap());

    // Team b cannot take over team a's name (and leaves nothing behind trying).
    assert!(matches!(store.create_template_build(&b, "app", "b5", 1, 512, &tags).await, Err(StoreError::Conflict(_))));
    assert!(store.get_build("b5").await.unwrap().is_none());
    let app = store.get_template_record("app").await.unwrap().unwrap();
    assert_eq!((app.team_id.as_str(), app.latest_build_id.as_deref()), (a.as_str(), Some("b2")));
    let owners: Vec<(String, String)> =
        store.list_template_records().await.unwrap().into_iter().map(|t| (t.id, t.team_id)).collect();
    assert_eq!(
        owners,
        [("app".to_string(), a.clone()), ("bees".to_string(), b.clone()), ("other".to_string(), a.clone())]
    );
});
