//! `soulbox shell <id>`: an interactive PTY with the local terminal in raw mode, resized on SIGWINCH.

use std::io::Write;
use std::os::fd::AsFd;

use soulbox::{PtyOptions, PtySize, Sandbox};
use tokio::io::AsyncReadExt;

use super::ShellArgs;

/// Restores the terminal's settings when dropped (also on error paths).
struct RawMode(Option<rustix::termios::Termios>);

impl RawMode {
    fn enable() -> RawMode {
        let stdin = std::io::stdin();
        let Ok(orig) = rustix::termios::tcgetattr(stdin.as_fd()) else { return RawMode(None) };
        let mut raw = orig.clone();
        raw.make_raw();
        if rustix::termios::tcsetattr(stdin.as_fd(), rustix::termios::OptionalActions::Now, &raw).is_err() {
            return RawMode(None);
        }
        RawMode(Some(orig))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(orig) = &self.0 {
            let _ = rustix::termios::tcsetattr(std::io::stdin().as_fd(), rustix::termios::OptionalActions::Now, orig);
        }
    }
}

fn size() -> PtySize {
    match rustix::termios::tcgetwinsize(std::io::stdout().as_fd()) {
        Ok(ws) if ws.ws_col > 0 && ws.ws_row > 0 => PtySize { cols: ws.ws_col.into(), rows: ws.ws_row.into() },
        _ => PtySize { cols: 80, rows: 24 },
    }
}

pub async fn run(a: ShellArgs) -> soulbox::Result<i32> {
    let client = a.conn.client()?;
    let s = Sandbox::get(&client, &a.id).await?;
    let pty = s.pty();
    let mut opts = PtyOptions::default().on_data(|b| {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(b);
        let _ = out.flush();
    });
    opts.user = a.user;
    let handle = pty.create(size(), opts).await?;
    let pid = handle.pid();
    let _raw = RawMode::enable();

    let input = {
        let pty = pty.clone();
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; 4096];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if pty.send_input(pid, bytes::Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                            break;
                        }
                    }
                }
            }
        })
    };
    let resize = {
        let pty = pty.clone();
        tokio::spawn(async move {
            let Ok(mut winch) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()) else {
                return;
            };
            while winch.recv().await.is_some() {
                let _ = pty.resize(pid, size()).await;
            }
        })
    };
    let result = handle.wait().await;
    input.abort();
    resize.abort();
    drop(_raw);
    match result {
        Ok(_) => Ok(0),
        Err(soulbox::Error::CommandExit { exit_code, .. }) => Ok(if exit_code < 0 { 137 } else { exit_code }),
        Err(e) => Err(e),
    }
}
