//! `git://` (the protocol of `git daemon`) over a socket of our own, in
//! place of libgit2's, which differs in one thing: every read acknowledges
//! at once (`TCP_QUICKACK`), and our writes go out at once (`TCP_NODELAY`).
//!
//! `git upload-pack` answers a shallow fetch with its `shallow` lines and
//! then a flush packet, in two small writes; the second waits (Nagle) for
//! the client to acknowledge the first, and a Linux client delays that
//! acknowledgement by 40 ms, as it has nothing to send. Every shallow
//! fetch from a `git daemon` paid those 40 ms before the pack started,
//! `git clone --depth 1` too. The rest follows libgit2's transport: the
//! same request line, one connection for the listing and the fetch, the
//! same keepalive, and its connect and read timeouts, which `Session::run`
//! sets around each operation.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::Once;
use std::time::Duration;

use git2::transport::{Service, SmartSubtransport, SmartSubtransportStream, Transport};
use git2::{Error, ErrorClass, ErrorCode};

const PREFIX: &str = "git://";
const DEFAULT_PORT: u16 = 9418;
/// The largest pkt-line.
const MAX_PKT: usize = 65520;

/// Makes libgit2 use this transport for `git://` URLs; once per process,
/// before the first remote is used.
pub fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: registered once, before any remote of ours connects (the
        // callers of `Session::start` come after this); libgit2 keeps the
        // factory for the life of the process.
        let registered = unsafe {
            // libgit2 adds the "://".
            git2::transport::register("git", |remote| Transport::smart(remote, false, GitProtocol))
        };
        if let Err(e) = registered {
            tracing::debug!(error = %e, "git:// stays with libgit2's transport");
        }
    });
}

struct GitProtocol;

impl SmartSubtransport for GitProtocol {
    /// Connects for a listing; libgit2 goes on with the same stream for
    /// the fetch or push that follows (not RPC).
    fn action(
        &self,
        url: &str,
        action: Service,
    ) -> Result<Box<dyn SmartSubtransportStream>, Error> {
        let command = match action {
            Service::UploadPackLs => "git-upload-pack",
            Service::ReceivePackLs => "git-receive-pack",
            Service::UploadPack | Service::ReceivePack => {
                return Err(net_error("a git:// fetch or push starts with a listing"));
            }
        };
        let target = Target::parse(url)?;
        let socket = connect(&target)?;
        Ok(Box::new(Connection {
            socket,
            request: Some(target.request(command)?),
        }))
    }

    fn close(&self) -> Result<(), Error> {
        Ok(())
    }
}

/// Where a `git://` URL points, and the repository path to ask for.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    host: String,
    port: u16,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, Error> {
        let malformed = || net_error(&format!("malformed URL '{url}'"));
        let rest = url
            .get(..PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(PREFIX))
            .map(|_| &url[PREFIX.len()..])
            .ok_or_else(malformed)?;
        // The path as written (libgit2 sends it so); host and port parsed.
        let path = &rest[rest.find('/').ok_or_else(malformed)?..];
        let parsed = url::Url::parse(url).map_err(|_| malformed())?;
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(malformed)?;
        Ok(Target {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: parsed.port().unwrap_or(DEFAULT_PORT),
            // `git://host/~user/repo` asks for `~user/repo`.
            path: path
                .strip_prefix("/~")
                .map_or(path.to_string(), |p| format!("~{p}")),
        })
    }

    /// `002bgit-upload-pack /repo\0host=example.com\0`
    fn request(&self, command: &str) -> Result<Vec<u8>, Error> {
        let body = format!("{command} {}\0host={}\0", self.path, self.host);
        let len = 4 + body.len();
        if len > MAX_PKT {
            return Err(net_error("the repository path is too long for git://"));
        }
        Ok(format!("{len:04x}{body}").into_bytes())
    }
}

