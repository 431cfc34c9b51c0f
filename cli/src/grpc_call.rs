//! `plinth call` on an executable: one unary gRPC method, named `proto.KV/Get` or
//! `/proto.KV/Get`, with a JSON argument built into a dynamic protobuf message from the
//! descriptors the plugin's reflection service sends, and the answer printed as JSON.
//!
//! Argument checking happens before anything is sent: a field of the wrong JSON type is
//! reported with the field's name and protobuf type. Launching is `launch`'s; finding the
//! descriptors is `reflection`'s.

use std::time::Duration;

use prost::Message;
use prost::bytes::Buf;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    SerializeOptions,
};
use serde_json::Value;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::failure::{CALL_FAILED, Failure, Phase, USAGE};
use crate::reflection::{Reflection, Transport};

/// A method named on the command line, split into service and method.
#[derive(Debug, PartialEq, Eq)]
pub struct MethodName {
    /// `proto.KV`
    pub service: String,
    /// `Get`
    pub method: String,
}

impl MethodName {
    /// Parses `proto.KV/Get` or `/proto.KV/Get`.
    pub fn parse(text: &str) -> Result<MethodName, Failure> {
        let trimmed = text.strip_prefix('/').unwrap_or(text);
        match trimmed.split_once('/') {
            Some((service, method))
                if !service.is_empty() && !method.is_empty() && !method.contains('/') =>
            {
                Ok(MethodName {
                    service: service.to_owned(),
                    method: method.to_owned(),
                })
            }
            _ => Err(
                Failure::new(USAGE, format!("{text:?} is not a gRPC method name"))
                    .hint("name it as package.Service/Method, for example proto.KV/Get"),
            ),
        }
    }

    fn path(&self) -> String {
        format!("/{}/{}", self.service, self.method)
    }
}

/// What a call returned.
pub struct Answer {
    /// The method's full path, `/proto.KV/Get`.
    pub path: String,
    /// The response as protobuf JSON.
    pub response: Value,
}

/// How long each phase of a call may take.
pub struct Deadlines {
    /// For fetching the method's descriptors through reflection.
    pub reflection: Duration,
    /// For the call itself, from asking for a stream to the whole answer.
    pub call: Duration,
}

/// Calls `name` on the plugin behind `channel` with the JSON `argument`.
pub async fn call<T: Transport>(
    channel: T,
    name: &MethodName,
    argument: &str,
    deadlines: &Deadlines,
) -> Result<Answer, Failure> {
    let mut reflection = Reflection::new(channel.clone(), deadlines.reflection);
    let pool = reflection
        .pool_for(&name.service)
        .await
        .map_err(|failure| {
            failure.or_hint("`plinth inspect FILE --cookie KEY=VALUE` lists the services it serves")
        })?;
    let method = find_method(&pool, name)?;
    let request = build_request(&method.input(), argument)?;
    let path = name.path();
    let path_and_query = path
        .parse::<tonic::codegen::http::uri::PathAndQuery>()
        .map_err(|e| Failure::new(USAGE, format!("{path:?} is not a method path: {e}")))?;
    let codec = DynamicCodec {
        output: method.output(),
    };
    let mut request = tonic::Request::new(request);
    // The plugin learns the deadline too (`grpc-timeout`), and may give up on its own.
    request.set_timeout(deadlines.call);
    let timed_out = || {
        Failure::timed_out(
            Phase::Call,
            deadlines.call,
            format!("{path} did not answer"),
        )
        .hint("raise the deadline with --timeout SECONDS")
    };
    let unary = async {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.map_err(|e| {
            Failure::new(
                CALL_FAILED,
                format!("the plugin's connection is not ready: {}", e.into()),
            )
        })?;
        grpc.unary(request, path_and_query, codec)
            .await
            .map_err(|status| match status.code() {
                // The plugin gave up at the deadline it was sent.
                tonic::Code::DeadlineExceeded => timed_out(),
                code => Failure::new(
                    CALL_FAILED,
                    format!("{path} failed: {code}: {}", status.message()),
                ),
            })
    };
    let response = tokio::time::timeout(deadlines.call, unary)
        .await
        .map_err(|_| timed_out())??
        .into_inner();
    let options = SerializeOptions::new().skip_default_fields(false);
    let response = response
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| Failure::new(CALL_FAILED, format!("cannot print the response: {e}")))?;
    Ok(Answer { path, response })
}

fn find_method(pool: &DescriptorPool, name: &MethodName) -> Result<MethodDescriptor, Failure> {
    let service = pool.get_service_by_name(&name.service).ok_or_else(|| {
        Failure::new(
            USAGE,
            format!("the plugin does not describe a service {}", name.service),
        )
        .hint("`plinth inspect FILE --cookie KEY=VALUE` lists the services it serves")
    })?;
    let methods: Vec<MethodDescriptor> = service.methods().collect();
    let method = methods
        .iter()
        .find(|m| m.name() == name.method)
        .cloned()
        .ok_or_else(|| {
            let list = methods
                .iter()
                .map(|m| format!("{}/{}", service.full_name(), m.name()))
                .collect::<Vec<_>>()
                .join(", ");
            Failure::new(
                USAGE,
                format!(
                    "{} has no method {}; its methods: {list}",
                    service.full_name(),
                    name.method
                ),
            )
        })?;
    if method.is_client_streaming() || method.is_server_streaming() {
        return Err(Failure::new(
            USAGE,
            format!(
                "{} streams; plinth call calls unary methods only",
                name.path()
            ),
        ));
    }
    Ok(method)
}

