#!/usr/bin/env python3
"""Checks the declared `rust-version` against what building eventkit needs, with the one toolchain
this machine has: every crate eventkit-kafka and its macros build on (all features, normal and
build dependencies, this platform) declares a `rust-version` no newer than ours. (Our own code is
checked by clippy's `incompatible_msrv`, which reads the same field; scripts/test.sh runs it.)

  scripts/rust-version.py        # exits 1 naming each crate that needs a newer Rust
"""

import json
import subprocess
import sys


def version(text):
    parts = [int(part) for part in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def main():
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--all-features", "--filter-platform", "x86_64-unknown-linux-gnu", "--locked"],
        check=True, capture_output=True, text=True).stdout)
    packages = {p["id"]: p for p in meta["packages"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    roots = [p["id"] for p in meta["packages"] if p["name"] in ("eventkit-kafka", "eventkit-kafka-macros") and p["source"] is None]
    declared = {packages[r]["name"]: packages[r]["rust_version"] for r in roots}
    if len(set(declared.values())) != 1 or None in declared.values():
        sys.exit(f"eventkit-kafka and its macros must declare one rust-version: {declared}")
    ours = version(next(iter(declared.values())))
    seen, stack = set(), list(roots)
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        for dep in nodes[node]["deps"]:
            if any(kind["kind"] in (None, "build") for kind in dep["dep_kinds"]):
                stack.append(dep["pkg"])
    newer = sorted(
        (packages[p]["name"], packages[p]["version"], packages[p]["rust_version"])
        for p in seen
        if packages[p]["rust_version"] and version(packages[p]["rust_version"]) > ours)
    needed = max((version(packages[p]["rust_version"]) for p in seen if packages[p]["rust_version"]), default=ours)
    print(f"rust-version {'.'.join(map(str, ours))}: {len(seen)} crates built, the newest they declare needs {'.'.join(map(str, needed))}", flush=True)
    for name, ver, rv in newer:
        print(f"  {name} {ver} needs Rust {rv}", file=sys.stderr)
    if newer:
        sys.exit(f"raise rust-version in Cargo.toml to at least {'.'.join(map(str, needed))}")


if __name__ == "__main__":
    main()
