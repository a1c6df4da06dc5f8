"""Resilience scenarios on the real local stack (`make chaos`): overload, slow dependencies, chaos."""
