"""The built-in demo: synthetic AgroShield rows (rows.py) with drawn leaf (leaves.py) and produce
(produce.py) photos, so every command can be tried without a Supabase account."""
