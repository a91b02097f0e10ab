"""Where records come from: the local store (default) and Supabase."""
