//! `tyk-gitops` run to completion, as a user types it: one builder per
//! one-shot command, so a story reads as one sentence,
//! `Tg::sync(&url, node.root()).gateway(&node.emu).arg("--force").run().ok()`.
//!
//! The child gets this process's environment minus whatever configures the
//! binary (`TYK_GITOPS_*`, `SSL_CERT_*`, `NO_COLOR`, `FAILPOINTS`): a test
//! sees only the settings it passes. Flags may repeat; the last one wins.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::{Command, Output};

use super::bin;
use super::node::{Node, SECRET};
use super::tyk::TykEmulator;

/// How long `sync` waits for a gateway to show a revision: a failed
/// verification costs a test this, not the default 30 s.
const VERIFY_TIMEOUT: &str = "3s";

/// One command line of the binary, built up like a sentence.
#[must_use = "a command does nothing until `run`"]
pub struct Tg {
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    /// Under `/usr/bin/time -v`, for the peak RSS.
    measured: bool,
}

impl Tg {
    /// Any command line, written out: `--help`, global flags before the
    /// command, `run`.
    pub fn new<I, S>(args: I) -> Tg
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Tg {
            args: Vec::new(),
            env: Vec::new(),
            measured: false,
        }
        .args(args)
    }

    /// `sync --repo <repo> --root <root>`.
    pub fn sync(repo: &str, root: &Path) -> Tg {
        Tg::new(["sync", "--repo", repo]).arg("--root").arg(root)
    }

    /// `sync` of `repo` into a `Node`: its root, its gateway.
    pub fn sync_node(repo: &str, node: &Node) -> Tg {
        Tg::sync(repo, node.root()).gateway(&node.emu)
    }

    /// `validate <dir>`.
    pub fn validate(dir: impl AsRef<OsStr>) -> Tg {
        Tg::new(["validate"]).arg(dir)
    }

    /// `plan`, its checkouts or `--repo` given by the story.
    pub fn plan() -> Tg {
        Tg::new(["plan"])
    }

    /// `export --out <dir>`.
    pub fn export(out: impl AsRef<OsStr>) -> Tg {
        Tg::new(["export", "--out"]).arg(out)
    }

    /// `fleet <action> --redis <redis>` (`status`, `wait`).
    pub fn fleet(action: &str, redis: &str) -> Tg {
        Tg::new(["fleet", action, "--redis", redis])
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Tg {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Tg
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Tg {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    pub fn envs<I, K, V>(self, vars: I) -> Tg
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        vars.into_iter().fold(self, |tg, (k, v)| tg.env(k, v))
    }

    /// The gateway a `Node`'s emulator plays, with its secret.
    pub fn gateway(self, emu: &TykEmulator) -> Tg {
        self.gateway_at(&emu.url())
    }

    /// `--gateway <url>` and the emulators' secret in the environment;
    /// for `sync`, a short `--verify-timeout` too.
    pub fn gateway_at(self, url: &str) -> Tg {
        let verifies = self.args.first().is_some_and(|c| c == "sync");
        let tg = self.args(["--gateway", url]).secret(SECRET);
        if verifies {
            tg.args(["--verify-timeout", VERIFY_TIMEOUT])
        } else {
            tg
        }
    }

    /// The gateway secret from the environment (another than the emulators').
    pub fn secret(self, secret: &str) -> Tg {
        self.env("TYK_GITOPS_GATEWAY_SECRET", secret)
    }

    /// Run under `/usr/bin/time -v`: `Ran::peak_rss_kib` tells the peak.
    pub fn measured(mut self) -> Tg {
        self.measured = true;
        self
    }

    /// The process to start, for a story that spawns (and kills) it.
    pub fn command(self) -> Command {
        let mut cmd = if self.measured {
            let mut time = Command::new("/usr/bin/time");
            time.arg("-v").arg(bin());
            time
        } else {
            Command::new(bin())
        };
        cmd.args(&self.args);
        for (key, _) in std::env::vars_os() {
            let name = key.to_string_lossy();
            if name.starts_with("TYK_GITOPS_")
                || name.starts_with("SSL_CERT_")
                || name == "NO_COLOR"
                || name == "FAILPOINTS"
            {
                cmd.env_remove(&key);
            }
        }
        cmd.envs(self.env);
        cmd
    }

    /// Runs to the end.
    pub fn run(self) -> Ran {
        let line = self.line();
        let wrapper = if self.measured {
            " under /usr/bin/time"
        } else {
            ""
        };
        let out = self
            .command()
            .output()
            .unwrap_or_else(|e| panic!("cannot start `{line}`{wrapper}: {e}"));
        Ran::of(line, out)
    }

    fn line(&self) -> String {
        let args: Vec<_> = self.args.iter().map(|a| a.to_string_lossy()).collect();
        format!("tyk-gitops {}", args.join(" "))
    }
}

/// What a user sees of one run: exit code (-1 when killed), stdout, stderr.
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// The command line, for messages.
    line: String,
}

impl Ran {
    /// The result of a process a story spawned itself (`Tg::command`).
    pub fn of(line: impl Into<String>, out: Output) -> Ran {
        Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            line: line.into(),
        }
    }

    /// Exited 0, or panics showing what it printed.
    #[track_caller]
    pub fn ok(self) -> Ran {
        self.code(0)
    }

    /// Exited `expected`, or panics showing what it printed.
    #[track_caller]
    pub fn code(self, expected: i32) -> Ran {
        assert_eq!(
            self.code, expected,
            "`{}` exited {}, expected {expected}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.line, self.code, self.stdout, self.stderr
        );
        self
    }

    /// Stderr holds `needle`, or panics showing it.
    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Ran {
        self.holds("stderr", &self.stderr, needle)
    }

    /// Stdout holds `needle`, or panics showing it.
    #[track_caller]
    pub fn stdout_has(&self, needle: &str) -> &Ran {
        self.holds("stdout", &self.stdout, needle)
    }

    #[track_caller]
    fn holds(&self, name: &str, text: &str, needle: &str) -> &Ran {
        assert!(
            text.contains(needle),
            "`{}`: {needle:?} not in {name}:\n{text}",
            self.line
        );
        self
    }

    /// Stdout as JSON (`--format json`), or panics showing it.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "`{}`: stdout is not JSON ({e}):\n{}",
                self.line, self.stdout
            )
        })
    }

    /// Stdout then stderr: everything the user saw.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Peak resident set of a `measured` run, in KiB.
    #[track_caller]
    pub fn peak_rss_kib(&self) -> u64 {
        self.stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("`{}`: no peak RSS in stderr (not `measured`?)", self.line))
    }
}
