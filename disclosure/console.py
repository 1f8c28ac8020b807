"""Templates of the regulator's console (the routes live in `sandbox.app.routes_console`): the page layout, the
audit trail with in-browser proof verification, and the public pages. Rendering only; no data is read here."""

from __future__ import annotations

from typing import Any

from disclosure.render import ENV


def render_page(template: str, **context: Any) -> str:
    """Render one console page (`console/<template>`) with the shared layout."""
    return ENV.get_template(f"console/{template}").render(**context)
