"""The `sift` command line: the Typer app, its commands and the file importers."""
