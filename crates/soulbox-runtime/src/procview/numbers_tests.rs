use super::*;

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

#[test]
fn cgroup_v2_numbers() {
    let t = tempfile::tempdir().unwrap();
    let d = "sbx/abc";
    write(t.path(), &format!("{d}/memory.max"), "268435456\n");
    write(t.path(), &format!("{d}/memory.current"), "52428800\n");
    write(
        t.path(),
        &format!("{d}/memory.stat"),
        "anon 10485760\nfile 20971520\nshmem 1048576\nactive_anon 4096\ninactive_anon 8192\nactive_file 1048576\n\
         inactive_file 2097152\nunevictable 0\nfile_mapped 12288\nfile_dirty 4096\nfile_writeback 0\n\
         slab_reclaimable 65536\nslab_unreclaimable 32768\n",
    );
    write(t.path(), &format!("{d}/cpu.max"), "150000 100000\n");
    write(t.path(), &format!("{d}/cpu.stat"), "usage_usec 3000\nuser_usec 2000\nsystem_usec 1000\n");
    write(t.path(), &format!("{d}/cpuset.cpus.effective"), "1,3\n");
    let place = Place { root: t.path().to_path_buf(), rel: PathBuf::from(d), v2: true };
    assert!(place.exists());
    let m = place.memory();
    assert_eq!(m.limit, Some(256 << 20));
    assert_eq!((m.usage, m.cache, m.shmem, m.anon), (50 << 20, 20 << 20, 1 << 20, 10 << 20));
    assert_eq!(
        (m.active_file, m.inactive_file, m.slab_reclaimable, m.slab_unreclaimable),
        (1 << 20, 2 << 20, 65536, 32768)
    );
    let c = place.cpu();
    assert_eq!(c, Cpu { quota_cpus: Some(2), cpuset: vec![1, 3], user_ns: 2_000_000, system_ns: 1_000_000 });

    write(t.path(), &format!("{d}/memory.max"), "max\n");
    write(t.path(), &format!("{d}/cpu.max"), "max 100000\n");
    assert_eq!(place.memory().limit, None);
    assert_eq!(place.cpu().quota_cpus, None);
    let gone = Place { root: t.path().to_path_buf(), rel: PathBuf::from("sbx/none"), v2: true };
    assert!(!gone.exists());
    assert_eq!(gone.memory(), Memory::default());
}

#[test]
fn cgroup_v1_numbers() {
    let t = tempfile::tempdir().unwrap();
    let d = "sbx/abc";
    write(t.path(), &format!("memory/{d}/memory.limit_in_bytes"), "536870912\n");
    write(t.path(), &format!("memory/{d}/memory.usage_in_bytes"), "104857600\n");
    write(
        t.path(),
        &format!("memory/{d}/memory.stat"),
        "cache 1\nrss 2\ntotal_cache 41943040\ntotal_rss 20971520\ntotal_shmem 4096\ntotal_mapped_file 8192\n\
         total_dirty 0\ntotal_writeback 0\ntotal_active_anon 1\ntotal_inactive_anon 2\ntotal_active_file 3\n\
         total_inactive_file 4\ntotal_unevictable 5\n",
    );
    write(t.path(), &format!("cpu/{d}/cpu.cfs_quota_us"), "100000\n");
    write(t.path(), &format!("cpu/{d}/cpu.cfs_period_us"), "100000\n");
    write(t.path(), &format!("cpuacct/{d}/cpuacct.stat"), "user 250\nsystem 50\n");
    write(t.path(), &format!("cpuset/{d}/cpuset.cpus"), "0\n");
    let place = Place { root: t.path().to_path_buf(), rel: PathBuf::from(d), v2: false };
    assert!(place.exists());
    let m = place.memory();
    assert_eq!(m.limit, Some(512 << 20));
    assert_eq!((m.usage, m.cache, m.anon, m.shmem, m.mapped), (100 << 20, 40 << 20, 20 << 20, 4096, 8192));
    assert_eq!((m.active_anon, m.inactive_anon, m.active_file, m.inactive_file, m.unevictable), (1, 2, 3, 4, 5));
    let c = place.cpu();
    let tick = 1_000_000_000 / user_hz();
    assert_eq!(c, Cpu { quota_cpus: Some(1), cpuset: vec![0], user_ns: 250 * tick, system_ns: 50 * tick });

    // v1's "unlimited" and no quota
    write(t.path(), &format!("memory/{d}/memory.limit_in_bytes"), "9223372036854771712\n");
    write(t.path(), &format!("cpu/{d}/cpu.cfs_quota_us"), "-1\n");
    assert_eq!(place.memory().limit, None);
    assert_eq!(place.cpu().quota_cpus, None);
}

#[test]
fn cpu_lists() {
    assert_eq!(parse_cpu_list("0-3,8,10-11\n"), vec![0, 1, 2, 3, 8, 10, 11]);
    assert_eq!(parse_cpu_list(""), Vec::<u32>::new());
    assert_eq!(parse_cpu_list("3-1,x,2"), vec![2]);
}
