//! Compressed layers: digests match the bytes, output is independent of the thread count,
//! and apply reads every supported media type back.

use std::fs;
use std::process::Command;

use super::roundtrip::make_tree;
use crate::compress::write_layer_with;
use crate::{
    apply_layer, detect_compression, write_layer, write_tar, ApplyLimits, Compression, TarOptions,
    MEDIA_TYPE_TAR,
};
use kiln_store::Digest;

fn sha256sum(bytes: &[u8]) -> String {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    fs::write(tmp.path(), bytes).unwrap();
    let out = Command::new("sha256sum")
        .arg(tmp.path())
        .output()
        .expect("sha256sum (coreutils) is needed");
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// Some megabytes that compress, but not to nothing.
fn noisy(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i % 3 == 0 {
                b'a'
            } else {
                (x % 16) as u8 + b'A'
            }
        })
        .collect()
}

#[test]
fn digests_match_the_streams_for_both_compressions() {
    require_root!("chown, mknod");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    make_tree(&src, false);
    let opts = TarOptions { epoch: 1_234_567 };
    let mut tar = Vec::new();
    write_tar(&src, &mut tar, &opts).unwrap();
    for compression in [Compression::Zstd, Compression::Gzip] {
        let mut blob = Vec::new();
        let d = write_layer(&src, &mut blob, compression, &opts).unwrap();
        assert_eq!(d.compression, compression);
        assert_eq!(d.size, blob.len() as u64);
        assert_eq!(d.digest.hex(), sha256sum(&blob));
        assert_eq!(d.diff_id.hex(), sha256sum(&tar));
        assert_eq!(detect_compression(&blob), Some(compression));
        for media_type in [compression.media_type(), ""] {
            let dest = tmp
                .path()
                .join(format!("dest-{compression}-{}", media_type.len()));
            fs::create_dir(&dest).unwrap();
            let diff_id = apply_layer(
                &mut &blob[..],
                media_type,
                &dest,
                &[],
                &ApplyLimits::default(),
            )
            .unwrap();
            assert_eq!(diff_id, d.diff_id);
        }
    }
    assert_eq!(detect_compression(&tar), None);
}

#[test]
fn zstd_output_does_not_depend_on_the_worker_count() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("big"), noisy(24 << 20)).unwrap();
    let run = |workers| {
        let mut blob = Vec::new();
        let d = write_layer_with(
            tmp.path(),
            &mut blob,
            Compression::Zstd,
            &TarOptions::default(),
            workers,
        )
        .unwrap();
        (blob, d)
    };
    let (one, d1) = run(1);
    let (two, d2) = run(2);
    assert_eq!(d1, d2);
    assert!(one == two, "1 and 2 zstd workers gave different bytes");
}

#[test]
fn trailing_bytes_count_in_the_diff_id_and_media_types_are_checked() {
    require_root!("chown, mknod");
    let tmp = tempfile::tempdir().unwrap();
    let mut tar = super::hostile::TarBuilder::default()
        .file("x", b"1")
        .finish();
    tar.extend_from_slice(&[0; 4096]); // some writers pad to a 10 KiB record
    let dest = tmp.path().join("d");
    fs::create_dir(&dest).unwrap();
    let diff_id = apply_layer(
        &mut &tar[..],
        MEDIA_TYPE_TAR,
        &dest,
        &[],
        &ApplyLimits::default(),
    )
    .unwrap();
    assert_eq!(diff_id, Digest::of_bytes(&tar));
    let docker = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    // two gzip members back to back are one stream (MultiGzDecoder)
    let mut blob = gz.finish().unwrap();
    let half = tar.len() / 2;
    let mut two = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut two, &tar[..half]).unwrap();
    let mut second = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut second, &tar[half..]).unwrap();
    let mut members = two.finish().unwrap();
    members.extend(second.finish().unwrap());
    for (i, b) in [&mut blob, &mut members].into_iter().enumerate() {
        let dest = tmp.path().join(format!("gz{i}"));
        fs::create_dir(&dest).unwrap();
        assert_eq!(
            apply_layer(&mut &b[..], docker, &dest, &[], &ApplyLimits::default()).unwrap(),
            diff_id
        );
    }
    let err = apply_layer(
        &mut &tar[..],
        "application/vnd.oci.image.layer.v1.tar+lz4",
        &dest,
        &[],
        &ApplyLimits::default(),
    );
    assert!(matches!(err, Err(crate::LayerError::MediaType(_))));
}

#[test]
fn compression_names_parse() {
    assert_eq!("zstd".parse::<Compression>().unwrap(), Compression::Zstd);
    assert_eq!(
        "gzip".parse::<Compression>().unwrap().media_type(),
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert!("xz".parse::<Compression>().is_err());
}
