//! A gob stream from a netrpc plugin: any bytes decode to values or a typed error; every
//! decoded value encodes again, and that encoding decodes to the same bytes once more.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth_subprocess::netrpc::gob::{Decoder, Encoder, Message, Value};

fn decode_stream(mut data: &[u8]) -> Vec<Value> {
    let mut decoder = Decoder::new();
    let mut values = Vec::new();
    while let Ok(Some((header, length))) = Decoder::frame(data) {
        let Some(body) = data.get(header..header + length) else {
            break;
        };
        match decoder.decode(body) {
            Ok(Message::Value(value)) => values.push(value),
            Ok(Message::Type(_)) => {}
            Err(_) => {}
        }
        data = &data[header + length..];
    }
    values
}

fuzz_target!(|data: &[u8]| {
    for value in decode_stream(data) {
        let mut first = Vec::new();
        if Encoder::new().encode(&value, &mut first).is_err() {
            continue;
        }
        let again = decode_stream(&first);
        assert_eq!(again.len(), 1, "a re-encoded value decodes to one value");
        let mut second = Vec::new();
        Encoder::new()
            .encode(&again[0], &mut second)
            .expect("a decoded re-encoding encodes");
        assert_eq!(first, second, "encoding is stable across a round trip");
    }
});
