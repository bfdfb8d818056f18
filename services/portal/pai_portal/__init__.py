"""The web portal: server-rendered pages, a client of the REST API v2 like any other."""
