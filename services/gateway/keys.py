"""Create API keys: `python -m services.gateway.keys new NAME` prints the key once and the line to store.

The key goes to stdout first, then the `NAME:sha256` line for PCAM_GATEWAY_API_KEY_FILE (or
PCAM_GATEWAY_API_KEY_HASHES); only that line is kept by the gateway, never the key.
`hash NAME` reads an existing key from stdin (not argv, which shells keep in history).
"""

import argparse
import sys

from services.gateway.auth import NAME_PATTERN, hash_key, new_key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.gateway.keys", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for command, help_text in (
        ("new", "create a key; prints the key, then the line to store"),
        ("hash", "print the line to store for a key read from stdin"),
    ):
        commands.add_parser(command, help=help_text).add_argument("name", help="who holds the key")
    args = parser.parse_args(argv)
    if not NAME_PATTERN.match(args.name):
        parser.error("NAME: 1-64 letters, digits, '.', '_', '-' (starting with a letter or digit)")
    if args.command == "new":
        key = new_key()
        print(key)
        print(f"{args.name}:{hash_key(key)}")
        print(
            "The first line is the API key: give it to its holder now, it is not stored anywhere. "
            "Add the second line to the gateway's key file (PCAM_GATEWAY_API_KEY_FILE).",
            file=sys.stderr,
        )
    else:
        key = sys.stdin.readline().strip()
        if not key:
            parser.error("no key on stdin")
        print(f"{args.name}:{hash_key(key)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
