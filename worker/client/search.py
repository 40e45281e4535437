"""RuntimeClient, part search: saved views of the runs list (worker/search), shared by the team."""

from __future__ import annotations

from worker.client.base import ClientBase
from worker.search import views
from worker.search.filters import RunFilter
from worker.search.views import SavedView


class SearchApi(ClientBase):
    """Named run filters: save, list, get, delete (listing runs with one: `list_runs(filters=view.filters)`)."""

    async def save_view(self, name: str, filters: RunFilter, *, by: str | None = None) -> SavedView:
        return await views.save(self.pool, name, filters, str(self._actor(by)))

    async def get_view(self, name: str) -> SavedView:
        return await views.get(self.pool, name)

    async def list_views(self) -> list[SavedView]:
        return await views.all_views(self.pool)

    async def delete_view(self, name: str) -> None:
        await views.delete(self.pool, name)
