"""Image references checked by their bytes, not by what the client says they are.

A provider handed bytes that are not an image fails late (after routing, reservation and a
submit), or worse decodes something it should not; a content type is only the client's
claim. So uploads and ``data:`` URLs are opened with Pillow — headers only, never decoded
in full, so a decompression bomb costs nothing — before any provider sees them.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings

from PIL import Image, UnidentifiedImageError

from vidgate.server.errors import ApiError

#: what providers take as an image reference, as Pillow names them -> the MIME type we send
FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
#: the largest side of a reference image (providers take 4k-class stills at most)
MAX_SIDE = 8192
MAX_IMAGE_BYTES = 20 * 1024 * 1024


def _refuse(param: str, message: str) -> ApiError:
    return ApiError(400, "invalid_image", f"{param}: {message}", param=param)


def sniff(data: bytes, param: str) -> str:
    """The MIME type of ``data`` read from its bytes; a 400 naming ``param`` when the
    bytes are not a PNG, JPEG, WebP or GIF image within the size limits."""
    allowed = "PNG, JPEG, WebP or GIF"
    if not data:
        raise _refuse(param, f"the image is empty; send a {allowed} image")
    if len(data) > MAX_IMAGE_BYTES:
        raise _refuse(param, f"the image is {len(data)} bytes; at most {MAX_IMAGE_BYTES}")
    try:
        with warnings.catch_warnings():
            # a bomb warning is an error here: we refuse, we do not decode it anyway
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=list(FORMATS)) as img:
                # opened with formats=FORMATS: the format is always one of them
                fmt, (w, h) = img.format or "", img.size  # pragma: no mutate — see above
                img.verify()  # walks the chunks/markers without decoding pixels
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _refuse(param, f"the bytes are not a {allowed} image") from None
    except Exception:  # a truncated or corrupt file: Pillow raises many kinds
        raise _refuse(
            param, f"the image is corrupt or truncated; send a whole {allowed} image"
        ) from None
    # Pillow opens no image with a 0-pixel side: "0 <= w" is the same rule
    if not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE):  # pragma: no mutate — see above
        raise _refuse(param, f"the image is {w}x{h}; each side is at most {MAX_SIDE} pixels")
    return FORMATS[fmt]


def decode_data_url(url: str, param: str) -> tuple[str, bytes]:
    """(declared MIME type, bytes) of a base64 ``data:`` URL; a 400 when it is malformed."""
    head, sep, payload = url.partition(",")
    if not sep or not head.startswith("data:") or not head.endswith(";base64"):
        raise _refuse(param, "a data: URL is data:<mime>;base64,<base64 bytes>")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _refuse(param, "the data: URL's payload is not valid base64") from None
    return head[5:-7].lower(), data


def checked_data_url(url: str, param: str) -> str:
    """A data: URL whose bytes are an image, rewritten with the MIME type its bytes show
    (a client's ``data:text/plain`` PNG is sent on as ``data:image/png``)."""
    declared, data = decode_data_url(url, param)
    mime = sniff(data, param)
    if declared == mime:
        return url  # already right: no copy of a large payload
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def data_url(data: bytes, param: str) -> str:
    """An uploaded image as a data: URL, after checking its bytes."""
    return f"data:{sniff(data, param)};base64,{base64.b64encode(data).decode()}"
