//! The gRPC codec of every `hodei.v1` service: prost, with the encode buffer
//! sized once per message.
//!
//! tonic's encode buffer starts every message with a few KiB of capacity (the
//! previous message's bytes are still on their way to the socket, so the
//! buffer cannot be reused), and prost writes into it without reserving first:
//! a 256 KiB log batch then grows the buffer six times, each growth copying
//! everything written so far. [`Codec`] reserves the message's encoded length
//! before encoding, so the data is copied once. Decoding is prost's own
//! (`bytes` fields such as log data are slices of the receive buffer, not
//! copies).
//!
//! The generated stubs use it through `tonic_prost_build`'s `codec_path`
//! (`build.rs`); nothing else names it.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, EncodeBuf, Encoder};
use tonic_prost::{ProstCodec, ProstDecoder};

/// prost encoding with one reservation per message, prost decoding.
#[derive(Debug, Clone)]
pub struct Codec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self {
            _types: PhantomData,
        }
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ReservingEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ReservingEncoder { _type: PhantomData }
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::default())
    }
}

/// Encodes a prost message after reserving its whole encoded length.
#[derive(Debug, Clone)]
pub struct ReservingEncoder<T> {
    _type: PhantomData<T>,
}

impl<T: Message> Encoder for ReservingEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.encoded_len());
        item.encode(buf)
            .map_err(|e| Status::internal(format!("encoding a message: {e}")))
    }
}
