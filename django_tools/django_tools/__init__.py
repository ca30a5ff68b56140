"""Shared building blocks of the APIs Ecosystem services (api_produtos, api_feed)."""
