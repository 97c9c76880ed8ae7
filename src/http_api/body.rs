//! A request body read as it arrives, inflated as it comes when it is
//! compressed (`Content-Encoding: gzip` or `deflate`), and refused with 413
//! the moment it would pass its bound, counted in inflated bytes: a body that
//! inflates a thousandfold (a "gzip bomb") costs the bound and no more.
//! Handlers authorize from the headers first and only then read the body.

use std::io::Write;

use actix_web::http::header;
use actix_web::{HttpRequest, web};
use flate2::write::{GzDecoder, ZlibDecoder};
use futures_util::StreamExt;

use super::ApiError;
use crate::protocol::ErrorCode;

/// Reads the whole body of `req`, inflated, refusing it past `limit` bytes
/// (compressed or inflated, whichever passes first).
pub async fn read_bounded(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let mut sink = Inflater::new(encoding_of(req)?, limit);
    let mut received = 0usize;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                ErrorCode::BadRequest,
                format!("the body could not be read: {e}"),
            )
        })?;
        received = received.saturating_add(chunk.len());
        if received > limit {
            return Err(too_large(limit));
        }
        sink.write(&chunk)?;
    }
    sink.finish()
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("the body is limited to {limit} bytes (inflated)"),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    /// HTTP's `deflate` is the zlib format.
    Deflate,
}

fn encoding_of(req: &HttpRequest) -> Result<Encoding, ApiError> {
    let Some(value) = req.headers().get(header::CONTENT_ENCODING) else {
        return Ok(Encoding::Identity);
    };
    let value = value
        .to_str()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match value.as_str() {
        "" | "identity" => Ok(Encoding::Identity),
        "gzip" | "x-gzip" => Ok(Encoding::Gzip),
        "deflate" => Ok(Encoding::Deflate),
        _ => Err(ApiError::new(
            ErrorCode::UnsupportedEncoding,
            "Content-Encoding must be gzip, deflate or none",
        )),
    }
}

/// Where the body goes: a buffer that refuses to grow past its limit, fed
/// directly or through a decoder. The decoders inflate into their own small
/// buffer (32 KiB) and hand it on, so the buffer's refusal stops the
/// inflation where it is.
enum Inflater {
    Identity(Bounded),
    Gzip(GzDecoder<Bounded>),
    Deflate(ZlibDecoder<Bounded>),
}

impl Inflater {
    fn new(encoding: Encoding, limit: usize) -> Self {
        let sink = Bounded {
            bytes: Vec::new(),
            limit,
            overflowed: false,
        };
        match encoding {
            Encoding::Identity => Inflater::Identity(sink),
            Encoding::Gzip => Inflater::Gzip(GzDecoder::new(sink)),
            Encoding::Deflate => Inflater::Deflate(ZlibDecoder::new(sink)),
        }
    }

    fn write(&mut self, chunk: &[u8]) -> Result<(), ApiError> {
        let written = match self {
            Inflater::Identity(sink) => sink.write_all(chunk),
            Inflater::Gzip(decoder) => decoder.write_all(chunk),
            Inflater::Deflate(decoder) => decoder.write_all(chunk),
        };
        written.map_err(|e| self.error(e))
    }

    fn finish(mut self) -> Result<Vec<u8>, ApiError> {
        let flushed = match &mut self {
            Inflater::Identity(_) => Ok(()),
            Inflater::Gzip(decoder) => decoder.try_finish(),
            Inflater::Deflate(decoder) => decoder.try_finish(),
        };
        flushed.map_err(|e| self.error(e))?;
        let sink = match self {
            Inflater::Identity(sink) => sink,
            Inflater::Gzip(decoder) => decoder.finish().map_err(corrupt)?,
            Inflater::Deflate(decoder) => decoder.finish().map_err(corrupt)?,
        };
        Ok(sink.bytes)
    }

    fn sink(&self) -> &Bounded {
        match self {
            Inflater::Identity(sink) => sink,
            Inflater::Gzip(decoder) => decoder.get_ref(),
            Inflater::Deflate(decoder) => decoder.get_ref(),
        }
    }

    fn error(&self, e: std::io::Error) -> ApiError {
        if self.sink().overflowed {
            too_large(self.sink().limit)
        } else {
            corrupt(e)
        }
    }
}

fn corrupt(e: std::io::Error) -> ApiError {
    ApiError::new(
        ErrorCode::BadJson,
        format!("the body does not inflate as its Content-Encoding says: {e}"),
    )
}

/// A buffer that takes at most `limit` bytes and fails the write that would pass it.
struct Bounded {
    bytes: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len().saturating_add(buf.len()) > self.limit {
            self.overflowed = true;
            return Err(std::io::Error::other("the body is over its limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn inflate(encoding: Encoding, body: &[u8], limit: usize) -> Result<Vec<u8>, ErrorCode> {
        let mut sink = Inflater::new(encoding, limit);
        for chunk in body.chunks(4096) {
            sink.write(chunk).map_err(|e| e.code)?;
        }
        sink.finish().map_err(|e| e.code)
    }

    #[test]
    fn a_body_within_its_bound_inflates_whole() {
        let json = br#"{"items":[]}"#.repeat(100);
        assert_eq!(
            inflate(Encoding::Gzip, &gzip(&json), json.len()).unwrap(),
            json
        );
        assert_eq!(
            inflate(Encoding::Identity, &json, json.len()).unwrap(),
            json
        );
    }

    #[test]
    fn a_bomb_stops_at_the_bound_while_inflating() {
        let bomb = gzip(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 128 << 10, "{}", bomb.len());
        let mut sink = Inflater::new(Encoding::Gzip, 256 << 10);
        let mut refused = None;
        for chunk in bomb.chunks(4096) {
            if let Err(e) = sink.write(chunk) {
                refused = Some(e.code);
                break;
            }
        }
        assert_eq!(refused, Some(ErrorCode::PayloadTooLarge));
        assert!(sink.sink().bytes.len() <= 256 << 10);
    }

    #[test]
    fn a_body_that_does_not_inflate_is_bad() {
        let mut truncated = gzip(b"{\"items\":[]}");
        truncated.truncate(truncated.len() - 6);
        assert_eq!(
            inflate(Encoding::Gzip, b"not gzip at all", 1024),
            Err(ErrorCode::BadJson)
        );
        assert_eq!(
            inflate(Encoding::Gzip, &truncated, 1024),
            Err(ErrorCode::BadJson)
        );
    }
}
