"""Peer model servers for `bench.wrapper`, each run by the interpreter of its own virtualenv."""
