"""Reply-for-reply comparison of gossipkv with redis-server, driven by case files."""
