"""Serving: reasoning-aware output handling (the HTTP server lands with the serve stage)."""
