"""`memory-service mcp`: the MCP tools on stdin/stdout, for agent hosts that launch a command.

With `--url`, tool calls go to that running service with `--api-key` (or `MEMORY_API_KEY`).
Without it, the service is opened in this process as `serve` would open it (the embedded
database and the bundled model by default), its background tasks run, and tool calls go to
its app over ASGI. Logs go to stderr: stdout is the protocol's.
"""

from memory_service import mcp_server
from memory_service.core.settings import Settings


async def serve_stdio(settings: Settings, url: str | None, api_key: str | None) -> int:
    if url is not None:
        await mcp_server.run_stdio(mcp_server.remote(url, api_key), settings.mcp_default_namespace)
        return 0
    from memory_service.app import create_app
    from memory_service.bootstrap import open_resources

    async with open_resources(settings) as resources:
        app = create_app(settings, resources)
        async with app.router.lifespan_context(app):
            connect = mcp_server.in_process(app, api_key)
            await mcp_server.run_stdio(connect, settings.mcp_default_namespace)
    return 0
