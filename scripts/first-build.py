#!/usr/bin/env python3
"""The README's first command, cold, against a hello-world on rdkafka built the same way.

Both start from an empty target directory with the crates already downloaded (`cargo fetch`),
on this machine, one after the other, and are timed until the program prints its first line:
`cargo build` of the main example (with `--timings`), then the example until its first log
line; the same for a hello-world on rdkafka (the workspace's version and features), tokio and
serde_json. Then, over the lean build, what each optional feature of eventkit adds (its
dependencies and eventkit's rebuild), one feature at a time in the same target directory.

Writes the figures between the markers in BENCHMARKS.md and prints them.

Both builds run ROUNDS times (default 2), alternating which goes first, each from empty target
directories; the ratio is of the best of each (noise from the machine only ever adds time:
one run measured rdkafka-sys's C build at 68 s for one side and 101 s for the other).

  scripts/first-build.py            # all of it (about 15 minutes on 2 cores)
  scripts/first-build.py --no-features --rounds 3
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FEATURES = ["admin", "prometheus", "cli", "asyncapi", "sqlite", "postgres", "otel", "otlp"]
BEGIN, END = "<!-- first-build:begin -->", "<!-- first-build:end -->"


def run(cmd, env=None, cwd=ROOT):
    subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, check=True)


def timed_build(cmd, env, cwd=ROOT):
    start = time.monotonic()
    run(cmd, env=env, cwd=cwd)
    return time.monotonic() - start


def first_line(cmd, env, cwd=ROOT):
    """Seconds until the program prints its first line (then it is stopped)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    line = proc.stdout.readline()
    took = time.monotonic() - start
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    if not line:
        sys.exit(f"{cmd} printed nothing")
    return took, line.decode(errors="replace").strip()


def workspace_dep(name):
    text = open(os.path.join(ROOT, "Cargo.toml")).read()
    match = re.search(rf"^{re.escape(name)} = (.+)$", text, re.M)
    return match.group(1)


def top_units(timings_dir, n=10):
    html = open(os.path.join(timings_dir, "cargo-timing.html")).read()
    data = json.loads(re.search(r"const UNIT_DATA = (\[.*?\]);\n", html, re.S).group(1))
    units = sorted(data, key=lambda u: u["duration"], reverse=True)[:n]
    return [(f"{u['name']} {u['version']}" + (f" ({u['target'].strip()})" if u["target"].strip() else ""), u["duration"]) for u in units]


def hello(work):
    pkg = os.path.join(work, "hello")
    os.makedirs(os.path.join(pkg, "src"))
    with open(os.path.join(pkg, "Cargo.toml"), "w") as f:
        f.write(
            "[package]\nname = \"hello-rdkafka\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n"
            f"rdkafka = {workspace_dep('rdkafka')}\ntokio = {workspace_dep('tokio')}\nserde_json = \"1\"\n\n[workspace]\n"
        )
    with open(os.path.join(pkg, "src", "main.rs"), "w") as f:
        f.write(
            "use rdkafka::producer::FutureProducer;\n\n#[tokio::main]\nasync fn main() {\n"
            "    let _producer: FutureProducer = rdkafka::ClientConfig::new().set(\"bootstrap.servers\", \"127.0.0.1:9\").create().unwrap();\n"
            "    println!(\"{}\", serde_json::json!({\"hello\": \"rdkafka\", \"librdkafka\": rdkafka::util::get_rdkafka_version().1}));\n}\n"
        )
    # The same versions as the workspace (cargo drops what the hello-world does not use).
    shutil.copy(os.path.join(ROOT, "Cargo.lock"), pkg)
    target = os.path.join(work, "hello-target")
    env = {"CARGO_TARGET_DIR": target}
    build = timed_build(["cargo", "build", "-q", "--offline", "--timings"], env, cwd=pkg)
    run_s, line = first_line([os.path.join(target, "debug", "hello-rdkafka")], {}, cwd=pkg)
    return build, run_s, line, top_units(os.path.join(target, "cargo-timings"))


