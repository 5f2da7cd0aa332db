"""Scripted y-websocket clients, scenarios and benchmarks that drive a running server."""
