#!/usr/bin/env python3
"""Writes docs/berthctl-vs-ctr.md: berthctl's command tree beside ctr 1.6's
and ctr 2.1.5's, read from each binary's `--help` pages (recursively).

    python3 docs/berthctl-vs-ctr.py target/debug/berthctl /usr/bin/ctr \
        ../shared/tools/ctr-2.1.5 > docs/berthctl-vs-ctr.md

The notes below say why a command differs or is missing; every other
command present in all trees is "same"."""

import re
import subprocess
import sys

# Commands berthctl has and ctr does not, or has with a deliberate difference.
DIFFERENT = {
    "content prune": "without a subcommand it runs a garbage collection now (ctr prints help)",
    "content fetch": "done by berthctl itself (berth-client), as ctr's by the Go client; "
    "no --metadata-only/--all-metadata/--skip-metadata",
    "content fetch-object": "also takes a digest in the reference's repository (ctr ignores its <object>)",
    "images pull": "runs in berthd through the Transfer service (ctr 1.6 pulls client-side); "
    "client-side on a daemon without one",
    "images push": "as `images pull`",
    "images import": "as `images pull`",
    "images export": "as `images pull`",
    "images convert": "same converter semantics; manifests re-serialised by berth, so new digests differ from ctr's "
    "(media types and layer digests are the same)",
    "pprof": "berthd's debug endpoint serves only the CPU profile",
    "pprof profile": "a pprof protobuf of berthd's threads (Rust frames) from `[debug] address`; "
    "default socket /run/berth/debug.sock",
    "shim": "also ctr 2.x's --shim-address",
    "shim exec": "no --attach (give fifo or file paths)",
    "shim state": "takes an optional exec id; prints the task API's JSON",
    "events": "payloads decoded; --format json gives JSON lines",
    "pull": "berth's shorthand of `images pull`",
    "push": "berth's shorthand of `images push`",
    "stress": "containerd-stress built in",
    "completion": "shell completion scripts (clap_complete)",
    "man": "the man page (clap_mangen)",
}

# ctr commands berthctl lacks, and why.
MISSING = {
    "install": "installs binaries from an image onto the host; `cargo xtask install` installs berth",
    "pprof block": "Go runtime profile; berthd is not a Go program",
    "pprof goroutines": "Go runtime dump; berthd is not a Go program",
    "pprof heap": "Go heap profile; berthd is not a Go program",
    "pprof threadcreate": "Go runtime profile; berthd is not a Go program",
    "pprof trace": "Go execution trace; berthd is not a Go program",
    "shim pprof": "Go runtime profiles of a Go shim; berth's shim is Rust",
    "deprecations": "not yet: berthd reports no deprecation warnings (Introspection `deprecations` is empty)",
    "images inspect": "not yet: `images ls --format json` and `content get` show the same records",
    "images prune": "not yet: `images rm` and `content prune`",
    "info": "not yet: `version`, `plugins ls --format json`",
    "plugins inspect-runtime": "not yet",
    "sandboxes": "berthd serves no Sandbox API; pods are CRI's (use crictl)",
}


def ctr_tree(binary, path=(), acc=None):
    """`name path` -> (aliases, description), from urfave/cli help pages."""
    acc = {} if acc is None else acc
    help_text = subprocess.run(
        [binary, *path, "--help"], capture_output=True, text=True, check=False
    ).stdout
    inside = False
    for line in help_text.splitlines():
        if line.rstrip().endswith("COMMANDS:"):
            inside = True
            continue
        if not inside:
            continue
        if not line.strip() or not line.startswith(" "):
            break
        text = line.strip()
        names = re.split(r"\s{2,}", text)[0]
        parts = [n.strip() for n in names.split(",")]
        if parts[0] == "help":
            continue
        key = " ".join((*path, parts[0]))
        acc[key] = (parts[1:], text[len(names):].strip())
        ctr_tree(binary, (*path, parts[0]), acc)
    return acc


