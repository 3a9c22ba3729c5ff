"""An httpx client of the control-plane API (used by the CLI and by scripts).

Error bodies ``{"error": {"code", "message", "details"}}`` come back as the npucenter error
class of that code, so a script gets the same exit codes from the CLI as the server meant.
Transport failures become UpstreamError with a hint to start the server.
"""

from __future__ import annotations

from typing import Any

import httpx

from npucenter.errors import (
    AuthenticationError,
    InvalidConfigError,
    NpuCenterError,
    UpstreamError,
    all_error_classes,
)
from npucenter.settings import Settings

__all__ = ["Client", "error_from_body"]


def error_from_body(status_code: int, body: Any) -> NpuCenterError:
    """The typed error an API error response stands for (class chosen by code and status)."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return UpstreamError(
            f"the server answered {status_code} without an error document",
            details={"status": status_code},
        )
    code = str(err.get("code", "internal"))
    message = str(err.get("message", "error"))
    details = err.get("details") if isinstance(err.get("details"), dict) else {}
    matches = [c for c in all_error_classes() if c.code == code]
    exact = [c for c in matches if c.http_status == status_code]
    cls = (exact or matches or [NpuCenterError])[0]
    exc = cls.__new__(cls)
    NpuCenterError.__init__(exc, message, details=details)
    return exc


class Client:
    """Calls the API at ``url`` with ``api_key``; every method returns decoded JSON.

    Example::

        with Client.from_settings(Settings.from_env()) as api:
            api.post("/api/tenants", {"name": "kaist", "kind": "university"})
    """

    def __init__(
        self,
        url: str,
        api_key: str | None,
        *,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url.rstrip("/")
        if self.url.endswith("/v1") or self.url.endswith("/api"):
            base = self.url.rsplit("/", 1)[0]
            raise InvalidConfigError(
                "NPUCENTER_URL",
                self.url,
                f"must be the center's base URL (without {self.url[len(base) :]})",
                hint=f"set NPUCENTER_URL={base}; OpenAI clients take {base}/v1",
            )
        self._owns_http = http is None
        # ``http``: an existing client (e.g. FastAPI's TestClient) to send through.
        self._http = http or httpx.Client(base_url=self.url, timeout=timeout_s, transport=transport)
        self._has_key = bool(api_key)

    @classmethod
    def from_settings(cls, settings: Settings) -> Client:
        """A client for NPUCENTER_URL with NPUCENTER_API_KEY."""
        return cls(settings.url, settings.api_key)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool (unless the client was given one)."""
        if self._owns_http:
            self._http.close()

    def request(self, method: str, path: str, *, json: Any = None, params: Any = None) -> Any:
        """One call; raises the typed error of an error response."""
        if not self._has_key and not path.startswith("/healthz"):
            raise AuthenticationError(
                "no API key given",
                hint="set NPUCENTER_API_KEY to a key from `npucenter key create`",
            )
        try:
            resp = self._http.request(method, path, json=json, params=params, headers=self._headers)
        except httpx.TimeoutException as exc:
            raise UpstreamError(
                f"the server at {self.url} did not answer in time", details={"url": self.url}
            ) from exc
        except httpx.TransportError as exc:
            raise UpstreamError(
                f"cannot reach the server at {self.url}",
                hint="start it with `npucenter up` or set NPUCENTER_URL",
                details={"url": self.url},
            ) from exc
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = None
            raise error_from_body(resp.status_code, body)
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

    def get(self, path: str, **params: Any) -> Any:
        """GET with query parameters (None values dropped)."""
        clean = {k: v for k, v in params.items() if v is not None}
        return self.request("GET", path, params=clean or None)

    def post(self, path: str, body: Any = None) -> Any:
        """POST a JSON body."""
        return self.request("POST", path, json=body)

    def put(self, path: str, body: Any) -> Any:
        """PUT a JSON body."""
        return self.request("PUT", path, json=body)

    def patch(self, path: str, body: Any) -> Any:
        """PATCH a JSON body."""
        return self.request("PATCH", path, json=body)

    def delete(self, path: str) -> Any:
        """DELETE."""
        return self.request("DELETE", path)
