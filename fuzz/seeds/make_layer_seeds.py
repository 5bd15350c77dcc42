#!/usr/bin/env python3
"""Writes the seed layers of the layer_apply target into layer_apply/ (checked in; run again
only to change them). Small tars covering what apply_layer handles: files, dirs, symlinks,
hard links (also to a lower layer's file), whiteouts and opaque markers, devices and fifos,
PAX and GNU long names, xattrs, and hostile entries; one gzip and one zstd stream."""
import gzip
import io
import os
import shutil
import subprocess
import tarfile

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "layer_apply")


def entry(name, kind=tarfile.REGTYPE, data=b"", link="", mode=0o644, pax=None, dev=(0, 0)):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = 1_000_000
    info.linkname = link
    info.devmajor, info.devminor = dev
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    if pax:
        info.pax_headers = pax
    return info, data


def tar(entries, fmt=tarfile.PAX_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for info, data in entries:
            t.addfile(info, io.BytesIO(data) if info.isreg() else None)
    # tarfile pads to 10 KiB records; two zero blocks end the archive, keep only those.
    blob = buf.getvalue().rstrip(b"\0")
    return blob + b"\0" * (-len(blob) % 512) + b"\0" * 1024


def write(name, blob):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(blob)


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    basic = tar([
        entry("etc/", tarfile.DIRTYPE, mode=0o755),
        entry("etc/hosts", data=b"127.0.0.1 localhost\n"),
        entry("etc/hosts.link", tarfile.LNKTYPE, link="etc/hosts"),
        entry("etc/localtime", tarfile.SYMTYPE, link="/usr/share/zoneinfo/UTC"),
        entry("usr/bin/tool", data=b"#!/bin/sh\n", mode=0o755),
    ])
    write("basic.tar", basic)
    write("basic.tar.gz", gzip.compress(basic, mtime=0))
    if shutil.which("zstd"):
        zst = subprocess.run(["zstd", "-q", "-c", "-3"], input=basic, capture_output=True, check=True)
        write("basic.tar.zst", zst.stdout)
    write("whiteouts.tar", tar([
        entry("etc/", tarfile.DIRTYPE, mode=0o755),
        entry("etc/.wh.passwd"),
        entry("usr/", tarfile.DIRTYPE, mode=0o755),
        entry("usr/.wh..wh..opq"),
        entry("usr/bin/", tarfile.DIRTYPE, mode=0o755),
        entry(".wh.gone"),
    ]))
    write("xattrs.tar", tar([
        entry("file", data=b"x", pax={
            "SCHILY.xattr.user.comment": "hello",
            "SCHILY.xattr.trusted.overlay.opaque": "y",
            "SCHILY.xattr.security.capability": "\x01\x00\x00\x02",
        }),
        entry("dir/", tarfile.DIRTYPE, mode=0o700, pax={"SCHILY.xattr.user.a": "b", "uid": "1000", "gid": "1000"}),
    ]))
    write("devices.tar", tar([
        entry("dev/", tarfile.DIRTYPE, mode=0o755),
        entry("dev/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3)),
        entry("dev/loop9", tarfile.BLKTYPE, mode=0o660, dev=(7, 9)),
        entry("dev/fifo", tarfile.FIFOTYPE, mode=0o600),
        entry("dev/whiteout", tarfile.CHRTYPE, dev=(0, 0)),
    ]))
    write("long_names.tar", tar([
        entry("d/" + "a" * 150 + "/file", data=b"pax long name"),
        entry("link", tarfile.SYMTYPE, link="b" * 200),
    ]))
    write("gnu_long_names.tar", tar([
        entry("g/" + "c" * 120, data=b"gnu long name"),
        entry("hl", tarfile.LNKTYPE, link="g/" + "c" * 120),
    ], fmt=tarfile.GNU_FORMAT))
    write("hostile.tar", tar([
        entry("escape", tarfile.SYMTYPE, link="../victim"),
        entry("escape/owned", data=b"pwned"),
        entry("abs", tarfile.SYMTYPE, link="/"),
        entry("abs/etc/owned", data=b"pwned"),
        entry("up", tarfile.LNKTYPE, link="../victim/x"),
        entry("lowerlink", tarfile.LNKTYPE, link="etc/passwd"),
        entry("viabin", tarfile.LNKTYPE, link="bin/tool"),
        entry("../outside", data=b"dotdot"),
        entry("/etc/absolute", data=b"abs"),
        entry("etc/passwd", data=b"over the lower file"),
        entry("etc/passwd", data=b"twice"),
    ]))
    write("symlink_dirs.tar", tar([
        entry("a", tarfile.SYMTYPE, link="victim"),
        entry("a/", tarfile.DIRTYPE, mode=0o755),
        entry("a/b", data=b"in a dir that replaced a symlink"),
        entry("bin/x", data=b"below a lower symlink"),
    ]))


if __name__ == "__main__":
    main()
