#!/usr/bin/python3
"""Test files for bnorm's .npy/.npz reader, written by numpy itself.

    make_npy_cases.py OUT_DIR           write the cases into OUT_DIR
    make_npy_cases.py --check DIR       np.load the files that test_npy.cpp
                                        wrote into DIR and check their values

Run with Debian's /usr/bin/python3 (python3-numpy). Values follow value()
below; tests/exec/test_npy.cpp computes the same formulas to compare exactly.
"""
import io
import os
import sys
import warnings
import zipfile

import numpy as np

# name -> descr, in the order of bnorm::exec::NpyType
DTYPES = {
    "f32": "<f4",
    "f64": "<f8",
    "f16": "<f2",
    "i64": "<i8",
    "i32": "<i4",
    "u8": "|u1",
    "i8": "|i1",
    "bool": "|b1",
}


def value(name, n):
    """Elements 0..n-1 of the test array of dtype `name` (see test_npy.cpp)."""
    i = np.arange(n, dtype=np.int64)
    if name in ("f32", "f64", "f16"):
        # multiples of 0.25 in [-2.75, 2.75]: exact in float16 too
        return ((i % 23 - 11) * 0.25).astype(DTYPES[name])
    if name == "i64":
        return ((i - 6) * (1 << 40) + 7).astype("<i8")  # beyond 32 bits, both signs
    if name == "i32":
        return ((i - 6) * 100000 + 3).astype("<i4")
    if name == "u8":
        return ((i * 37) % 256).astype("|u1")
    if name == "i8":
        return ((i * 37) % 256 - 128).astype("|i1")
    if name == "bool":
        return (i % 3 == 0)
    raise ValueError(name)


def array(name, shape):
    return value(name, int(np.prod(shape))).reshape(shape)


def zip_bytes(members, compression=zipfile.ZIP_STORED, comment=b""):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
        zf.comment = comment
    return buf.getvalue()


def npy_bytes(arr, **kw):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, **kw)
    return buf.getvalue()


class Unseekable(io.RawIOBase):
    """A stream zipfile cannot seek in, so it writes data descriptors."""

    def __init__(self):
        self.buf = io.BytesIO()

    def writable(self):
        return True

    def seekable(self):
        return False

    def seek(self, *args):
        raise OSError("not seekable")

    def write(self, b):
        return self.buf.write(b)


