"""The shared core: settings, typed errors, progress callbacks, file and SQLite helpers, retries.

Everything above imports from here; nothing here imports from above.
"""
