use std::collections::BTreeMap;

use super::*;

fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    Encoder::new().encode(value, &mut out).unwrap();
    out
}

/// Splits a stream into messages and decodes them all, returning the values.
fn decode_all(decoder: &mut Decoder, mut data: &[u8]) -> Result<Vec<Value>, GobError> {
    let mut values = Vec::new();
    while !data.is_empty() {
        let (header, length) = Decoder::frame(data)?.ok_or(GobError::Truncated {
            needed: 1,
            what: "a message length",
        })?;
        let body = data
            .get(header..header + length)
            .ok_or_else(|| GobError::Truncated {
                needed: header + length - data.len(),
                what: "a message",
            })?;
        if let Message::Value(value) = decoder.decode(body)? {
            values.push(value);
        }
        data = &data[header + length..];
    }
    Ok(values)
}

fn round_trip(value: Value) {
    let bytes = encode(&value);
    let decoded = decode_all(&mut Decoder::new(), &bytes).unwrap();
    assert_eq!(decoded, vec![value]);
}

#[test]
fn basic_values_match_gos_bytes() {
    // From the gob rules: a nil interface{} and `true`, each as one message.
    assert_eq!(encode(&Value::Nil), [0x03, 0x10, 0x00, 0x00]);
    assert_eq!(encode(&Value::Bool(true)), [0x03, 0x02, 0x00, 0x01]);
    assert_eq!(
        encode(&Value::Uint(256)),
        [0x05, 0x06, 0x00, 0xFE, 0x01, 0x00]
    );
    assert_eq!(encode(&Value::Int(-1)), [0x03, 0x04, 0x00, 0x01]);
    assert_eq!(
        encode(&Value::String("Hi".into())),
        [0x05, 0x0C, 0x00, 0x02, b'H', b'i']
    );
    // 17.0 is 0x4031000000000000; byte-reversed it is 0x3140, two bytes.
    assert_eq!(
        encode(&Value::Float(17.0)),
        [0x05, 0x08, 0x00, 0xFE, 0x31, 0x40]
    );
}

#[test]
fn basic_values_round_trip() {
    for value in [
        Value::Bool(false),
        Value::Int(i64::MIN),
        Value::Int(i64::MAX),
        Value::Uint(u64::MAX),
        Value::Float(-0.5),
        Value::Complex(1.5, -2.0),
        Value::Bytes(vec![0, 1, 255]),
        Value::String("grüße".into()),
        Value::Nil,
    ] {
        round_trip(value);
    }
}

#[test]
fn composite_values_round_trip() {
    let mut map = BTreeMap::new();
    map.insert("a".to_owned(), 1i64);
    map.insert("b".to_owned(), -2i64);
    round_trip(map.to_gob());
    round_trip(vec!["x".to_owned(), String::new()].to_gob());
    round_trip(Vec::<u64>::new().to_gob());
    round_trip(Value::Array {
        elem: Type::Int,
        items: vec![Value::Int(1), Value::Int(2)],
    });
    round_trip(
        Struct::new("Args")
            .field("Key", "k")
            .field("Value", vec![1u8, 2, 3])
            .field("Tags", vec!["t".to_owned()])
            .field("Ratio", 0.25f64)
            .field("On", true)
            .into(),
    );
    let mut any = BTreeMap::new();
    any.insert("key".to_owned(), Value::String("k".into()));
    any.insert("value".to_owned(), Value::Bytes(b"v".to_vec()));
    let decoded = decode_all(&mut Decoder::new(), &encode(&any.to_gob())).unwrap();
    let back = BTreeMap::<String, Value>::from_gob(decoded[0].clone()).unwrap();
    assert_eq!(
        back["key"],
        Value::Interface {
            name: "string".into(),
            value: Box::new(Value::String("k".into()))
        }
    );
    assert_eq!(String::from_gob(back["key"].clone()).unwrap(), "k");
    assert_eq!(Vec::<u8>::from_gob(back["value"].clone()).unwrap(), b"v");
}

#[test]
fn zero_fields_are_left_out_and_read_back_as_default() {
    let value: Value = Struct::new("Args").field("Key", "").field("N", 7i64).into();
    let decoded = decode_all(&mut Decoder::new(), &encode(&value)).unwrap();
    let mut decoded = Struct::from_gob(decoded[0].clone()).unwrap();
    assert_eq!(decoded.get("Key"), None);
    assert_eq!(decoded.take::<String>("Key").unwrap(), "");
    assert_eq!(decoded.take::<i32>("N").unwrap(), 7);
}

#[test]
fn types_are_defined_once_per_stream() {
    let mut encoder = Encoder::new();
    let value = vec!["a".to_owned()].to_gob();
    let mut first = Vec::new();
    encoder.encode(&value, &mut first).unwrap();
    let mut second = Vec::new();
    encoder.encode(&value, &mut second).unwrap();
    assert!(
        second.len() < first.len(),
        "the second value repeats no definition"
    );
    let mut decoder = Decoder::new();
    first.extend_from_slice(&second);
    assert_eq!(
        decode_all(&mut decoder, &first).unwrap(),
        vec![value.clone(), value]
    );
}

