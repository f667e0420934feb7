use super::*;

#[test]
fn range_space_is_validated() {
    assert!(validate(DEFAULT_BASE, DEFAULT_RANGES).is_ok());
    assert!(validate(0, 1).is_err(), "host root's range");
    assert!(validate(100_001, 1).is_err(), "not a multiple of 65536");
    assert!(validate(0x7FFF_0000, 2).is_err(), "past 2^31");
    assert!(validate(0x7FFF_0000, 1).is_ok());
    assert!(validate(DEFAULT_BASE, 0).is_err());
    let r = IdRange::at(0x1000_0000);
    assert!(r.contains(0x1000_0000) && r.contains(0x1000_FFFF) && !r.contains(0x1001_0000) && !r.contains(0));
    assert_eq!(r.map_line(), "0 268435456 65536\n");
}

#[test]
fn modes_parse_and_ranges_record_whether_they_are_shared() {
    for m in [UsernsMode::Auto, UsernsMode::PerSandbox, UsernsMode::Shared] {
        assert_eq!(m.as_str().parse::<UsernsMode>(), Ok(m));
        assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{}\"", m.as_str()));
    }
    assert!("per_sandbox".parse::<UsernsMode>().is_err());
    // a per-sandbox range's record is what it was before shared mode existed
    assert_eq!(serde_json::to_string(&IdRange::at(0x1000_0000)).unwrap(), r#"{"hostBase":268435456,"size":65536}"#);
    let old: IdRange = serde_json::from_str(r#"{"hostBase":268435456,"size":65536}"#).unwrap();
    assert_eq!(old, IdRange::at(0x1000_0000));
    let shared = IdRange::shared_at(0x1000_0000);
    let back: IdRange = serde_json::from_str(&serde_json::to_string(&shared).unwrap()).unwrap();
    assert!(back.shared && back == shared);
}

#[test]
fn a_sandbox_is_started_only_by_a_runtime_storing_files_its_way() {
    let dir = std::env::temp_dir().join(format!("soulbox-userns-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let claims = dir.join("claims");
    let sandboxes = dir.join("sandboxes");
    std::fs::create_dir_all(&sandboxes).unwrap();
    let shared = Userns::Shared(SharedRange::claim(0x2200_0000, &claims, &sandboxes).unwrap());
    let other_base = Userns::Shared(SharedRange::claim(0x2300_0000, &claims, &sandboxes).unwrap());
    let per = Userns::PerSandbox(IdRanges::new(0x2400_0000, 2, &claims).unwrap());
    // unshifted files (no range recorded, or a per-sandbox one)
    assert!(check_files(None, &dir).is_ok());
    assert!(check_files(Some(&per), &dir).is_ok());
    let err = check_files(Some(&shared), &dir).unwrap_err().to_string();
    assert!(err.contains("stored unshifted") && err.contains("per-sandbox"), "{err}");
    util::write_json(&IdRange::file(&dir), &IdRange::at(0x2400_0000)).unwrap();
    assert!(check_files(Some(&per), &dir).is_ok());
    assert!(check_files(Some(&shared), &dir).is_err());
    // shifted files: only the shared range's own runtime
    util::write_json(&IdRange::file(&dir), &IdRange::shared_at(0x2200_0000)).unwrap();
    assert!(check_files(Some(&shared), &dir).is_ok());
    for wrong in [None, Some(&per), Some(&other_base)] {
        let err = check_files(wrong, &dir).unwrap_err().to_string();
        assert!(err.contains("0x22000000") && err.contains("userns_mode = \"shared\""), "{err}");
    }
    // a shared record is never given up by a per-sandbox runtime, nor a per-sandbox one by a shared runtime
    assert!(!per.keep(&dir, IdRange::shared_at(0x2200_0000)).unwrap());
    assert!(!per.may_forget(IdRange::shared_at(0x2200_0000)));
    assert!(!shared.keep(&dir, IdRange::at(0x2400_0000)).unwrap());
    assert!(!shared.may_forget(IdRange::at(0x2400_0000)));
    assert!(shared.keep(&dir, IdRange::shared_at(0x2200_0000)).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}
