//! A node runtime owned by one test, shared by the root tests: `destroy_all` and the removal of its data dir
//! happen on drop, also after a failed assert. The cleanup runs on a thread of its own because the drop happens
//! inside the test's tokio runtime, which cannot block on another future.

use std::path::PathBuf;

use soulbox_runtime::{Runtime, RuntimeConfig};

pub struct TestNode {
    rt: Option<Runtime>,
    dir: PathBuf,
}

impl TestNode {
    /// Opens the runtime of `cfg`; `dir` (holding the runtime's data and store dirs) is removed on drop.
    pub async fn open(cfg: RuntimeConfig, dir: PathBuf) -> TestNode {
        let rt = Runtime::open(cfg).await.expect("runtime open");
        TestNode { rt: Some(rt), dir }
    }

    pub fn rt(&self) -> &Runtime {
        self.rt.as_ref().expect("the runtime lives until drop")
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            let dir = self.dir.clone();
            let _ = std::thread::spawn(move || {
                let tr = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                if let Err(e) = tr.block_on(rt.destroy_all()) {
                    eprintln!("cleanup error: {e}");
                }
                drop(rt);
                let _ = std::fs::remove_dir_all(&dir);
            })
            .join();
        }
    }
}