def first_command(work):
    target = os.path.join(work, "kit-target")
    env = {"CARGO_TARGET_DIR": target}
    build = timed_build(["cargo", "build", "-q", "--offline", "--timings", "--example", "user_service"], env)
    binary = os.path.join(target, "debug", "examples", "user_service")
    clean = {k: "" for k in ["KAFKA_BOOTSTRAP_SERVERS"]}
    run_s, line = first_line([binary], {**clean, "RUST_LOG": "info"})
    return build, run_s, line, top_units(os.path.join(target, "cargo-timings")), target


def feature_costs(target):
    """What each feature adds over eventkit without features (its dependencies and eventkit's rebuild)."""
    env = {"CARGO_TARGET_DIR": target}
    base = ["cargo", "build", "-q", "--offline", "-p", "eventkit-kafka", "--lib", "--no-default-features"]
    timed_build(base, env)
    costs = []
    for feature in FEATURES:
        costs.append((feature, timed_build(base + ["--features", feature], env)))
    costs.append(("default", timed_build(["cargo", "build", "-q", "--offline", "-p", "eventkit-kafka", "--lib"], env)))
    costs.append(("full", timed_build(base + ["--features", "full"], env)))
    return costs


def main():
    with_features = "--no-features" not in sys.argv
    rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 2
    run(["cargo", "fetch", "--locked"])
    cores = os.cpu_count()
    hellos, kits, costs = [], [], []
    for r in range(rounds):
        with tempfile.TemporaryDirectory(prefix="eventkit-first-build-") as work:
            if r % 2 == 0:
                hellos.append(hello(work))
                kits.append(first_command(work))
            else:
                kits.append(first_command(work))
                hellos.append(hello(work))
            if with_features and r == rounds - 1:
                costs = feature_costs(kits[-1][4])
    each = [(h[0] + h[1], k[0] + k[1]) for h, k in zip(hellos, kits)]
    h_build, h_run, h_line, h_top = min(hellos, key=lambda h: h[0] + h[1])
    k_build, k_run, k_line, k_top, _ = min(kits, key=lambda k: k[0] + k[1])
    hello_total, kit_total = h_build + h_run, k_build + k_run
    ratio = kit_total / hello_total
    rustc = subprocess.run(["rustc", "-V"], capture_output=True, text=True).stdout.strip()
    out = [
        BEGIN,
        f"Measured by `scripts/first-build.py` on {time.strftime('%Y-%m-%d')}, {cores} cores, {rustc}; crates downloaded, empty target",
        f"directories, one build after the other, {rounds} rounds alternating which goes first; the best of each. Time to the",
        "first line the program prints:",
        "",
        "| build | cargo build | to first line | total |",
        "|---|---|---|---|",
        f"| `cargo run --example user_service` (eventkit, default features) | {k_build:.1f} s | {k_run:.2f} s | **{kit_total:.1f} s** |",
        f"| hello-world on rdkafka (same version and features) + tokio + serde_json | {h_build:.1f} s | {h_run:.2f} s | **{hello_total:.1f} s** |",
        "",
        f"Ratio: **{ratio:.2f}x** (the target is at most 1.3x). First lines: `{k_line[:100]}` and `{h_line[:100]}`.",
        "",
        "Longest units of the first command's build (`cargo build --timings`; they overlap on the cores):",
        "",
        "| unit | seconds |",
        "|---|---|",
        *[f"| {name} | {secs:.1f} |" for name, secs in k_top],
        "",
        "Of the hello-world's:",
        "",
        "| unit | seconds |",
        "|---|---|",
        *[f"| {name} | {secs:.1f} |" for name, secs in h_top],
        "",
        "Each round (hello-world, eventkit, ratio): " + "; ".join(f"{h:.1f} s, {k:.1f} s, {k / h:.2f}x" for h, k in each) + ".",
    ]
    if costs:
        out += [
            "",
            "What each feature adds to a build of eventkit without features, already built (its",
            "dependencies not built yet, and eventkit's rebuild; measured one after the other in the same",
            "target directory, so a dependency two features share is counted at the first):",
            "",
            "| feature | seconds |",
            "|---|---|",
            *[f"| `{name}` | {secs:.1f} |" for name, secs in costs],
        ]
    out.append(END)
    block = "\n".join(out)
    print(block)
    path = os.path.join(ROOT, "BENCHMARKS.md")
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    if BEGIN in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n## The first build\n\n" + block + "\n"
    open(path, "w").write(text)


if __name__ == "__main__":
    main()
