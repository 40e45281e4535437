"""The runs screen says when its list comes from a read replica (AGENTRT_DATABASE_READ_URL), and how far behind
the replica is; without a read URL the header is as it always was (the snapshots hold it)."""

from __future__ import annotations

from console.messages import RefreshAll
from tests.console.fakes import FakeRuntimeClient
from tests.console.helpers import make_app, screen_text, settle
from worker.client.replica import ReadReplica

SIZE = (160, 40)


async def test_the_runs_header_shows_the_replica_and_its_lag() -> None:
    client = FakeRuntimeClient()
    client.replica = ReadReplica("postgresql://ro@replica:5432/agentrt", True, 12.4)
    app = make_app(client)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "replica, 12 s behind" in screen_text(app)
        client.replica = ReadReplica("postgresql://ro@replica:5432/agentrt", True, 0.2)
        app.post_message(RefreshAll())
        await settle(pilot)
        text = screen_text(app)
        assert "replica, up to date" in text and "behind" not in text


async def test_without_a_read_url_the_header_does_not_mention_a_replica() -> None:
    app = make_app(FakeRuntimeClient())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "replica" not in screen_text(app)
