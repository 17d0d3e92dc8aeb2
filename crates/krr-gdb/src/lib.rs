//! krr's GDB remote server: a replayed kernel as a GDB target (docs/gdb.md).
//!
//! One vCPU is one GDB thread. Registers are x86-64's with FS/GS base and the system registers
//! ([`arch`]); memory is read through the guest page tables of the current CR3 and cannot be
//! written (the replay must stay the recorded execution); breakpoints and watchpoints are
//! checked by the replay loop, guest memory is never patched. Reverse execution restores the
//! nearest checkpoint and replays forward ([`timeline`]).

pub mod arch;
pub mod target;
pub mod timeline;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use gdbstub::conn::{Connection, ConnectionExt};
use gdbstub::stub::{DisconnectReason, GdbStub};

pub use target::{ReplayTarget, SessionInfo};
pub use timeline::Timeline;

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
pub enum GdbError {
    #[error("cannot wait for gdb on {addr}")]
    Listen { addr: String, source: std::io::Error },
    #[error("the connection to gdb: {0}")]
    Connection(std::io::Error),
    #[error("gdb remote protocol: {0}")]
    Protocol(String),
    #[error("{0}")]
    Target(String),
}

/// Where to wait for GDB: `HOST:PORT` (TCP) or a path (a Unix socket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Tcp(String),
    Unix(PathBuf),
}

impl Address {
    /// `HOST:PORT` or `:PORT` is TCP; anything with a `/` or without a port is a socket path.
    pub fn parse(s: &str) -> Address {
        match s.rsplit_once(':') {
            Some((host, port)) if !s.contains('/') && port.parse::<u16>().is_ok() => {
                let host = if host.is_empty() { "localhost" } else { host };
                Address::Tcp(format!("{host}:{port}"))
            }
            _ => Address::Unix(PathBuf::from(s)),
        }
    }

    /// What to type after `target remote`.
    pub fn gdb_spec(&self) -> String {
        match self {
            Address::Tcp(a) => a.clone(),
            Address::Unix(p) => p.display().to_string(),
        }
    }
}

/// The connection gdbstub talks through: writes go to the socket, reads come from a thread
/// that reads the socket (so the run loop can look for a Ctrl-C without blocking).
pub struct Conn {
    out: Box<dyn Write + Send>,
    rx: std::sync::mpsc::Receiver<u8>,
    next: Option<u8>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Conn")
    }
}

impl Conn {
    fn new(mut input: impl Read + Send + 'static, out: Box<dyn Write + Send>) -> Conn {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = input.read(&mut buf) {
                if n == 0 || buf[..n].iter().any(|b| tx.send(*b).is_err()) {
                    break;
                }
            }
        });
        Conn { out, rx, next: None }
    }
}

fn closed() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "gdb closed the connection")
}

impl Connection for Conn {
    type Error = std::io::Error;

    fn write(&mut self, byte: u8) -> Result<(), Self::Error> {
        self.out.write_all(&[byte])
    }

    fn write_all(&mut self, buf: &[u8]) -> Result<(), Self::Error> {
        self.out.write_all(buf)
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        self.out.flush()
    }
}

impl ConnectionExt for Conn {
    fn read(&mut self) -> Result<u8, Self::Error> {
        match self.next.take() {
            Some(b) => Ok(b),
            None => self.rx.recv().map_err(|_| closed()),
        }
    }

    fn peek(&mut self) -> Result<Option<u8>, Self::Error> {
        if self.next.is_none() {
            match self.rx.try_recv() {
                Ok(b) => self.next = Some(b),
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return Err(closed()),
            }
        }
        Ok(self.next)
    }
}

/// A bound listener, before GDB connects.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Bind `addr` (a stale Unix socket file is replaced).
    pub fn bind(addr: &Address) -> Result<Listener, GdbError> {
        let err = |source| GdbError::Listen { addr: addr.gdb_spec(), source };
        Ok(match addr {
            Address::Tcp(a) => Listener::Tcp(TcpListener::bind(a).map_err(err)?),
            Address::Unix(p) => {
                if std::fs::symlink_metadata(p).is_ok() {
                    std::fs::remove_file(p).map_err(err)?;
                }
                Listener::Unix(UnixListener::bind(p).map_err(err)?, p.clone())
            }
        })
    }

    /// The address GDB should connect to (the real port when 0 was asked for).
    pub fn address(&self) -> Address {
        match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(a) if a.ip().is_loopback() => Address::Tcp(format!("localhost:{}", a.port())),
                Ok(a) => Address::Tcp(a.to_string()),
                Err(_) => Address::Tcp("?".into()),
            },
            Listener::Unix(_, p) => Address::Unix(p.clone()),
        }
    }

    /// Wait for GDB.
    pub fn accept(self) -> Result<Conn, GdbError> {
        match self {
            Listener::Tcp(l) => {
                let (s, _) = l.accept().map_err(GdbError::Connection)?;
                s.set_nodelay(true).map_err(GdbError::Connection)?;
                let input = s.try_clone().map_err(GdbError::Connection)?;
                Ok(Conn::new(input, Box::new(s)))
            }
            Listener::Unix(l, p) => {
                let (s, _) = l.accept().map_err(GdbError::Connection)?;
                let _ = std::fs::remove_file(p);
                let input = s.try_clone().map_err(GdbError::Connection)?;
                Ok(Conn::new(input, Box::new(s)))
            }
        }
    }
}

/// Serve one GDB session on `conn` until GDB detaches or kills.
pub fn serve(target: &mut ReplayTarget<'_>, conn: Conn) -> Result<DisconnectReason, GdbError> {
    let stub = GdbStub::new(conn);
    stub.run_blocking::<target::EventLoop<'_>>(target).map_err(|e| {
        if e.is_target_error() {
            GdbError::Target(e.into_target_error().map(|t| t.to_string()).unwrap_or_default())
        } else if e.is_connection_error() {
            match e.into_connection_error() {
                Some((e, _)) => GdbError::Connection(e),
                None => GdbError::Protocol("connection".into()),
            }
        } else {
            GdbError::Protocol(e.to_string())
        }
    })
}

/// A gdb script that defines krr's commands as `monitor` wrappers (`krr gdbinit`).
pub const GDBINIT: &str = r#"# krr: commands for a `krr replay --gdb` session (source this file in gdb).
define when
  monitor when
end
document when
Print where the replay is: event index, vCPU, krr_pos, instructions, position.
end

define when-ticks
  monitor when
end

define checkpoint
  monitor checkpoint
end
document checkpoint
Save the replay here; `restart N` comes back.
end

define restart
  monitor restart $arg0
  maintenance flush register-cache
  frame
end
document restart
Go back (or forward) to checkpoint N of `checkpoint`.
end

define krr-goto
  monitor goto $arg0
  maintenance flush register-cache
  frame
end
document krr-goto
Go to the first point where event N of the trace is the next to replay.
end

define krr-info
  monitor info
end
document krr-info
Summary of the trace and of the replay's checkpoints.
end
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(Address::parse("localhost:1234"), Address::Tcp("localhost:1234".into()));
        assert_eq!(Address::parse(":1234"), Address::Tcp("localhost:1234".into()));
        assert_eq!(Address::parse("127.0.0.1:0"), Address::Tcp("127.0.0.1:0".into()));
        assert_eq!(Address::parse("/tmp/krr.sock"), Address::Unix("/tmp/krr.sock".into()));
        assert_eq!(Address::parse("krr.sock"), Address::Unix("krr.sock".into()));
    }
}
