"""The framework-free core every part of the platform shares (research use only, not for diagnosis).

The model I/O contract, the release manifest, the serving rule (calibration, weights, operating points,
test-time augmentation), the internal wire frame, the public result and problem schemas, the domain
errors and the one inference path (`serving`). It depends on pydantic, and on numpy and Pillow for the
serving path (its `arrays` extra): never on a web framework, torch, Triton's client or Redis
(tests/unit/core/test_layering.py), and never on `services`, `training` or `pcam_client`, which all
depend on it. It is a distribution of its own (pyproject.toml beside this file).
"""