/// Tries each address of the host in turn, as libgit2 does: a refusal
/// moves on to the next, a timeout ends the attempt.
fn connect(target: &Target) -> Result<TcpStream, Error> {
    let (connect_timeout, timeout) = timeouts();
    let addrs: Vec<SocketAddr> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| {
            net_error(&format!(
                "failed to resolve address for {}: {e}",
                target.host
            ))
        })?
        .collect();
    let mut last = None;
    for addr in &addrs {
        let attempt = match connect_timeout {
            Some(limit) => TcpStream::connect_timeout(addr, limit),
            None => TcpStream::connect(addr),
        };
        match attempt {
            Ok(socket) => {
                socket.set_nodelay(true).map_err(os_error)?;
                socket.set_read_timeout(timeout).map_err(os_error)?;
                socket.set_write_timeout(timeout).map_err(os_error)?;
                keepalive(&socket);
                return Ok(socket);
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(Error::new(
                    ErrorCode::Timeout,
                    ErrorClass::Net,
                    format!("failed to connect to {}: Operation timed out", target.host),
                ));
            }
            Err(e) => last = Some(e),
        }
    }
    let reason = last.map_or_else(|| "no address".to_string(), |e| e.to_string());
    Err(Error::new(
        ErrorCode::GenericError,
        ErrorClass::Os,
        format!("failed to connect to {}: {reason}", target.host),
    ))
}

/// libgit2's socket settings of the operation under way (`with_timeouts`).
fn timeouts() -> (Option<Duration>, Option<Duration>) {
    let ms = |v: Result<libc::c_int, Error>| {
        v.ok()
            .filter(|ms| *ms > 0)
            .map(|ms| Duration::from_millis(ms as u64))
    };
    // SAFETY: both read one int from libgit2's settings.
    unsafe {
        (
            ms(git2::opts::get_server_connect_timeout_in_milliseconds()),
            ms(git2::opts::get_server_timeout_in_milliseconds()),
        )
    }
}

/// Probes after 60 s idle, every 10 s, 3 of them: libgit2's values.
fn keepalive(socket: &TcpStream) {
    let fd = socket.as_raw_fd();
    for (level, name, value) in [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 60),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 10),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3),
    ] {
        set_option(fd, level, name, value);
    }
}

fn set_option(fd: libc::c_int, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    // SAFETY: `fd` is an open socket and `value` an int that outlives the
    // call; a failure only leaves the option as it was.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// One connection: the request line goes first, with whatever is written
/// or read first.
struct Connection {
    socket: TcpStream,
    request: Option<Vec<u8>>,
}

impl Connection {
    fn send_request(&mut self) -> io::Result<()> {
        if let Some(request) = self.request.take() {
            self.socket
                .write_all(&request)
                .map_err(timed_out("write to"))?;
        }
        Ok(())
    }
}

impl Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.send_request()?;
        // Not a lasting setting: Linux may go back to delaying after any
        // read, so it is asked for before each.
        set_option(
            self.socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            1,
        );
        self.socket.read(buf).map_err(timed_out("read from"))
    }
}

impl Write for Connection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send_request()?;
        self.socket.write(buf).map_err(timed_out("write to"))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A socket timeout in libgit2's words ("timed out"), which
/// `Session::classify` reads as the operation's timeout.
fn timed_out(what: &'static str) -> impl Fn(io::Error) -> io::Error {
    move |e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("could not {what} socket: timed out"),
        ),
        _ => e,
    }
}

fn net_error(message: &str) -> Error {
    Error::new(ErrorCode::GenericError, ErrorClass::Net, message)
}

fn os_error(e: io::Error) -> Error {
    Error::new(ErrorCode::GenericError, ErrorClass::Os, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_become_libgit2s_request_lines() {
        let target = Target::parse("git://127.0.0.1:49203/config").unwrap();
        assert_eq!(
            target,
            Target {
                host: "127.0.0.1".into(),
                port: 49203,
                path: "/config".into()
            }
        );
        assert_eq!(
            target.request("git-upload-pack").unwrap(),
            b"002bgit-upload-pack /config\0host=127.0.0.1\0"
        );
        let home = Target::parse("GIT://example.com/~ops/cfg.git").unwrap();
        assert_eq!((home.port, home.path.as_str()), (9418, "~ops/cfg.git"));
        let v6 = Target::parse("git://[::1]:9000/a/b").unwrap();
        assert_eq!(
            (v6.host.as_str(), v6.port, v6.path.as_str()),
            ("::1", 9000, "/a/b")
        );
        for bad in ["git://host", "http://host/x", "git:///x", "gi"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        let long = Target::parse(&format!("git://h/{}", "x".repeat(MAX_PKT))).unwrap();
        assert!(long.request("git-upload-pack").is_err());
    }
}
