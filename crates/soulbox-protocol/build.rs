//! Generates prost messages for the envd protos plus pbjson serde impls, which give us the exact ProtoJSON
//! mapping the E2B SDKs speak (lowerCamelCase names, int64 as strings, enums by name, base64 bytes).
//!
//! The protos are compiled by protox, a protobuf compiler in Rust (it also carries the well-known types such
//! as `google/protobuf/timestamp.proto`), so building this crate needs no `protoc` on the machine: `cargo add
//! soulbox` works on a bare one. One descriptor set feeds both prost-build and pbjson-build.
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/process/process.proto", "proto/filesystem/filesystem.proto"];

    // Imports and source info, as prost-build asks protoc for them (the source info becomes doc comments).
    let descriptors = protox::Compiler::new(["proto"])?
        .include_imports(true)
        .include_source_info(true)
        .open_files(protos)?
        .file_descriptor_set();
    let encoded = descriptors.encode_to_vec();

    prost_build::Config::new()
        .compile_well_known_types()
        .extern_path(".google.protobuf.Timestamp", "crate::timestamp::Timestamp")
        .extern_path(".google.protobuf", "::pbjson_types")
        .bytes(["."])
        .compile_fds(descriptors)?;

    pbjson_build::Builder::new()
        .register_descriptors(&encoded)?
        .extern_path(".google.protobuf.Timestamp", "crate::timestamp::Timestamp")
        .ignore_unknown_fields()
        .build(&[".process", ".filesystem"])?;

    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