/// Checks the JSON against the message's fields, then builds the message.
fn build_request(input: &MessageDescriptor, argument: &str) -> Result<DynamicMessage, Failure> {
    let json_hint = |input: &MessageDescriptor| {
        format!(
            "the argument is a JSON object of {}: {}",
            input.full_name(),
            field_list(input)
        )
    };
    let value: Value = serde_json::from_str(argument).map_err(|e| {
        Failure::new(USAGE, format!("the argument is not JSON: {e}")).hint(json_hint(input))
    })?;
    check_message(input, &value, "").map_err(|f| f.hint(json_hint(input)))?;
    DynamicMessage::deserialize(input.clone(), value).map_err(|e| {
        Failure::new(
            USAGE,
            format!("the argument does not fit {}: {e}", input.full_name()),
        )
        .hint(json_hint(input))
    })
}

fn field_list(message: &MessageDescriptor) -> String {
    let fields: Vec<String> = message
        .fields()
        .map(|f| format!("{}: {}", f.json_name(), type_name(&f)))
        .collect();
    format!("{{{}}}", fields.join(", "))
}

/// Walks `value` along `message`, naming the first field whose JSON type cannot be its type.
fn check_message(message: &MessageDescriptor, value: &Value, prefix: &str) -> Result<(), Failure> {
    let Value::Object(object) = value else {
        return Err(Failure::new(
            USAGE,
            format!(
                "{} expects a JSON object ({}), found {}",
                if prefix.is_empty() {
                    "the argument"
                } else {
                    prefix
                },
                message.full_name(),
                json_kind(value)
            ),
        ));
    };
    for (key, value) in object {
        let Some(field) = message
            .get_field_by_json_name(key)
            .or_else(|| message.get_field_by_name(key))
        else {
            return Err(Failure::new(
                USAGE,
                format!(
                    "{} has no field {key:?}; its fields: {}",
                    message.full_name(),
                    field_list(message)
                ),
            ));
        };
        let path = if prefix.is_empty() {
            field.name().to_owned()
        } else {
            format!("{prefix}.{}", field.name())
        };
        check_field(&field, value, &path)?;
    }
    Ok(())
}

fn check_field(field: &FieldDescriptor, value: &Value, path: &str) -> Result<(), Failure> {
    if value.is_null() {
        return Ok(());
    }
    if field.is_list() {
        let Value::Array(items) = value else {
            return Err(wrong_type(path, &type_name(field), value));
        };
        return items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| check_single(&field.kind(), item, &format!("{path}[{i}]")));
    }
    if field.is_map() {
        return match value {
            Value::Object(_) => Ok(()),
            _ => Err(wrong_type(path, &type_name(field), value)),
        };
    }
    check_single(&field.kind(), value, path)
}

fn check_single(kind: &Kind, value: &Value, path: &str) -> Result<(), Failure> {
    let fits = match kind {
        Kind::Message(message) => {
            // Well-known types (Timestamp, Struct, wrappers...) have their own JSON forms.
            if message.full_name().starts_with("google.protobuf.") {
                return Ok(());
            }
            return check_message(message, value, path);
        }
        Kind::String | Kind::Bytes => value.is_string(),
        Kind::Bool => value.is_boolean(),
        Kind::Double | Kind::Float => value.is_number() || value.is_string(),
        Kind::Enum(_) => value.is_string() || value.is_i64() || value.is_u64(),
        // 64-bit integers are strings in protobuf JSON; numbers are accepted too.
        _ => value.is_i64() || value.is_u64() || value.is_string(),
    };
    if fits {
        Ok(())
    } else {
        Err(wrong_type(path, &kind_name(kind), value))
    }
}

fn wrong_type(path: &str, expected: &str, found: &Value) -> Failure {
    Failure::new(
        USAGE,
        format!(
            "field {path} expects {expected}, found {}",
            json_kind(found)
        ),
    )
}

fn type_name(field: &FieldDescriptor) -> String {
    let single = kind_name(&field.kind());
    if field.is_map() {
        "a map (JSON object)".to_owned()
    } else if field.is_list() {
        format!("a list of {single}")
    } else {
        single
    }
}

fn kind_name(kind: &Kind) -> String {
    match kind {
        Kind::String => "a string".to_owned(),
        Kind::Bytes => "bytes (a base64 JSON string)".to_owned(),
        Kind::Bool => "a bool".to_owned(),
        Kind::Double => "a double".to_owned(),
        Kind::Float => "a float".to_owned(),
        Kind::Message(m) => format!("a message {}", m.full_name()),
        Kind::Enum(e) => format!("an enum {}", e.full_name()),
        other => format!("an integer ({other:?})").to_lowercase(),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Encodes dynamic requests and decodes responses of one known message type.
struct DynamicCodec {
    output: MessageDescriptor,
}

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> DynamicEncoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> DynamicDecoder {
        DynamicDecoder {
            output: self.output.clone(),
        }
    }
}

struct DynamicEncoder;

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = tonic::Status;

    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.reserve(item.encoded_len());
        item.encode(dst)
            .map_err(|e| tonic::Status::internal(format!("cannot encode the request: {e}")))
    }
}

struct DynamicDecoder {
    output: MessageDescriptor,
}

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Self::Error> {
        let bytes = src.copy_to_bytes(src.remaining());
        DynamicMessage::decode(self.output.clone(), bytes)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("cannot decode the response: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_parse_with_or_without_a_leading_slash() {
        let expected = MethodName {
            service: "proto.KV".into(),
            method: "Get".into(),
        };
        assert_eq!(MethodName::parse("proto.KV/Get").ok(), Some(expected));
        assert!(MethodName::parse("/proto.KV/Get").is_ok());
        assert!(MethodName::parse("Get").is_err());
        assert!(MethodName::parse("a/b/c").is_err());
    }
}
