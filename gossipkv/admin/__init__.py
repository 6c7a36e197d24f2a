"""The admin endpoint: JSON status over HTTP (aiohttp), for people and their tools."""
