"""Data: the normalized record and its label rules, the local store and Supabase as sources, and what
moves records in and out (pull, import, export) or summarizes them (stats, distribution)."""
