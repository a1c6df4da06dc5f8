"""The audit's verdict on pip-audit reports: vulnerabilities fail, unknown pins are reported, not passed."""

from deploy.tools.audit import verdict


def test_a_vulnerability_is_reported_with_its_id() -> None:
    report = {"dependencies": [{"name": "jinja2", "version": "2.10", "vulns": [{"id": "PYSEC-2019-217"}]}]}
    assert verdict(report) == (["jinja2 2.10 PYSEC-2019-217"], [])


def test_pins_the_service_does_not_know_are_listed_as_not_audited() -> None:
    report = {
        "dependencies": [
            {"name": "yarl", "version": "1.25.1", "skip_reason": "Dependency not found on PyPI"},
            {"name": "zipp", "skip_reason": "Dependency not found on PyPI and could not be audited"},
            {"name": "numpy", "version": "1.26.4", "vulns": []},
        ]
    }
    assert verdict(report) == ([], ["yarl==1.25.1", "zipp"])
