//! Just enough RESP (the Redis protocol) over a std `UnixStream` to check a server, with no
//! redis crate: commands go out as arrays of bulk strings, replies are parsed into [`Resp`].

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// A parsed reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

impl Resp {
    /// The text of a simple or bulk string reply.
    pub fn as_text(&self) -> Option<String> {
        match self {
            Resp::Simple(s) => Some(s.clone()),
            Resp::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

/// One connection to a Redis server's unix socket.
pub struct RespConnection {
    reader: BufReader<UnixStream>,
}

impl RespConnection {
    /// Connects with 10 s read/write timeouts, so a frozen server fails a test instead of hanging it.
    pub fn connect(path: &Path) -> io::Result<RespConnection> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        Ok(RespConnection {
            reader: BufReader::new(stream),
        })
    }

    /// Sends one command and reads its reply.
    pub fn call(&mut self, args: &[&str]) -> io::Result<Resp> {
        let mut frame = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            frame.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
        }
        self.reader.get_mut().write_all(&frame)?;
        self.read_reply()
    }

    fn read_reply(&mut self) -> io::Result<Resp> {
        let line = self.read_line()?;
        let (kind, rest) = line.split_at(1.min(line.len()));
        match kind {
            "+" => Ok(Resp::Simple(rest.to_string())),
            "-" => Ok(Resp::Error(rest.to_string())),
            ":" => Ok(Resp::Integer(parse_len(rest)?)),
            "$" => match usize::try_from(parse_len(rest)?) {
                Err(_) => Ok(Resp::Bulk(None)),
                Ok(len) => {
                    let mut data = vec![0; len + 2]; // the payload and its CRLF
                    self.reader.read_exact(&mut data)?;
                    data.truncate(len);
                    Ok(Resp::Bulk(Some(data)))
                }
            },
            "*" => match usize::try_from(parse_len(rest)?) {
                Err(_) => Ok(Resp::Array(None)),
                Ok(n) => Ok(Resp::Array(Some(
                    (0..n)
                        .map(|_| self.read_reply())
                        .collect::<io::Result<_>>()?,
                ))),
            },
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad RESP line {line:?}"),
            )),
        }
    }

    fn read_line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }
}

fn parse_len(text: &str) -> io::Result<i64> {
    text.parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad RESP number {text:?}"),
        )
    })
}
