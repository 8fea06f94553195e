"""Scientific core: pure functions on numpy arrays. Nothing here imports a client library."""
