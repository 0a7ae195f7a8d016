"""Where a result came from: the command, the code, torch's version and threads, the date.

Every script whose output the README quotes prints :func:`header` first (or stores
:func:`provenance` in its JSON), so a file under results/ says how to make it again.
"""

from __future__ import annotations

import datetime
import shlex
import subprocess
import sys
from pathlib import Path

import torch

PACKAGE = Path(__file__).resolve().parent


def code_version(package: Path = PACKAGE) -> str:
    """The git commit of the checkout ``package`` was imported from, "+dirty" where its files differ from
    that commit, or "unknown" outside git. It names the code that ran, which with an editable install is
    not the checkout of the script that was called: running another checkout's scripts with this
    environment imports this package."""
    try:
        run = ["git", "-C", str(package)]
        commit = subprocess.run([*run, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return "unknown"
        changed = subprocess.run([*run, "status", "--porcelain", "--", "."], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit.stdout.strip() + ("+dirty" if changed.stdout.strip() else "")


def provenance() -> dict[str, str | int]:
    return {
        "command": shlex.join(["python", *sys.argv]),
        "code": code_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": datetime.date.today().isoformat(),
    }


def header() -> str:
    p = provenance()
    return f"# {p['command']}\n# code {p['code']}, torch {p['torch']}, {p['threads']} threads, {p['date']}"
