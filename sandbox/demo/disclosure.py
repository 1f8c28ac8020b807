"""The demo's disclosure part: the current year's disclosure and the current quarter's scenario report, as drafts
(the periods have not closed), in both languages and every format, verified offline."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from disclosure.labels import LANGS
from disclosure.sealed import verify_report
from disclosure.signing import KeyRing
from sandbox.cli.client import Client
from sandbox.cli.disclose import FORMATS, write_report


class Say(Protocol):
    def step(self, text: str) -> None: ...
    def detail(self, text: str) -> None: ...


def disclosure_flow(auditor: Client, say: Say, home: Path, now: datetime, tz_name: str) -> dict[str, Any]:
    """Build the year's and the quarter's drafts as the regulator, write every format, verify the signatures."""
    local = now.astimezone(ZoneInfo(tz_name))
    out: dict[str, Any] = {}
    keys = KeyRing(home / "keys").public_keys("disclosure")
    for period, what in ((f"{local.year}", "the year's disclosure report (信息披露)"),
                         (f"{local.year}-Q{(local.month + 2) // 3}", "the quarter's scenario report (按季度调度)")):
        data, headers = auditor.fetch(f"/v1/disclosures/{period}", params={"format": "json"})
        signature = json.loads(base64.b64decode(headers["x-disclosure-signature"]))
        folder = home / "disclosures"
        files = write_report(folder, data, signature, list(FORMATS), list(LANGS))
        kid = verify_report(data, signature, keys)
        report = json.loads(data)
        say.step(f"The regulator builds {what} for {period}: a {report['status']} (the period has not closed)")
        say.detail(f"{len(report['operators'])} operators, {len(report['scenarios'])} scenario(s), "
                   f"{len(report['agency']['grants'])} grants; signed by disclosure key {kid}, verified offline")
        say.detail(f"files in {folder}: JSON, signature, HTML, Markdown and CSV in en and zh-CN")
        for f in files:
            if f.endswith(".html"):
                say.detail(f"  {f}")
        out[period] = {"status": report["status"], "sha256": signature["sha256"], "files": files}
    return out
