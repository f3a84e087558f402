//! The link's wire format, and what a partner's frame may cost this node
//! before any of it is believed.
//!
//! Owns the per-frame limits and [`LinkCodec`], the codec the `Federation`
//! service is generated with (`build.rs`). A frame is at most
//! [`MAX_FRAME_BYTES`] (tonic refuses a longer one before buffering it);
//! within that, its repeated fields are counted on the encoded bytes
//! before anything is allocated for them, so 8 MiB of empty envelopes
//! cannot become gigabytes of decoded structs. Must never decode a frame
//! whose counts it has not checked. Uses only `proto`.

use std::sync::Arc;

use prost::Message as _;
use prost::bytes::Buf;
use prost::encoding::{WireType, decode_key, decode_varint};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::proto::LinkFrame;

/// Largest frame a link accepts, in bytes.
pub const MAX_FRAME_BYTES: usize = 8 << 20;
/// Most envelopes in one frame. Senders put at most 512 in one.
pub const MAX_FRAME_ENVELOPES: usize = 1024;
/// Most channel vectors in one hello or progress frame: a hello lists
/// every channel the two nodes share.
pub const MAX_FRAME_CHANNELS: usize = 10_000;
/// Most (origin, seq) entries over all channel vectors of one frame.
pub const MAX_FRAME_ENTRIES: usize = 131_072;
/// Most refusals in one frame: a node refuses at most a batch's envelopes
/// at once, and sends at most [`super::link`]'s own cap of them.
pub const MAX_FRAME_REFUSALS: usize = 1024;

/// Why a partner's frame was refused. Each ends the link with the status
/// [`FrameError::status`] gives, and is audited.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame is over the link's limit of {MAX_FRAME_BYTES} bytes (MAX_FRAME_BYTES)")]
    TooLarge,
    #[error("frame holds more than {limit} {what} (the link's limit {name})")]
    TooMany {
        what: &'static str,
        name: &'static str,
        limit: usize,
    },
    #[error("frame is not a valid samband.v1.LinkFrame: {0}")]
    Invalid(String),
}

impl FrameError {
    /// The gRPC status the link ends with: RESOURCE_EXHAUSTED for a limit,
    /// INVALID_ARGUMENT for bytes that are not a frame.
    pub fn status(&self) -> Status {
        match self {
            FrameError::TooLarge | FrameError::TooMany { .. } => {
                Status::resource_exhausted(self.to_string())
            }
            FrameError::Invalid(_) => Status::invalid_argument(self.to_string()),
        }
    }

    /// The refusal behind a status that a link's incoming stream ended
    /// with, if it was one: this codec's own (its source), or tonic's
    /// refusal of a frame over [`MAX_FRAME_BYTES`] (OUT_OF_RANGE, which no
    /// samband node sends).
    pub fn of(status: &Status) -> Option<FrameError> {
        let own = std::error::Error::source(status).and_then(|e| e.downcast_ref::<FrameError>());
        match own {
            Some(e) => Some(e.clone()),
            None if status.code() == tonic::Code::OutOfRange => Some(FrameError::TooLarge),
            None => None,
        }
    }
}

/// Counts of the repeated fields of one frame, summed over every occurrence
/// (protobuf merges a repeated oneof member, so each occurrence costs).
#[derive(Debug, Default)]
struct Counts {
    envelopes: usize,
    channels: usize,
    entries: usize,
    refusals: usize,
}

impl Counts {
    fn check(&self) -> Result<(), FrameError> {
        let over = |what, name, limit| Err(FrameError::TooMany { what, name, limit });
        if self.envelopes > MAX_FRAME_ENVELOPES {
            return over("envelopes", "MAX_FRAME_ENVELOPES", MAX_FRAME_ENVELOPES);
        }
        if self.channels > MAX_FRAME_CHANNELS {
            return over("channel vectors", "MAX_FRAME_CHANNELS", MAX_FRAME_CHANNELS);
        }
        if self.entries > MAX_FRAME_ENTRIES {
            return over("vector entries", "MAX_FRAME_ENTRIES", MAX_FRAME_ENTRIES);
        }
        if self.refusals > MAX_FRAME_REFUSALS {
            return over("refusals", "MAX_FRAME_REFUSALS", MAX_FRAME_REFUSALS);
        }
        Ok(())
    }
}

/// Field numbers of `proto/samband/v1/federation.proto`.
mod field {
    pub(super) const HELLO: u32 = 1;
    pub(super) const ENVELOPES: u32 = 2;
    pub(super) const PROGRESS: u32 = 3;
    pub(super) const REFUSALS: u32 = 5;
    pub(super) const AHEAD: u32 = 6;
    /// `VersionVectors.channels`, `EnvelopeBatch.envelopes`, `EnvelopeRefusals.refusals`.
    pub(super) const ITEMS: u32 = 1;
    /// `ChannelVector.entries`.
    pub(super) const ENTRIES: u32 = 2;
    /// `EnvelopeBatch.retractions`.
    pub(super) const PROOFS: u32 = 2;
}