#[test]
fn conversions_say_what_they_expected() {
    let error = String::from_gob(Value::Int(3)).unwrap_err();
    assert_eq!(error.to_string(), "expected a gob string, found int");
    let error = u8::from_gob(Value::Int(300)).unwrap_err();
    assert!(error.to_string().contains("out of range"), "{error}");
    let mut args = Struct::new("Args").field("N", "x");
    let error = args.take::<i64>("N").unwrap_err();
    assert!(error.to_string().contains("field Args.N"), "{error}");
}

#[test]
fn a_value_of_an_undefined_type_names_the_id() {
    // Type id 70 (zig-zag 140 = FF 8C), never defined.
    let error = Decoder::new().decode(&[0xFF, 0x8C, 0x00]).unwrap_err();
    assert_eq!(error, GobError::UnknownType { id: 70 });
    assert_eq!(
        error.to_string(),
        "gob type id 70 was never defined on this stream"
    );
}

#[test]
fn malformed_input_is_an_error_not_a_panic() {
    let good = encode(
        &Struct::new("Args")
            .field("Key", "value")
            .field("N", 1i64)
            .into(),
    );
    // Every truncation and every single-byte corruption of a valid stream decodes or fails
    // cleanly.
    for cut in 0..good.len() {
        let _ = decode_all(&mut Decoder::new(), &good[..cut]);
    }
    for index in 0..good.len() {
        for byte in [0x00, 0x01, 0x7F, 0x80, 0xF8, 0xFF] {
            let mut bad = good.clone();
            bad[index] = byte;
            let _ = decode_all(&mut Decoder::new(), &bad);
        }
    }
    // A slice claiming more elements than bytes.
    let error = decode_all(&mut Decoder::new(), &[0x04, 0x0A, 0x00, 0x7F, 0x00]).unwrap_err();
    assert!(matches!(error, GobError::Truncated { .. }), "{error:?}");
    // A length over the limit.
    let error = Decoder::frame(&[0xFC, 0x7F, 0xFF, 0xFF, 0xFF]).unwrap_err();
    assert!(matches!(error, GobError::TooLarge { .. }), "{error:?}");
    // An integer of nine bytes.
    let error = Decoder::new()
        .decode(&[0xF7, 1, 2, 3, 4, 5, 6, 7, 8, 9])
        .unwrap_err();
    assert!(matches!(error, GobError::Corrupt { .. }), "{error:?}");
}

#[test]
fn deep_nesting_is_refused() {
    let mut value = Value::Int(1);
    for _ in 0..(MAX_DEPTH + 5) {
        value = Value::Interface {
            name: "x".into(),
            value: Box::new(value),
        };
    }
    let mut out = Vec::new();
    let error = Encoder::new().encode(&value, &mut out).unwrap_err();
    assert_eq!(error, GobError::TooDeep { limit: MAX_DEPTH });
}

#[test]
fn redefining_a_type_is_refused() {
    let bytes = encode(&vec!["a".to_owned()].to_gob());
    let (header, length) = Decoder::frame(&bytes).unwrap().unwrap();
    let definition = &bytes[header..header + length];
    let mut decoder = Decoder::new();
    assert_eq!(decoder.decode(definition).unwrap(), Message::Type(64));
    let error = decoder.decode(definition).unwrap_err();
    assert!(
        matches!(error, GobError::BadTypeDefinition { id: 64, .. }),
        "{error:?}"
    );
}

#[test]
fn a_message_of_too_many_values_is_refused() {
    // The definition of []bool (from an empty one), then a value claiming MAX_VALUES + 1
    // elements, all present: every element is one byte on the wire.
    let definition = encode(&Vec::<bool>::new().to_gob());
    let (header, length) = Decoder::frame(&definition).unwrap().unwrap();
    let mut stream = definition[..header + length].to_vec();
    let count = MAX_VALUES + 1;
    let mut body = vec![0xFF, 0x80, 0x00]; // type id 64, singleton delta
    body.push(0xFC);
    body.extend_from_slice(&(count as u32).to_be_bytes());
    body.resize(body.len() + count, 0);
    encode::put_uint(&mut stream, body.len() as u64);
    stream.extend_from_slice(&body);
    let error = decode_all(&mut Decoder::new(), &stream).unwrap_err();
    assert_eq!(error, GobError::TooManyValues { limit: MAX_VALUES });
}

/// Found by the `gob` fuzz target: a struct whose only field is a nil interface decodes with no
/// fields, so re-encoding it defines a smaller struct type. The value must survive that.
#[test]
fn a_struct_of_zero_fields_round_trips_to_the_same_value() {
    let crash = [
        0x0f, 0xff, 0xff, 0xff, 0x03, 0x02, 0x02, 0x02, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x15, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x0a, 0x07, 0x04, 0xff, 0xff, 0x01, 0x13,
        0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x01, 0x05, 0x01, 0x00, 0x01, 0x00, 0x05, 0x08, 0x00,
        0x00, 0x01, 0x0a, 0x07, 0xfe, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x5b, 0x00, 0x01, 0x00,
        0x00, 0xfc,
    ];
    let _ = decode_all(&mut Decoder::new(), &crash);
    let value: Value = Struct::new("").field("", Value::Nil).into();
    let once = decode_all(&mut Decoder::new(), &encode(&value)).unwrap();
    let twice = decode_all(&mut Decoder::new(), &encode(&once[0])).unwrap();
    assert_eq!(once, twice);
    assert_eq!(once[0], Struct::new("").into());
}
