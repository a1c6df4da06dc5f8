"""Known-vulnerability audit of every pinned dependency (pip-audit against PyPI's advisory data).

    python deploy/tools/audit.py [--require]

Fails on any known vulnerability. A pin the advisory service does not know (the registry reachable
from here is a mirror that serves versions PyPI's JSON API does not have) cannot be audited: such pins
are listed and the audit says it was incomplete instead of passing silently; `--require` makes an
incomplete audit an error, for pipelines that must audit everything.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PINS = (ROOT / "requirements" / "constraints.txt", ROOT / "requirements" / "triton.txt")


def audit(pins: Path) -> dict | None:
    """pip-audit's JSON report of one pinned requirements file (no resolution: the pins are complete);
    None when pip-audit produced none (e.g. the advisory service is unreachable), its error printed."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "pip-audit"), "--progress-spinner", "off", "--no-deps",
         "--disable-pip", "-f", "json", "-r", str(pins)],
        capture_output=True, text=True, check=False, timeout=1800,
    )  # fmt: skip
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        print(f"audit: pip-audit produced no report for {pins.name}:\n{done.stderr[-1000:]}")
        return None


def verdict(report: dict) -> tuple[list[str], list[str]]:
    """(vulnerabilities as 'name version id', pins that could not be audited)."""
    vulnerable, unaudited = [], []
    for dependency in report.get("dependencies", []):
        name, pinned = dependency["name"], dependency.get("version")
        if dependency.get("skip_reason"):
            unaudited.append(f"{name}=={pinned}" if pinned else name)
        vulnerable += [f"{name} {pinned} {vuln['id']}" for vuln in dependency.get("vulns", [])]
    return vulnerable, unaudited


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--require", action="store_true", help="fail when a pin could not be audited")
    args = parser.parse_args(argv)
    failed = False
    for pins in PINS:
        report = audit(pins)
        if report is None:
            print(f"audit: {pins.name} SKIPPED (no advisory data reachable)")
            failed |= args.require
            continue
        vulnerable, unaudited = verdict(report)
        audited = f"{pins.relative_to(ROOT)}: {len(vulnerable)} known vulnerabilities"
        print(f"audit: {audited}; {len(unaudited)} pins unknown to the advisory service")
        for line in vulnerable:
            print(f"  VULNERABLE {line}")
        if unaudited:
            print(f"  not audited: {', '.join(unaudited[:20])}{' ...' if len(unaudited) > 20 else ''}")
        failed |= bool(vulnerable) or (args.require and bool(unaudited))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