/// Calls `each(field number, body)` for every length-delimited field of the
/// message in `bytes`, skipping the others.
fn each_len_field(
    mut bytes: &[u8],
    mut each: impl FnMut(u32, &[u8]) -> Result<(), FrameError>,
) -> Result<(), FrameError> {
    let invalid = |e: prost::DecodeError| FrameError::Invalid(e.to_string());
    while bytes.has_remaining() {
        let (tag, wire_type) = decode_key(&mut bytes).map_err(invalid)?;
        match wire_type {
            WireType::Varint => {
                decode_varint(&mut bytes).map_err(invalid)?;
            }
            WireType::SixtyFourBit | WireType::ThirtyTwoBit => {
                let n = if wire_type == WireType::SixtyFourBit {
                    8
                } else {
                    4
                };
                if bytes.len() < n {
                    return Err(FrameError::Invalid("a field runs past the frame".into()));
                }
                bytes.advance(n);
            }
            WireType::LengthDelimited => {
                let len = decode_varint(&mut bytes).map_err(invalid)?;
                let len = usize::try_from(len)
                    .ok()
                    .filter(|&len| len <= bytes.len())
                    .ok_or_else(|| FrameError::Invalid("a field runs past the frame".into()))?;
                each(tag, &bytes[..len])?;
                bytes.advance(len);
            }
            WireType::StartGroup | WireType::EndGroup => {
                return Err(FrameError::Invalid(
                    "groups are not used by this protocol".into(),
                ));
            }
        }
    }
    Ok(())
}

/// Counts the repeated fields of an encoded `LinkFrame` without decoding it.
fn count(frame: &[u8]) -> Result<Counts, FrameError> {
    let mut counts = Counts::default();
    each_len_field(frame, |tag, body| {
        match tag {
            // Envelopes and the retractions that prove withheld copies count alike.
            field::ENVELOPES | field::AHEAD => each_len_field(body, |tag, _| {
                counts.envelopes += usize::from(tag == field::ITEMS || tag == field::PROOFS);
                counts.check()
            })?,
            field::REFUSALS => each_len_field(body, |tag, _| {
                counts.refusals += usize::from(tag == field::ITEMS);
                counts.check()
            })?,
            field::HELLO | field::PROGRESS => each_len_field(body, |tag, vector| {
                if tag != field::ITEMS {
                    return Ok(());
                }
                counts.channels += 1;
                counts.check()?;
                each_len_field(vector, |tag, _| {
                    counts.entries += usize::from(tag == field::ENTRIES);
                    counts.check()
                })
            })?,
            _ => {}
        }
        Ok(())
    })?;
    Ok(counts)
}

/// Decodes a partner's frame, after checking its size and counts.
pub fn decode_frame(bytes: &[u8]) -> Result<LinkFrame, FrameError> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge);
    }
    count(bytes)?;
    LinkFrame::decode(bytes).map_err(|e| FrameError::Invalid(e.to_string()))
}

/// The `Federation` service's codec: prost's encoding, and a decoder that
/// runs [`decode_frame`]. A refusal is a status whose source is the
/// [`FrameError`], so the link can tell it from one its partner sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkCodec;

/// Encodes [`LinkFrame`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkEncoder;

/// Decodes [`LinkFrame`]s within the limits.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkDecoder;

// === impl LinkCodec ===

impl Codec for LinkCodec {
    type Encode = LinkFrame;
    type Decode = LinkFrame;
    type Encoder = LinkEncoder;
    type Decoder = LinkDecoder;

    fn encoder(&mut self) -> LinkEncoder {
        LinkEncoder
    }

    fn decoder(&mut self) -> LinkDecoder {
        LinkDecoder
    }
}

impl Encoder for LinkEncoder {
    type Item = LinkFrame;
    type Error = Status;

    fn encode(&mut self, item: LinkFrame, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // EncodeBuf grows as needed, so encoding cannot run out of room.
        item.encode(buf)
            .map_err(|e| Status::internal(format!("encoding a link frame: {e}")))?;
        Ok(())
    }
}