def berthctl_tree(binary, path=(), acc=None):
    """`name path` -> aliases, from clap help pages."""
    acc = {} if acc is None else acc
    help_text = subprocess.run(
        [binary, *path, "--help"], capture_output=True, text=True, check=False
    ).stdout
    inside = False
    for line in help_text.splitlines():
        if line == "Commands:":
            inside = True
            continue
        if not inside:
            continue
        if not line.strip():
            break
        if not line.startswith("  ") or line.startswith("   "):
            continue
        name = line.split()[0]
        if name == "help":
            continue
        m = re.search(r"\[alias(?:es)?: ([^\]]*)\]", line)
        aliases = [a.strip() for a in m.group(1).split(",")] if m else []
        key = " ".join((*path, name))
        acc[key] = aliases
        berthctl_tree(binary, (*path, name), acc)
    return acc


def ours(berth, key):
    """berthctl's name for ctr command `key` (ctr names may be aliases)."""
    parts = key.split(" ")
    found = []
    for i, part in enumerate(parts):
        prefix = " ".join(found)
        candidates = [
            k
            for k, al in berth.items()
            if k.count(" ") == i
            and k.startswith(prefix)
            and (k.split(" ")[-1] == part or part in al)
        ]
        if not candidates:
            return None
        found = candidates[0].split(" ")
    return " ".join(found)


def main():
    berth_bin, ctr16_bin, ctr21_bin = sys.argv[1:4]
    berth = berthctl_tree(berth_bin)
    ctr16 = ctr_tree(ctr16_bin)
    ctr21 = ctr_tree(ctr21_bin)
    keys = sorted(set(ctr16) | set(ctr21))
    out = [
        "# berthctl beside ctr 1.6 and ctr 2.1.5",
        "",
        "Generated by `docs/berthctl-vs-ctr.py` from the `--help` pages of",
        "berthctl, Debian's `ctr` (containerd 1.6) and `ctr` 2.1.5, walked",
        "recursively. `same` means the command exists in berthctl (under ctr's",
        "name or as an alias of berthctl's `ls`/`rm` names) with ctr's",
        "meaning; notes say what differs on purpose, or why a command is",
        "missing. `tests/tests/berthctl_help.rs` keeps the 1.6 tree honest.",
        "Commands are compared, not their flags (crates/ctl/README.md lists",
        "`run`'s); regenerate after changing berthctl's tree.",
        "",
        "| ctr command (aliases) | ctr 1.6 | ctr 2.1.5 | berthctl | status |",
        "|---|---|---|---|---|",
    ]
    counts = {"same": 0, "different": 0, "missing": 0}
    ctr_names = {**ctr16, **ctr21}
    for key in keys:
        in16 = "yes" if key in ctr16 else "—"
        in21 = "yes" if key in ctr21 else "—"
        name = ours(berth, key)
        if name is None:
            words = key.split(" ")
            why = next(
                (
                    MISSING[" ".join(words[:n])]
                    for n in range(len(words), 0, -1)
                    if " ".join(words[:n]) in MISSING
                ),
                None,
            )
            if why is None:
                why = "missing (no note: please add one)"
            status = f"missing: {why}"
            counts["missing"] += 1
            shown = "—"
        else:
            shown = f"`{name}`"
            if key in DIFFERENT:
                status = f"different on purpose: {DIFFERENT[key]}"
                counts["different"] += 1
            else:
                status = "same"
                counts["same"] += 1
        aliases = ctr_names[key][0]
        label = f"`{key}`" + (f" ({', '.join(aliases)})" if aliases else "")
        out.append(f"| {label} | {in16} | {in21} | {shown} | {status} |")
    matched = {ours(berth, k) for k in keys}
    extras = sorted(k for k in berth if k not in matched)
    out += [
        "",
        "berthctl commands ctr has not:",
        "",
        "| berthctl | note |",
        "|---|---|",
    ]
    for k in extras:
        out.append(f"| `{k}` | {DIFFERENT.get(k, 'berth-specific')} |")
    out += [
        "",
        f"Totals over ctr's commands: {counts['same']} same, "
        f"{counts['different']} different on purpose, {counts['missing']} missing.",
        "",
    ]
    print("\n".join(out))


if __name__ == "__main__":
    main()
