//! `process.Process`: start, attach to, signal and feed processes (spec §2.4).
//!
//! Lifecycle of a started process: [`spawn`] starts it (clone + exec, [`fork_exec`]); one [`output::pump`]
//! task per output descriptor publishes chunks to its [`Fanout`]; one [`handle::run_input`] task writes its
//! input; [`supervise`] waits for it (killing it at the `Connect-Timeout-Ms` deadline), lets the pumps drain,
//! publishes the end event, and forgets it [`registry::FINISHED_RETENTION`] later. Streams are subscribers of
//! the fan-out; a client going away only drops its subscription, never the process.

mod exit;
mod fork_exec;
mod output;
mod spawn;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::Router;
use futures::{Stream, StreamExt};
use rustix::process::Signal;
use soulbox_protocol::connect::{Code, RpcError};
use soulbox_protocol::process as pb;
use soulbox_protocol::process::process_event::{self, Event};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::auth;
use crate::paths;
use crate::process_table::fanout::{self, Fanout, Next, Subscription};
use crate::process_table::handle::{self, Input, InputTarget, ProcessHandle};
use crate::process_table::registry;
use crate::rpc::{self, RpcContext, RpcStream};
use crate::state::AppState;
use output::Kind;
use spawn::{SpawnSpec, SpawnedStdio};

/// Input operations a process may have queued (each `SendInput` waits for its own write anyway).
const INPUT_QUEUE: usize = 16;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/process.Process/List", rpc::unary(list))
        .route("/process.Process/Start", rpc::server_stream(start))
        .route("/process.Process/Connect", rpc::server_stream(connect))
        .route("/process.Process/Update", rpc::unary(update))
        .route("/process.Process/SendInput", rpc::unary(send_input))
        .route("/process.Process/StreamInput", rpc::client_stream(stream_input))
        .route("/process.Process/SendSignal", rpc::unary(send_signal))
        .route("/process.Process/CloseStdin", rpc::unary(close_stdin))
}

async fn list(state: AppState, _ctx: RpcContext, _req: pb::ListRequest) -> Result<pb::ListResponse, RpcError> {
    Ok(pb::ListResponse { processes: state.processes.running().iter().map(|h| h.info()).collect() })
}

async fn start(
    state: AppState,
    ctx: RpcContext,
    req: pb::StartRequest,
) -> Result<RpcStream<pb::StartResponse>, RpcError> {
    let user = auth::rpc_user(&state, &ctx.headers)?;
    let config = req.process.unwrap_or_default();
    let sandbox = state.config();
    let cwd = paths::expand_and_resolve(
        config.cwd.as_deref().unwrap_or_default(),
        &user,
        sandbox.default_workdir.as_deref(),
    )?;
    match std::fs::metadata(&cwd) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RpcError::invalid_argument(format!("cwd '{}' does not exist", cwd.display())));
        }
        Err(e) => return Err(RpcError::internal(format!("error checking cwd '{}': {e}", cwd.display()))),
    }
    let deadline = ctx.timeout.map(|t| Instant::now() + t);

    // Subscribe before the process exists, so the Start stream sees its very first byte.
    let fanout = Arc::new(Fanout::default());
    let Subscription::Live(subscriber) = fanout.subscribe() else {
        return Err(RpcError::internal("a new process cannot have ended"));
    };

    let spawned = spawn::spawn(SpawnSpec {
        config: &config,
        user: &user,
        cwd: &cwd,
        sandbox_env: &sandbox.env_vars,
        pty: req.pty.map(|p| p.size.unwrap_or_default()),
        stdin: req.stdin.unwrap_or(true),
    })?;
    let pid = spawned.pid;
    tracing::debug!(pid, cmd = %config.cmd, user = %user.name, "process started");

    let (exited_tx, exited_rx) = watch::channel(false);
    let mut drained = Vec::new();
    let mut pump = |fd, kind| {
        let (done, wait) = oneshot::channel();
        drained.push(wait);
        tokio::spawn(output::pump(fd, kind, fanout.clone(), exited_rx.clone(), done));
    };
    let input = match spawned.stdio {
        SpawnedStdio::Pty { master } => {
            pump(master.clone(), Kind::Pty);
            let (ops, queue) = mpsc::channel(INPUT_QUEUE);
            tokio::spawn(handle::run_input(InputTarget::Pty(master.clone()), queue));
            Input::Pty { master, ops }
        }
        SpawnedStdio::Pipes { stdin, stdout, stderr } => {
            pump(stdout, Kind::Stdout);
            pump(stderr, Kind::Stderr);
            match stdin {
                Some(stdin) => {
                    let (ops, queue) = mpsc::channel(INPUT_QUEUE);
                    tokio::spawn(handle::run_input(InputTarget::Pipe(stdin), queue));
                    Input::Pipe(ops)
                }
                None => Input::Disabled,
            }
        }
    };

    let handle = Arc::new(ProcessHandle::new(pid, config, req.tag, fanout, input));
    state.processes.insert(handle.clone());
    tokio::spawn(supervise(state.clone(), handle.clone(), spawned.child, exited_tx, drained, deadline));

    let start = std::iter::once(Ok(start_event(pid)));
    let events = futures::stream::iter(start).chain(live_events(handle, Some(subscriber), deadline));
    let responses = events.map(|e| e.map(|event| pb::StartResponse { event: Some(event) })).boxed();
    Ok(rpc::with_keepalive(responses, ctx.keepalive, || pb::StartResponse { event: Some(keepalive_event()) }))
}

