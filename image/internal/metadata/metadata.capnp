# PuzzleFS image metadata, manifest version 3, as read by sealfs.
#
# Format: the PuzzleFS project (https://github.com/project-machine/puzzlefs,
# Apache License 2.0) defines this metadata in its schema file
# puzzlefs-lib/src/format/metadata.capnp (file id @0x84ae5e6e88b7cbb7; format
# as of upstream HEAD 248f74f, 2025-07-07). This file is sealfs's own
# description of that format: the same file id, struct names, field names,
# ordinals and types, so it is wire-compatible with the upstream schema and
# `capnp convert` gives the same JSON with either. Only the Go annotations and
# the comments are sealfs's. Tests in package image decode the reference
# tool's images with it and compare the result with `capnp convert` output.
#
# Regenerate the Go code (see gen.go and docs/format/puzzlefs.md):
#   go generate ./image/internal/metadata

@0x84ae5e6e88b7cbb7;

using Go = import "/go.capnp";
$Go.package("metadata");
$Go.import("github.com/sealfs/sealfs/image/internal/metadata");

# The root message of the rootfs blob.
struct Rootfs {
  metadatas @0 :List(InodeVector);      # layers, newest (top) first
  fsVerityData @1 :List(VerityData);    # chunk sha256 -> fs-verity digest, sorted by digest
  manifestVersion @2 :UInt64;           # 3
}

# One layer: every inode of the layer, sorted by ino.
struct InodeVector {
  inodes @0 :List(Inode);
}

struct VerityData {
  digest @0 :Data;   # sha256 of a blob (its name under blobs/sha256)
  verity @1 :Data;   # fs-verity SHA-256 digest (4 KiB blocks, no salt) of that blob
}

struct Inode {
  ino @0 :UInt64;
  mode :union {
    unknown @1 :Void;
    fifo @2 :Void;
    chr @3 :Chr;
    dir @4 :Dir;
    blk @5 :Blk;
    file @6 :List(FileChunk);   # the file's bytes, in order; size = sum of len
    lnk @7 :Void;               # target in additional.symlinkTarget
    sock @8 :Void;
    wht @9 :Void;               # whiteout: the name is deleted in this layer
  }
  uid @10 :UInt32;
  gid @11 :UInt32;
  permissions @12 :UInt16;      # mode & 0o7777
  additional @13 :InodeAdditional;   # only when there are xattrs or a symlink target
}

struct Chr {
  major @0 :UInt64;
  minor @1 :UInt64;
}

struct Blk {
  major @0 :UInt64;
  minor @1 :UInt64;
}

struct Dir {
  entries @0 :List(DirEntry);
  lookBelow @1 :Bool;
}

struct DirEntry {
  ino @0 :UInt64;
  name @1 :Data;     # raw bytes
}

struct FileChunk {
  blob @0 :BlobRef;
  len @1 :UInt64;
}

struct BlobRef {
  digest @0 :Data;       # 32-byte sha256 of the stored blob
  offset @1 :UInt64;     # offset in the uncompressed blob
  compressed @2 :Bool;   # blob stored as seekable zstd
}

struct InodeAdditional {
  xattrs @0 :List(Xattr);
  symlinkTarget @1 :Data;
}

struct Xattr {
  key @0 :Data;
  val @1 :Data;
}
