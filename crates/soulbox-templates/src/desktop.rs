//! `desktop`, the template E2B's Desktop SDKs (`e2b_desktop`, `@e2b/desktop`) start by default: `base` plus
//! an X server, an Xfce session, the tools the SDK drives through `commands.run` (xdotool, scrot, xclip,
//! wmctrl, xrandr, xdpyinfo, netstat, gtk-launch, xdg-open), a browser, and x11vnc + noVNC for `stream.start()`.
//!
//! No start command: the SDK itself starts `Xvfb` on its display (`:0` by default) at the resolution and DPI
//! its `create()` was given, then `startxfce4`, and `stream.start()` starts `x11vnc` and
//! `/opt/noVNC/utils/novnc_proxy` on port 6080. An X server started by the template would hold the display and
//! make the SDK's resolution silently ignored.
//!
//! Everything comes from Debian 12's packages (apt reaches the mirror over plain HTTP from a build sandbox;
//! E2B's own template clones noVNC from GitHub, which a build sandbox may not verify behind a TLS-intercepting
//! proxy): Debian's noVNC lives in `/usr/share/novnc`, linked where the SDK looks for it.

use super::{Recipe, TemplateStep};

pub const DESKTOP_TEMPLATE: &str = "desktop";
/// Where the SDK runs noVNC from (`cd /opt/noVNC/utils && ./novnc_proxy … --web /opt/noVNC`).
pub const NOVNC_DIR: &str = "/opt/noVNC";

/// Debian 12's packages, each for something the SDK (2.7) runs or a user of it expects on a desktop.
pub const PACKAGES: &[&str] = &[
    // The display: Xvfb, xdpyinfo (the SDK's readiness check), xrandr (get_screen_size), xauth.
    "xvfb",
    "x11-utils",
    "x11-xserver-utils",
    "xauth",
    // The session startxfce4 starts; the SDK waits for xfce4-session, xfwm4 and xfdesktop. dbus-launch for it.
    "dbus-x11",
    "xfce4-session",
    "xfwm4",
    "xfdesktop4",
    "xfce4-panel",
    "xfce4-terminal",
    "thunar",
    "xterm",
    "fonts-dejavu-core",
    "librsvg2-common",
    // What the SDK's methods run.
    "xdotool",
    "scrot",
    "xclip",
    "wmctrl",
    "procps",
    "net-tools",
    "xdg-utils",
    "libgtk-3-bin",
    // stream.start(): x11vnc, noVNC and websockify (novnc_proxy finds websockify on PATH).
    "x11vnc",
    "novnc",
    "websockify",
    // A browser (xdg-open of a URL, launch("firefox-esr")).
    "firefox-esr",
];

fn install_packages() -> String {
    format!(
        "set -e\nexport DEBIAN_FRONTEND=noninteractive\napt-get update\n\
         apt-get install -y --no-install-recommends {}\n\
         apt-get clean\nrm -rf /var/lib/apt/lists/*",
        PACKAGES.join(" ")
    )
}

/// Firefox's first run opens welcome and privacy tabs over the page it was asked for (and asks to be the
/// default browser): an agent's `open(url)` should show that URL.
const FIREFOX_POLICIES: &str = r#"{"policies": {"OverrideFirstRunPage": "", "OverridePostUpdatePage": "", "DontCheckDefaultBrowser": true, "DisableTelemetry": true}}"#;

/// noVNC where the SDK runs it, its page also at `/` (as in E2B's template), the terminal and browser that
/// `x-terminal-emulator` and `x-www-browser` name, and Firefox's policies.
fn configure_desktop() -> String {
    format!(
        "set -e\nln -sfn /usr/share/novnc {NOVNC_DIR}\nln -sf vnc.html /usr/share/novnc/index.html\n\
         test -x {NOVNC_DIR}/utils/novnc_proxy\n\
         update-alternatives --set x-terminal-emulator /usr/bin/xfce4-terminal.wrapper\n\
         update-alternatives --set x-www-browser /usr/bin/firefox-esr\n\
         mkdir -p /usr/lib/firefox-esr/distribution\n\
         printf '%s\\n' '{FIREFOX_POLICIES}' > /usr/lib/firefox-esr/distribution/policies.json"
    )
}

/// The recipe of `desktop`.
pub fn recipe() -> Recipe {
    Recipe {
        from_template: Some(super::base::BASE_TEMPLATE.to_string()),
        steps: vec![
            TemplateStep::new("RUN", vec![install_packages(), "root".to_string()]),
            TemplateStep::new("RUN", vec![configure_desktop(), "root".to_string()]),
        ],
        ..Recipe::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recipe_starts_from_base_and_leaves_the_display_to_the_sdk() {
        let r = recipe();
        assert_eq!(r.from_template.as_deref(), Some("base"));
        assert!(r.start_cmd.is_none() && r.ready_cmd.is_none(), "the SDK starts Xvfb at its own resolution");
        assert!(r.steps.iter().all(|s| s.kind == "RUN" && s.args[1] == "root"));
    }

    #[test]
    fn every_tool_the_sdk_runs_is_installed() {
        let script = install_packages();
        for package in ["xvfb", "xfce4-session", "xdotool", "scrot", "x11vnc", "novnc", "firefox-esr"] {
            assert!(script.contains(&format!(" {package}")), "{package}");
        }
        assert!(configure_desktop().contains("ln -sfn /usr/share/novnc /opt/noVNC"));
    }
}
