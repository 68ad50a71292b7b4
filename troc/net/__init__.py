"""The libp2p layer: hosts, streams, gossip, relay, DHT, quotas and liveness.

It knows bytes, peers and streams, never entries or ledgers, and imports nothing
from troc.node.
"""
