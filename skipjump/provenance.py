"""Where a result came from: the command, torch's version and threads, the date.

Every script whose output the README quotes prints :func:`header` first (or stores
:func:`provenance` in its JSON), so a file under results/ says how to make it again.
"""

from __future__ import annotations

import datetime
import shlex
import sys

import torch


def provenance() -> dict[str, str | int]:
    return {
        "command": shlex.join(["python", *sys.argv]),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": datetime.date.today().isoformat(),
    }


def header() -> str:
    p = provenance()
    return f"# {p['command']}\n# torch {p['torch']}, {p['threads']} threads, {p['date']}"
