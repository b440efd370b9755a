//! UnixFS exporter: DAGs back into bytes, ranges and listings.
