"""The asyncio shell: Starlette app, WebSocket rooms, CLI, lifecycle. Owns every task."""
