"""Delivering the stream into ticket systems: the engine, its failures and its view.

Backends (gateway/backends/, and plugins) import this; it imports no backend.
"""
