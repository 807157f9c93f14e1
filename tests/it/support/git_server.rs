//! Real Git servers for the tests: `git daemon` (git://) and `git
//! http-backend` behind a tiny HTTP/1.1 server with optional Basic auth that
//! records every request, so tests can assert "one ref listing, no pack".
//! Both run with Git's default settings, as most self-hosted servers do
//! (no wants by object id); `*_allowing_sha_wants` turns those on.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::{KillOnDrop, free_port, wait_for_port};

/// Server-side settings that let clients fetch a commit by its id.
const SHA_WANTS: [(&str, &str); 2] = [
    ("uploadpack.allowAnySHA1InWant", "true"),
    ("uploadpack.allowReachableSHA1InWant", "true"),
];

/// `git daemon` exporting every repository under a base directory.
pub struct GitDaemon {
    _child: KillOnDrop,
    pub port: u16,
}

impl GitDaemon {
    /// With Git's defaults: only advertised refs can be fetched.
    pub fn start(base_dir: &Path) -> GitDaemon {
        GitDaemon::start_with(base_dir, false)
    }

    /// Also serving commits asked for by id.
    pub fn start_allowing_sha_wants(base_dir: &Path) -> GitDaemon {
        GitDaemon::start_with(base_dir, true)
    }

    fn start_with(base_dir: &Path, sha_wants: bool) -> GitDaemon {
        let port = free_port();
        let mut cmd = Command::new("git");
        for (key, value) in SHA_WANTS.iter().filter(|_| sha_wants) {
            cmd.arg("-c").arg(format!("{key}={value}"));
        }
        let child = cmd
            .arg("daemon")
            .arg("--export-all")
            .arg(format!("--base-path={}", base_dir.display()))
            .arg("--reuseaddr")
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg("--enable=upload-pack")
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start git daemon");
        let guard = KillOnDrop(child);
        wait_for_port(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(10),
        );
        GitDaemon {
            _child: guard,
            port,
        }
    }

    /// `git://127.0.0.1:P/<name>` for a repository `<base_dir>/<name>`.
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }
}

/// `git http-backend` as CGI behind a minimal HTTP server.
pub struct GitHttp {
    pub port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    /// When set, pack responses trickle out one small piece per interval:
    /// a transfer that never stalls yet never ends.
    drip: Arc<Mutex<Option<Duration>>>,
}

struct Backend {
    program: PathBuf,
    project_root: PathBuf,
    /// The expected `Authorization` header value, when auth is on.
    authorization: Option<String>,
    /// Serve commits asked for by id (`SHA_WANTS`).
    sha_wants: bool,
}

impl GitHttp {
    /// Serves the repositories under `project_root` with Git's defaults.
    /// With `basic_auth`, any request without exactly these credentials
    /// gets 401.
    pub fn start(project_root: &Path, basic_auth: Option<(&str, &str)>) -> GitHttp {
        GitHttp::start_with(project_root, basic_auth, false)
    }

    /// Also serving commits asked for by id.
    pub fn start_allowing_sha_wants(project_root: &Path) -> GitHttp {
        GitHttp::start_with(project_root, None, true)
    }

    fn start_with(
        project_root: &Path,
        basic_auth: Option<(&str, &str)>,
        sha_wants: bool,
    ) -> GitHttp {
        let exec_path = super::repo::git(project_root, &["--exec-path"]);
        let program = Path::new(&exec_path).join("git-http-backend");
        assert!(
            program.is_file(),
            "git http-backend not found at {} (install git's full package)",
            program.display()
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind http");
        let port = listener.local_addr().expect("addr").port();
        let backend = Arc::new(Backend {
            program,
            project_root: project_root.to_path_buf(),
            authorization: basic_auth
                .map(|(user, pass)| format!("Basic {}", STANDARD.encode(format!("{user}:{pass}")))),
            sha_wants,
        });
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let drip = Arc::new(Mutex::new(None));
        {
            let requests = Arc::clone(&requests);
            let stop = Arc::clone(&stop);
            let drip = Arc::clone(&drip);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let backend = Arc::clone(&backend);
                    let requests = Arc::clone(&requests);
                    let drip = *drip.lock().expect("drip lock");
                    std::thread::spawn(move || serve(stream, &backend, &requests, drip));
                }
            });
        }
        GitHttp {
            port,
            requests,
            stop,
            drip,
        }
    }

    /// From now on, send pack responses 64 bytes per `interval`.
    pub fn drip(&self, interval: Duration) {
        *self.drip.lock().expect("drip lock") = Some(interval);
    }

    /// `http://127.0.0.1:P/<name>`.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    /// `http://user:pass@127.0.0.1:P/<name>`.
    pub fn url_with_credentials(&self, name: &str, user: &str, pass: &str) -> String {
        format!("http://{user}:{pass}@127.0.0.1:{}/{name}", self.port)
    }

    /// Every request so far as `METHOD /path?query`, oldest first.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("requests lock").clone()
    }

    pub fn clear_requests(&self) {
        self.requests.lock().expect("requests lock").clear();
    }
}

