"""The Triton python-backend model copied into each member's version directory."""
