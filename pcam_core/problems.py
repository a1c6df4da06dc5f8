"""Problem+json names shared with clients: no web framework here, so the Python client stays light."""

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://pcam.example/problems/"
