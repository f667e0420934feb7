//! Connect envelopes as envd and the SDK read them off the wire: the bytes arrive in arbitrary chunks, every
//! complete envelope is taken out, its payload is decoded as the envd messages that travel in envelopes (both
//! codecs), an end-stream envelope's error is parsed. Nothing may panic, the decoder never yields more bytes
//! than it was given, and what it yields re-encodes to exactly the bytes it consumed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use soulbox_protocol::connect::{Codec, EnvelopeDecoder, encode_envelope};
use soulbox_protocol::{filesystem, process};

const MAX_MESSAGE_BYTES: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk_seed, wire)) = data.split_first() else { return };
    // Chunk sizes 1..=64 cover "header split across reads" and "several envelopes in one read".
    let chunk = usize::from(chunk_seed % 64) + 1;
    let mut decoder = EnvelopeDecoder::new(MAX_MESSAGE_BYTES);
    let mut consumed = Vec::new();
    'feed: for piece in wire.chunks(chunk) {
        decoder.push(piece);
        loop {
            match decoder.next_envelope() {
                Ok(Some(envelope)) => {
                    assert!(envelope.payload.len() <= MAX_MESSAGE_BYTES);
                    consumed.extend_from_slice(&encode_envelope(envelope.flags, &envelope.payload));
                    decode_payload(&envelope.payload);
                    if envelope.is_end_stream() {
                        let _ = envelope.end_stream_error();
                    }
                }
                Ok(None) => break,
                // A refused envelope ends the stream, as in envd.
                Err(_) => break 'feed,
            }
        }
    }
    assert!(consumed.len() <= wire.len());
    assert_eq!(&wire[..consumed.len()], &consumed[..], "re-encoded envelopes differ from the bytes consumed");
});

fn decode_payload(payload: &[u8]) {
    for codec in [Codec::Json, Codec::Proto] {
        let _ = codec.decode::<process::StartRequest>(payload);
        let _ = codec.decode::<process::StreamInputRequest>(payload);
        let _ = codec.decode::<process::SendInputRequest>(payload);
        let _ = codec.decode::<filesystem::WatchDirRequest>(payload);
    }
}
