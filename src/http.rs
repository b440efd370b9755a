//! The HTTP gateway: `router(state) -> Router`.
