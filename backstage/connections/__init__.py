"""Connections to Redis: URLs, TLS, Sentinel, Cluster and packed pipelines.

Every Redis client Backstage makes comes from ``redis_conn``; ``cluster``
finds the node that serves a prefix's slot; ``resp`` packs commands for the
producer's bulk path.
"""
