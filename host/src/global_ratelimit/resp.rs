//! The two Redis commands envoyproxy/ratelimit's fixed window sends, `INCRBY` and `EXPIRE`,
//! pipelined over RESP (Redis's wire protocol: <https://redis.io/docs/latest/develop/reference/protocol-spec/>),
//! on connections kept for reuse.
//!
//! Why not the `redis` crate: with tokio and its connection manager it adds 36 crates (`url`,
//! `idna` and ICU among them) for one pipeline whose replies are all integers. A request is
//! written as arrays of bulk strings (length-prefixed, so any header value is safe in a key);
//! a reply is read as an integer (`:`) or an error (`-`); anything else is a protocol error.
//! A connection that failed, or whose exchange was abandoned at the deadline, is dropped, so
//! a kept one never holds a half-read reply.

use std::sync::Mutex;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufStream};
use tokio::net::TcpStream;

/// Connections kept for reuse; more are opened under concurrency and closed past this.
const KEPT: usize = 64;

/// Connections to one Redis server.
pub(super) struct Redis {
    address: String,
    idle: Mutex<Vec<BufStream<TcpStream>>>,
}

impl Redis {
    pub(super) fn new(address: &str) -> Self {
        Self {
            address: address.to_owned(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// For each key, `INCRBY key 1` then `EXPIRE key seconds`, in one round trip; the counts
    /// after the increments.
    pub(super) async fn incr_and_expire(&self, keys: &[(String, u64)]) -> Result<Vec<u64>, String> {
        let taken = self.idle.lock().map(|mut idle| idle.pop()).ok().flatten();
        let mut connection = match taken {
            Some(connection) => connection,
            None => BufStream::new(
                TcpStream::connect(&self.address)
                    .await
                    .map_err(|e| format!("connect: {e}"))?,
            ),
        };
        let mut request = Vec::new();
        for (key, seconds) in keys {
            command(&mut request, &[b"INCRBY", key.as_bytes(), b"1"]);
            command(
                &mut request,
                &[b"EXPIRE", key.as_bytes(), seconds.to_string().as_bytes()],
            );
        }
        connection
            .write_all(&request)
            .await
            .map_err(|e| format!("write: {e}"))?;
        connection
            .flush()
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut counts = Vec::with_capacity(keys.len());
        for _ in keys {
            counts.push(integer(&mut connection).await?);
            // EXPIRE answers 1 (set) or 0 (no such key); either is fine once INCRBY made it.
            integer(&mut connection).await?;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < KEPT
        {
            idle.push(connection);
        }
        Ok(counts)
    }
}

/// Appends one command as a RESP array of bulk strings.
fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Reads one reply that must be a non-negative integer.
async fn integer(connection: &mut BufStream<TcpStream>) -> Result<u64, String> {
    let mut line = Vec::new();
    connection
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| format!("read: {e}"))?;
    parse_integer(&line)
}

fn parse_integer(line: &[u8]) -> Result<u64, String> {
    let text = line
        .strip_suffix(b"\r\n")
        .ok_or_else(|| "connection closed mid-reply".to_owned())?;
    match text.split_first() {
        Some((b':', digits)) => std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| format!("not a count: {}", String::from_utf8_lossy(text))),
        Some((b'-', message)) => Err(format!("error reply: {}", String::from_utf8_lossy(message))),
        _ => Err(format!(
            "unexpected reply: {}",
            String::from_utf8_lossy(text)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        command(&mut out, &[b"INCRBY", b"d_k_v_60", b"1"]);
        assert_eq!(out, b"*3\r\n$6\r\nINCRBY\r\n$8\r\nd_k_v_60\r\n$1\r\n1\r\n");
    }

    #[test]
    fn replies_are_integers_or_errors() {
        assert_eq!(parse_integer(b":42\r\n"), Ok(42));
        assert_eq!(
            parse_integer(
                b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
            ),
            Err(
                "error reply: WRONGTYPE Operation against a key holding the wrong kind of value"
                    .to_owned()
            )
        );
        assert!(parse_integer(b"+OK\r\n").is_err());
        assert!(parse_integer(b":-1\r\n").is_err());
        assert_eq!(
            parse_integer(b":4"),
            Err("connection closed mid-reply".to_owned())
        );
    }
}
