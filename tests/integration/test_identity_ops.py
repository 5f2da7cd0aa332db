"""Identity as operators run it: revoking every session of a user (REST and CLI, within
5 s, open sockets included), user commands, tokens of an external identity provider."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx2
import pytest

from loadtests.client import YClient
from server.cli import main, version
from tests.conftest import LiveServer, StartServer
from tests.integration.test_locks import eventually
from tests.services.redis import StartRedis
from tests.unit.test_tokens_external import Jwks, _rsa, _token

WAIT = 20.0
REVOCATION_BOUND = 5.0


async def _status(server: LiveServer, token: str) -> int:
    async with httpx2.AsyncClient(base_url=server.http_url, timeout=WAIT) as http:
        response = await http.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    return response.status_code


async def _closed_within(client: YClient, seconds: float) -> int | None:
    await asyncio.wait_for(client.closed.wait(), seconds)
    return client.close_code


async def test_delete_session_all_revokes_every_token_and_socket(
    start_server: StartServer,
) -> None:
    server = await start_server(insecure_dev=False)
    ann = await server.add_user("ann@example.com", "analyst")
    laptop, phone = server.token(ann), server.token(ann)
    async with YClient(server.ws_url, "ann-doc/s", token=laptop) as socket:
        await asyncio.wait_for(socket.synced.wait(), WAIT)
        async with httpx2.AsyncClient(base_url=server.http_url, timeout=WAIT) as http:
            bad = await http.delete(
                "/api/session?all=maybe", headers={"Authorization": f"Bearer {phone}"}
            )
            assert bad.status_code == 400
            assert await _status(server, phone) == 200  # the bad request changed nothing
            revoked_at = time.monotonic()
            response = await http.delete(
                "/api/session?all=true", headers={"Authorization": f"Bearer {phone}"}
            )
        assert response.status_code == 204
        assert await _status(server, laptop) == 401
        assert await _status(server, phone) == 401
        code = await _closed_within(socket, REVOCATION_BOUND)
        assert code == 4401
        assert time.monotonic() - revoked_at < REVOCATION_BOUND
    # A token issued after the revocation works.
    fresh = server.collab.authn.tokens.issue(str(ann.id), ttl=60, now=time.time() + 1)
    assert await _status(server, fresh) == 200


async def test_cli_revoke_reaches_a_running_server_within_5_s(
    start_server: StartServer, redis_servers: StartRedis, tmp_path: Path
) -> None:
    redis = redis_servers(aof=True)
    data = tmp_path / "shared"
    server = await start_server(insecure_dev=False, redis_url=redis.url, data_dir=data)
    ann = await server.add_user("ann@example.com", "analyst")
    token = server.token(ann)
    assert await _status(server, token) == 200
    async with YClient(server.ws_url, "cli-doc/s", token=token) as socket:
        await asyncio.wait_for(socket.synced.wait(), WAIT)
        started = time.monotonic()
        env = {"COLLAB_REDIS_URL": redis.url}
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            code = await asyncio.to_thread(
                main, ["token", "revoke", "--user", "ann@example.com", "--data-dir", str(data)]
            )
        assert code == 0
        await eventually(lambda: _is(server, token, 401), REVOCATION_BOUND, "the token refused")
        assert await _closed_within(socket, REVOCATION_BOUND) == 4401
        assert time.monotonic() - started < REVOCATION_BOUND + 1


async def _is(server: LiveServer, token: str, status: int) -> bool:
    return await _status(server, token) == status


def test_cli_revoke_without_redis_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(tmp_path)]
    assert (
        main(["user", "add", "--email", "a@example.com", "--name", "A", "--role", "admin", *data])
        == 0
    )
    assert main(["token", "revoke", "--user", "a@example.com", *data]) == 1
    assert "COLLAB_REDIS_URL" in capsys.readouterr().err


async def test_cli_set_role_and_suspend_reach_open_sockets(
    start_server: StartServer, tmp_path: Path
) -> None:
    data = tmp_path / "shared"
    server = await start_server(insecure_dev=False, data_dir=data)
    ann = await server.add_user("ann@example.com", "analyst")
    token = server.token(ann)
    args = ["--data-dir", str(data)]
    code = await asyncio.to_thread(
        main, ["user", "set-role", "--email", "ann@example.com", "--role", "manager", *args]
    )
    assert code == 0
    async with httpx2.AsyncClient(base_url=server.http_url, timeout=WAIT) as http:

        async def role_is_manager() -> bool:
            me = await http.get("/api/me", headers={"Authorization": f"Bearer {token}"})
            return bool(me.json()["role"] == "manager")

        await eventually(role_is_manager, REVOCATION_BOUND, "the new role seen")
    async with YClient(server.ws_url, "ann-plan/s", token=token) as socket:
        await asyncio.wait_for(socket.synced.wait(), WAIT)
        code = await asyncio.to_thread(
            main, ["user", "suspend", "--email", "ann@example.com", *args]
        )
        assert code == 0
        assert await _closed_within(socket, REVOCATION_BOUND) == 4403
    assert await _status(server, token) == 403
    code = await asyncio.to_thread(
        main, ["user", "reactivate", "--email", "ann@example.com", *args]
    )
    assert code == 0
    await eventually(lambda: _is(server, token, 200), REVOCATION_BOUND, "reactivated")


def test_cli_user_commands_refuse_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(tmp_path)]
    assert main(["user", "suspend", "--email", "nobody@example.com", *data]) == 1
    assert "no user with email" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["user", "set-role", "--email", "x@example.com", "--role", "emperor", *data])
    assert exited.value.code == 2


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out == f"collab {version()}"
    assert out != "collab unknown (not installed)"


async def test_an_external_providers_token_signs_a_user_in(start_server: StartServer) -> None:
    jwks = Jwks()
    try:
        key, public = _rsa("idp-1")
        jwks.keys = [public]
        server = await start_server(
            insecure_dev=False,
            jwt_jwks_url=jwks.url,
            jwt_issuer="https://idp.example.test/realms/acme",
            jwt_audience="collab-api",
        )
        assert jwks.fetches == 1  # fetched at start, before any token came
        ann = await server.add_user("ann@example.com", "analyst")
        # The provider's subject is its own id; the verified email names our user.
        token = _token(key, "idp-1", sub="idp|12345")
        async with httpx2.AsyncClient(base_url=server.http_url, timeout=WAIT) as http:
            me = await http.get("/api/me", headers={"Authorization": f"Bearer {token}"})
            assert me.status_code == 200, me.text
            assert me.json()["id"] == str(ann.id)
            stranger = _token(key, "idp-1", sub="idp|999", email="who@example.com")
            refused = await http.get("/api/me", headers={"Authorization": f"Bearer {stranger}"})
            assert refused.status_code == 401
        async with YClient(server.ws_url, "idp-doc/s", token=token) as socket:
            await asyncio.wait_for(socket.synced.wait(), WAIT)
        assert jwks.fetches == 1  # cached
    finally:
        jwks.close()
