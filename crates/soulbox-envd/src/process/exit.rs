//! The end event of a process, worded exactly like Go's `os.ProcessState` (E2B envd reports those strings).

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use soulbox_protocol::process::process_event::EndEvent;

/// `exitCode` is −1 and `exited` false when a signal ended the process; `status` is `ProcessState.String()`;
/// `error` is what Go's `cmd.Wait()` returns (the same text), present only when the process did not succeed.
pub fn end_event(status: ExitStatus) -> EndEvent {
    if let Some(code) = status.code() {
        let text = format!("exit status {code}");
        return EndEvent { exit_code: code, exited: true, error: (code != 0).then(|| text.clone()), status: text };
    }
    let text = match status.signal() {
        Some(sig) => {
            let core = if status.core_dumped() { " (core dumped)" } else { "" };
            format!("signal: {}{core}", signal_name(sig))
        }
        None => format!("unknown status {}", status.into_raw()),
    };
    EndEvent { exit_code: -1, exited: false, error: Some(text.clone()), status: text }
}

/// The end event when waiting for the process itself failed (it is gone, but its status is unknown).
pub fn wait_failed(error: &std::io::Error) -> EndEvent {
    let text = format!("wait: {error}");
    EndEvent { exit_code: -1, exited: false, error: Some(text.clone()), status: text }
}

/// Go's `syscall.Signal.String()` on Linux.
fn signal_name(sig: i32) -> String {
    let name = match sig {
        1 => "hangup",
        2 => "interrupt",
        3 => "quit",
        4 => "illegal instruction",
        5 => "trace/breakpoint trap",
        6 => "aborted",
        7 => "bus error",
        8 => "floating point exception",
        9 => "killed",
        10 => "user defined signal 1",
        11 => "segmentation fault",
        12 => "user defined signal 2",
        13 => "broken pipe",
        14 => "alarm clock",
        15 => "terminated",
        16 => "stack fault",
        17 => "child exited",
        18 => "continued",
        19 => "stopped (signal)",
        20 => "stopped",
        21 => "stopped (tty input)",
        22 => "stopped (tty output)",
        23 => "urgent I/O condition",
        24 => "CPU time limit exceeded",
        25 => "file size limit exceeded",
        26 => "virtual timer expired",
        27 => "profiling timer expired",
        28 => "window changed",
        29 => "I/O possible",
        30 => "power failure",
        31 => "bad system call",
        other => return format!("signal {other}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_wording() {
        let ok = end_event(ExitStatus::from_raw(0));
        assert_eq!((ok.exit_code, ok.exited, ok.status.as_str(), ok.error), (0, true, "exit status 0", None));
        let failed = end_event(ExitStatus::from_raw(3 << 8));
        assert_eq!((failed.exit_code, failed.error.as_deref()), (3, Some("exit status 3")));
        let killed = end_event(ExitStatus::from_raw(9));
        assert_eq!((killed.exit_code, killed.exited, killed.status.as_str()), (-1, false, "signal: killed"));
        assert_eq!(killed.error.as_deref(), Some("signal: killed"));
        assert_eq!(end_event(ExitStatus::from_raw(15)).status, "signal: terminated");
        assert_eq!(end_event(ExitStatus::from_raw(11 | 0x80)).status, "signal: segmentation fault (core dumped)");
    }
}
