//! Generates prost messages for the envd protos plus pbjson serde impls, which give us the exact ProtoJSON
//! mapping the E2B SDKs speak (lowerCamelCase names, int64 as strings, enums by name, base64 bytes).
use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/process/process.proto", "proto/filesystem/filesystem.proto"];
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("envd_descriptor.bin");

    prost_build::Config::new()
        .file_descriptor_set_path(&descriptor_path)
        .compile_well_known_types()
        .extern_path(".google.protobuf.Timestamp", "crate::timestamp::Timestamp")
        .extern_path(".google.protobuf", "::pbjson_types")
        .bytes(["."])
        .compile_protos(&protos, &["proto"])?;

    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .extern_path(".google.protobuf.Timestamp", "crate::timestamp::Timestamp")
        .ignore_unknown_fields()
        .build(&[".process", ".filesystem"])?;

    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
