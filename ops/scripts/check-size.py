#!/usr/bin/env python3
"""Reports Rust files over MAX_FILE lines and functions over MAX_FN lines in
services/ and proto/ (CONVENTIONS.md, "Size": files that fit in a head,
functions that fit on a screen). Test modules (`#[cfg(test)]` to the end of
the file) are not counted.

    ops/scripts/check-size.py            # prints offenders, exits 0
    ops/scripts/check-size.py --strict   # exits 1 if there are any

ops/scripts/test.sh runs it with --strict: a new offender fails the tests.
"""

import pathlib
import re
import sys

MAX_FILE = 500
MAX_FN = 80
ROOTS = ("services", "proto")
FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?((const|async|unsafe|extern \"C\")\s+)*fn\s+(\w+)")


def code_lines(text):
    """The file's lines up to its test module."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "#[cfg(test)]":
            return lines[:i]
    return lines


def blank_literals(text):
    """`text` with strings, chars and comments blanked (newlines kept), so
    braces inside them do not count."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = '"' + hashes
            j = text.find(end, i + 2 + len(hashes))
            j = n if j < 0 else j + len(end)
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^'\\])'", text[i:i + 4]):
            m = re.match(r"'(\\.|[^'\\])'", text[i:i + 4])
            out.append("''")
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def braces(line):
    return line.count("{") - line.count("}")


def long_functions(lines):
    """(name, first line, length) of each function over MAX_FN lines."""
    out = []
    for i, line in enumerate(lines):
        m = FN.match(line)
        if not m:
            continue
        depth, opened = 0, False
        for j in range(i, len(lines)):
            depth += braces(lines[j])
            opened = opened or "{" in lines[j]
            if opened and depth <= 0:
                break
            if not opened and lines[j].rstrip().endswith(";"):
                break  # a declaration without a body
        length = j - i + 1
        if opened and length > MAX_FN:
            out.append((m.group(5), i + 1, length))
    return out


def main():
    root = pathlib.Path(__file__).resolve().parents[2]
    offenders = []
    for top in ROOTS:
        for path in sorted((root / top).rglob("*.rs")):
            if "target" in path.parts:
                continue
            lines = code_lines(blank_literals(path.read_text()))
            rel = path.relative_to(root)
            if len(lines) > MAX_FILE:
                offenders.append(f"{rel}: {len(lines)} lines (aim: under {MAX_FILE})")
            for name, at, length in long_functions(lines):
                offenders.append(f"{rel}:{at}: fn {name} is {length} lines (aim: under {MAX_FN})")
    for o in offenders:
        print(f"check-size: {o}")
    print(f"check-size: {len(offenders)} offender(s)")
    if offenders and "--strict" in sys.argv:
        sys.exit(1)


if __name__ == "__main__":
    main()
