"""The one thread budget: the pool that runs the legacy app, its size, and who may wait for it.

- ``pool.py``: ``ThreadPool``, the handoff between the event loop and worker threads,
  with asgiref's thread-local pointing at the server's loop (its theory of operation).
- ``sizing.py``: adaptive sizing, how many of ``max_threads`` may run at once.
- ``admission.py``: how many request bodies may be arriving (``Intake``), and how many
  requests may hold or wait for a thread (``Admission``); 503 past either.
"""