def write_cases(out):
    os.makedirs(out, exist_ok=True)
    p = lambda name: os.path.join(out, name)

    # One (3, 4) array of every supported dtype, as np.save writes it.
    for name in DTYPES:
        np.save(p(name + ".npy"), array(name, (3, 4)))
    np.save(p("f32_3d.npy"), array("f32", (2, 3, 4)))
    np.save(p("f32_1d.npy"), array("f32", (5,)))
    np.save(p("f64_scalar.npy"), np.float64(3.5))
    np.save(p("i64_scalar.npy"), np.array(-7, dtype="<i8"))
    np.save(p("f32_empty.npy"), np.zeros((0, 3), dtype="<f4"))
    np.save(p("u8_empty.npy"), np.zeros((0,), dtype="|u1"))
    np.save(p("f32_specials.npy"),
            np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, 3.4028235e38], dtype="<f4"))
    with open(p("f32_v2.npy"), "wb") as f:
        np.lib.format.write_array(f, array("f32", (3, 4)), version=(2, 0))
    with open(p("f32_v3.npy"), "wb") as f:
        np.lib.format.write_array(f, array("f32", (3, 4)), version=(3, 0))

    # Arrays bnorm refuses.
    np.save(p("fortran.npy"), np.asfortranarray(array("f32", (3, 4))))
    np.save(p("big_endian.npy"), array("f32", (3, 4)).astype(">f4"))
    np.save(p("object.npy"), np.array([1, "a", None], dtype=object), allow_pickle=True)
    np.save(p("structured.npy"), np.zeros(3, dtype=[("a", "<f4"), ("b", "<i4")]))
    np.save(p("unicode.npy"), np.array(["ab", "c"]))
    np.save(p("uint32.npy"), np.arange(4, dtype="<u4"))
    np.save(p("complex64.npy"), np.arange(4, dtype="<c8"))

    # Archives. np.savez stores, np.savez_compressed deflates; both force
    # zip64 extra fields in the local headers.
    np.savez(p("two.npz"), a=array("f32", (3, 4)), b=array("i64", (3, 4)))
    np.savez(p("positional.npz"), array("f32", (3, 4)), array("u8", (3, 4)))
    every = {name: array(name, (3, 4)) for name in DTYPES}
    every["scalar"] = np.float64(3.5)
    every["empty"] = np.zeros((0, 3), dtype="<f4")
    every["big"] = (np.arange(100000, dtype="<f8") * 0.5).reshape(1000, 100)
    np.savez(p("every.npz"), **every)
    np.savez_compressed(p("every_compressed.npz"), **every)
    np.savez_compressed(p("compressed_two.npz"), a=array("f32", (3, 4)), b=array("bool", (3, 4)))

    # Zip64 everywhere: lowering zipfile's limits makes it move sizes and
    # offsets into zip64 extra fields in the central directory and write a
    # zip64 end record, as it does for archives over 2 GiB / 65535 members.
    saved = zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT
    zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = 0, 0
    try:
        np.savez(p("zip64_full.npz"), a=array("f32", (3, 4)), b=array("i64", (3, 4)))
        np.savez_compressed(p("zip64_full_compressed.npz"), a=array("f32", (3, 4)), b=array("i64", (3, 4)))
    finally:
        zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = saved
    for name in ("zip64_full.npz", "zip64_full_compressed.npz"):
        data = open(p(name), "rb").read()
        assert b"PK\x06\x06" in data and b"PK\x06\x07" in data, name + " has no zip64 end record"

    # Written to a stream that cannot seek: zipfile uses data descriptors
    # (flag bit 3) and leaves the local header's sizes zero.
    for name, compression in (("data_descriptor.npz", zipfile.ZIP_STORED),
                              ("data_descriptor_compressed.npz", zipfile.ZIP_DEFLATED)):
        stream = Unseekable()
        with zipfile.ZipFile(stream, "w", compression=compression) as zf:
            for key in ("a", "b"):
                with zf.open(key + ".npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, array("f32" if key == "a" else "i64", (3, 4)))
        open(p(name), "wb").write(stream.buf.getvalue())

    a_npy = npy_bytes(array("f32", (3, 4)))
    # Classic zip (no zip64 at all) with an archive comment after the end record.
    open(p("plain_zip.npz"), "wb").write(zip_bytes([("a.npy", a_npy)], comment=b"made by a test"))
    open(p("bzip2.npz"), "wb").write(zip_bytes([("a.npy", a_npy)], zipfile.ZIP_BZIP2))
    open(p("lzma.npz"), "wb").write(zip_bytes([("a.npy", a_npy)], zipfile.ZIP_LZMA))
    open(p("not_npy_member.npz"), "wb").write(zip_bytes([("a.npy", a_npy), ("readme.txt", b"hello")]))
    open(p("empty.npz"), "wb").write(zip_bytes([]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        open(p("duplicate.npz"), "wb").write(zip_bytes([("a.npy", a_npy), ("a.npy", a_npy)]))
    open(p("big_endian_member.npz"), "wb").write(
        zip_bytes([("a.npy", npy_bytes(array("f32", (3, 4)).astype(">f4")))]))

    # numpy itself must read back what it wrote.
    for name in ("zip64_full.npz", "zip64_full_compressed.npz", "data_descriptor.npz",
                 "data_descriptor_compressed.npz", "every.npz"):
        with np.load(p(name)) as z:
            assert np.array_equal(z["a" if "every" not in name else "f32"], array("f32", (3, 4))), name


def check(directory):
    """Checks the files test_npy.cpp wrote (NumpyReadsWhatBnormWrites)."""
    failures = []
    for name in DTYPES:
        for shape in ((3, 4), (), (0, 5), (2, 3, 4)):
            tag = "x".join(map(str, shape)) if shape else "scalar"
            path = os.path.join(directory, "%s_%s.npy" % (name, tag))
            raw = open(path, "rb").read()
            header_len = int.from_bytes(raw[8:10], "little")
            if (10 + header_len) % 64:
                failures.append("%s: data starts at %d, not a multiple of 64" % (path, 10 + header_len))
            got = np.load(path)
            mapped = np.load(path, mmap_mode="r")
            want = array(name, shape)
            if got.dtype != np.dtype(DTYPES[name]) or got.shape != shape or not np.array_equal(got, want):
                failures.append("%s: got %r %s %r" % (path, got.dtype, got.shape, got))
            if not np.array_equal(mapped, want):
                failures.append("%s: mmap_mode='r' gives other values" % path)
    for f in failures:
        print(f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        sys.exit(check(sys.argv[2]))
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    write_cases(sys.argv[1])
