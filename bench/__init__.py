"""`make bench`: the built-in engine and HAProxy side by side (README, Performance)."""
