"""The media type a stored file is served with from the bucket.

A presigned or public URL opens the object on the bucket's own origin with the type it was
stored with, so that type comes from the file's name, and only for what runs take and make
(images, audio, video): anything else, SVG included, is served as bytes. Neither a client's claim
about an upload nor a node's choice of file name can turn a file into a page with scripts.
"""

from __future__ import annotations

import mimetypes

#: Media kinds a file is served as (by its name); anything else is served as bytes.
SERVED_MEDIA = frozenset({"image", "audio", "video"})
#: Media of those kinds a browser runs scripts in when opened on their own.
SCRIPTABLE_MEDIA = frozenset({"image/svg+xml"})
#: How every other file is served.
BYTES = "application/octet-stream"


def served_content_type(file_name: str) -> str:
    """The type ``file_name`` is stored and served with."""
    guessed = mimetypes.guess_type(file_name)[0] or ""
    if guessed.split("/")[0] in SERVED_MEDIA and guessed not in SCRIPTABLE_MEDIA:
        return guessed
    return BYTES
