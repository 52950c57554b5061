"""The Route stage as pure functions (DESIGN.md §4, steps 1–11).

No Faust, no I/O: the route agent (streams/handlers/route.py) fetches what these
need in a constant number of round trips per batch and calls them.
"""
