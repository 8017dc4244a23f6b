#!/usr/bin/env python3
"""Prints what openapi-python-client said, deduplicated: each distinct message once, with
how often it came and where (tests/clients/run shows this; the full output stays in the log).

    summarize_generator_log.py target/clients/logs/gen-python.log [--allowed FILE]

Exits 1 when it printed an error, or a warning that FILE does not list (one message a line,
as printed after `[Nx] `; `#` starts a comment): a warning means a part of the API is missing
from the generated client.

openapi-python-client prints a block per problem: `WARNING parsing GET /path within tag.`
(or ERROR), the message, then the part of the document it is about as JSON. The message is
kept verbatim except for Python object addresses, which differ on every line.
"""

from __future__ import annotations

import re
import sys
from collections import OrderedDict

HEADER = re.compile(r"^(WARNING|ERROR) parsing (.+?) within (.+?)\.$")
UNTRUSTED = re.compile(r"<openapi_python_client\.schema\.untrusted_string\.UntrustedString object at 0x[0-9a-f]+>")
ADDRESS = re.compile(r" at 0x[0-9a-f]+>")
BOILERPLATE = (
    "Generating ",
    "If you believe this was a mistake",
)


def main() -> int:
    allowed: set[str] = set()
    if len(sys.argv) > 3 and sys.argv[2] == "--allowed":
        with open(sys.argv[3], encoding="utf-8") as f:
            allowed = {line.split("#", 1)[0].strip() for line in f} - {""}
    with open(sys.argv[1], encoding="utf-8", errors="replace") as f:
        lines = [line.rstrip() for line in f]

    grouped: "OrderedDict[str, list[str]]" = OrderedDict()  # message -> where
    loose: "OrderedDict[str, None]" = OrderedDict()  # lines outside the blocks
    where: str | None = None
    depth = 0  # inside the JSON excerpt of a block
    have_message = False
    for line in lines:
        header = HEADER.match(line)
        if header:
            level = "" if header.group(1) == "WARNING" else f"{header.group(1)} "
            where, depth, have_message = f"{level}{header.group(2)}", 0, False
            continue
        if not line.strip() or line.startswith(BOILERPLATE):
            continue
        if where is not None:
            if depth == 0 and line.startswith(("{", "[")) and have_message:
                depth = 1 if line in ("{", "[") else 0
                continue
            if depth > 0:
                if line in ("}", "]"):
                    depth = 0
                continue
            if not have_message:
                message = ADDRESS.sub(">", UNTRUSTED.sub("<status>", line))
                grouped.setdefault(message, []).append(where)
                have_message = True
                continue
            # A second message line in the same block.
            grouped.setdefault(ADDRESS.sub(">", UNTRUSTED.sub("<status>", line)), []).append(where)
            continue
        loose.setdefault(line, None)

    failed = False
    for line in loose:
        print(line)
        failed = failed or "Error" in line
    for message, places in grouped.items():
        distinct = list(OrderedDict.fromkeys(places))
        shown = ", ".join(distinct[:6]) + (f", and {len(distinct) - 6} more" if len(distinct) > 6 else "")
        note = " (allowed)" if message in allowed else ""
        print(f"[{len(places)}x] {message}{note}")
        print(f"      in: {shown}")
        failed = failed or not note
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
