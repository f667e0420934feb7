//! The booted pool: sandboxes of a template already running, envd listening, handed out by `create` with a
//! fresh identity (issue 18 goal 1).
//!
//! A pooled sandbox boots as the template's default sandbox (its cpu, memory and disk, no volumes, the open
//! network policy) with an envd start configuration that holds no user data: its id (never shown to anyone
//! before its claim, so it is as fresh as a cold create's), the template's environment, and a secret of its
//! own that only this node knows. It is in none of the runtime's maps (`sandboxes`, `serving`, `secrets`): no
//! list, get, proxy route or metrics sees it. A create that fits (same template, the defaults, no wanted id, the
//! default OCI runtime) takes one: the user's network policy goes on its firewall, then envd gets the real
//! start configuration through its claim route (`envd_init::CLAIM_PATH`, under the pool's secret), which
//! swaps the secret — the pool's stops working — and replaces envd's configuration as a whole. Everything else
//! goes the cold path.
//!
//! Records of pooled sandboxes say `Pooled`; an open after a crash collects them like pool slots
//! (`reconcile.rs`), and `close`/`destroy_all` drain them (`Runtime::drain_pool`).
use super::envd_call::{self, Close, EnvdRequest};
use super::{Inner, Runtime};
use crate::driver::Driver;
use crate::envd_secret::EnvdSecret;
use crate::error::{Error, Result};
use crate::network::NetLease;
use crate::record::Record;
use crate::spec::{NetworkPolicy, SandboxInfo, SandboxSpec, Status};
use crate::template::TemplateMeta;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex as AsyncMutex;

/// How far back create demand counts for a template's pool size.
const DEMAND_WINDOW: Duration = Duration::from_secs(60);
/// The longest a claim waits for envd's answer.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a refill waits before its first boot. A create triggers the refill when the runtime's part of it
/// ends, but the control plane still records the sandbox and answers: a boot started at once (runc, mounts and
/// envd on the node's cores) makes that store insert wait for CPU now and then (on 2 cores its p90 was 5.3-6.2 ms
/// at once, 3.7-3.8 ms with the delay; the p50, ~0.7 ms, did not move: BENCHMARKS "Where a pool hit's time
/// goes"). `SOULBOX_BENCH_BOOTED_REFILL_DELAY_MS` overrides it for bench/pool.sh's comparison (RUNS=now).
const REFILL_DELAY: Duration = Duration::from_millis(20);

