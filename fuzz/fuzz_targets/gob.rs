//! A gob stream from a netrpc plugin: any bytes decode to values or a typed error; every
//! decoded value encodes again and decodes to a value that is stable from then on.
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
        // A decoded struct holds only the fields that were sent, so the first re-encoding may
        // define a smaller type; from then on values must be stable. (Compared as text, so a
        // NaN equals itself.)
        let Some(once) = round_trip(&value) else {
            continue;
        };
        let twice = round_trip(&once).expect("a re-encoded value encodes and decodes again");
        assert_eq!(
            format!("{once:?}"),
            format!("{twice:?}"),
            "values are stable across a round trip"
        );
    }
});

/// Encodes `value` on a fresh stream and decodes it back.
fn round_trip(value: &Value) -> Option<Value> {
    let mut bytes = Vec::new();
    Encoder::new().encode(value, &mut bytes).ok()?;
    let mut again = decode_stream(&bytes);
    assert_eq!(again.len(), 1, "an encoded value decodes to one value");
    again.pop()
}
