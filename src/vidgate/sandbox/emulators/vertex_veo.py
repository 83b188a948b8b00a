"""Emulation of Veo on Vertex AI (provider-apis.md §2 "Vertex AI differences"), mounted at
``/vertex-veo/v1``, plus the two Google services a Vertex client also talks to:

- ``POST /vertex-veo/v1/projects/{p}/locations/{l}/publishers/google/models/{m}:predictLongRunning``
  and ``...:fetchPredictOperation`` (body ``{"operationName"}``), with ``Authorization: Bearer``
  and 401 ``UNAUTHENTICATED`` in the Google envelope for a bad token;
- results as ``response.videos[]``: ``{gcsUri, mimeType}`` when the request named a
  ``storageUri``, otherwise inline ``{bytesBase64Encoded, mimeType}``; RAI-filtered jobs have
  no videos and ``raiMediaFilteredCount``/``raiMediaFilteredReasons``;
- ``GET /vertex-veo/download/storage/v1/b/{bucket}/o/{object}?alt=media``: the Cloud Storage
  JSON API media download for those gs:// outputs (bearer token, GCS error shape);
- ``POST /vertex-veo/token``: an OAuth2 token endpoint for the JWT-bearer grant, so a
  service-account key file whose ``token_uri`` points here is exercised end to end. It checks
  the assertion's header and claims (RS256, iss, scope, lifetime; ``aud`` is Google's token
  endpoint, as google-auth signs it, never this URL) but cannot check the
  signature — Google verifies it against the key it registered, which a sandbox never sees.
  An assertion issued by ``invalid-key`` is refused with ``invalid_grant``.

There is no cancel and no idempotency key, as on the real API.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from vidgate.sandbox.core import INVALID_CREDENTIAL, SandboxCore, credential_ok
from vidgate.sandbox.emulators.gemini_veo import (
    FILTERED_REASON,
    GEMINI_PARAMETERS,
    bad_request,
    create_fault,
    google_error,
    hang_after_drop,
    json_object,
    operation,
    render_params,
    validate_create,
)
from vidgate.sandbox.store import SandboxJob

PROTOCOL = "vertex-veo"
VERTEX_PARAMETERS = GEMINI_PARAMETERS | {
    "seed",
    "fps",
    "generateAudio",
    "storageUri",
    "compressionQuality",
    "resizeMode",
    "pubsubTopic",
}
MEDIA_KEYS = ("bytesBase64Encoded", "gcsUri")
RESPONSE_TYPE = "type.googleapis.com/cloud.ai.large_models.vision.GenerateVideoResponse"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: The audiences Google's token endpoint takes. google-auth signs every service-account
#: assertion for the first, whatever the key file's ``token_uri`` says (google-auth
#: oauth2/service_account.py: ``"aud": _GOOGLE_OAUTH2_TOKEN_ENDPOINT``), so the emulator takes
#: what Google takes, not its own URL. The two legacy endpoints are UNCONFIRMED as audiences.
TOKEN_AUDIENCES = frozenset(
    {
        "https://oauth2.googleapis.com/token",
        "https://www.googleapis.com/oauth2/v4/token",
        "https://accounts.google.com/o/oauth2/token",
    }
)


def _unauthenticated(reason: str) -> JSONResponse:
    return google_error(
        401,
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
        "cookie or other valid authentication credential.",
        details=[
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
                "metadata": {"service": "aiplatform.googleapis.com"},
            }
        ],
    )


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    return auth[len("Bearer ") :] if auth.startswith("Bearer ") else None


def _gcs_error(code: int, message: str, reason: str) -> JSONResponse:
    return JSONResponse(
        {
            "error": {
                "code": code,
                "message": message,
                "errors": [{"message": message, "domain": "global", "reason": reason}],
            }
        },
        status_code=code,
    )


def _extra_checks(params: dict[str, Any], fps: list[int]) -> str | None:
    seed = params.get("seed")
    if seed is not None and not (
        isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= 2**32 - 1
    ):
        return "`seed` must be an unsigned 32-bit integer."
    if "generateAudio" in params and not isinstance(params["generateAudio"], bool):
        return "`generateAudio` must be a boolean."
    if "fps" in params and params["fps"] not in fps:
        return f"`fps` must be one of {', '.join(str(f) for f in fps)}."
    uri = params.get("storageUri")
    if uri is not None and not (isinstance(uri, str) and uri.startswith("gs://") and len(uri) > 5):
        return "`storageUri` must be a gs:// URI."
    return None


def router(core: SandboxCore) -> APIRouter:
    r = APIRouter(prefix=f"/{PROTOCOL}")
    model_path = "/v1/projects/{project}/locations/{location}/publishers/google/models/{model}"

    def auth_error(request: Request) -> JSONResponse | None:
        token = _bearer(request)
        if not token:
            return _unauthenticated("CREDENTIALS_MISSING")
        if not credential_ok(token):
            return _unauthenticated("ACCESS_TOKEN_TYPE_UNSUPPORTED")
        return None

    def op_name(project: str, location: str, model: str, job_id: str) -> str:
        return (
            f"projects/{project}/locations/{location}/publishers/google/models/{model}"
            f"/operations/{job_id}"
        )

    @r.post(model_path + ":predictLongRunning")
    async def create(project: str, location: str, model: str, request: Request) -> Response:
        if (err := auth_error(request)) is not None:
            return err
        offering = core.offering_for(PROTOCOL, model)
        if offering is None:
            return google_error(
                404,
                f"Publisher Model `projects/{project}/locations/{location}/publishers/google/"
                f"models/{model}` not found.",
            )
        body = await json_object(request)
        if isinstance(body, JSONResponse):
            return body
        if "webhookConfig" in body:
            return bad_request('Invalid JSON payload received. Unknown name "webhookConfig".')
        checked = validate_create(
            body,
            offering,
            allowed=VERTEX_PARAMETERS,
            image_keys=MEDIA_KEYS,
            video_keys=MEDIA_KEYS,
        )
        if isinstance(checked, str):
            return bad_request(checked)
        inst, params = checked
        if (problem := _extra_checks(params, offering.capabilities.fps or [24])) is not None:
            return bad_request(problem)
        answer, drop = await create_fault(core, PROTOCOL, model)
        if answer is not None:
            return answer
        caps = offering.capabilities.audio
        audio = caps == "always" or (caps == "optional" and params.get("generateAudio") is True)
        job, _ = core.create_job(
            protocol=PROTOCOL,
            model=model,
            # core reads the moderation trigger from a top-level "prompt"
            body={"prompt": str(inst.get("prompt") or ""), **body},
            params={
                **render_params(inst, params, offering, audio=audio),
                "project": project,
                "location": location,
                "storage_uri": params.get("storageUri"),
            },
            idempotency_key=None,  # Vertex has no idempotency key
        )
        if drop is not None:
            return await hang_after_drop(core, job)
        return JSONResponse({"name": op_name(project, location, model, job.id)})

    @r.post(model_path + ":fetchPredictOperation")
    async def fetch_operation(
        project: str, location: str, model: str, request: Request
    ) -> Response:
        if (err := auth_error(request)) is not None:
            return err
        body = await json_object(request)
        if isinstance(body, JSONResponse):
            return body
        name = body.get("operationName")
        prefix = op_name(project, location, model, "")
        if not isinstance(name, str) or not name.startswith(prefix):
            return bad_request("`operationName` must name an operation of this model.")
        job = core.store.get(name[len(prefix) :])
        if (
            job is None
            or job.protocol != PROTOCOL
            or job.model != model
            or job.params.get("project") != project
            or job.params.get("location") != location
        ):
            return google_error(404, f"Operation {name} not found.")
        if core.pick_fault(PROTOCOL, job.model, {"poll_unavailable"}):
            return google_error(503, "The service is currently unavailable.")
        n = int(job.params.get("samples", 1))
        storage = job.params.get("storage_uri")
        inline = ""
        if storage is None and job.phase()[0] == "succeeded":
            path = await asyncio.to_thread(core.render, job)
            inline = base64.b64encode(await asyncio.to_thread(Path(path).read_bytes)).decode()

        def success(j: SandboxJob) -> dict[str, Any]:
            if storage is not None:
                videos = [
                    {
                        "gcsUri": f"{str(storage).rstrip('/')}/{j.id}/sample_{i}.mp4",
                        "mimeType": "video/mp4",
                    }
                    for i in range(n)
                ]
            else:
                videos = [{"bytesBase64Encoded": inline, "mimeType": "video/mp4"}] * n
            return {"videos": videos}

        def filtered(j: SandboxJob) -> dict[str, Any]:
            return {"raiMediaFilteredCount": n, "raiMediaFilteredReasons": [FILTERED_REASON]}

        return JSONResponse(operation(job, name, success, filtered, RESPONSE_TYPE))

    @r.get("/download/storage/v1/b/{bucket}/o/{object_name:path}")
    async def gcs_download(
        bucket: str, object_name: str, request: Request, alt: str = ""
    ) -> Response:
        token = _bearer(request)
        if not token or not credential_ok(token):
            return _gcs_error(401, "Invalid Credentials", "authError")
        parts = object_name.split("/")
        job = core.store.get(parts[-2]) if len(parts) >= 2 else None
        uri = f"gs://{bucket}/{object_name}"
        storage = str(job.params.get("storage_uri") or "") if job is not None else ""
        if (
            job is None
            or job.protocol != PROTOCOL
            or not storage
            or not uri.startswith(storage.rstrip("/") + "/")
            or job.phase()[0] != "succeeded"
        ):
            return _gcs_error(404, f"No such object: {bucket}/{object_name}", "notFound")
        if alt != "media":
            return JSONResponse(
                {
                    "kind": "storage#object",
                    "bucket": bucket,
                    "name": object_name,
                    "contentType": "video/mp4",
                }
            )
        path = await asyncio.to_thread(core.render, job)
        return FileResponse(path, media_type="video/mp4")

    @r.post("/token")
    async def token(request: Request) -> Response:
        form = await request.form()
        grant, assertion = form.get("grant_type"), form.get("assertion")

        def refuse(description: str) -> JSONResponse:
            return JSONResponse(
                {"error": "invalid_grant", "error_description": description}, status_code=400
            )

        if grant != JWT_BEARER_GRANT or not isinstance(assertion, str):
            return JSONResponse(
                {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"},
                status_code=400,
            )
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            return refuse("Invalid JWT: malformed assertion.")
        now = time.time()
        if header.get("alg") != "RS256":
            return refuse("Invalid JWT: the assertion must be signed with RS256.")
        if not claims.get("iss") or claims.get("iss") == INVALID_CREDENTIAL:
            return refuse("Invalid JWT Signature.")
        if claims.get("aud") not in TOKEN_AUDIENCES:
            return refuse("Invalid JWT: audience must be https://oauth2.googleapis.com/token.")
        if SCOPE not in str(claims.get("scope", "")).split():
            return refuse("Invalid OAuth scope or ID token audience provided.")
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int) or exp - iat > 3600 or exp < now:
            return refuse("Invalid JWT: Token must be a short-lived token (60 minutes).")
        core.store.event("oauth_token", str(claims["iss"]))
        return JSONResponse(
            {
                "access_token": "ya29.sandbox-" + uuid.uuid4().hex,
                "expires_in": 3599,
                "token_type": "Bearer",
            }
        )

    return r