fn refill_delay() -> Duration {
    static DELAY: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *DELAY.get_or_init(|| {
        std::env::var("SOULBOX_BENCH_BOOTED_REFILL_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(REFILL_DELAY, Duration::from_millis)
    })
}

/// A booted pooled sandbox: its record (status `Pooled`, the pool's secret) and its network.
pub(crate) struct Ready {
    rec: Record,
    lease: NetLease,
}

/// The booted pool's state (in [`Inner`]).
#[derive(Default)]
pub(crate) struct BootedPool {
    ready: std::sync::Mutex<HashMap<String, VecDeque<Ready>>>,
    /// When creates that fit a pooled template asked, per template (the last [`DEMAND_WINDOW`]).
    demand: std::sync::Mutex<HashMap<String, VecDeque<Instant>>>,
    refilling: AtomicBool,
    /// Set by [`Runtime::drain_booted`] (close, destroy_all): no more boots, and a boot in flight is released.
    closed: AtomicBool,
    /// Counters for tests and benches: creates served from the pool, and those that fit but found it empty.
    pub hits: std::sync::atomic::AtomicU64,
    pub misses: std::sync::atomic::AtomicU64,
}

impl BootedPool {
    fn lock_ready(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Ready>>> {
        self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one create that fits `template`'s pool and drops demand older than the window.
    fn note_demand(&self, template: &str) {
        let mut demand = self.demand.lock().unwrap_or_else(|e| e.into_inner());
        let times = demand.entry(template.to_string()).or_default();
        times.push_back(Instant::now());
        if times.len() > 100_000 {
            times.pop_front();
        }
    }

    /// How many of `template` the pool should hold now: one more than the creates of the last minute, at most
    /// `max` (so an idle node keeps one warm and a busy one grows up to its configured size).
    fn target(&self, template: &str, max: usize) -> usize {
        let mut demand = self.demand.lock().unwrap_or_else(|e| e.into_inner());
        let recent = demand.get_mut(template).map_or(0, |times| {
            while times.front().is_some_and(|t| t.elapsed() > DEMAND_WINDOW) {
                times.pop_front();
            }
            times.len()
        });
        max.min(recent + 1)
    }
}

impl Inner {
    /// Whether a create of `spec` may take a pooled sandbox of `meta` on `driver`: only the template's default
    /// sandbox (what the pool booted), on the default runtime, with a new id and no volumes.
    fn fits_booted_pool(&self, spec: &SandboxSpec, meta: &TemplateMeta, driver: &Driver) -> bool {
        self.cfg.booted_pool.get(&spec.template).is_some_and(|&n| n > 0)
            && std::ptr::eq(driver, self.drivers.default())
            && spec.sandbox_id.is_none()
            && spec.volumes.is_empty()
            && spec.pids_limit.is_none()
            && spec.cpu_count.is_none_or(|c| c == meta.cpu_count)
            && spec.memory_mb.is_none_or(|m| m == meta.memory_mb)
            && self.disk_limit_mb(spec, meta) == self.disk_limit_mb(&SandboxSpec::new(&meta.name), meta)
    }

    /// Hands out a pooled sandbox for `spec` if one fits, with the create's identity; `None`: go the cold path
    /// (no fit, the pool is empty, or the claim failed — the failed sandbox is gone then).
    pub(super) async fn create_from_booted(
        self: &Arc<Self>,
        spec: &SandboxSpec,
        meta: &TemplateMeta,
        driver: &Driver,
    ) -> Option<SandboxInfo> {
        if !self.fits_booted_pool(spec, meta, driver) {
            return None;
        }
        self.booted.note_demand(&spec.template);
        loop {
            let ready = self.booted.lock_ready().get_mut(&spec.template).and_then(VecDeque::pop_front);
            let Some(ready) = ready else {
                self.booted.misses.fetch_add(1, Ordering::Relaxed);
                return None;
            };
            // Booted from an older build of the template: not what this create asks for.
            if ready.rec.template.as_ref() != Some(meta) {
                self.discard(ready.rec.id);
                continue;
            }
            let id = ready.rec.id.clone();
            match self.claim_booted(ready, spec.clone()).await {
                Ok(info) => {
                    self.booted.hits.fetch_add(1, Ordering::Relaxed);
                    return Some(info);
                }
                Err(e) => {
                    tracing::warn!(sandbox = %id, error = %e, "claiming a pooled sandbox failed; creating one cold");
                    if let Err(e) = self.release(&id, false).await {
                        tracing::error!(sandbox = %id, error = %e, "release of a pooled sandbox whose claim failed");
                    }
                    return None;
                }
            }
        }
    }

    /// Gives `ready` the create's identity: record, firewall, then envd (whose pool secret stops working).
    async fn claim_booted(&self, ready: Ready, spec: SandboxSpec) -> Result<SandboxInfo> {
        let t0 = Instant::now();
        let Ready { mut rec, lease } = ready;
        let id = rec.id.clone();
        let dir = self.dir(&id);
        let pool_secret =
            rec.envd_secret.take().ok_or_else(|| Error::Invalid("pooled sandbox without secret".into()))?;
        let Some(meta) = rec.template.clone() else {
            return Err(Error::Invalid("pooled sandbox without template".into()));
        };
        let secret = EnvdSecret::generate();
        let policy = spec.network.clone();
        let init = crate::envd_start::with_egress_ca(
            crate::envd_start::start_configuration(&id, &meta, &spec, Some(&secret), lease.ip, &self.cfg.dns),
            self.cfg.egress_ca.as_ref().map(|ca| ca.cert_pem.as_str()),
        );
        // (the CA itself was installed at the pool boot, by this node: only its variables are the create's)
        let init = soulbox_protocol::envd_init::InitRequest { egress_ca: None, ..init };
        rec.spec = Some(spec);
        rec.envd_secret = Some(secret);
        rec.status = Status::Creating;
        // From here the record names the real secret: a crash mid-claim leaves a `Creating` record, collected.
        let t_prep = t0.elapsed();
        rec.save(&dir)?;
        let t_record = t0.elapsed();
        // Its uptime counts from the hand-out, as a cold sandbox's counts from its create (the boot id, random and
        // this sandbox's alone, stays: under gVisor it is a bind of the file as it was at the boot).
        crate::procview::BootRecord::restart_clock(&dir)?;
        let t_clock = t0.elapsed();
        // The user's rules before the user's first request can reach the sandbox.
        if policy != NetworkPolicy::open() {
            self.fw.apply_policy(&id, &lease, &policy).await?;
        }
        let t_fw = t0.elapsed();
        envd_claim(lease.ip, &pool_secret, &init).await?;
        let t_envd = t0.elapsed();
        rec.status = Status::Running;
        rec.save(&dir)?;
        let info = super::info_of(&rec, Some(&lease));
        let us = |d: Duration| d.as_micros() as u64;
        // (tests and operators tell hits from cold creates by this line; `*_us`: each stage of the claim, in order)
        tracing::info!(
            sandbox = %id,
            template = %meta.name,
            us = us(t0.elapsed()),
            prep_us = us(t_prep),
            record_us = us(t_record - t_prep),
            clock_us = us(t_clock - t_record),
            fw_us = us(t_fw - t_clock),
            envd_us = us(t_envd - t_fw),
            saved_us = us(t0.elapsed() - t_envd),
            "claimed from the booted pool"
        );
        self.remember(&rec);
        self.serve(&id, lease.ip, self.drivers.default());
        self.sandboxes.lock().unwrap_or_else(|e| e.into_inner()).insert(id, Arc::new(AsyncMutex::new(rec)));
        Ok(info)
    }

    /// Releases a pooled sandbox in the background.
    fn discard(self: &Arc<Self>, id: String) {
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.release(&id, false).await {
                tracing::warn!(sandbox = %id, error = %e, "releasing a stale pooled sandbox");
            }
        });
    }

    /// Starts one background refill of the booted pool unless one runs.
    pub fn spawn_booted_refill(self: &Arc<Self>) {
        if self.cfg.booted_pool.values().all(|&n| n == 0)
            || self.booted.closed.load(Ordering::SeqCst)
            || tokio::runtime::Handle::try_current().is_err()
        {
            return;
        }
        if self.booted.refilling.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            // (the create that triggered it answers first: REFILL_DELAY)
            tokio::time::sleep(refill_delay()).await;
            me.fill_booted().await;
            me.booted.refilling.store(false, Ordering::SeqCst);
        });
    }

    /// Boots pooled sandboxes, one at a time (a boot is the work a create would compete with), until every
    /// template holds its target or the memory budget is spent; shrinks templates over their target.
    async fn fill_booted(self: &Arc<Self>) {
        // Templates that cannot be booted now (not built yet, another runtime) are skipped until the next fill.
        let mut skip: Vec<String> = Vec::new();
        loop {
            if self.booted.closed.load(Ordering::SeqCst) {
                return;
            }
            let (held_mb, counts) = {
                let ready = self.booted.lock_ready();
                let held: u64 =
                    ready.values().flatten().filter_map(|r| r.rec.template.as_ref()).map(|m| m.memory_mb).sum();
                let counts: HashMap<String, usize> = ready.iter().map(|(t, q)| (t.clone(), q.len())).collect();
                (held, counts)
            };
            let mut next = None;
            for (template, &max) in &self.cfg.booted_pool {
                let have = counts.get(template).copied().unwrap_or(0);
                let target = self.booted.target(template, max);
                if have > target {
                    let extra = self.booted.lock_ready().get_mut(template).and_then(VecDeque::pop_back);
                    if let Some(extra) = extra {
                        let _ = self.release(&extra.rec.id, false).await;
                    }
                } else if have < target && !skip.contains(template) && next.is_none() {
                    next = Some(template.clone());
                }
            }
            let Some(template) = next else { return };
            let meta = match self.store.get(&template) {
                Ok(meta) => meta,
                Err(_) => {
                    skip.push(template);
                    continue;
                }
            };
            let budget = self.cfg.booted_pool_memory_mb;
            let driver = self.drivers.named(meta.runtime.as_deref());
            let default_runtime = driver.is_ok_and(|d| std::ptr::eq(d, self.drivers.default()));
            if (budget > 0 && held_mb + meta.memory_mb > budget) || !default_runtime {
                skip.push(template);
                continue;
            }
            match self.boot_pooled(meta).await {
                // (checked under the lock `drain_booted` empties the pool with: nothing booted after it is kept)
                Ok(ready) => {
                    let mut pool = self.booted.lock_ready();
                    if self.booted.closed.load(Ordering::SeqCst) {
                        drop(pool);
                        let _ = self.release(&ready.rec.id, false).await;
                        return;
                    }
                    // Logged under the pool's lock, so a create that follows this line finds the sandbox.
                    tracing::info!(template = %template, sandbox = %ready.rec.id, "booted a sandbox for the pool");
                    pool.entry(template).or_default().push_back(ready)
                }
                Err(e) => {
                    tracing::warn!(template = %template, error = %e, "booting a pooled sandbox failed");
                    skip.push(template);
                }
            }
        }
    }

    /// Boots one sandbox of `meta` for the pool.
    async fn boot_pooled(self: &Arc<Self>, meta: TemplateMeta) -> Result<Ready> {
        let driver = self.drivers.default();
        let (id, lease, open_fw) = self.claim_slot(driver, None).await?;
        let dir = self.dir(&id);
        let spec = SandboxSpec::new(&meta.name);
        let disk_mb = self.disk_limit_mb(&spec, &meta);
        let rec = Record {
            id: id.clone(),
            status: Status::Pooled,
            template: Some(meta),
            spec: Some(spec),
            envd_secret: Some(EnvdSecret::generate()),
        };
        let res = async {
            rec.save(&dir)?;
            self.disk.fit_pooled(&dir, disk_mb)?;
            if !open_fw {
                self.fw.apply_policy(&id, &lease, &NetworkPolicy::open()).await?;
            }
            self.boot(&rec, &lease).await
        }
        .await;
        if let Err(e) = res {
            let _ = self.release(&id, false).await;
            return Err(e);
        }
        Ok(Ready { rec, lease })
    }
}

