//! UnixFS importer: bytes and directory trees in, blocks out.
