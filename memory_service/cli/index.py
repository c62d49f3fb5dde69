"""`memory-service index status | rebuild`: the index lifecycle, straight on the database.

Works without a running service, and beside one: a rebuild asked here while `serve`'s own
maintainer is building finds the lock taken, leaves the request recorded and says so; that
maintainer then rebuilds at its next pass.
"""

from dataclasses import asdict
from typing import Any

from memory_service.core.db import create_engine, ensure_schema_at_head
from memory_service.core.errors import StartupError
from memory_service.core.settings import Settings
from memory_service.embeddings.spaces import list_spaces
from memory_service.search.indexes import BuildOutcome, IndexMaintainer, IndexPolicy


async def _maintainer(settings: Settings) -> IndexMaintainer:
    assert settings.database_url is not None
    engine = create_engine(settings.database_url, pool_size=2)
    try:
        await ensure_schema_at_head(engine)
        spaces = {space.name: space for space in await list_spaces(engine)}
    except BaseException:
        await engine.dispose()
        raise
    space = spaces.get(settings.embedding_space)
    if space is None:
        await engine.dispose()
        raise StartupError(
            f"no embedding space {settings.embedding_space!r} in this database yet "
            f"(recorded: {sorted(spaces) or 'none'}); it is recorded when `serve` first starts"
        )
    return IndexMaintainer(engine=engine, space_id=space.id, policy=IndexPolicy.of(settings))


async def index_status(settings: Settings) -> list[dict[str, Any]]:
    maintainer = await _maintainer(settings)
    try:
        return [asdict(status) for status in await maintainer.status()]
    finally:
        await maintainer.engine.dispose()


async def index_rebuild(settings: Settings, table: str | None) -> dict[str, BuildOutcome]:
    """Rebuild now: the tables with an index, or with enough rows for one (`ann_min_rows`);
    smaller tables stay exact, since an index trained on a few rows would serve them badly."""
    maintainer = await _maintainer(settings)
    try:
        await maintainer.request_rebuild(table)
        if table is not None:
            return {table: await maintainer.maintain_table(table)}
        return await maintainer.maintain()
    finally:
        await maintainer.engine.dispose()
