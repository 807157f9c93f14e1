//! A loopback port a test server keeps for its whole life, even while it is
//! "down".
//!
//! Closing a listener to simulate an outage frees its port, and the port is
//! usually in the ephemeral range: the client under test, retrying against
//! the dead port, can be handed that very port as its own source port (Linux
//! then connects the socket to itself), and the server cannot come back. A
//! socket bound with SO_REUSEPORT but never listening holds the port: connects
//! are still refused while no listener exists, the kernel never picks the port
//! for an outgoing connection, and a new listener (also SO_REUSEPORT) binds
//! beside it at once.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

pub struct ReservedPort {
    _holder: Socket,
    port: u16,
}

impl ReservedPort {
    /// Reserves a free loopback port.
    pub fn new() -> ReservedPort {
        let holder = socket(0, false).unwrap_or_else(|err| panic!("reserve a port: {err}"));
        let port = holder
            .local_addr()
            .ok()
            .and_then(|addr| addr.as_socket())
            .map(|addr| addr.port())
            .expect("reserved port");
        ReservedPort {
            _holder: holder,
            port,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// A listener on the reserved port (blocking; callers set what they
    /// need). Retries briefly: the previous listener may still be closing.
    pub fn listen(&self) -> TcpListener {
        let start = Instant::now();
        loop {
            match socket(self.port, true).and_then(|socket| {
                socket.listen(128)?;
                Ok(TcpListener::from(socket))
            }) {
                Ok(listener) => return listener,
                Err(err) if start.elapsed() > Duration::from_secs(5) => {
                    panic!("cannot listen on reserved port {}: {err}", self.port)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// The holder has SO_REUSEPORT only, so the usual servers (SO_REUSEADDR)
/// conflict with it; listeners add SO_REUSEADDR to come back over their
/// predecessors' TIME_WAIT connections.
fn socket(port: u16, listener: bool) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(listener)?;
    socket.set_reuse_port(true)?;
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], port)).into())?;
    Ok(socket)
}

#[test]
fn a_reserved_port_refuses_while_down_and_listens_again_at_once() {
    use std::net::TcpStream;
    let port = ReservedPort::new();
    let refused = || TcpStream::connect_timeout(&port.addr(), Duration::from_secs(1)).is_err();
    assert!(refused(), "no listener yet, yet a connect succeeded");
    for _ in 0..3 {
        let listener = port.listen();
        assert!(!refused(), "listener on {} not reachable", port.addr());
        drop(listener);
        assert!(refused(), "closed listener still reachable");
    }
    // A plain bind, as a server started by another test would do, fails.
    assert!(std::net::TcpListener::bind(port.addr()).is_err());
}
