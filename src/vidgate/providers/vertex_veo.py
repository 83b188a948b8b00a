"""Vertex AI — Veo (provider-apis.md §2 "Vertex AI differences").

The instance/parameter schema, the Operation shapes and the Google error envelope are the
Gemini API's, so this adapter subclasses :class:`GeminiVeo` and changes only what differs:

- host ``https://{LOCATION}-aiplatform.googleapis.com/v1`` and the path
  ``projects/{PROJECT}/locations/{LOCATION}/publishers/google/models/{MODEL}:predictLongRunning``
  (the SDK uses ``v1beta1``; the REST docs use ``v1``, as here);
- polling is ``POST {resource}:fetchPredictOperation`` with ``{"operationName": name}``, the
  resource being the operation name up to ``/operations/`` (googleapis/python-genai
  ``operations.py`` does exactly this);
- auth is ``Authorization: Bearer <OAuth2 access token>``, minted here from the service-account
  JSON named by ``GOOGLE_APPLICATION_CREDENTIALS`` (an RS256 JWT assertion exchanged at the
  JSON's ``token_uri``) and cached until shortly before it expires. In sandbox mode the fixed
  sandbox credential is the bearer token and nothing is minted;
- the result is ``response.videos[]``, each ``{gcsUri}`` (with ``storageUri``) or inline
  ``{bytesBase64Encoded, mimeType}``; images/videos may be ``gcsUri``; extra parameters
  ``seed``, ``fps``, ``generateAudio``, ``storageUri``.

Project: ``GOOGLE_CLOUD_PROJECT``, else the JSON's ``project_id`` (google-auth's order).
Location: ``VIDGATE_VERTEX_LOCATION`` (default ``us-central1``). Output: provider option
``storageUri`` or ``VIDGATE_VERTEX_OUTPUT_URI`` (``gs://...``); without one Vertex answers
inline base64, returned as a ``data:`` URL asset. Project, location and region are pinned in
the ProviderJob; follow-up calls never re-read them.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import httpx
import jwt

from vidgate.catalog.schema import Offering
from vidgate.errors import (
    AuthFailed,
    CapabilityMismatch,
    ConfigError,
    InvalidRequest,
    ProviderProtocolError,
    RateLimited,
    VidgateError,
)
from vidgate.providers._http import json_body, send
from vidgate.providers.base import (
    ProviderJob,
    RemoteAsset,
    RemoteStatus,
    error_for_status,
    register,
    retry_after_seconds,
)
from vidgate.providers.gemini_veo import (
    GeminiVeo,
    Result,
    count_of,
    data_url,
    dicts_in,
    filter_reasons,
    request_id_of,
)
from vidgate.providers.options import OptionField, passed
from vidgate.settings import Credentials
from vidgate.types import Reference, VideoRequest

CREDENTIALS_ENV = "GOOGLE_APPLICATION_CREDENTIALS"
PROJECT_ENV = "GOOGLE_CLOUD_PROJECT"
LOCATION_ENV = "VIDGATE_VERTEX_LOCATION"
OUTPUT_ENV = "VIDGATE_VERTEX_OUTPUT_URI"
DEFAULT_LOCATION = "us-central1"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: the audience of every service-account assertion (google-auth's _GOOGLE_OAUTH2_TOKEN_ENDPOINT)
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
#: where Vertex writes when no storageUri is given in sandbox mode (the emulator serves it)
SANDBOX_PROJECT = "vidgate-sandbox"
SANDBOX_OUTPUT = "gs://vidgate-sandbox/veo"
GCS_API = "https://storage.googleapis.com"
_LOCATION = re.compile(r"^[a-z]+(?:-[a-z0-9]+)*$")
_GCS_URL = re.compile(r"^https://storage\.googleapis\.com/([a-z0-9][a-z0-9._-]+)/(.+)$")
COMPRESSION = ("optimized", "lossless")
RESIZE = ("pad", "crop")


@dataclass(frozen=True)
class ServiceAccount:
    client_email: str
    private_key: str
    private_key_id: str | None
    token_uri: str
    project_id: str | None


def load_service_account(path: str) -> ServiceAccount:
    """Read a service-account key file; every problem is an AuthFailed naming the file."""
    where = f"{CREDENTIALS_ENV} ({path})"
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise AuthFailed(f"{where} cannot be read: {e.strerror or e}") from None
    except ValueError:
        raise AuthFailed(f"{where} is not a JSON key file") from None
    if not isinstance(data, dict) or data.get("type") != "service_account":
        kind = data.get("type") if isinstance(data, dict) else None
        raise AuthFailed(
            f"{where} is a {kind!r} credential; vertex-veo mints tokens from "
            "service_account key files only"
        )
    missing = [k for k in ("client_email", "private_key", "token_uri") if not data.get(k)]
    if missing:
        raise AuthFailed(f"{where} lacks {', '.join(missing)}")
    return ServiceAccount(
        client_email=str(data["client_email"]),
        private_key=str(data["private_key"]),
        private_key_id=str(data["private_key_id"]) if data.get("private_key_id") else None,
        token_uri=str(data["token_uri"]),
        project_id=str(data["project_id"]) if data.get("project_id") else None,
    )


class TokenCache:
    """OAuth2 access tokens minted from service accounts, cached until shortly before they
    expire. Shared by adapter instances (the gateway builds one per call)."""

    def __init__(self, clock: Callable[[], float] = time.time, margin_s: float = 60.0) -> None:
        self.clock = clock
        self.margin_s = margin_s
        self._tokens: dict[tuple[str, str, str | None], tuple[str, float]] = {}

    def clear(self) -> None:
        self._tokens.clear()

    async def token(self, client: httpx.AsyncClient, sa: ServiceAccount, provider: str) -> str:
        key = (sa.client_email, sa.token_uri, sa.private_key_id)
        now = self.clock()
        hit = self._tokens.get(key)
        if hit is not None and hit[1] - self.margin_s > now:
            return hit[0]
        claims = {
            "iss": sa.client_email,
            "scope": SCOPE,
            # Google's token endpoint, whatever token_uri the key names (google-auth does the
            # same); the assertion is still POSTed to token_uri
            "aud": GOOGLE_TOKEN_AUDIENCE,
            "iat": int(now),
            "exp": int(now) + 3600,
        }
        headers = {"kid": sa.private_key_id} if sa.private_key_id else None
        try:
            assertion = jwt.encode(claims, sa.private_key, algorithm="RS256", headers=headers)
        except (ValueError, TypeError, jwt.PyJWTError) as e:
            raise AuthFailed(
                f"the private key of {sa.client_email} cannot sign: {type(e).__name__}",
                provider=provider,
            ) from None
        resp = await send(
            client,
            "POST",
            sa.token_uri,
            provider=provider,
            data={"grant_type": JWT_BEARER_GRANT, "assertion": assertion},
        )
        body = json_body(resp)
        if resp.status_code >= 400:
            raise _token_error(resp, body, provider)
        token, expires_in = body.get("access_token"), body.get("expires_in", 3600)
        if not isinstance(token, str) or not token:
            raise ProviderProtocolError(
                "the token endpoint answered without an access_token", provider=provider
            )
        ttl = float(expires_in) if isinstance(expires_in, int | float) else 3600.0
        self._tokens[key] = (token, now + ttl)
        return token


def _token_error(resp: httpx.Response, body: Mapping[str, Any], provider: str) -> VidgateError:
    """OAuth2 token-endpoint errors: ``{"error": "invalid_grant", "error_description": ...}``."""
    code = str(body.get("error") or resp.reason_phrase)
    message = f"token exchange failed: {code}: {body.get('error_description') or ''}".rstrip()
    rid = request_id_of(resp)
    if resp.status_code in (400, 401, 403):
        return AuthFailed(message, provider=provider, request_id=rid, status_code=resp.status_code)
    if resp.status_code == 429:
        return RateLimited(
            message,
            retry_after=retry_after_seconds(resp.headers),
            provider=provider,
            request_id=rid,
            status_code=429,
        )
    return error_for_status(resp.status_code, message, provider=provider, request_id=rid)


#: process-wide token cache
TOKENS = TokenCache()


def gcs_download_base(api_base: str) -> str:
    """Where gs:// outputs are downloaded (the GCS JSON API's media endpoint). For a
    non-Google base URL (the sandbox, a proxy) the same mount serves it, minus ``/v1``."""
    host = urlsplit(api_base).hostname or ""
    if host == "googleapis.com" or host.endswith(".googleapis.com"):
        return GCS_API
    return api_base.rstrip("/").removesuffix("/v1")


@register
class VertexVeo(GeminiVeo):
    protocol: ClassVar[str] = "vertex-veo"
    #: provider_options fields (providers/options.py): Gemini's, plus Vertex's output options
    option_fields: ClassVar[Mapping[str, OptionField]] = {
        **GeminiVeo.option_fields,
        "storageUri": passed(str),
        "compressionQuality": passed(str),
        "resizeMode": passed(str),
    }
    default_base_url: ClassVar[str] = f"https://{DEFAULT_LOCATION}-aiplatform.googleapis.com/v1"
    option_keys: ClassVar[frozenset[str]] = GeminiVeo.option_keys | {
        "storageUri",
        "compressionQuality",
        "resizeMode",
    }

    def __init__(
        self,
        *,
        client: httpx.AsyncClient,
        credentials: Credentials,
        base_url: str | None = None,
        env: Mapping[str, str] | None = None,
        tokens: TokenCache | None = None,
    ) -> None:
        super().__init__(client=client, credentials=credentials, base_url=base_url)
        # Without an explicit base URL the host follows the location (a regional endpoint).
        self._explicit_base = base_url is not None
        self.env = env if env is not None else os.environ
        self.tokens = tokens or TOKENS

    # -- where -----------------------------------------------------------------------------

    def location(self) -> str:
        loc = self.env.get(LOCATION_ENV) or DEFAULT_LOCATION
        if not _LOCATION.match(loc):
            raise ConfigError(f"{LOCATION_ENV}={loc!r} is not a Google Cloud location")
        return loc

    def api_base(self, location: str) -> str:
        if self._explicit_base:
            return self.base_url
        host = "aiplatform.googleapis.com"
        return f"https://{host if location == 'global' else f'{location}-{host}'}/v1"

    async def _auth(self, creds: tuple[str, ...]) -> tuple[str, str | None]:
        """(bearer token, project id from the key file)."""
        name = creds[0] if creds else CREDENTIALS_ENV
        if self.credentials.sandbox:
            return self.credentials.get(name), SANDBOX_PROJECT
        path = self.credentials.get(name)
        sa = await asyncio.to_thread(load_service_account, path)
        return await self.tokens.token(self.client, sa, self.protocol), sa.project_id

    async def _bearer(self, creds: tuple[str, ...]) -> dict[str, str]:
        token, _ = await self._auth(creds)
        return {"Authorization": f"Bearer {token}"}

    # -- mapping ---------------------------------------------------------------------------

    def _media(self, ref: Reference, kind: str) -> dict[str, Any]:
        parsed = data_url(ref.url)
        if parsed is not None and parsed[0].startswith(f"{kind}/"):
            return {"bytesBase64Encoded": parsed[1], "mimeType": parsed[0]}
        gcs = _GCS_URL.match(ref.url)
        if gcs is not None:
            # Vertex reads Cloud Storage itself: an https storage URL becomes a gs:// URI.
            return {"gcsUri": f"gs://{gcs.group(1)}/{gcs.group(2)}"}
        raise CapabilityMismatch(
            f"Vertex AI takes {ref.role.value} {kind}s as a data:{kind}/... URL or a "
            "https://storage.googleapis.com/BUCKET/OBJECT URL",
            provider=self.protocol,
        )

    def image(self, ref: Reference) -> dict[str, Any]:
        return self._media(ref, "image")

    def video(self, ref: Reference) -> dict[str, Any]:
        return self._media(ref, "video")

    def options(self, request: VideoRequest, offering: Offering) -> dict[str, Any]:
        opts = super().options(request, offering)
        uri = opts.get("storageUri")
        if uri is not None and not (isinstance(uri, str) and uri.startswith("gs://")):
            raise InvalidRequest(
                "storageUri must be a gs://bucket/prefix URI", provider=self.protocol
            )
        for key, allowed in (("compressionQuality", COMPRESSION), ("resizeMode", RESIZE)):
            if key in opts and opts[key] not in allowed:
                raise InvalidRequest(
                    f"{key} must be one of {', '.join(allowed)}", provider=self.protocol
                )
        return opts

    def parameters(self, request: VideoRequest, offering: Offering) -> dict[str, Any]:
        params = super().parameters(request, offering)
        # Vertex asks for audio explicitly (generateAudio); say it either way.
        params["generateAudio"] = bool(offering.capabilities.audio_generated(request.audio))
        if request.seed is not None:
            params["seed"] = request.seed
        if request.fps is not None:
            params["fps"] = request.fps
        if "storageUri" not in params:
            output = self.env.get(OUTPUT_ENV) or (
                SANDBOX_OUTPUT if self.credentials.sandbox else None
            )
            if output:
                if not output.startswith("gs://"):
                    raise ConfigError(f"{OUTPUT_ENV} must be a gs:// URI")
                params["storageUri"] = output
        return params

    def result(self, response: Mapping[str, Any]) -> Result | None:
        """Vertex has no generateVideoResponse wrapper: ``response.videos[]``."""
        if "videos" not in response and "raiMediaFilteredCount" not in response:
            return None
        videos = dicts_in(response.get("videos"))
        return videos, count_of(response.get("raiMediaFilteredCount")), filter_reasons(response)

    # -- contract --------------------------------------------------------------------------

    async def submit(
        self, request: VideoRequest, offering: Offering, *, idempotency_key: str
    ) -> ProviderJob:
        body = self.body(request, offering)  # every mapping error before any network call
        location = self.location()
        creds = tuple(offering.credential_env) or (CREDENTIALS_ENV,)
        token, file_project = await self._auth(creds)
        project = self.env.get(PROJECT_ENV) or file_project
        if not project:
            raise ConfigError(
                f"no Google Cloud project: set {PROJECT_ENV} or use a key file with project_id"
            )
        base = self.api_base(location)
        model = offering.provider_model_id
        resp = await send(
            self.client,
            "POST",
            f"{base}/projects/{project}/locations/{location}/publishers/google/models/"
            f"{model}:predictLongRunning",
            provider=self.protocol,
            create=True,  # Vertex has no idempotency key either: sent exactly once
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        )
        op = self._operation(resp)
        return ProviderJob(
            protocol=self.protocol,
            offering_id=offering.id,
            remote_id=op["name"],
            base_url=base,
            credential_ref=creds,
            region=location,
            extra={"project": project, "location": location, "gcs_base": gcs_download_base(base)},
        )

    async def _vertex_operation(self, job: ProviderJob) -> tuple[dict[str, Any], str | None]:
        resource, sep, _ = job.remote_id.rpartition("/operations/")
        if not sep or not resource:
            raise ProviderProtocolError(
                f"{job.remote_id!r} is not a Vertex operation name", provider=self.protocol
            )
        resp = await send(
            self.client,
            "POST",
            f"{job.base_url}/{resource}:fetchPredictOperation",
            provider=self.protocol,
            json={"operationName": job.remote_id},
            headers=await self._bearer(job.credential_ref),
        )
        return self._operation(resp), request_id_of(resp)

    async def poll(self, job: ProviderJob) -> RemoteStatus:
        op, rid = await self._vertex_operation(job)
        return self.status_of(op, rid or job.remote_id)

    async def fetch(self, job: ProviderJob) -> list[RemoteAsset]:
        op, _ = await self._vertex_operation(job)
        shape, result = self._parsed(op)
        if shape != "succeeded" or result is None:
            raise ProviderProtocolError(
                f"operation {job.remote_id} has no video to fetch ({shape})",
                provider=self.protocol,
                request_id=job.remote_id,
            )
        headers = await self._bearer(job.credential_ref)
        return [self._asset(video, job, headers) for video in result[0]]

    def _asset(
        self, video: Mapping[str, Any], job: ProviderJob, headers: dict[str, str]
    ) -> RemoteAsset:
        mime = str(video.get("mimeType") or "video/mp4")
        uri, encoded = video.get("gcsUri"), video.get("bytesBase64Encoded")
        if isinstance(uri, str) and uri.startswith("gs://"):
            bucket, _, obj = uri[len("gs://") :].partition("/")
            base = job.extra.get("gcs_base", GCS_API)
            return RemoteAsset(
                url=f"{base}/download/storage/v1/b/{bucket}/o/{quote(obj, safe='')}?alt=media",
                content_type=mime,
                headers=headers,
            )
        if isinstance(encoded, str) and encoded:
            return RemoteAsset(url=f"data:{mime};base64,{encoded}", content_type=mime)
        raise ProviderProtocolError(
            "a generated video has neither gcsUri nor bytesBase64Encoded",
            provider=self.protocol,
            request_id=job.remote_id,
        )