async fn connect(
    state: AppState,
    ctx: RpcContext,
    req: pb::ConnectRequest,
) -> Result<RpcStream<pb::ConnectResponse>, RpcError> {
    let handle = state.processes.connectable_process(req.process.as_ref())?;
    let (subscriber, end) = match handle.fanout.subscribe() {
        Subscription::Live(s) => (Some(s), None),
        Subscription::Ended(end) => (None, Some(end)),
    };
    let start = futures::stream::iter(std::iter::once(Ok(start_event(handle.pid))));
    let events: RpcStream<pb::ProcessEvent> = match end {
        Some(end) => start.chain(futures::stream::iter(std::iter::once(Ok(end_event(end))))).boxed(),
        None => start.chain(live_events(handle, subscriber, None)).boxed(),
    };
    let responses = events.map(|e| e.map(|event| pb::ConnectResponse { event: Some(event) })).boxed();
    Ok(rpc::with_keepalive(responses, ctx.keepalive, || pb::ConnectResponse { event: Some(keepalive_event()) }))
}

async fn update(state: AppState, _ctx: RpcContext, req: pb::UpdateRequest) -> Result<pb::UpdateResponse, RpcError> {
    let handle = state.processes.running_process(req.process.as_ref())?;
    if let Some(pty) = req.pty {
        handle.resize(pty.size)?;
    }
    Ok(pb::UpdateResponse {})
}

async fn send_input(
    state: AppState,
    _ctx: RpcContext,
    req: pb::SendInputRequest,
) -> Result<pb::SendInputResponse, RpcError> {
    let handle = state.processes.running_process(req.process.as_ref())?;
    handle.send_input(req.input).await?;
    Ok(pb::SendInputResponse {})
}

/// Client stream: `start{process}` first, then `data{input}` messages (keepalives ignored).
async fn stream_input(
    state: AppState,
    _ctx: RpcContext,
    mut requests: RpcStream<pb::StreamInputRequest>,
) -> Result<pb::StreamInputResponse, RpcError> {
    use pb::stream_input_request::Event as In;
    let mut target: Option<Arc<ProcessHandle>> = None;
    while let Some(request) = requests.next().await {
        match request?.event {
            Some(In::Start(start)) => target = Some(state.processes.running_process(start.process.as_ref())?),
            Some(In::Data(data)) => {
                let handle = target.as_ref().ok_or_else(|| {
                    RpcError::new(Code::FailedPrecondition, "input sent before the start message naming the process")
                })?;
                handle.send_input(data.input).await?;
            }
            Some(In::Keepalive(_)) => {}
            None => return Err(RpcError::unimplemented("invalid event type: empty stream input message")),
        }
    }
    Ok(pb::StreamInputResponse {})
}