impl Decoder for LinkDecoder {
    type Item = LinkFrame;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<LinkFrame>, Status> {
        let len = buf.remaining();
        // tonic hands over one whole message, normally as one chunk.
        let decoded = if buf.chunk().len() == len {
            let decoded = decode_frame(buf.chunk());
            buf.advance(len);
            decoded
        } else {
            decode_frame(&buf.copy_to_bytes(len))
        };
        decoded.map(Some).map_err(|e| {
            let mut status = e.status();
            status.set_source(Arc::new(e));
            status
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{
        ChannelVector, Envelope, EnvelopeBatch, VectorEntry, VersionVectors, link_frame::Frame,
    };

    fn encoded(frame: Frame) -> Vec<u8> {
        LinkFrame { frame: Some(frame) }.encode_to_vec()
    }

    #[test]
    fn a_frame_within_the_limits_decodes_as_prost_would() {
        let frame = Frame::Hello(VersionVectors {
            channels: vec![ChannelVector {
                channel: "a.example/x".into(),
                entries: vec![VectorEntry {
                    origin: "a.example".into(),
                    seq: 7,
                }],
            }],
        });
        let bytes = encoded(frame.clone());
        assert_eq!(decode_frame(&bytes).unwrap().frame, Some(frame));
        let batch = Frame::Envelopes(EnvelopeBatch {
            envelopes: vec![Envelope::default(); MAX_FRAME_ENVELOPES],
            ..Default::default()
        });
        assert!(decode_frame(&encoded(batch)).is_ok());
    }

    #[test]
    fn counts_are_refused_before_decoding_and_summed_over_repeats() {
        let over = encoded(Frame::Envelopes(EnvelopeBatch {
            envelopes: vec![Envelope::default(); MAX_FRAME_ENVELOPES + 1],
            ..Default::default()
        }));
        let refused = decode_frame(&over).unwrap_err();
        assert!(matches!(
            refused,
            FrameError::TooMany {
                what: "envelopes",
                ..
            }
        ));
        assert_eq!(refused.status().code(), tonic::Code::ResourceExhausted);
        // Two halves of the same oneof member merge when decoded: both count.
        let half = encoded(Frame::Envelopes(EnvelopeBatch {
            envelopes: vec![Envelope::default(); MAX_FRAME_ENVELOPES / 2 + 1],
            ..Default::default()
        }));
        assert!(decode_frame(&[half.clone(), half].concat()).is_err());
        // Retractions sent as proofs count as envelopes, in either frame.
        for frame in [Frame::Envelopes, Frame::Ahead] {
            let proofs = encoded(frame(EnvelopeBatch {
                envelopes: vec![Envelope::default(); MAX_FRAME_ENVELOPES / 2],
                retractions: vec![Envelope::default(); MAX_FRAME_ENVELOPES / 2 + 1],
            }));
            assert!(decode_frame(&proofs).is_err());
        }

        let refusals = |n| {
            encoded(Frame::Refusals(crate::proto::EnvelopeRefusals {
                refusals: vec![crate::proto::EnvelopeRefusal::default(); n],
            }))
        };
        assert!(decode_frame(&refusals(MAX_FRAME_REFUSALS)).is_ok());
        assert!(matches!(
            decode_frame(&refusals(MAX_FRAME_REFUSALS + 1)),
            Err(FrameError::TooMany {
                what: "refusals",
                ..
            })
        ));

        let channels = |n, entries| {
            encoded(Frame::Progress(VersionVectors {
                channels: vec![
                    ChannelVector {
                        channel: String::new(),
                        entries: vec![VectorEntry::default(); entries],
                    };
                    n
                ],
            }))
        };
        assert!(decode_frame(&channels(MAX_FRAME_CHANNELS, 0)).is_ok());
        assert!(matches!(
            decode_frame(&channels(MAX_FRAME_CHANNELS + 1, 0)),
            Err(FrameError::TooMany {
                what: "channel vectors",
                ..
            })
        ));
        assert!(matches!(
            decode_frame(&channels(2, MAX_FRAME_ENTRIES / 2 + 1)),
            Err(FrameError::TooMany {
                what: "vector entries",
                ..
            })
        ));
    }

    #[test]
    fn bytes_that_are_not_a_frame_are_invalid_argument() {
        // Field 1 (hello) claiming 100 bytes that are not there.
        for bytes in [&[0x0a, 100][..], &[0x0b][..], &[0x80][..]] {
            let e = decode_frame(bytes).unwrap_err();
            assert!(matches!(e, FrameError::Invalid(_)), "{bytes:?}: {e:?}");
            assert_eq!(e.status().code(), tonic::Code::InvalidArgument);
        }
        // A channel name that is not UTF-8: counts pass, prost refuses.
        let mut frame = encoded(Frame::Hello(VersionVectors {
            channels: vec![ChannelVector {
                channel: "ab".into(),
                entries: vec![],
            }],
        }));
        let at = frame.iter().rposition(|&b| b == b'b').unwrap();
        frame[at] = 0xff;
        assert!(matches!(decode_frame(&frame), Err(FrameError::Invalid(_))));
    }

    #[test]
    fn the_refusal_travels_as_the_status_source() {
        let e = FrameError::Invalid("x".into());
        let mut status = e.status();
        status.set_source(Arc::new(e.clone()));
        assert_eq!(FrameError::of(&status), Some(e));
        assert_eq!(
            FrameError::of(&Status::out_of_range("too long")),
            Some(FrameError::TooLarge)
        );
        assert_eq!(FrameError::of(&Status::cancelled("gone")), None);
        assert_eq!(
            FrameError::of(&Status::invalid_argument("from the partner")),
            None
        );
    }
}
