"""Event history: the ``events`` consumer group stores each event once in SQL (SQLite by
default, PostgreSQL by URL) with a JPEG snapshot of the frame that raised it.

* :mod:`workers.history.store` — :class:`EventStore` (add, query, purge, snapshot files)
* :mod:`workers.history.snapshots` — finding the frame and drawing the snapshot (pure parts)
* :mod:`workers.history.recorder` — the consumer loop (``actionstream history``)
"""
