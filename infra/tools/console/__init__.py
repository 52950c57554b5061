"""The operations console: server-rendered pages at /console of ``herald api`` (see ``app.create_app``)."""
