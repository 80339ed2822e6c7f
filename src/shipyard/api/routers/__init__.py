"""Thin routers, one per resource family: parse the request, call the store, shape the answer."""
