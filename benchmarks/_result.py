"""One benchmark's result file, stamped with the commit and time it was measured at, so a summary that
collects results from several `make bench` runs can say which commit each figure comes from."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path


def write_result(path: Path, doc: dict) -> None:
    from parity.provenance import git_sha

    doc = {**doc, "git": str(git_sha())[:12], "measured_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    path.write_text(json.dumps(doc, indent=2) + "\n")