async fn send_signal(
    state: AppState,
    _ctx: RpcContext,
    req: pb::SendSignalRequest,
) -> Result<pb::SendSignalResponse, RpcError> {
    let handle = state.processes.running_process(req.process.as_ref())?;
    let signal = match pb::Signal::try_from(req.signal) {
        Ok(pb::Signal::Sigkill) => Signal::KILL,
        Ok(pb::Signal::Sigterm) => Signal::TERM,
        Ok(other) => return Err(RpcError::unimplemented(format!("invalid signal: {}", other.as_str_name()))),
        Err(_) => return Err(RpcError::unimplemented(format!("invalid signal: {}", req.signal))),
    };
    handle.signal(signal)?;
    Ok(pb::SendSignalResponse {})
}

async fn close_stdin(
    state: AppState,
    _ctx: RpcContext,
    req: pb::CloseStdinRequest,
) -> Result<pb::CloseStdinResponse, RpcError> {
    let handle = state.processes.running_process(req.process.as_ref())?;
    handle.close_stdin().await?;
    Ok(pb::CloseStdinResponse {})
}

/// Waits for the process (killing its group at the deadline), lets the output drain, publishes the end
/// event, and forgets the process once a late `Connect` no longer needs it.
async fn supervise(
    state: AppState,
    handle: Arc<ProcessHandle>,
    mut child: fork_exec::Child,
    exited: watch::Sender<bool>,
    drained: Vec<oneshot::Receiver<()>>,
    deadline: Option<Instant>,
) {
    let status = match deadline {
        Some(at) => tokio::select! {
            status = child.wait() => status,
            _ = tokio::time::sleep_until(at) => {
                tracing::debug!(pid = handle.pid, "process deadline reached; killing it");
                if let Err(e) = handle.signal(Signal::KILL) {
                    tracing::warn!(pid = handle.pid, error = %e, "could not kill process at its deadline");
                }
                child.wait().await
            }
        },
        None => child.wait().await,
    };
    let _ = exited.send(true);
    for pump in drained {
        let _ = pump.await;
    }
    let end = match status {
        Ok(status) => exit::end_event(status),
        Err(e) => exit::wait_failed(&e),
    };
    tracing::debug!(pid = handle.pid, status = %end.status, "process ended");
    handle.fanout.finish(end);
    tokio::time::sleep(registry::FINISHED_RETENTION).await;
    state.processes.remove(&handle);
}

/// Data events until the end event. With a deadline (the `Start` stream), the stream ends with
/// `deadline_exceeded` at the deadline rather than reporting the kill that the deadline causes.
fn live_events(
    handle: Arc<ProcessHandle>,
    subscriber: Option<fanout::Subscriber>,
    deadline: Option<Instant>,
) -> impl Stream<Item = Result<pb::ProcessEvent, RpcError>> + Send + 'static {
    futures::stream::unfold(subscriber, move |subscriber| {
        let handle = handle.clone();
        async move {
            let mut subscriber = subscriber?;
            let next = match deadline {
                Some(at) => tokio::select! {
                    biased;
                    _ = tokio::time::sleep_until(at) => {
                        return Some((Err(RpcError::new(Code::DeadlineExceeded, "the operation timed out")), None));
                    }
                    next = subscriber.next(&handle.fanout) => next,
                },
                None => subscriber.next(&handle.fanout).await,
            };
            match next {
                Next::Data(data) => Some((Ok(pb::ProcessEvent { event: Some(Event::Data(data)) }), Some(subscriber))),
                Next::End(end) => Some((Ok(end_event(end)), None)),
                Next::CutOff => Some((
                    Err(RpcError::new(
                        Code::ResourceExhausted,
                        format!(
                            "process {} output was not read for {:?}; this stream was cut off",
                            handle.pid,
                            fanout::STALL_LIMIT
                        ),
                    )),
                    None,
                )),
                Next::Lost => Some((Err(RpcError::internal("process ended without an end event")), None)),
            }
        }
    })
}

fn start_event(pid: u32) -> pb::ProcessEvent {
    pb::ProcessEvent { event: Some(Event::Start(process_event::StartEvent { pid })) }
}

fn end_event(end: process_event::EndEvent) -> pb::ProcessEvent {
    pb::ProcessEvent { event: Some(Event::End(end)) }
}

fn keepalive_event() -> pb::ProcessEvent {
    pb::ProcessEvent { event: Some(Event::Keepalive(process_event::KeepAlive {})) }
}
