"""The event buses of the server-backed stores (:mod:`sessions.bus` is the interface).

One module per way of carrying events, each returned by its store's
:meth:`~sessions.stores.Store.event_bus`:

* :mod:`sessions.buses.listening`: what every bus with a connection of its own
  shares: its origin, a listener that reconnects with backoff and calls
  ``on_resync``, publish errors logged, not raised.
* :mod:`sessions.buses.redis`: PUBLISH/SUBSCRIBE, sharded pub/sub on a Redis Cluster.
* :mod:`sessions.buses.postgres`: LISTEN/NOTIFY.
* :mod:`sessions.buses.mongo`: a change stream where the server offers one, else
  an events collection polled from its last sequence number.
* :mod:`sessions.buses.sqlite`: an events table polled from its last rowid.

Nothing here is imported by ``import sessions``: each module imports its driver.
"""