impl Drop for GitHttp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One request per connection (`Connection: close`): simple and enough for
/// libgit2, which reconnects as needed.
fn serve(
    stream: TcpStream,
    backend: &Backend,
    requests: &Mutex<Vec<String>>,
    drip: Option<Duration>,
) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() || request_line.trim().is_empty() {
        return;
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    requests
        .lock()
        .expect("requests lock")
        .push(format!("{method} {target}"));

    let body = read_body(&mut reader, &header);
    let mut stream = stream;
    if let Some(expected) = &backend.authorization
        && header("authorization").as_deref() != Some(expected.as_str())
    {
        let _ = stream.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    }

    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut cmd = Command::new(&backend.program);
    cmd.env_clear()
        .env("GIT_PROJECT_ROOT", &backend.project_root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    if backend.sha_wants {
        cmd.env("GIT_CONFIG_COUNT", SHA_WANTS.len().to_string());
        for (i, (key, value)) in SHA_WANTS.iter().enumerate() {
            cmd.env(format!("GIT_CONFIG_KEY_{i}"), key)
                .env(format!("GIT_CONFIG_VALUE_{i}"), value);
        }
    }
    if let Some(content_type) = header("content-type") {
        cmd.env("CONTENT_TYPE", content_type);
    }
    if let Some(encoding) = header("content-encoding") {
        cmd.env("HTTP_CONTENT_ENCODING", encoding);
    }
    if let Some(protocol) = header("git-protocol") {
        cmd.env("GIT_PROTOCOL", protocol);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run git http-backend");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        // The backend may answer before reading everything; ignore EPIPE.
        let _ = stdin.write_all(&body);
    }
    let output = child.wait_with_output().expect("http-backend output");
    let response = cgi_to_http(&output.stdout);
    match drip {
        Some(interval) if method == "POST" => {
            for piece in response.chunks(64) {
                if stream
                    .write_all(piece)
                    .and_then(|()| stream.flush())
                    .is_err()
                {
                    return;
                }
                std::thread::sleep(interval);
            }
        }
        _ => {
            let _ = stream.write_all(&response);
        }
    }
}

fn read_body(reader: &mut impl BufRead, header: &dyn Fn(&str) -> Option<String>) -> Vec<u8> {
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size_line = String::new();
            if reader.read_line(&mut size_line).unwrap_or(0) == 0 {
                break;
            }
            let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            if size == 0 {
                let mut trailer = String::new();
                let _ = reader.read_line(&mut trailer);
                break;
            }
            let mut chunk = vec![0; size];
            if reader.read_exact(&mut chunk).is_err() {
                break;
            }
            body.extend_from_slice(&chunk);
            let mut crlf = [0; 2];
            let _ = reader.read_exact(&mut crlf);
        }
    } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(len, 0);
        let _ = reader.read_exact(&mut body);
    }
    body
}

/// CGI output (headers, blank line, body) → an HTTP/1.1 response.
fn cgi_to_http(output: &[u8]) -> Vec<u8> {
    let (head, body) = match find(output, b"\r\n\r\n") {
        Some(i) => (&output[..i], &output[i + 4..]),
        None => match find(output, b"\n\n") {
            Some(i) => (&output[..i], &output[i + 2..]),
            None => (&output[..0], output),
        },
    };
    let head = String::from_utf8_lossy(head);
    let mut status = "200 OK".to_string();
    let mut response = Vec::new();
    let mut headers = String::new();
    for line in head.lines() {
        match line.split_once(':') {
            Some((name, value)) if name.eq_ignore_ascii_case("status") => {
                status = value.trim().to_string();
            }
            Some(_) => {
                headers.push_str(line.trim_end());
                headers.push_str("\r\n");
            }
            None => {}
        }
    }
    response.extend_from_slice(format!("HTTP/1.1 {status}\r\n{headers}").as_bytes());
    response.extend_from_slice(
        format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    response.extend_from_slice(body);
    response
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
