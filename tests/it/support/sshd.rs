//! A real OpenSSH `sshd` on a loopback port with its own host key and one
//! client key, serving git over SSH as the user running the tests.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::{KillOnDrop, free_port, wait_for_port};

const SSHD: &str = "/usr/sbin/sshd";

pub struct Sshd {
    _child: KillOnDrop,
    dir: TempDir,
    pub port: u16,
    pub user: String,
    repo_parent: PathBuf,
}

impl Sshd {
    /// Starts sshd; repositories are addressed by absolute path under
    /// `repo_parent`. Panics (never skips) when OpenSSH is missing.
    pub fn start(repo_parent: &Path) -> Sshd {
        assert!(
            Path::new(SSHD).is_file(),
            "{SSHD} not found: install openssh-server (CI does)"
        );
        let dir = tempfile::tempdir().expect("sshd tempdir");
        keygen(&dir.path().join("host_key"));
        keygen(&dir.path().join("client_key"));
        fs::copy(
            dir.path().join("client_key.pub"),
            dir.path().join("authorized_keys"),
        )
        .expect("authorized_keys");
        // Privilege separation wants this directory to exist.
        fs::create_dir_all("/run/sshd").expect("create /run/sshd");

        let port = free_port();
        let config = dir.path().join("sshd_config");
        fs::write(
            &config,
            format!(
                "Port {port}\n\
                 ListenAddress 127.0.0.1\n\
                 HostKey {host_key}\n\
                 AuthorizedKeysFile {authorized}\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\n\
                 PermitRootLogin prohibit-password\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 PidFile {pid}\n",
                host_key = dir.path().join("host_key").display(),
                authorized = dir.path().join("authorized_keys").display(),
                pid = dir.path().join("sshd.pid").display(),
            ),
        )
        .expect("write sshd_config");
        let log = fs::File::create(dir.path().join("sshd.log")).expect("sshd log");
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        let guard = KillOnDrop(child);
        wait_for_port(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(10),
        );
        let user = String::from_utf8(Command::new("whoami").output().expect("whoami").stdout)
            .expect("utf8 user")
            .trim()
            .to_string();
        Sshd {
            _child: guard,
            dir,
            port,
            user,
            repo_parent: repo_parent.to_path_buf(),
        }
    }

    /// `ssh://user@127.0.0.1:P/<repo_parent>/<name>`.
    pub fn url(&self, name: &str) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            self.repo_parent.join(name).display()
        )
    }

    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    /// A known_hosts line trusting this server's host key.
    pub fn known_hosts_line(&self) -> String {
        let key = fs::read_to_string(self.dir.path().join("host_key.pub")).expect("host key");
        let mut fields = key.split_whitespace();
        let (kind, blob) = (fields.next().expect("type"), fields.next().expect("key"));
        format!("[127.0.0.1]:{} {kind} {blob}\n", self.port)
    }

    /// Writes a known_hosts file holding `contents` and returns its path.
    pub fn write_known_hosts(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        fs::write(&path, contents).expect("write known_hosts");
        path
    }

    /// What sshd logged so far (for failing assertions).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "tyk-gitops-test",
            "-f",
        ])
        .arg(path)
        .status()
        .expect("run ssh-keygen");
    assert!(status.success(), "ssh-keygen failed for {}", path.display());
}