/// `POST CLAIM_PATH` to the envd at `ip`, under the pool's secret.
async fn envd_claim(
    ip: std::net::Ipv4Addr,
    pool_secret: &EnvdSecret,
    init: &soulbox_protocol::envd_init::InitRequest,
) -> Result<()> {
    let failed = |what: String| Error::Invalid(format!("claim of the pooled envd at {ip}: {what}"));
    let json = serde_json::to_vec(init).map_err(|e| failed(e.to_string()))?;
    let path = soulbox_protocol::envd_init::CLAIM_PATH;
    let request = EnvdRequest { method: http::Method::POST, path, json: Some(json) };
    let answer = envd_call::call(ip, pool_secret, request, Close::Drop, CLAIM_TIMEOUT).await.map_err(failed)?;
    if answer.status != http::StatusCode::NO_CONTENT {
        return Err(failed(answer.describe()));
    }
    Ok(())
}

impl Runtime {
    /// Release every booted pooled sandbox; no more are booted afterwards (a boot in flight releases its own).
    pub(super) async fn drain_booted(&self) -> Result<()> {
        let all: Vec<Ready> = {
            let mut pool = self.inner.booted.lock_ready();
            self.inner.booted.closed.store(true, Ordering::SeqCst);
            pool.drain().flat_map(|(_, q)| q).collect()
        };
        // A boot in flight finishes (and releases what it made) before the caller goes on: a server exits after
        // `close`, which would leave a half-made sandbox to the next open.
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.inner.booted.refilling.load(Ordering::SeqCst) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut first = None;
        for ready in all {
            if let Err(e) = self.inner.release(&ready.rec.id, false).await {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// How many booted sandboxes of `template` the pool holds now.
    pub fn booted_len(&self, template: &str) -> usize {
        self.inner.booted.lock_ready().get(template).map_or(0, VecDeque::len)
    }

    /// Creates served from the booted pool and creates that fitted it but found it empty, since open.
    pub fn booted_hits_misses(&self) -> (u64, u64) {
        (self.inner.booted.hits.load(Ordering::Relaxed), self.inner.booted.misses.load(Ordering::Relaxed))
    }

    /// Fill the booted pool now, in the background (after a template it holds was built, e.g. `base`).
    pub fn refill_booted(&self) {
        self.inner.spawn_booted_refill();
    }

    /// Fill the booted pool and wait until it holds its targets (tests, benches).
    pub async fn fill_booted_now(&self) {
        if self.inner.booted.closed.load(Ordering::SeqCst) {
            return;
        }
        while self.inner.booted.refilling.swap(true, Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.inner.fill_booted().await;
        self.inner.booted.refilling.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_follows_the_last_minutes_creates_up_to_the_configured_size() {
        let pool = BootedPool::default();
        assert_eq!(pool.target("base", 4), 1, "an idle template keeps one warm");
        assert_eq!(pool.target("base", 0), 0, "a size of 0 keeps none");
        for _ in 0..2 {
            pool.note_demand("base");
        }
        assert_eq!(pool.target("base", 4), 3);
        assert_eq!(pool.target("other", 4), 1, "demand is per template");
        for _ in 0..10 {
            pool.note_demand("base");
        }
        assert_eq!(pool.target("base", 4), 4, "never above the configured size");
        // Demand older than the window no longer counts.
        let old = Instant::now().checked_sub(DEMAND_WINDOW + Duration::from_secs(1));
        if let Some(old) = old {
            let mut demand = pool.demand.lock().unwrap();
            demand.get_mut("base").unwrap().iter_mut().for_each(|t| *t = old);
        }
        assert_eq!(pool.target("base", 4), 1);
    }
}
