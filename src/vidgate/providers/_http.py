"""Transport-level helpers shared by adapters: one request, no automatic retry.

What a transport failure means depends on whether a create call may have reached the
provider. A refused connection never did (safe to try another offering); a read timeout or a
dropped connection after the body was sent might have (the job may exist and be billed), so it
becomes :class:`AmbiguousSubmission` and is never resubmitted blindly (design.md §6).
"""

from __future__ import annotations

from typing import Any

import httpx

from vidgate.errors import AmbiguousSubmission, ProviderTimeout, ProviderUnavailable


async def send(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    provider: str,
    create: bool = False,
    **kwargs: Any,
) -> httpx.Response:
    try:
        return await client.request(method, url, **kwargs)
    except httpx.ConnectTimeout as e:
        raise ProviderTimeout(f"connecting to {provider} timed out", provider=provider) from e
    except httpx.ConnectError as e:
        raise ProviderUnavailable(f"cannot connect to {provider}: {e}", provider=provider) from e
    except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout) as e:
        if create:
            raise AmbiguousSubmission(
                f"create call to {provider} timed out after sending; the job may exist",
                provider=provider,
            ) from e
        raise ProviderTimeout(f"{provider} did not answer in time", provider=provider) from e
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as e:
        if create:
            raise AmbiguousSubmission(
                f"connection to {provider} dropped during the create call; the job may exist",
                provider=provider,
            ) from e
        raise ProviderUnavailable(
            f"connection to {provider} dropped: {e}", provider=provider
        ) from e


def json_body(resp: httpx.Response) -> dict[str, Any]:
    """The response's JSON object, or {} when the body is not a JSON object."""
    try:
        data = resp.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
