"""Reading the user's files at the edge: catalog documents and fleet files (TOML/YAML).

The one place that opens them; what it reads is handed to the pure core already parsed
(:mod:`npucenter.catalog`, :mod:`npucenter.fleet`). Errors name the file and what is wrong.
"""
