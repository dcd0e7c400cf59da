"""`gantools paint`: a GANPaint-style studio in the browser, offline, for generated and real images.

After Bau et al., "Semantic Photo Manipulation with a Generative Image Prior" (SIGGRAPH 2019): brush
over an image, choose a concept of the dissection's segmenter, and Add or Remove it; the generator
redraws the brushed region with the concept's top units of one layer switched on (towards their q99
level) or off, the edit of `gantools edit` restricted to the stroke.

- `studio`: the model side shared by all sessions (`open_studio`, `PaintStudio`, the cached
  dissection behind the palette: `paint_report`);
- `session`: one browser tab's image, features and undo history (`PaintSession`, `SessionStore`);
- `server`: the page and its JSON API on the standard library's http.server (`make_server`);
- `page`: the page itself, one inline HTML document.

    from gantools.paint import open_studio, make_server
    server = make_server(open_studio("scenes64"))
    print(server.url); server.serve_forever()
"""

from .server import PaintServer, RequestError, make_server, parse_mask, read_upload
from .session import PaintSession, PaintState, SessionStore, describe_change, image_state, png_data_uri, sample_state
from .studio import (ACTIONS, ConceptEntry, PaintSettings, PaintStudio, default_cache_dir, open_studio,
                     paint_report)

__all__ = ["ACTIONS", "ConceptEntry", "PaintServer", "PaintSession", "PaintSettings", "PaintState",
           "PaintStudio", "RequestError", "SessionStore", "default_cache_dir", "describe_change", "image_state",
           "make_server", "open_studio", "paint_report", "parse_mask", "png_data_uri", "read_upload", "sample_state"]
