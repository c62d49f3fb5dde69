"""`memory-service mcp`: the MCP tools on stdin/stdout, for agent hosts that launch a command.

With `--url`, tool calls go to that running service with the key in `MEMORY_API_KEY`.
Without it, the service is opened in this process as `serve` would open it (the embedded
database and the bundled model by default), its background tasks run, and tool calls go to
its app over ASGI. Logs go to stderr: stdout is the protocol's.
"""

from memory_service import mcp_server
from memory_service.client import AsyncMemoryClient
from memory_service.core.settings import Settings


async def serve_stdio(settings: Settings, url: str | None, api_key: str | None) -> int:
    if url is not None:
        async with AsyncMemoryClient(url, api_key) as client:
            await mcp_server.run_stdio(mcp_server.shared(client), settings.mcp_default_namespace)
        return 0
    from memory_service.app import create_app, in_process_host
    from memory_service.bootstrap import open_resources

    async with open_resources(settings) as resources:
        app = create_app(settings, resources)
        async with app.router.lifespan_context(app):
            host = in_process_host(resources.auth.allowed_hosts)
            connect = mcp_server.in_process(app, host, api_key)
            await mcp_server.run_stdio(connect, settings.mcp_default_namespace)
    return 0
