//! The running node: wires the repo to the HTTP gateway and owns shutdown.
