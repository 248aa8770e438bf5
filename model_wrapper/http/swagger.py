"""The Swagger UI page, with its assets served by the wrapper itself (no CDN: clusters may be air-gapped).

Used by the docs endpoint in `model_wrapper.http.app`; the assets come from the pinned
`swagger-ui-bundle` package.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from swagger_ui_bundle import swagger_ui_path

ASSETS = Path(str(swagger_ui_path))

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{title}</title>
  <link rel="stylesheet" href="{assets}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{assets}/favicon-32x32.png" sizes="32x32">
  <style>body {{ margin: 0; background: #fafafa; }}</style>
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{assets}/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{
      url: {openapi_url},
      dom_id: "#swagger-ui",
      deepLinking: true,
      docExpansion: "list",
      defaultModelsExpandDepth: 2,
      defaultModelExpandDepth: 3,
      displayRequestDuration: true,
      validatorUrl: null,
      onComplete: function () {{
        // Consumers come for predict: open it, unless a link already points somewhere.
        if (!window.location.hash) {{ window.ui.layoutActions.show(["operations", "default", "predict"], true); }}
      }},
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout"
    }});
  </script>
</body>
</html>
"""


def swagger_page(*, title: str, openapi_url: str, assets: str) -> str:
    """The page; every value is escaped (the title comes from the registry and is untrusted)."""
    return _PAGE.format(title=html.escape(title), assets=html.escape(assets, quote=True),
                        openapi_url=json.dumps(openapi_url).replace("<", "\\u003c"))
