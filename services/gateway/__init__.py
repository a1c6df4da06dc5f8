"""Gateway: the public API, result cache, limits."""
