//! Lines from a child process, each bounded in size: a line over the limit is skipped (and
//! reported), never buffered whole, so a runaway child cannot exhaust the worker's memory.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// What the next line was.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line without its `\n` (a last line without one counts too).
    Text(Vec<u8>),
    /// A line longer than the limit, skipped; `bytes` is its length.
    TooLong { bytes: usize },
    /// The stream ended.
    Eof,
}

/// Reads lines of at most `max` bytes (the newline included). Cancel-safe: a partly read line
/// is kept in the reader, so `next` can sit in a `select!`.
pub struct BoundedLines<R> {
    inner: R,
    max: usize,
    buf: Vec<u8>,
    /// Bytes of the current line so far, kept or not.
    len: usize,
}

impl<R: AsyncBufRead + Unpin> BoundedLines<R> {
    pub fn new(inner: R, max: usize) -> Self {
        BoundedLines {
            inner,
            max,
            buf: Vec::new(),
            len: 0,
        }
    }

    pub async fn next(&mut self) -> std::io::Result<Line> {
        loop {
            let chunk = self.inner.fill_buf().await?;
            if chunk.is_empty() {
                return Ok(if self.len == 0 {
                    Line::Eof
                } else {
                    self.take()
                });
            }
            let (part, end) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (&chunk[..i], Some(i + 1)),
                None => (chunk, None),
            };
            self.len += part.len() + usize::from(end.is_some());
            if self.len <= self.max {
                self.buf.extend_from_slice(part);
            } else {
                self.buf = Vec::new();
            }
            let used = end.unwrap_or(chunk.len());
            self.inner.consume(used);
            if end.is_some() {
                return Ok(self.take());
            }
        }
    }

    fn take(&mut self) -> Line {
        let len = std::mem::take(&mut self.len);
        let buf = std::mem::take(&mut self.buf);
        if len > self.max {
            Line::TooLong { bytes: len }
        } else {
            Line::Text(buf)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn all(input: &[u8], max: usize, read_size: usize) -> Vec<Line> {
        // A small buffer, so lines arrive in pieces as from a pipe.
        let reader = tokio::io::BufReader::with_capacity(read_size, input);
        let mut lines = BoundedLines::new(reader, max);
        let mut out = Vec::new();
        loop {
            match lines.next().await.unwrap() {
                Line::Eof => return out,
                l => out.push(l),
            }
        }
    }

    #[tokio::test]
    async fn lines_are_split_and_long_ones_skipped_whole() {
        let text = |s: &str| Line::Text(s.as_bytes().to_vec());
        for read_size in [1, 3, 64] {
            assert_eq!(
                all(b"a\nbb\n\nlast", 10, read_size).await,
                vec![text("a"), text("bb"), text(""), text("last")]
            );
            assert_eq!(
                all(b"short\n0123456789abcdef\nafter\n", 10, read_size).await,
                vec![text("short"), Line::TooLong { bytes: 17 }, text("after")],
                "read size {read_size}"
            );
            // The limit counts the newline: 9 bytes and a newline fit in 10.
            assert_eq!(
                all(b"123456789\n1234567890\n", 10, read_size).await,
                vec![text("123456789"), Line::TooLong { bytes: 11 }]
            );
            assert_eq!(all(b"", 10, read_size).await, vec![]);
        }
    }
}
