"""Structured logs: one JSON object per line, carrying the current trace and span ids.

With the trace id in the log line, the audit record and the usage event, one access can be followed across
all three. `sluice serve` installs this formatter on the root logger (uvicorn's own access log is replaced by
the `sluice.access` line the request middleware writes).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from opentelemetry import trace

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)  # as json.dumps(..., ensure_ascii=False, default=str)


class JsonFormatter(logging.Formatter):
    """Formats a record as JSON: time, level, logger, message, trace_id, span_id and any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        trace_id = getattr(record, "trace_id", None)
        current = trace.get_current_span().get_span_context()  # the current span's ids, when it has any
        if not trace_id and current.is_valid:
            trace_id = trace.format_trace_id(current.trace_id)
        if trace_id:
            out["trace_id"] = trace_id
            out["span_id"] = trace.format_span_id(current.span_id) if current.is_valid else None
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return _ENCODER.encode(out)


QUIET_LOGGERS = ("casbin",)
"""Libraries whose INFO records are noise in a service log (casbin prints the whole model and policy each time an
enforcer is built); they log warnings and errors only."""


def configure_json_logging(level: int = logging.INFO, stream: TextIO | None = None) -> logging.Handler:
    """Send every log record to `stream` (stderr) as JSON lines; returns the handler installed."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h.formatter, JsonFormatter)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    return handler
