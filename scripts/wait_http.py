"""Wait until a URL answers HTTP (any status counts): `wait_http.py URL SECONDS`; exit 1 on timeout."""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request


def answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False
    return True


def main(argv: list[str]) -> int:
    url, seconds = argv[1], float(argv[2])
    deadline = time.monotonic() + seconds
    while not answers(url):
        if time.monotonic() >= deadline:
            return 1
        time.sleep(0.3)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
